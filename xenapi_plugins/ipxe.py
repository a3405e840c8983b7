#!/usr/bin/python3
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

"""nova-ipxe's dom0 plugin: inject a static network script into an iPXE ISO.

Install as both ``/etc/xapi.d/plugins/ipxe`` and ``ipxe.py`` (see the
README beside this file).  Python 3.6 syntax, standard library only; it
runs in dom0, where nova_ipxe is not installed, so it keeps its own small,
strict validation of the legacy call.

Calls:

* ``version`` (JSON): ``{"version": "2.0", "tools": {...}}``; the compute
  side checks the major number at start-up.
* ``inject`` (the 2013 call, as os-xenapi's ``inject_ipxe_config`` sends
  it): ``params`` is a pickle of ``{'args': (sr_path, vdi_uuid,
  boot_menu_url, ip_address, netmask, gateway, dns, mkisofs_cmd),
  'kwargs': {}}`` from Python 2 (protocol 0 text) or Python 3 (bytes, so
  XML-RPC base64).  It is decoded with an unpickler that admits plain
  values only.  ``mkisofs_cmd`` is accepted and never run.

The ISO (``<sr_path>/iso/<vdi_uuid>.img``) is never mounted: its layout is
read here with the standard library (ISO 9660 directory records and the
El Torito catalog).  The new ISO is written by the standard library alone
(:func:`_write_in_place`: the new files appended, the directory records
repointed), so dom0 needs no tool; when the ISO's root directory has no
room for one more record, by pycdlib when dom0 has it, else by xorriso,
else the call fails with ``CommandNotFound`` (what Nova's
``handle_ipxe_iso`` treats as "boot the stock ISO").  The new ISO is
written beside the old one and renamed into place; it boots BIOS
(ISOLINUX) only, like the 2013 one, and carries no UEFI entry (nor the
isohybrid GPT that points at the EFI image), so no script-less UEFI iPXE
is left in it.
"""

import io
import ipaddress
import json
import os
import pickle
import re
import shutil
import stat
import subprocess
import tempfile

PLUGIN_VERSION = '2.0'
SR_ROOTS = ('/var/run/sr-mount', '/run/sr-mount')
SECTOR = 2048
MAX_PARAMS = 64 * 1024      # the pickle; xapi caps one argument at 128 KiB
MAX_VALUE = 2048
MAX_ISO = 64 * 1024 * 1024
MAX_CFG = 64 * 1024
MAX_DIRS = 4096
XORRISO_TIMEOUT = 120
PATH_RE = re.compile(r'^/[A-Za-z0-9._/-]{1,4095}$')
UUID_RE = re.compile(r'^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-'
                     r'[0-9a-f]{12}$')
# An operator URL: RFC 3986 characters, and ${name} iPXE settings.
URL_RE = re.compile(r"^(https?|tftp)://[A-Za-z0-9\-._~:/?\[\]@!&'()*+,;=%]"
                    r"*(\$\{[A-Za-z0-9_./:-]{1,64}\}[A-Za-z0-9\-._~:/?\[\]@!"
                    r"&'()*+,;=%]*)*$")
CFG_REF_RE = re.compile(r'^/?[A-Za-z0-9._+~/-]{1,255}$')
# nova_ipxe.isolinux's search path, repeated: this file runs alone in dom0.
CFG_DIRS = ('/boot/isolinux', '/isolinux', '/boot/syslinux', '/syslinux',
            '/')
SCRIPT_ISO_PATH, SCRIPT_NAME = '/NIPXE.IPX;1', 'nipxe.ipx'
LEGACY_ARGS = ('sr_path', 'vdi_uuid', 'boot_menu_url', 'ip_address',
               'netmask', 'gateway', 'dns', 'mkisofs_cmd')


class InvalidArgument(Exception):
    """A legacy argument is refused; nothing was changed."""


class InvalidIso(Exception):
    """The ISO in the SR is not an ISOLINUX-based iPXE ISO we can read."""


class CommandNotFound(Exception):
    """No ISO writer in dom0 (the name Nova 21's handle_ipxe_iso checks)."""


class RewriteFailed(Exception):
    """The ISO writer failed; the original ISO is untouched."""


# -- decoding the legacy call -------------------------------------------

