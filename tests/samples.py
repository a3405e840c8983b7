#    Licensed under the Apache License, Version 2.0 (the "License"); you may
#    not use this file except in compliance with the License. You may obtain
#    a copy of the License at
#
#         http://www.apache.org/licenses/LICENSE-2.0
#
#    Unless required by applicable law or agreed to in writing, software
#    distributed under the License is distributed on an "AS IS" BASIS, WITHOUT
#    WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied. See the
#    License for the specific language governing permissions and limitations
#    under the License.

"""What the tests run on, written in one place.

The stock iPXE ISOs (Debian bookworm's, installed, and trixie's, fetched
into ``.cache/trixie-ipxe``; their paths live in ``tools/stock.py``),
sample network data, and ISOs and FAT images made to order in the layouts
nova-ipxe must handle, built from the boot files of those packages the
way other iPXE builds lay them out (FAT images with mkfs.fat and mtools,
as upstream's genfsimg does).

A missing file or tool is a :class:`MissingTestInput` error that says how
to install it, raised here and nowhere else: never a skip, never a test
that checks something else instead.  ``tools/install-deps.sh`` installs
all of it, so CI never meets one.
"""

import copy
import functools
import io
import ipaddress
import json
import os
import shutil
import subprocess
import uuid

import pycdlib

from tools import stock

REPO = stock.REPO
BOOKWORM_ISO = stock.BOOKWORM_ISO
BOOKWORM_LKRN = stock.BOOKWORM_LKRN
BOOKWORM_EFI = '/usr/lib/ipxe/ipxe.efi'
TRIXIE_DIR = stock.TRIXIE_DIR
TRIXIE_ISO = stock.TRIXIE_ISO
NETWORK_DATA = stock.NETWORK_DATA
INSTALL_HINT = ('run tools/install-deps.sh (it installs the Debian '
                'packages of bindep.txt, bookworm\'s ipxe among them, and '
                'fetches trixie\'s ipxe)')


class MissingTestInput(RuntimeError):
    """A file or tool the tests need is not installed."""


def require(path):
    """``path`` if it exists, else MissingTestInput."""
    if not os.path.exists(path):
        raise MissingTestInput('%s is missing: %s' % (path, INSTALL_HINT))
    return path


def require_tool(name):
    """The full path of the command ``name``, else MissingTestInput."""
    path = shutil.which(name)
    if path is None:
        raise MissingTestInput('the command %s is missing: %s'
                               % (name, INSTALL_HINT))
    return path


def self_signed_cert(directory, name='server'):
    """(certificate, key) paths of a fresh self-signed loopback certificate.

    The certificate is its own CA: pass it as ``ca_file`` to trust it.
    """
    cert = os.path.join(directory, name + '.pem')
    key = os.path.join(directory, name + '.key')
    subprocess.run(
        [require_tool('openssl'), 'req', '-x509', '-newkey', 'rsa:2048',
         '-nodes', '-keyout', key, '-out', cert, '-days', '1',
         '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1'],
        check=True, capture_output=True)
    return cert, key


def bookworm_iso():
    """Debian bookworm's ipxe.iso: BIOS only (its EFI iPXE is too old)."""
    return require(BOOKWORM_ISO)


def trixie_iso():
    """Debian trixie's ipxe.iso: BIOS and UEFI with autoexec.ipxe."""
    return require(TRIXIE_ISO)


# -- network data ------------------------------------------------------------

NET_A = '3f2a6c1e-0b7d-4c8e-9f1a-2b3c4d5e6f70'
NET_B = '9e8d7c6b-5a4f-4e3d-8c2b-1a0f9e8d7c6b'


@functools.lru_cache(maxsize=None)
def _demo_network_data():
    with open(require(NETWORK_DATA)) as f:
        return json.load(f)


def network_data():
    """The demo instance: one NIC, static IPv4 and IPv6, DNS (a copy)."""
    return copy.deepcopy(_demo_network_data())


