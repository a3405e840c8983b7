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

"""Source ISOs of the layouts nova-ipxe must handle, made for tests.

Built from the boot files of Debian's ipxe packages (bookworm's installed
one and trixie's fetched by tools/fetch-trixie-ipxe.sh), laid out the way
other iPXE builds lay them out.  FAT images are made with mkfs.fat and
mtools, as upstream's genfsimg does.
"""

import io
import os
import subprocess

import pycdlib

from tests import base


def require(path):
    if not os.path.exists(path):
        raise RuntimeError('%s is missing: run tools/install-deps.sh (it '
                           'installs Debian ipxe and fetches trixie\'s)'
                           % path)
    return path


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
    return open(require(os.path.join(base.TRIXIE_DIR, 'usr', 'lib',
                                     'ipxe', name)), 'rb').read()


def fat_image(path, files, size_kib=2048, fat_bits=12):
    """A FAT image holding {path: bytes}, via mkfs.fat and mcopy."""
    subprocess.run(['mkfs.fat', '-C', '-F', str(fat_bits), path,
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
    files = iso_files(base.BOOKWORM_ISO)
    return files['/isolinux.bin'], files['/ldlinux.c32'], files


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