class _PlainUnpickler(pickle.Unpickler):
    """Plain values only: no class is ever looked up or constructed."""

    def find_class(self, module, name):
        raise InvalidArgument('refusing pickled object %s.%s'
                              % (module, name))

    def persistent_load(self, pid):
        raise InvalidArgument('refusing pickled persistent id')


def _plain(value, depth=0):
    if depth > 4:
        raise InvalidArgument('arguments nested too deeply')
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, bytes):  # a Python 2 str decoded as bytes
        return value.decode('latin-1')
    if isinstance(value, (list, tuple)):
        return [_plain(v, depth + 1) for v in value]
    if isinstance(value, dict):
        return dict((_plain(k, depth + 1), _plain(v, depth + 1))
                    for k, v in value.items())
    raise InvalidArgument('refusing a value of type %s'
                          % type(value).__name__)


def decode_params(raw):
    """The ``params`` argument (Binary, bytes or str) -> (args, kwargs)."""
    data = getattr(raw, 'data', raw)  # xmlrpc.client.Binary
    if isinstance(data, str):
        # A Python 2 pickle (protocol 0) is text; latin-1 maps it back to
        # its bytes one to one.
        try:
            data = data.encode('latin-1')
        except UnicodeEncodeError:
            raise InvalidArgument('params is not a pickle')
    if not isinstance(data, (bytes, bytearray)):
        raise InvalidArgument('params is missing')
    if len(data) > MAX_PARAMS:
        raise InvalidArgument('params is %d bytes, at most %d accepted'
                              % (len(data), MAX_PARAMS))
    try:
        value = _PlainUnpickler(io.BytesIO(bytes(data)),
                                encoding='latin-1').load()
    except InvalidArgument:
        raise
    except Exception as e:
        raise InvalidArgument('params is not a readable pickle (%s)'
                              % type(e).__name__)
    value = _plain(value)
    if not isinstance(value, dict):
        raise InvalidArgument('params must hold a dict')
    args = value.get('args') or []
    kwargs = value.get('kwargs') or {}
    if not isinstance(args, list) or not isinstance(kwargs, dict):
        raise InvalidArgument('params must hold args and kwargs')
    return args, kwargs


def legacy_arguments(args, kwargs):
    """Map the 2013 positional and keyword arguments to names."""
    if len(args) > len(LEGACY_ARGS):
        raise InvalidArgument('%d arguments, inject takes %d'
                              % (len(args), len(LEGACY_ARGS)))
    named = dict(zip(LEGACY_ARGS, args))
    for key, value in kwargs.items():
        if key not in LEGACY_ARGS or key in named:
            raise InvalidArgument('unexpected argument %r' % (key,))
        named[key] = value
    missing = [k for k in LEGACY_ARGS[:5] if named.get(k) in (None, '')]
    if missing:
        raise InvalidArgument('missing %s' % ', '.join(missing))
    for key, value in named.items():
        if value is not None and not isinstance(value, str):
            raise InvalidArgument('%s must be a string' % key)
        if value is not None and len(value) > MAX_VALUE:
            raise InvalidArgument('%s is longer than %d characters'
                                  % (key, MAX_VALUE))
    return named


def _sr_roots():
    # Tests point this at a temporary SR; xapi passes no environment.
    extra = os.environ.get('NOVA_IPXE_SR_ROOTS')
    return tuple(extra.split(':')) if extra else SR_ROOTS


def iso_path(sr_path, vdi_uuid):
    """``<sr_path>/iso/<vdi_uuid>.img``, inside an SR, no symlink."""
    if not PATH_RE.match(sr_path) or os.path.normpath(sr_path) != sr_path:
        raise InvalidArgument('sr_path is not a plain absolute path')
    if not any(sr_path.startswith(root.rstrip('/') + '/')
               for root in _sr_roots()):
        raise InvalidArgument('sr_path is not inside an SR mount')
    if not UUID_RE.match(vdi_uuid):
        raise InvalidArgument('vdi_uuid is not a UUID')
    directory = os.path.join(sr_path, 'iso')
    if os.path.realpath(directory) != directory:
        raise InvalidArgument('the SR path goes through a symlink')
    path = os.path.join(directory, vdi_uuid + '.img')
    try:
        st = os.lstat(path)
    except OSError:
        raise InvalidArgument('no ISO for VDI %s in the SR' % vdi_uuid)
    if not stat.S_ISREG(st.st_mode):
        raise InvalidArgument('the ISO of VDI %s is not a regular file '
                              '(symlink?)' % vdi_uuid)
    return path