def two_nics():
    """What Nova emits for a DHCP-enabled port then a static one."""
    return {
        'links': [
            {'id': 'tapaaaaaaaa-aa', 'vif_id': 'a', 'type': 'phy',
             'ethernet_mac_address': 'FA:16:3E:00:00:0A', 'mtu': None},
            {'id': 'tapbbbbbbbb-bb', 'vif_id': 'b', 'type': 'bridge',
             'ethernet_mac_address': 'fa:16:3e:00:00:0b', 'mtu': 1500},
        ],
        'networks': [
            {'id': 'network0', 'type': 'ipv4_dhcp',
             'link': 'tapaaaaaaaa-aa', 'network_id': NET_A},
            {'id': 'network1', 'type': 'ipv4', 'link': 'tapbbbbbbbb-bb',
             'ip_address': '198.51.100.7', 'netmask': '255.255.255.0',
             'routes': [{'network': '0.0.0.0', 'netmask': '0.0.0.0',
                         'gateway': '198.51.100.1'}],
             'network_id': NET_B, 'services': []},
        ],
        'services': [{'type': 'dns', 'address': '198.51.100.53'}],
    }


def nic_data(mac, link, ipv4=None, ipv6=None, network_id=None):
    """One port's network_data.json entries: (link, [networks]).

    Shaped as Nova's get_network_metadata() writes them; ``ipv4`` and
    ``ipv6`` are (address, prefix length, gateway or None).
    """
    network_id = network_id or str(uuid.uuid4())
    networks = []
    for version, any_net, address in ((4, '0.0.0.0', ipv4), (6, '::', ipv6)):
        if not address:
            continue
        address, prefix, gateway = address
        networks.append({
            'id': 'network-%s-%d' % (link, version),
            'type': 'ipv%d' % version, 'link': link, 'ip_address': address,
            'netmask': str(ipaddress.ip_network(
                '%s/%d' % (any_net, prefix)).netmask),
            'routes': [{'network': any_net, 'netmask': any_net,
                        'gateway': gateway}] if gateway else [],
            'network_id': network_id, 'services': []})
    return ({'id': link, 'vif_id': str(uuid.uuid4()), 'type': 'ovs',
             'ethernet_mac_address': mac, 'mtu': 1500}, networks)


def network_data_of(*nics, dns=()):
    """network_data.json of ``nic_data()`` results and DNS addresses."""
    return {'links': [link for link, _ in nics],
            'networks': [n for _, nets in nics for n in nets],
            'services': [{'type': 'dns', 'address': a} for a in dns]}


# A menu that ends a boot test: the guest reboots, which ends QEMU.
BYE_MENU = '#!ipxe\necho nova-ipxe-test: done\nsleep 1\nreboot\n'


# -- ISOs and FAT images -----------------------------------------------------

def iso_files(path):
    """{rock ridge path: bytes} of every file of an ISO."""
    iso = pycdlib.PyCdlib()
    iso.open(require(path))
    try:
        out = {}
        for dirpath, _, files in iso.walk(rr_path='/'):
            for name in files:
                full = os.path.join(dirpath, name)
                buf = io.BytesIO()
                iso.get_file_from_iso_fp(buf, rr_path=full)
                out[full] = buf.getvalue()
        return out
    finally:
        iso.close()


def trixie_file(name):
    """The bytes of a file of trixie's ipxe package (``ipxe.efi``...)."""
    with open(require(os.path.join(stock.TRIXIE_LIB, name)), 'rb') as f:
        return f.read()