def network_settings(named):
    """Validated IPv4 settings; every value becomes one script token."""
    def address(key, required):
        value = named.get(key)
        if value in (None, ''):
            if required:
                raise InvalidArgument('missing %s' % key)
            return None
        try:
            return str(ipaddress.IPv4Address(value))
        except ValueError:
            raise InvalidArgument('%s is not an IPv4 address' % key)

    ip = address('ip_address', True)
    netmask = address('netmask', True)
    try:
        ipaddress.IPv4Network('0.0.0.0/%s' % netmask)
    except ValueError:
        raise InvalidArgument('netmask is not a netmask')
    url = named['boot_menu_url']
    if not URL_RE.match(url):
        raise InvalidArgument('boot_menu_url is not a plain http(s) or '
                              'tftp URL')
    return {'ip': ip, 'netmask': netmask,
            'gateway': address('gateway', False),
            'dns': address('dns', False), 'url': url}


def render_script(s):
    lines = ['#!ipxe',
             'echo nova-ipxe: static network on net0 (legacy inject)',
             'ifclose net0',
             'set net0/ip %s' % s['ip'],
             'set net0/netmask %s' % s['netmask']]
    if s['gateway']:
        lines.append('set net0/gateway %s' % s['gateway'])
    if s['dns']:
        lines.append('set dns %s' % s['dns'])
    lines += ['ifopen net0 || goto failed',
              'set attempt:int32 0',
              ':menu',
              'inc attempt',
              'chain --autofree %s && exit ||' % s['url'],
              'iseq ${attempt} 3 && goto failed ||',
              'sleep 2',
              'goto menu',
              ':failed',
              'echo nova-ipxe: no boot menu, booting the local disk',
              'sanboot --no-describe --drive 0x80 || shell',
              '']
    return '\n'.join(lines)


def isolinux_cfg(kernel_ref):
    return ('# Rewritten by nova-ipxe (dom0 plugin, legacy inject).\n'
            'DEFAULT nova-ipxe\nPROMPT 0\nTIMEOUT 0\nLABEL nova-ipxe\n'
            ' KERNEL %s\n INITRD /%s\n' % (kernel_ref, SCRIPT_NAME))


# -- reading the ISO without mounting it --------------------------------

def _both_endian32(buf, off):
    return int.from_bytes(buf[off:off + 4], 'little')