def fat_image(path, files, size_kib=2048, fat_bits=12):
    """A FAT image holding {path: bytes}, via mkfs.fat and mcopy."""
    subprocess.run([require_tool('mkfs.fat'), '-C', '-F', str(fat_bits), path,
                    str(size_kib)], check=True, capture_output=True)
    made = set()
    for name, data in sorted(files.items()):
        parts = name.strip('/').split('/')
        for i in range(1, len(parts)):
            d = '/'.join(parts[:i])
            if d not in made:
                subprocess.run(['mmd', '-i', path, '::/' + d], check=True,
                               capture_output=True)
                made.add(d)
        src = path + '.part'
        with open(src, 'wb') as f:
            f.write(data)
        subprocess.run(['mcopy', '-i', path, src, '::/' + '/'.join(parts)],
                       check=True, capture_output=True)
        os.unlink(src)
    return path


def write_iso(path, files, bios=None, efi=None, rock_ridge=True,
              interchange_level=3):
    """Write an ISO of {(iso_path, rr_name): bytes} with El Torito."""
    iso = pycdlib.PyCdlib()
    rr = '1.09' if rock_ridge else None
    iso.new(interchange_level=interchange_level, rock_ridge=rr,
            joliet=3 if rock_ridge else None)
    dirs = set()
    for (iso_path, rr_path), data in sorted(files.items()):
        parts = iso_path.strip('/').split('/')
        rparts = rr_path.strip('/').split('/')
        for i in range(1, len(parts)):
            d = '/' + '/'.join(parts[:i])
            if d not in dirs:
                kw = {}
                if rock_ridge:
                    kw = {'rr_name': rparts[i - 1],
                          'joliet_path': '/' + '/'.join(rparts[:i])}
                iso.add_directory(d, **kw)
                dirs.add(d)
        kw = {}
        if rock_ridge:
            kw = {'rr_name': rparts[-1], 'joliet_path': rr_path}
        iso.add_fp(io.BytesIO(data), len(data), iso_path, **kw)
    if bios:
        iso.add_eltorito(bios, bootcatfile='/BOOT.CAT;1', boot_load_size=4,
                         boot_info_table=True)
    if efi:
        iso.add_eltorito(efi, bootcatfile='/BOOT.CAT;1', efi=True)
    iso.write(path)
    iso.close()
    return path


def bookworm_parts():
    files = iso_files(BOOKWORM_ISO)
    return files['/isolinux.bin'], files['/ldlinux.c32'], files


def isolinux_iso(path, cfg, files=None, efi=None):
    """An ISO booting bookworm's ISOLINUX with ``cfg`` as isolinux.cfg.

    ``files`` adds {(iso_path, rr_path): bytes}; ``efi`` names one of them
    as the UEFI boot image.
    """
    isolinux, ldlinux, _ = bookworm_parts()
    layout = {('/ISOLINUX.BIN;1', '/isolinux.bin'): isolinux,
              ('/LDLINUX.C32;1', '/ldlinux.c32'): ldlinux,
              ('/ISOLINUX.CFG;1', '/isolinux.cfg'): cfg}
    layout.update(files or {})
    return write_iso(path, layout, bios='/ISOLINUX.BIN;1', efi=efi)


def genfsimg_iso(tmp):
    """Upstream ``make bin/ipxe.iso`` (2021+) layout.

    ipxe.lkrn with an initrd autoexec.ipxe, and esp.img with the loader
    and autoexec.ipxe.
    """
    isolinux, ldlinux, _ = bookworm_parts()
    stock_script = b'#!ipxe\ndhcp\nchain http://stock.invalid/\n'
    esp = fat_image(os.path.join(tmp, 'esp.img'), {
        '/EFI/BOOT/BOOTX64.EFI': trixie_file('ipxe.efi'),
        '/autoexec.ipxe': stock_script}, size_kib=2048)
    cfg = (b'SAY iPXE ISO boot image\nTIMEOUT 30\nDEFAULT ipxe.lkrn\n'
           b'LABEL ipxe.lkrn\n KERNEL ipxe.lkrn\n INITRD autoexec.ipxe\n')
    return write_iso(os.path.join(tmp, 'genfsimg.iso'), {
        ('/ISOLINUX.BIN;1', '/isolinux.bin'): isolinux,
        ('/LDLINUX.C32;1', '/ldlinux.c32'): ldlinux,
        ('/ISOLINUX.CFG;1', '/isolinux.cfg'): cfg,
        ('/IPXE.LKRN;1', '/ipxe.lkrn'): trixie_file('ipxe.lkrn'),
        ('/AUTOEXEC.IPXE;1', '/autoexec.ipxe'): stock_script,
        ('/ESP.IMG;1', '/esp.img'): open(esp, 'rb').read(),
    }, bios='/ISOLINUX.BIN;1', efi='/ESP.IMG;1')