class IsoLayout(object):
    """The primary ISO 9660 tree and the El Torito BIOS entry.

    Attributes: ``files`` {lower-case path without version: (iso_path,
    extent, length)}, ``bios_image`` (path of the BIOS boot file),
    ``config`` and ``kernel_ref``.
    """

    def __init__(self, f, size):
        self.f = f
        self.size = size
        pvd = self._read(16 * SECTOR, SECTOR)
        if pvd[0:1] != b'\x01' or pvd[1:6] != b'CD001':
            raise InvalidIso('no ISO 9660 primary volume descriptor')
        self.volume_blocks = _both_endian32(pvd, 80)
        if self.volume_blocks * SECTOR > size:
            raise InvalidIso('the ISO is truncated')
        self.files = {}
        self.visited = set()
        self.root = pvd[156:190]
        self._walk(self.root, '/', 0)
        self.bios_image = self._bios_image()
        self.config, text = self._config()
        self.kernel_ref = self._kernel_ref(text)

    def _read(self, offset, length):
        if offset < 0 or length < 0 or offset + length > self.size:
            raise InvalidIso('a record points outside the image')
        self.f.seek(offset)
        return self.f.read(length)

    def _walk(self, record, path, depth):
        if depth > 8 or len(self.files) > MAX_DIRS:
            raise InvalidIso('the directory tree is too deep or too large')
        extent = _both_endian32(record, 2)
        length = _both_endian32(record, 10)
        if length > 1024 * SECTOR:
            raise InvalidIso('a directory is too large')
        if extent in self.visited:
            raise InvalidIso('a directory loop')
        self.visited.add(extent)
        data = self._read(extent * SECTOR, length)
        pos = 0
        while pos < len(data):
            rlen = data[pos]
            if rlen == 0:  # records never cross a sector boundary
                pos = (pos // SECTOR + 1) * SECTOR
                continue
            rec = data[pos:pos + rlen]
            pos += rlen
            if len(rec) < 34:
                raise InvalidIso('a short directory record')
            name = rec[33:33 + rec[32]]
            if name in (b'\x00', b'\x01'):
                continue
            try:
                name = name.decode('ascii')
            except UnicodeDecodeError:
                raise InvalidIso('a non-ASCII ISO 9660 name')
            if '/' in name or not name:
                raise InvalidIso('a bad ISO 9660 name')
            if rec[25] & 0x02:  # directory
                self._walk(rec, path + name + '/', depth + 1)
                continue
            bare = name.split(';', 1)[0].rstrip('.').lower()
            self.files[path.lower() + bare] = (
                path + name, _both_endian32(rec, 2), _both_endian32(rec, 10))

    def _by_extent(self, extent):
        for key, (_, ext, length) in self.files.items():
            if ext == extent and length:
                return key
        return None

    def _bios_image(self):
        for n in range(17, 32):
            vd = self._read(n * SECTOR, SECTOR)
            if vd[1:6] != b'CD001' or vd[0] == 255:
                break
            if vd[0] == 0 and vd[7:30].rstrip(b'\x00') == (
                    b'EL TORITO SPECIFICATION'):
                self.catalog_sector = _both_endian32(vd, 71)
                catalog = self._read(self.catalog_sector * SECTOR, 64)
                if catalog[0] != 1 or catalog[30:32] != b'\x55\xaa':
                    raise InvalidIso('a bad El Torito validation entry')
                if catalog[1] == 0xEF or catalog[32] != 0x88:
                    raise InvalidIso('no bootable BIOS El Torito entry')
                image = self._by_extent(_both_endian32(catalog, 40))
                if image is None:
                    raise InvalidIso('the BIOS boot image is not a file')
                return image
        raise InvalidIso('no El Torito boot catalog')

    def read_file(self, key, limit):
        iso_path, extent, length = self.files[key]
        if length > limit:
            raise InvalidIso('%s is too large' % key)
        return self._read(extent * SECTOR, length)

    def _config(self):
        head = self.read_file(self.bios_image, 1024 * 1024)
        if b'ISOLINUX' not in head:
            raise InvalidIso('the BIOS boot image is not ISOLINUX')
        dirs = (os.path.dirname(self.bios_image),) + CFG_DIRS
        for d in dirs:
            key = os.path.join(d, 'isolinux.cfg')
            if key in self.files:
                return key, self.read_file(key, MAX_CFG).decode(
                    'latin-1')
        raise InvalidIso('no isolinux.cfg')

    def _kernel_ref(self, text):
        # nova_ipxe.isolinux.kernel_ref's reading, repeated: dom0 has only
        # this file (Python 3.6, no nova_ipxe), so it cannot import it.
        default, labels, current, first = None, {}, None, None
        for raw in text.splitlines():
            words = raw.strip().split(None, 1)
            if not words or words[0].startswith('#'):
                continue
            key = words[0].lower()
            arg = words[1].split()[0] if len(words) > 1 else ''
            if key == 'default':
                default = arg
            elif key == 'label':
                current = arg
            elif key in ('kernel', 'linux') and arg:
                labels.setdefault(current, arg)
                first = first or arg
        ref = labels.get(default) or (
            default if default and default not in labels else None) or first
        if not ref or not CFG_REF_RE.match(ref) or '..' in ref:
            raise InvalidIso('isolinux.cfg names no usable kernel')
        cwd = os.path.dirname(self.config)
        key = os.path.normpath(os.path.join(cwd, ref)).lower()
        if key not in self.files:
            raise InvalidIso('the kernel %s is not on the ISO' % ref)
        return '/' + key.lstrip('/')


# -- writing the new ISO ------------------------------------------------

def _pycdlib():
    try:
        import pycdlib
    except ImportError:
        return None
    return pycdlib


def available_tools():
    tools = {'stdlib': True, 'pycdlib': _pycdlib() is not None,
             'xorriso': shutil.which('xorriso')}
    # Tests pick writers; xapi passes no environment.
    only = os.environ.get('NOVA_IPXE_PLUGIN_WRITERS')
    if only:
        tools = dict((k, v if k in only.split(',') else None)
                     for k, v in tools.items())
    return tools


class NoRoom(Exception):
    """The in-place writer cannot add the script to this ISO."""


def _records(f, extent, length):
    """[(absolute offset, record bytes)] of one directory's extent."""
    f.seek(extent * SECTOR)
    data = f.read(length)
    found, pos = [], 0
    while pos < len(data):
        rlen = data[pos]
        if rlen == 0:
            pos = (pos // SECTOR + 1) * SECTOR
            continue
        found.append((extent * SECTOR + pos, data[pos:pos + rlen]))
        pos += rlen
    return found


def _both16(value):
    return value.to_bytes(2, 'little') + value.to_bytes(2, 'big')


def _both32(value):
    return value.to_bytes(4, 'little') + value.to_bytes(4, 'big')


def _iso_name(rec):
    return rec[33:33 + rec[32]]


def _pointed(rec, old_extent, extent, length):
    """``rec`` pointed at new data when it is a record of ``old_extent``."""
    if rec[25] & 0x02 or _both_endian32(rec, 2) != old_extent:
        return rec
    return rec[:2] + _both32(extent) + _both32(length) + rec[18:]


def _file_record(name, extent, length, date):
    body = (b'\x00' + _both32(extent) + _both32(length) + date + b'\x00'
            + b'\x00\x00' + _both16(1) + bytes([len(name)]) + name)
    if len(name) % 2 == 0:
        body += b'\x00'
    return bytes([len(body) + 1]) + body


def _write_in_place(source, layout, cfg, script, output):
    """The standard library's rewrite: no tool, no mount.

    Copies the ISO, appends the new isolinux.cfg and the script after the
    volume, points the directory records of isolinux.cfg (every tree) at
    the new data, adds the script's record to the root directory (sorted,
    within the sectors the directory already has, else NoRoom), grows the
    volume size in every volume descriptor, drops the El Torito sections
    after the BIOS entry (UEFI) and clears the system area (isohybrid MBR
    and GPT, which point at the EFI image).
    """
    shutil.copyfile(source, output)
    with open(output, 'r+b') as f:
        size = os.fstat(f.fileno()).st_size
        base = max(-(-size // SECTOR), layout.volume_blocks)
        cfg_sector = base
        script_sector = base + -(-len(cfg) // SECTOR)
        end = script_sector + -(-len(script) // SECTOR)
        old_extent = layout.files[layout.config][1]
        # Root directory: the script's record (replaced if there).
        root_extent = _both_endian32(layout.root, 2)
        root_length = _both_endian32(layout.root, 10)
        records = [_pointed(rec, old_extent, cfg_sector, len(cfg))
                   for _, rec in _records(f, root_extent, root_length)]
        name = SCRIPT_ISO_PATH.lstrip('/').encode('ascii')
        date = records[0][18:25]  # the directory's own "." record
        records = [rec for rec in records if _iso_name(rec) != name]
        records.append(_file_record(name, script_sector, len(script), date))
        dots = [r for r in records if _iso_name(r) in (b'\x00', b'\x01')]
        rest = sorted((r for r in records if r not in dots), key=_iso_name)
        laid = bytearray()
        for rec in dots + rest:
            if len(laid) % SECTOR + len(rec) > SECTOR:
                laid += b'\x00' * (SECTOR - len(laid) % SECTOR)
            laid += rec
        if len(laid) > root_length:
            raise NoRoom('the root directory has no room for the script')
        # Every tree's records of isolinux.cfg: found before any write.
        descriptors, patches, stack = [], [], []
        terminated = False
        for n in range(16, 64):
            f.seek(n * SECTOR)
            vd = f.read(SECTOR)
            if terminated:
                # The UDF volume recognition sequence follows the
                # terminator: a UDF bridge would keep the old files.
                if vd[1:5] in (b'NSR0', b'BEA0'):
                    raise NoRoom('the ISO has a UDF bridge')
                if vd[1:5] != b'TEA0':
                    break
                continue
            if vd[1:6] != b'CD001':
                break
            if vd[0] == 255:
                terminated = True
            elif vd[0] in (1, 2):
                descriptors.append(n)
                stack.append(vd[156:190])
        seen = set()
        while stack:
            dir_rec = stack.pop()
            extent = _both_endian32(dir_rec, 2)
            if extent in seen or len(seen) > MAX_DIRS:
                continue
            seen.add(extent)
            for offset, rec in _records(f, extent,
                                        _both_endian32(dir_rec, 10)):
                if _iso_name(rec) in (b'\x00', b'\x01'):
                    continue
                if rec[25] & 0x02:
                    stack.append(rec)
                elif _both_endian32(rec, 2) == old_extent:
                    patches.append(offset)
        if not patches:
            raise NoRoom('isolinux.cfg has no directory record')
        # The primary root is rewritten whole, its records already pointed.
        root_span = range(root_extent * SECTOR,
                          root_extent * SECTOR + root_length)
        patches = [o for o in patches if o not in root_span]
        # Now write: data first, then the metadata that points at it.
        f.seek(cfg_sector * SECTOR)
        f.write(cfg.ljust((script_sector - cfg_sector) * SECTOR, b'\x00'))
        f.write(script.ljust((end - script_sector) * SECTOR, b'\x00'))
        f.seek(root_extent * SECTOR)
        f.write(bytes(laid.ljust(root_length, b'\x00')))
        for offset in patches:  # Joliet's, and any outside the root
            f.seek(offset + 2)
            f.write(_both32(cfg_sector) + _both32(len(cfg)))
        for n in descriptors:
            f.seek(n * SECTOR + 80)
            f.write(_both32(end))
        f.seek(layout.catalog_sector * SECTOR + 64)
        f.write(b'\x00' * (SECTOR - 64))
        f.seek(0)
        f.write(b'\x00' * (16 * SECTOR))
        f.truncate(end * SECTOR)
        f.flush()
        os.fsync(f.fileno())


def _write_pycdlib(pycdlib, source, layout, cfg, script, output):
    iso = pycdlib.PyCdlib()
    iso.open(source)
    try:
        rr = iso.has_rock_ridge()
        joliet = iso.has_joliet()

        def names(iso_path):
            bare = iso_path.split(';', 1)[0].rstrip('.').lower()
            extra = {}
            if rr:
                extra['rr_name'] = os.path.basename(bare)
            if joliet:
                extra['joliet_path'] = bare
            return extra

        cfg_iso_path = layout.files[layout.config][0]
        if getattr(iso, 'isohybrid_mbr', None) is not None:
            iso.rm_isohybrid()
        iso.rm_eltorito()  # both entries; BIOS comes back below
        if SCRIPT_NAME in (os.path.basename(k) for k in layout.files):
            iso.rm_file(SCRIPT_ISO_PATH, **({'rr_name': SCRIPT_NAME}
                                            if rr else {}))
        iso.rm_file(cfg_iso_path, **({'rr_name': names(cfg_iso_path)[
            'rr_name']} if rr else {}))
        if joliet:
            try:
                iso.rm_file(joliet_path=names(cfg_iso_path)['joliet_path'])
            except pycdlib.pycdlibexception.PyCdlibException:
                pass  # pycdlib removed the Joliet link with the file
        for iso_path, data in ((cfg_iso_path, cfg),
                               (SCRIPT_ISO_PATH, script)):
            iso.add_fp(io.BytesIO(data), len(data), iso_path,
                       **names(iso_path))
        catalog = {'bootcatfile': '/NIPXEBT.CAT;1'}
        if rr:
            catalog['rr_bootcatname'] = 'nipxebt.cat'
        if joliet:
            catalog['joliet_bootcatfile'] = '/nipxebt.cat'
        iso.add_eltorito(layout.files[layout.bios_image][0],
                         boot_load_size=4, boot_info_table=True, **catalog)
        with open(output, 'wb') as out:
            iso.write_fp(out)
            out.flush()
            os.fsync(out.fileno())
    finally:
        iso.close()


def _write_xorriso(xorriso, source, layout, cfg, script, output):
    work = tempfile.mkdtemp(prefix='nova-ipxe-')
    try:
        files = []
        for name, data in (('isolinux.cfg', cfg), (SCRIPT_NAME, script)):
            files.append(os.path.join(work, name))
            with open(files[-1], 'wb') as f:
                f.write(data)
        cmd = [xorriso, '-no_rc', '-report_about', 'SORRY',
               '-indev', source, '-outdev', output,
               '-boot_image', 'any', 'discard',
               '-map', files[0], layout.config,
               '-map', files[1], '/' + SCRIPT_NAME,
               '-boot_image', 'isolinux', 'bin_path=' + layout.bios_image,
               '-boot_image', 'any', 'cat_path=/nipxebt.cat',
               '-commit']
        proc = subprocess.run(cmd, stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT,
                              timeout=XORRISO_TIMEOUT, cwd=work)
        if proc.returncode != 0:
            raise RewriteFailed('xorriso failed (%d): %s' % (
                proc.returncode, proc.stdout.decode('utf-8', 'replace')
                .strip().splitlines()[-1:]))
        with open(output, 'rb+') as f:
            os.fsync(f.fileno())
    finally:
        shutil.rmtree(work, ignore_errors=True)


def rewrite(path, script, tools=None):
    """Rewrite the ISO at ``path`` around ``script``; atomic."""
    tools = tools if tools is not None else available_tools()
    fd = os.open(path, os.O_RDONLY | getattr(os, 'O_NOFOLLOW', 0))
    with os.fdopen(fd, 'rb') as f:
        size = os.fstat(f.fileno()).st_size
        if size > MAX_ISO:
            raise InvalidIso('the ISO is larger than %d bytes' % MAX_ISO)
        try:
            layout = IsoLayout(f, size)
        except (IndexError, ValueError) as e:
            raise InvalidIso('unreadable ISO 9660 metadata (%s)' % e)
    cfg = isolinux_cfg(layout.kernel_ref).encode('ascii')
    script = script.encode('ascii')
    directory = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(dir=directory, suffix='.nova-ipxe.tmp',
                               prefix='.' + os.path.basename(path) + '.')
    os.close(fd)
    used = no_room = None
    try:
        if tools.get('stdlib'):
            try:
                _write_in_place(path, layout, cfg, script, tmp)
                used = 'stdlib'
            except NoRoom as e:
                no_room = str(e)
        if used is None and tools.get('pycdlib'):
            try:
                _write_pycdlib(_pycdlib(), path, layout, cfg, script, tmp)
            except Exception as e:
                raise RewriteFailed('pycdlib could not rewrite the ISO '
                                    '(%s: %s)' % (type(e).__name__, e))
            used = 'pycdlib'
        elif used is None and tools.get('xorriso'):
            os.unlink(tmp)  # xorriso refuses to overwrite a non-ISO
            _write_xorriso(tools['xorriso'], path, layout, cfg, script, tmp)
            used = 'xorriso'
        elif used is None:
            raise CommandNotFound(
                '%sneither pycdlib nor xorriso is installed in dom0: cannot '
                'rewrite the ISO' % ('%s, and ' % no_room if tools.get(
                    'stdlib') else ''))
        os.chmod(tmp, os.stat(path).st_mode & 0o777)
        os.replace(tmp, path)
        tmp = None
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    finally:
        if tmp is not None and os.path.lexists(tmp):
            os.unlink(tmp)
    return used


# -- the calls ----------------------------------------------------------

def version(session, args):
    tools = available_tools()
    return json.dumps({'version': PLUGIN_VERSION,
                       'calls': ['version', 'inject'],
                       'tools': {'stdlib': bool(tools['stdlib']),
                                 'pycdlib': bool(tools['pycdlib']),
                                 'xorriso': bool(tools['xorriso'])}})


def inject(session, args):
    """The 2013 call: rewrite the ISO in the SR with a network script."""
    if not isinstance(args, dict):
        raise InvalidArgument('arguments must be a map')
    named = legacy_arguments(*decode_params(args.get('params')))
    settings = network_settings(named)
    path = iso_path(named['sr_path'], named['vdi_uuid'])
    # named['mkisofs_cmd'] is deliberately never used: see the docstring.
    rewrite(path, render_script(settings))
    # os-xenapi's caller unpickles the answer: None, as protocol 0 text.
    return pickle.dumps(None, protocol=0).decode('ascii')


if __name__ == '__main__':
    import XenAPIPlugin  # provided by xapi in dom0
    XenAPIPlugin.dispatch({'version': version, 'inject': inject})