def plain_iso(tmp):
    """Only ISO 9660 level 1 names (8.3, upper case).

    ISOLINUX lives in a directory and isolinux.cfg names the kernel in
    lower case.
    """
    isolinux, ldlinux, files = bookworm_parts()
    cfg = b'DEFAULT ipxe\nLABEL ipxe\n  LINUX /ipxe.lkr\n'
    return write_iso(os.path.join(tmp, 'plain.iso'), {
        ('/ISOLINUX/ISOLINUX.BIN;1', '/'): isolinux,
        ('/ISOLINUX/LDLINUX.C32;1', '/'): ldlinux,
        ('/ISOLINUX/ISOLINUX.CFG;1', '/'): cfg,
        ('/IPXE.LKR;1', '/'): files['/ipxe.krn'],
    }, bios='/ISOLINUX/ISOLINUX.BIN;1', rock_ridge=False,
        interchange_level=1)


def boot_iso_bytes(extra=None, rock_ridge=True, efi=None, interchange_level=3):
    """Bytes of a bookworm-based iPXE ISO; ``extra(pycdlib)`` adds more."""
    isolinux, ldlinux, files = bookworm_parts()
    new = pycdlib.PyCdlib()
    new.new(interchange_level=interchange_level,
            rock_ridge='1.09' if rock_ridge else None,
            joliet=3 if rock_ridge else None)

    def add(path, name, data):
        kw = {'rr_name': name, 'joliet_path': '/' + name} if rock_ridge else {}
        new.add_fp(io.BytesIO(data), len(data), path, **kw)
    add('/ISOLINUX.BIN;1', 'isolinux.bin', isolinux)
    add('/LDLINUX.C32;1', 'ldlinux.c32', ldlinux)
    add('/ISOLINUX.CFG;1', 'isolinux.cfg', files['/isolinux.cfg'])
    add('/IPXE.KRN;1', 'ipxe.krn', files['/ipxe.krn'])
    if efi is not None:
        add('/EFI.IMG;1', 'efi.img', efi)
    if extra:
        extra(new)
    new.add_eltorito('/ISOLINUX.BIN;1', bootcatfile='/BOOT.CAT;1',
                     boot_load_size=4, boot_info_table=True)
    if efi is not None:
        # 0: pycdlib (like El Torito) cannot count past 65535 sectors.
        new.add_eltorito('/EFI.IMG;1', bootcatfile='/BOOT.CAT;1', efi=True,
                         boot_load_size=min(65535, -(-len(efi) // 512))
                         if len(efi) <= 65535 * 512 else 0)
    out = io.BytesIO()
    new.write_fp(out)
    new.close()
    return out.getvalue()


def record_offsets(data, name):
    """Offsets of the ISO 9660 directory records named ``name``."""
    needle = bytes([len(name)]) + name
    at, found = 0, []
    while True:
        at = data.find(needle, at)
        if at < 0:
            return found
        found.append(at - 32)
        at += 1


def keep_image_uploads(glance):
    """Make Nova's fixture Glance keep the data of an update.

    It drops a snapshot's uploaded bytes; a server booted from the
    snapshot needs them.
    """
    real_update = glance.update

    def update(context, image_id, metadata, data=None, **kw):
        if data is not None:
            glance._imagedata[image_id] = (
                data.read() if hasattr(data, 'read') else bytes(data))
        return real_update(context, image_id, metadata, **kw)
    glance.update = update
