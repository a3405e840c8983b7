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

"""Read the boot files of a stock iPXE ISO and build a new one around a
script, in-process with pycdlib (no mount, no root, no external tool).

Files are found the way the firmware and ISOLINUX find them: the El Torito
catalog names the BIOS and UEFI boot images, ``isolinux.cfg`` (see
:mod:`nova_ipxe.isolinux`) names the iPXE kernel, and the EFI FAT image
holds the loader.

The source ISO is untrusted (a tenant uploads it).  Before pycdlib sees
it, :func:`check_structure` bounds what pycdlib would parse: descriptors,
directory entries and depth, Rock Ridge continuation areas, the boot
catalog, an isohybrid GPT.  Files may share data only as exact hard links
inside the image, and a build writes each source extent once, so its
output is bounded by the source plus the script (a writer enforces it).
Every name and reference read from the ISO is validated before use, and
escaped before it is shown.

A parsed :class:`BaseIso` is immutable and can build many per-instance
ISOs.  Each ISO is rebuilt from the source's files rather than by patching
the source, so nothing of the source's layout can leak a stale script; the
rebuild is done once per size class of script, with a placeholder script
(a :class:`_Template`), and a build patches its script into that: the
result is byte for byte what a full rebuild with that script writes (but
for its time stamps, which are the template's), and a template whose
every placeholder byte and size is not accounted for is not used (the
build then rebuilds in full).
"""

import array
import collections
import contextlib
import dataclasses
import hashlib
import io
import os
import posixpath
import random
import re
import secrets
import stat
import sys
import tempfile
import threading
import uuid
import zlib

from oslo_log import log as logging
import pycdlib
from pycdlib import pycdlibexception

from nova_ipxe import capabilities as ipxe_caps
from nova_ipxe import esp
from nova_ipxe import exception
from nova_ipxe import isolinux

LOG = logging.getLogger(__name__)

SECTOR = 2048
EFI_PLATFORM_ID = 0xEF
AUTOEXEC = 'autoexec.ipxe'
# The script as ISOLINUX's INITRD: one name that is the same in ISO9660
# (upper case, 8.3) and Rock Ridge, so it resolves with or without RR.
SCRIPT_ISO_PATH = '/NIPXE.IPX;1'
SCRIPT_NAME = 'nipxe.ipx'
EFI_LOADER = '/EFI/BOOT/BOOTX64.EFI'
# El Torito counts a boot image in 512-byte sectors, 16 bits: xorriso
# documents 65535 sectors (32 MiB - 512) as the largest EFI image.
MAX_EFI_IMAGE = 65535 * 512

# Bounds on the source's structure, checked before pycdlib parses it: an
# iPXE ISO has a handful of files in a directory or two.  pycdlib's cost
# grows with the square of a directory's entries (it recomputes every
# offset on each add), so the entry count bounds a build's time too.
MAX_ENTRIES = 256           # directory records per tree, dirs included
MAX_DEPTH = 8               # ISO 9660's own limit
MAX_DIR_BYTES = 64 * 1024   # one directory's records
MAX_PATH_TABLE = 64 * 1024
MAX_DESCRIPTORS = 16        # volume descriptors before the terminator
MAX_NAME = 255
MAX_PATH = 1024
MAX_CATALOG = 4 * SECTOR    # El Torito entries: a few in a real ISO
MAX_SUSP_AREA = 8 * SECTOR  # one Rock Ridge continuation area
MAX_SUSP_BYTES = 256 * 1024  # all continuation areas of one tree
MAX_GPT_ENTRIES = 256       # an isohybrid GPT has 128
# Metadata a rebuild may add over the source's own (directory records,
# boot catalog, isohybrid padding to a whole MiB).
OUTPUT_SLACK = 2 * 1024 * 1024


@dataclasses.dataclass(frozen=True)
class IsoFile:
    iso_path: str          # ISO9660 path with version, '/IPXE.KRN;1'
    path: str              # the name a user sees: Rock Ridge, else ISO9660
    extent: int
    length: int


@dataclasses.dataclass(frozen=True)
class BiosBoot:
    image: IsoFile         # isolinux.bin
    config: IsoFile        # isolinux.cfg
    kernel: IsoFile        # the iPXE kernel (ipxe.krn / ipxe.lkrn)
    kernel_ref: str = None  # how our isolinux.cfg names the kernel

    def config_text(self):
        """The isolinux.cfg every build writes."""
        return isolinux.render(self.kernel_ref, '/' + SCRIPT_NAME)


@dataclasses.dataclass(frozen=True)
class EfiBoot:
    image: IsoFile         # the FAT image (efi.img / esp.img)
    loader: str = None     # path of the x86_64 loader inside the image
    autoexec: bool = False  # the loader runs autoexec.ipxe
    reason: str = None     # why the script cannot be injected, if not
    cluster_size: int = None  # of the FAT image, when it takes the script


@dataclasses.dataclass(frozen=True)
class Layout:
    """What a source ISO holds, as read once; shared by every build."""

    volume_id: str
    rock_ridge: str        # '1.09' or None
    joliet: bool
    interchange_level: int
    isohybrid: bool
    dirs: tuple            # ((iso_path, shown path), ...), parents first
    files: tuple           # (IsoFile, ...)
    catalog_extent: int
    bios: BiosBoot
    efi: EfiBoot


@dataclasses.dataclass(frozen=True)
class BuildResult:
    path: str
    size: int
    bios: bool
    uefi: bool


def _strip_version(iso_path):
    return iso_path.split(';', 1)[0].rstrip('.')


def _sane_name(name, source):
    if (not name or name in ('.', '..') or '/' in name or '\0' in name
            or len(name) > MAX_NAME):
        raise exception.InvalidIso(source=source,
                                   reason='bad file name %r' % (name,))
    return name


def shown(text):
    """``text`` safe for a terminal.

    Controls and format characters (escape sequences, bidi overrides) are
    escaped, as in error messages.
    """
    text = exception.one_line(text, limit=4 * MAX_PATH)
    if text.isprintable():
        return text
    return ''.join(c if c.isprintable() or c == ' ' else
                   '\\u%04x' % ord(c) if ord(c) < 0x10000 else
                   '\\U%08x' % ord(c) for c in text)


# iPXE's real-mode prefix (arch/x86/prefix/libprefix.S) carries this
# message uncompressed; the rest of an .lkrn is compressed.
IPXE_PREFIX_MARK = b'Installation failed - cannot continue'


def is_ipxe_kernel(data):
    """A Linux bzImage (what ISOLINUX boots) with iPXE's prefix."""
    head = bytes(data[:64 * 1024])
    return (len(head) > 0x206 and head[0x202:0x206] == b'HdrS'
            and IPXE_PREFIX_MARK in head)


def efi_loader_reads_autoexec(data):
    """Whether an EFI iPXE looks for ``autoexec.ipxe`` (2021 and later).

    The loader carries the file name, as ASCII or UTF-16; older builds
    (Debian bookworm's) carry neither and would ignore the file.
    """
    return (b'autoexec.ipxe' in data
            or 'autoexec.ipxe'.encode('utf-16-le') in data)


def _boot_info_table_csum(self, data_fp, data_len):
    """pycdlib's El Torito boot info table checksum, summed in C.

    pycdlib adds the boot file's 32-bit words one by one in Python
    (about 1.5 ms for isolinux.bin, twice per cold build); this computes
    the same sum over the same bytes with array.array.
    """
    block = self.logical_block_size
    size = -(-data_len // block) * block  # whole sectors, zero padded
    data = data_fp.read(size).ljust(size, b'\0')
    words = array.array('I', data[64:])
    if sys.byteorder == 'big':
        words.byteswap()
    return sum(words) & 0xffffffff


class _Cdlib(pycdlib.PyCdlib):
    """The pycdlib our parses and builds use: only the checksum differs.

    A subclass rather than a patch of pycdlib.PyCdlib, so any other user
    of pycdlib in the process (nova-compute) keeps pycdlib as shipped.
    """

    if (hasattr(pycdlib.PyCdlib, '_calculate_eltorito_boot_info_table_csum')
            and array.array('I').itemsize == 4):
        _calculate_eltorito_boot_info_table_csum = _boot_info_table_csum


class _BoundedWriter(io.RawIOBase):
    """A write-only file that refuses to grow past ``limit`` bytes.

    The last guard on the output size: whatever pycdlib plans, a build
    never writes more than the source plus the script allow.
    """

    mode = 'wb'

    def __init__(self, fp, limit, source):
        super().__init__()
        self._source = source
        self._fp = fp
        self._limit = limit
        self.size = 0

    def writable(self):
        return True

    def seekable(self):
        return True

    def write(self, data):
        end = self._fp.tell() + len(data)
        if end > self._limit:
            raise exception.InvalidIso(
                source=self._source, reason='its rebuild would be larger '
                'than the source plus the script (%d bytes)' % self._limit)
        self.size = max(self.size, end)
        return self._fp.write(data)

    def seek(self, offset, whence=io.SEEK_SET):
        return self._fp.seek(offset, whence)

    def tell(self):
        return self._fp.tell()


def _u16(data, at):
    return int.from_bytes(data[at:at + 2], 'little')


def _u32(data, at):
    return int.from_bytes(data[at:at + 4], 'little')


def check_structure(data, source):
    """Bound the source's ISO 9660 structure before pycdlib reads it.

    pycdlib parses every directory record, path table entry and volume
    descriptor it is pointed at, with no limit; a hostile image of a few
    MiB can hold a million records or a directory loop.  This walks the
    same descriptors and trees with bounds, so pycdlib only ever sees a
    small, acyclic tree whose extents lie inside the volume.
    """
    def fail(reason, *args):
        raise exception.InvalidIso(source=source, reason=reason % args)

    total = len(data)
    pvd = data[16 * SECTOR:17 * SECTOR]
    if len(pvd) < SECTOR or bytes(pvd[1:6]) != b'CD001' or pvd[0] != 1:
        fail('not a readable ISO 9660 image (no primary volume descriptor)')
    if _u16(pvd, 128) != SECTOR:
        fail('its logical block size is %d, not %d', _u16(pvd, 128), SECTOR)
    volume = _u32(pvd, 80) * SECTOR
    if volume > total:
        fail('it is truncated: the volume is %d bytes, the image only %d',
             volume, total)
    trees = []
    for index in range(16, 16 + MAX_DESCRIPTORS):
        vd = data[index * SECTOR:(index + 1) * SECTOR]
        if len(vd) < SECTOR or bytes(vd[1:6]) != b'CD001':
            fail('volume descriptor %d is not ISO 9660', index)
        kind = vd[0]
        if kind == 255:
            break
        if kind == 0 and bytes(vd[7:30]) == b'EL TORITO SPECIFICATION':
            _check_catalog(data, _u32(vd, 71), min(volume, total), fail)
        if kind in (1, 2):
            if _u32(vd, 132) > MAX_PATH_TABLE:
                fail('its path table is %d bytes, more than %d',
                     _u32(vd, 132), MAX_PATH_TABLE)
            if _u16(vd, 128) != SECTOR:
                fail('volume descriptor %d has %d-byte blocks', index,
                     _u16(vd, 128))
            trees.append(bytes(vd[156:190]))
    else:
        fail('no volume descriptor terminator in the first %d',
             MAX_DESCRIPTORS)
    # What follows the terminator: pycdlib parses a UDF bridge if one is
    # announced, a whole second file system no iPXE ISO carries.
    for index in range(index + 1, index + 1 + MAX_DESCRIPTORS):
        tag = bytes(data[index * SECTOR + 1:index * SECTOR + 6])
        if tag in (b'NSR02', b'NSR03'):
            fail('it carries a UDF file system, which no iPXE ISO has')
        if tag not in (b'BEA01', b'TEA01', b'BOOT2', b'CD001'):
            break
    for root in trees:
        _check_tree(data, root, min(volume, total), fail)
    _check_gpt(data, fail)


def _check_gpt(data, fail):
    """An isohybrid GPT's partition arrays are of a sane size.

    pycdlib reads the backup array as large as its header says.
    """
    if bytes(data[512:520]) != b'EFI PART':
        return
    backup = int.from_bytes(data[512 + 32:512 + 40], 'little') * 512
    for header in (512, backup):
        if bytes(data[header:header + 8]) != b'EFI PART':
            continue
        if _u32(data, header + 80) > MAX_GPT_ENTRIES:
            fail('its GPT claims %d partitions', _u32(data, header + 80))


def _check_catalog(data, extent, volume, fail):
    """The boot catalog ends (as pycdlib finds its end) within bounds.

    pycdlib reads a catalog sector by sector until an empty entry or the
    last entry of the final section: a catalog of a million entries would
    be parsed whole.
    """
    start = extent * SECTOR
    catalog = data[start:min(start + MAX_CATALOG, volume)]
    at = 64     # the validation and initial entries
    while at + 32 <= len(catalog):
        slot = catalog[at:at + 32]
        if not any(slot):
            return
        if slot[0] == 0x91:
            if at + 32 + _u16(slot, 2) * 32 <= len(catalog):
                return
            break
        at += 32
    fail('its El Torito boot catalog does not end within %d bytes',
         MAX_CATALOG)


def _check_susp(data, area, volume, budget, fail):
    """Bound the Rock Ridge continuation areas reachable from ``area``.

    pycdlib reads every CE area it is pointed at (up to the whole image
    each); ``budget`` is a one-item list of bytes still allowed.  Any
    ``CE`` signature counts, wherever it sits, so no skip count or entry
    length can hide one.
    """
    areas = [bytes(area)]
    hops = 0
    while areas:
        area = areas.pop()
        at = area.find(b'CE\x1c')
        while 0 <= at <= len(area) - 28:
            block, offset, length = (_u32(area, at + 4), _u32(area, at + 12),
                                     _u32(area, at + 20))
            if length > MAX_SUSP_AREA or offset > MAX_SUSP_AREA:
                fail('a Rock Ridge continuation area is %d bytes, more than '
                     '%d', length, MAX_SUSP_AREA)
            begin = block * SECTOR + offset
            if begin + length > volume:
                fail('a Rock Ridge continuation area lies outside the volume')
            budget[0] -= length
            hops += 1
            if budget[0] < 0 or hops > 64:
                fail('its Rock Ridge continuation areas add up to more than '
                     '%d bytes', MAX_SUSP_BYTES)
            areas.append(bytes(data[begin:begin + length]))
            at = area.find(b'CE\x1c', at + 1)


def _check_tree(data, root, volume, fail):
    """Walk one directory tree (ISO 9660 or Joliet) within the bounds."""
    pending = [(_u32(root, 2), _u32(root, 10), 1)]
    seen = set()
    entries = 0
    susp_budget = [MAX_SUSP_BYTES]
    while pending:
        extent, length, depth = pending.pop()
        if depth > MAX_DEPTH:
            fail('its directories nest deeper than %d levels', MAX_DEPTH)
        if extent in seen:
            fail('its directory at sector %d appears twice (a loop)', extent)
        seen.add(extent)
        if length > MAX_DIR_BYTES:
            fail('a directory is %d bytes, more than %d', length,
                 MAX_DIR_BYTES)
        start = extent * SECTOR
        if start + length > volume:
            fail('a directory at sector %d lies outside the volume', extent)
        block = data[start:start + length]
        pos = 0
        while pos < length:
            size = block[pos]
            if size == 0:   # records never cross a sector: skip the rest
                pos = (pos // SECTOR + 1) * SECTOR
                continue
            name_len = block[pos + 32] if pos + 33 <= length else 0
            if size < 34 or pos + size > length or 33 + name_len > size:
                fail('a directory record at sector %d is malformed',
                     extent + pos // SECTOR)
            record = block[pos:pos + size]
            pos += size
            _check_susp(data, record[33 + name_len:], volume, susp_budget,
                        fail)
            name = bytes(record[33:33 + name_len])
            if name in (b'\0', b'\1'):
                continue
            entries += 1
            if entries > MAX_ENTRIES:
                fail('it has more than %d files and directories (an iPXE '
                     'ISO has a handful)', MAX_ENTRIES)
            child, child_len = _u32(record, 2), _u32(record, 10)
            if record[25] & 0x02:
                pending.append((child, child_len, depth + 1))
            elif child_len and child * SECTOR + child_len > volume:
                fail('file %s lies outside the volume (truncated?)',
                     shown(name.decode('latin-1')))


class _Once:
    """True the first time it is asked, thread-safely."""

    def __init__(self):
        self._lock = threading.Lock()
        self._done = False

    def __call__(self):
        with self._lock:
            first, self._done = not self._done, True
        return first


class _ViewReader(io.RawIOBase):
    """A read-only file over a buffer, without copying it.

    io.BytesIO copies a memoryview up front; pycdlib reads file data in
    32 KiB chunks, so serving chunks from the view keeps every build's
    large allocations down to the one EFI image it edits.
    """

    def __init__(self, data):
        super().__init__()
        self._view = memoryview(data)
        self._pos = 0

    def readable(self):
        return True

    def seekable(self):
        return True

    def read(self, size=-1):
        end = len(self._view) if size is None or size < 0 else min(
            len(self._view), self._pos + size)
        chunk = bytes(self._view[self._pos:end])
        self._pos = max(self._pos, end)
        return chunk

    def seek(self, offset, whence=io.SEEK_SET):
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos,
                io.SEEK_END: len(self._view)}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def tell(self):
        return self._pos

    def close(self):
        self._view.release()
        super().close()


# Capabilities by the binary's SHA-256: tenants upload the same stock ISO
# as many images, and reading a binary (LZMA, table scans) takes tens of
# milliseconds where hashing it takes one.
_CAPS_CACHE = collections.OrderedDict()
_CAPS_CACHE_SIZE = 16
_CAPS_LOCK = threading.Lock()


def _binary_capabilities(data, name):
    """capabilities.read(data, name), once per distinct binary."""
    key = hashlib.sha256(data).digest()
    with _CAPS_LOCK:
        caps = _CAPS_CACHE.get(key)
        if caps is not None:
            _CAPS_CACHE.move_to_end(key)
    if caps is None:
        caps = ipxe_caps.read(data, name)
        with _CAPS_LOCK:
            _CAPS_CACHE[key] = caps
            while len(_CAPS_CACHE) > _CAPS_CACHE_SIZE:
                _CAPS_CACHE.popitem(last=False)
    # The same bytes may have another name in another ISO.
    return caps if caps.binary == name else dataclasses.replace(
        caps, binary=name)


def _caps_info(caps):
    """Capabilities for describe(), with the ISO's names escaped."""
    if caps is None:
        return None
    info = caps.describe()
    info['binary'] = shown(info['binary'])
    if info.get('reason'):
        info['reason'] = shown(info['reason'])
    return info


class BaseIso:
    """A parsed source iPXE ISO, held in memory, reusable across builds.

    Immutable once parsed: the bytes are read-only and the layout is a
    frozen :class:`Layout`, so concurrent builds share it safely.
    """

    __slots__ = ('source', 'data', 'layout', '_uefi_dropped_once',
                 '_capabilities', '_caps_lock', '_templates',
                 '_template_lock')

    def __init__(self, data, source='ISO', max_size=None):
        if max_size is not None and len(data) > max_size:
            raise exception.ImageTooLarge(source=source, size=len(data),
                                          limit=max_size)
        put = super().__setattr__
        put('source', source)
        put('data', memoryview(data).toreadonly())
        put('_uefi_dropped_once', _Once())
        put('_capabilities', {})  # read on first use, see capabilities()
        put('_caps_lock', threading.Lock())
        put('_templates', collections.OrderedDict())  # see _template()
        put('_template_lock', threading.Lock())
        check_structure(self.data, source)
        cdlib = _Cdlib()
        source_fp = _ViewReader(self.data)
        try:
            cdlib.open_fp(source_fp)
        except Exception as e:
            # pycdlib is not hardened against hostile images: anything it
            # raises while parsing means the bytes are not a usable ISO.
            raise exception.InvalidIso(
                source=source, reason='not a readable ISO 9660 image '
                '(%s: %s)' % (type(e).__name__, e))
        try:
            put('layout', _LayoutReader(self, cdlib).read())
        except exception.NovaIpxeError:
            raise
        except Exception as e:
            # As above: hostile metadata can trip pycdlib anywhere.
            LOG.debug('Reading %s failed', source, exc_info=True)
            raise exception.InvalidIso(source=source, reason='%s: %s' % (
                type(e).__name__, e))
        finally:
            cdlib.close()
            source_fp.close()

    def __setattr__(self, name, value):
        raise AttributeError('a parsed BaseIso is immutable')

    def named(self, source):
        """This parse under another name, sharing everything else.

        The same bytes uploaded as two images are parsed once; messages
        still name the image being built.
        """
        if source == self.source:
            return self
        twin = object.__new__(BaseIso)
        for slot in BaseIso.__slots__:
            object.__setattr__(twin, slot, getattr(self, slot))
        object.__setattr__(twin, 'source', source)
        return twin

    @property
    def nbytes(self):
        """Memory this parse holds: the source bytes and its templates."""
        with self._template_lock:
            templates = list(self._templates.values())
        return len(self.data) + sum(len(t.data) for t in templates if t)

    def __delattr__(self, name):
        raise AttributeError('a parsed BaseIso is immutable')

    @classmethod
    def from_path(cls, path, max_size=None, name=None):
        """Read (:func:`read_iso_file`) and parse ``path``."""
        name = name or path
        return cls(read_iso_file(path, max_size, name), source=name,
                   max_size=max_size)

    # -- the parsed layout ----------------------------------------------

    rock_ridge = property(lambda self: self.layout.rock_ridge)
    joliet = property(lambda self: self.layout.joliet)
    interchange_level = property(lambda self: self.layout.interchange_level)
    volume_id = property(lambda self: self.layout.volume_id)
    isohybrid = property(lambda self: self.layout.isohybrid)
    dirs = property(lambda self: self.layout.dirs)
    files = property(lambda self: self.layout.files)
    bios = property(lambda self: self.layout.bios)
    efi = property(lambda self: self.layout.efi)

    def lookup(self, path, cwd='/'):
        """Find a file by a user-visible path, as ISOLINUX would."""
        return _lookup(self.layout.files, path, cwd)

    def file_bytes(self, f):
        start = f.extent * SECTOR
        return self.data[start:start + f.length]

    def _fail(self, reason):
        raise exception.InvalidIso(source=self.source, reason=reason)

    def capabilities(self):
        """{'bios': Capabilities or None, 'uefi': ...}, read once."""
        caps = self._capabilities.get('read')
        if caps is not None:
            return dict(caps)
        with self._caps_lock:   # one reading, however many builds wait
            caps = self._capabilities.get('read')
            if caps is None:
                caps = self._read_capabilities()
                self._capabilities['read'] = caps
        return dict(caps)

    def _read_capabilities(self):
        caps = {'bios': None, 'uefi': None}
        if self.bios:
            caps['bios'] = _binary_capabilities(
                self.file_bytes(self.bios.kernel), self.bios.kernel.path)
        if self.efi and self.efi.loader:
            name = '%s:%s' % (self.efi.image.path, self.efi.loader)
            try:
                loader = esp.FatImage(self.file_bytes(self.efi.image),
                                      self.efi.image.path,
                                      writable=False).read_file(
                                          self.efi.loader)
                caps['uefi'] = _binary_capabilities(loader, name)
            except exception.EfiImageError as e:
                caps['uefi'] = ipxe_caps.unknown(name, e.message)
        return caps

    def describe(self):
        """What was found, for ``nova-ipxe inspect``.

        Names are escaped: they come from the ISO and may carry escapes.
        """
        info = {
            'source': shown(self.source),
            'size': len(self.data),
            'volume_id': self.volume_id,
            'rock_ridge': bool(self.rock_ridge),
            'joliet': self.joliet,
            'isohybrid': self.isohybrid,
            'files': [shown(f.path) for f in self.files],
            'bios': None,
            'uefi': None,
        }
        if self.bios:
            info['bios'] = {'boot_image': shown(self.bios.image.path),
                            'config': shown(self.bios.config.path),
                            'kernel': shown(self.bios.kernel.path),
                            'kernel_size': self.bios.kernel.length,
                            'script_injection': True}
            info['bios']['ipxe'] = _caps_info(self.capabilities()['bios'])
        if self.efi:
            info['uefi'] = {'boot_image': shown(self.efi.image.path),
                            'loader': self.efi.loader,
                            'script_injection': self.efi.autoexec,
                            'reason': self.efi.reason and shown(
                                self.efi.reason)}
            info['uefi']['ipxe'] = _caps_info(self.capabilities()['uefi'])
        return info

    # -- building ------------------------------------------------------

    def _plan_uefi(self, uefi):
        """Decide whether the new ISO keeps a UEFI entry (with script)."""
        if uefi == 'off':
            return False
        if self.efi is None:
            if uefi == 'require':
                raise exception.UefiUnsupported(
                    source=self.source, reason='it has no UEFI boot entry')
            return False
        if not self.efi.autoexec:
            if uefi == 'require':
                raise exception.UefiUnsupported(source=self.source,
                                                reason=self.efi.reason)
            if self._uefi_dropped_once():
                LOG.warning('%s: dropping the UEFI boot entry (%s); its '
                            'ISOs will boot BIOS only', shown(self.source),
                            shown(self.efi.reason))
            return False
        return True

    def _efi_image_with(self, script):
        fat = esp.FatImage(self.file_bytes(self.efi.image),
                           self.efi.image.path)
        self._put_script(fat, script)
        return fat.view()

    def _put_script(self, fat, script):
        """Write ``script`` as the EFI image's autoexec.ipxe."""
        fat.write_file('/', AUTOEXEC, script)
        # A newer iPXE prefers a script next to the loader: replace one
        # there too, so no stale script can win.
        loader_dir = posixpath.dirname(self.efi.loader)
        if fat.read_file(posixpath.join(loader_dir, AUTOEXEC)) is not None:
            fat.write_file(loader_dir, AUTOEXEC, script)

    def output_limit(self, script):
        """The most bytes a build from this base may write."""
        return len(self.data) + len(script) + OUTPUT_SLACK

    @contextlib.contextmanager
    def assembled(self, script, uefi='auto', efi_as_is=False):
        """Yield (pycdlib object of the new ISO, BuildResult).

        On exit the object and every buffer handed to it are closed, so
        the file data is freed at once instead of waiting for the cyclic
        garbage collector (pycdlib's records reference each other); a
        long-running nova-compute keeps a flat memory profile this way.
        """
        readers = []
        new = None
        try:
            try:
                new, result = self._assemble(script, uefi, readers,
                                             efi_as_is)
                yield new, result
            except (exception.NovaIpxeError, OSError):
                raise   # OSError: the caller's output (IsoBuildFailed)
            except Exception as e:
                # pycdlib tripping over what the source holds (it is not
                # hardened against hostile names or sizes): still the
                # source's fault, and always a typed error.
                LOG.debug('Rebuilding %s failed', self.source, exc_info=True)
                raise exception.InvalidIso(
                    source=self.source, reason='it cannot be rebuilt (%s: '
                    '%s)' % (type(e).__name__, e))
        finally:
            if new is not None:
                new.close()
            for reader in readers:
                reader.close()

    def _contents(self, script, with_uefi, efi_as_is=False):
        """[(IsoFile or None, data key, data)] of the new ISO's files.

        The key names where the bytes come from: files with the same key
        (hard links in the source, every copy of the script) are written
        once and linked, so the output holds each source extent at most
        once, plus the script and the configuration.
        """
        replaced = {}
        if self.bios:
            replaced[self.bios.config.iso_path] = (
                'cfg', self.bios.config_text().encode('ascii'))
        if with_uefi:
            # As is: the caller puts the script in (templates do it in
            # the output, saving a copy of the image).
            replaced[self.efi.image.iso_path] = (
                'efi', self.file_bytes(self.efi.image) if efi_as_is
                else self._efi_image_with(script))
        skip = set()
        if self.efi and not with_uefi:
            skip.add(self.efi.image.iso_path)
        contents = []
        for f in self.files:
            if (f.extent == self.layout.catalog_extent
                    or f.iso_path in skip or _is_script_name(f)):
                continue  # the catalog is remade; our script replaces
            key, data = replaced.get(f.iso_path, (None, None))
            if key is None and posixpath.basename(
                    f.path).lower() == AUTOEXEC:
                key, data = 'script', script  # no stale stock script
            if key is None:
                key, data = ('extent', f.extent, f.length), None
            contents.append((f, key, data))
        if self.bios:
            contents.append((None, 'script', script))
        return contents

    def _assemble(self, script, uefi, readers, efi_as_is=False):
        def reader(data):
            readers.append(_ViewReader(data))
            return readers[-1]

        if isinstance(script, str):
            script = script.encode('ascii')
        with_uefi = self._plan_uefi(uefi)
        if self.bios is None and not with_uefi:
            raise exception.UefiUnsupported(
                source=self.source,
                reason='it has no BIOS entry and UEFI is %s' % (
                    'off' if uefi == 'off' else 'unusable'))
        contents = self._contents(script, with_uefi, efi_as_is)
        first = {}
        planned = 0
        for f, key, data in contents:
            if key not in first:
                first[key] = f
                length = len(data) if data is not None else f.length
                planned += -(-length // SECTOR) * SECTOR
        if planned > self.output_limit(script) - OUTPUT_SLACK:
            self._fail('its files would make a %d-byte ISO, more than the '
                       'source plus the script' % planned)

        new = _Cdlib()
        new.new(interchange_level=self.interchange_level,
                vol_ident=self.volume_id[:32],
                rock_ridge=self.rock_ridge or None,
                joliet=3 if self.joliet else None)
        for iso_path, path in self.dirs:
            new.add_directory(iso_path, **self._names(path))
        written = {}
        for f, key, data in contents:
            iso_path, path = ((f.iso_path, f.path) if f else
                              (SCRIPT_ISO_PATH, '/' + SCRIPT_NAME))
            names = self._names(path)
            if key in written:
                self._link(new, written[key], iso_path, names)
                continue
            if data is None:
                data = self.file_bytes(f)
            new.add_fp(reader(data), len(data), iso_path, **names)
            written[key] = iso_path
        catalog = {'bootcatfile': '/BOOT.CAT;1'}
        if self.rock_ridge:
            catalog['rr_bootcatname'] = 'boot.cat'
        if self.joliet:
            catalog['joliet_bootcatfile'] = '/boot.cat'
        if self.bios:
            new.add_eltorito(self.bios.image.iso_path, boot_load_size=4,
                             boot_info_table=True, **catalog)
        if with_uefi:
            new.add_eltorito(self.efi.image.iso_path, efi=True, **catalog)
        if self.bios and self.isohybrid:
            try:
                new.add_isohybrid(efi=with_uefi)
            except pycdlibexception.PyCdlibException as e:
                LOG.debug('%s: no isohybrid MBR: %s', self.source, e)
        return new, BuildResult(path=None, size=None, bios=bool(self.bios),
                                uefi=with_uefi)

    @staticmethod
    def _link(new, target, iso_path, names):
        """Another name for the data at ``target``, not another copy."""
        new.add_hard_link(iso_old_path=target, iso_new_path=iso_path,
                          rr_name=names.get('rr_name'))
        if 'joliet_path' in names:
            new.add_hard_link(iso_old_path=target,
                              joliet_new_path=names['joliet_path'])

    def _names(self, path):
        names = {}
        if self.rock_ridge:
            names['rr_name'] = posixpath.basename(path)
        # Joliet allows 64 characters a component; longer names stay out
        # of the Joliet tree rather than being cut into collisions.
        if self.joliet and all(len(c) <= 64 for c in path.split('/')):
            names['joliet_path'] = path
        return names

    def _write(self, new, fp, script):
        bounded = _BoundedWriter(fp, self.output_limit(script),
                                 self.source)
        new.write_fp(bounded)
        return bounded.size

    def build(self, script, output, uefi='auto'):
        """Write the per-instance ISO to ``output`` atomically."""
        if isinstance(script, str):
            script = script.encode('ascii')
        template = self._template(script, uefi)
        if template is not None:
            size = self._to_file(output, lambda f: template.write(f, script))
            return dataclasses.replace(template.result, path=output,
                                       size=size)
        with self.assembled(script, uefi) as (new, result):
            size = self._to_file(output, lambda f: self._write(new, f,
                                                               script))
        return dataclasses.replace(result, path=output, size=size)

    @staticmethod
    def _to_file(output, write):
        """Call ``write(file)`` on a temporary file, then rename it."""
        directory = os.path.dirname(os.path.abspath(output))
        tmp = None
        try:
            fd, tmp = tempfile.mkstemp(
                dir=directory, prefix='.%s.' % os.path.basename(output),
                suffix='.tmp')
            with os.fdopen(fd, 'wb') as f:
                write(f)
                f.seek(0, io.SEEK_END)
                size = f.tell()
            os.chmod(tmp, 0o644)
            os.replace(tmp, output)
            tmp = None
        except OSError as e:
            raise exception.IsoBuildFailed(
                path=output, reason=e.strerror or str(e))
        finally:
            if tmp is not None:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
        return size

    def build_bytes(self, script, uefi='auto'):
        """The per-instance ISO in memory (for uploads, e.g. XenAPI)."""
        if isinstance(script, str):
            script = script.encode('ascii')
        template = self._template(script, uefi)
        if template is not None:
            return template.to_bytes(script), template.result
        return self._full_bytes(script, uefi)

    def _full_bytes(self, script, uefi='auto'):
        """build_bytes() the long way, with no template."""
        with self.assembled(script, uefi) as (new, result):
            out = io.BytesIO()
            self._write(new, out, script)
        return out.getvalue(), result

    # -- templates: the layout built once, the script patched in ----------

    def _template(self, script, uefi):
        """The :class:`_Template` ``script`` fits, made on first use.

        None means: build the long way (no usable template for this
        script, or making one failed; the long way then raises whatever
        error the build ends in).
        """
        with_uefi = self._plan_uefi(uefi)
        if self.bios is None and not with_uefi:
            return None
        cs = self.efi.cluster_size if with_uefi else 1
        if not 0 < len(script) <= MAX_TEMPLATE_SCRIPT or not cs:
            return None
        # Scripts of the same sector and cluster counts share a layout.
        key = (with_uefi, -(-len(script) // SECTOR),
               -(-len(script) // cs) if with_uefi else 0)
        with self._template_lock:
            if key in self._templates:
                self._templates.move_to_end(key)
                template = self._templates[key]
            else:
                template = self._make_template(with_uefi, *key[1:])
                self._templates[key] = template
                while len(self._templates) > MAX_TEMPLATES:
                    self._templates.popitem(last=False)
        if template is None or len(template.data) > self.output_limit(
                script):
            return None
        return template

    def _make_template(self, with_uefi, sectors, clusters):
        """A build with a placeholder script of the key's counts, mapped.

        The placeholder is 16-byte blocks of a random nonce and the block
        number: every copy of it in the output is found by its bytes,
        wherever pycdlib and the FAT writer put it, and must be found
        whole.  Anything unexpected: no template (None).
        """
        slot = sectors * SECTOR
        if with_uefi:
            slot = min(slot, clusters * self.efi.cluster_size)
        nonce = secrets.token_bytes(12)
        placeholder = b''.join(nonce + i.to_bytes(4, 'big')
                               for i in range(slot // 16))
        try:
            with self.assembled(placeholder,
                                'require' if with_uefi else 'off',
                                efi_as_is=True) as (new, result):
                out = _MemoryWriter(self.output_limit(placeholder))
                self._write(new, out, placeholder)
            data = out.value()
            efi = None
            if with_uefi:
                # The EFI image went in as is: the script goes in now, in
                # the output (its size, all pycdlib's layout knows of it,
                # is the same).
                at = [extent * SECTOR for _, path, extent, length
                      in _template_records(data)
                      if path == self.efi.image.iso_path
                      and length == self.efi.image.length]
                if len(at) != 1:
                    raise _NoTemplate('no one EFI image record')
                with memoryview(data)[at[0]:at[0] + self.efi.image.length] \
                        as view:
                    self._put_script(esp.FatImage(view, self.efi.image.path,
                                                  writable='in place'),
                                     placeholder)
                efi = (self.efi.image, sorted({
                    '/' + AUTOEXEC, posixpath.join(
                        posixpath.dirname(self.efi.loader), AUTOEXEC)}))
            return _Template.map(data, nonce, slot, result, efi)
        except Exception as e:
            # The long way will raise the build's own error, if any.
            LOG.debug('%s: no build template (%s: %s)', self.source,
                      type(e).__name__, e)
            return None


# Scripts up to this size are patched into a template; larger ones (none
# a real network config renders) are built the long way.
MAX_TEMPLATE_SCRIPT = 64 * 1024
# Templates kept per base: one per script size class in use.
MAX_TEMPLATES = 2
_BLOCK = 16 * 1024  # the granularity of zero runs left as holes
_HOLE = 64 * 1024   # shorter zero runs are written


class _NoTemplate(Exception):
    pass


class _MemoryWriter(io.RawIOBase):
    """A seekable file writing into one bytearray of ``size`` bytes.

    io.BytesIO grows its buffer in small steps, copying it each time: for
    a 9 MiB ISO written 32 KiB at a time that costs more than the build.
    The bytes written (and any gap sought over) are :meth:`value`.
    """

    def __init__(self, size):
        super().__init__()
        self.data = bytearray(size)
        self._pos = 0
        self._end = 0

    def value(self):
        del self.data[self._end:]
        return self.data

    def writable(self):
        return True

    def seekable(self):
        return True

    def write(self, chunk):
        end = self._pos + len(chunk)
        if end > len(self.data):    # the bounded writer above stops it
            self.data.extend(bytes(end - len(self.data)))
        self.data[self._pos:end] = chunk
        self._pos = end
        self._end = max(self._end, end)
        return len(chunk)

    def seek(self, offset, whence=io.SEEK_SET):
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos,
                io.SEEK_END: self._end}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def tell(self):
        return self._pos


class _Template:
    """A full build's output with a placeholder script, mapped.

    A build of a script of the same sector and FAT cluster counts
    differs from it only where the script's bytes and sizes are, so a
    build is the template's bytes with the script and its length
    patched in: the ISO 9660 and Joliet records' data lengths, the FAT
    directory entries' sizes, the script's data in the ISO and in the FAT
    image, zero padded as the long way pads it, and fresh isohybrid
    identifiers (see _new_ids).  Everything else (layout, boot info
    table, El Torito catalog, isohybrid partitions, FAT chains, FSInfo)
    is the template's, and so are the time stamps: those of the first
    build of the size class, not of each build.
    """

    __slots__ = ('data', 'result', 'data_sites', 'le_sites', 'be_sites',
                 'runs', 'mbr_id', 'gpts')

    def __init__(self, data, result, data_sites, le_sites, be_sites):
        self.data = data
        self.result = result
        self.data_sites = tuple(data_sites)  # (offset, start, end) of it
        self.le_sites = tuple(le_sites)      # 32-bit length, little end
        self.be_sites = tuple(be_sites)      # and big end
        self.runs = _data_runs(data)
        self.mbr_id, self.gpts = _hybrid_ids(data)

    @classmethod
    def map(cls, data, nonce, slot, result, efi):
        """Find the placeholder's copies and their sizes in ``data``."""
        def fail(reason, *args):
            raise _NoTemplate(reason % args)

        blocks = slot // 16
        counts = bytearray(blocks)
        runs = []       # [offset, first block, last block]
        at = data.find(nonce)
        while at >= 0:
            index = int.from_bytes(data[at + 12:at + 16], 'big')
            if index >= blocks or counts[index] == 255:
                fail('a stray placeholder block at %d', at)
            counts[index] += 1
            last = runs[-1] if runs else None
            if (last and last[2] + 1 == index
                    and last[0] + 16 * (index - last[1]) == at):
                last[2] = index
            else:
                runs.append([at, index, index])
            at = data.find(nonce, at + 16)
        starts = {at for at, first, _ in runs if first == 0}
        if not starts or counts.count(len(starts)) != blocks:
            fail('the placeholder is not whole in every copy')
        le, be, claimed = [], [], set()
        efi_base = None
        for record, path, extent, length in _template_records(data):
            if extent * SECTOR in starts:
                if length != slot or _be32(data, record + 14) != slot:
                    fail('a record of the script has length %d', length)
                le.append(record + 10)
                be.append(record + 14)
                claimed.add(extent * SECTOR)
            if efi and path == efi[0].iso_path:
                if length != efi[0].length:
                    fail('the EFI image changed size')
                efi_base = extent * SECTOR
        if efi:
            if efi_base is None:
                fail('no EFI image record')
            view = memoryview(data)[efi_base:efi_base + efi[0].length]
            fat = esp.FatImage(view, efi[0].path, writable=False)
            for path in efi[1]:
                where = fat.file_location(path)
                if where is None:
                    if path == '/' + AUTOEXEC:
                        fail('no %s in the EFI image', path)
                    continue
                entry, size, clusters = where
                if (size != slot or not clusters
                        or efi_base + clusters[0] not in starts
                        or efi_base + clusters[0] in claimed):
                    fail('%s in the EFI image is not the placeholder', path)
                le.append(efi_base + entry + 28)
                claimed.add(efi_base + clusters[0])
            view.release()
        if claimed != starts:
            fail('a copy of the placeholder has no size to patch')
        return cls(data, result,
                   [(at, 16 * first, 16 * (last + 1))
                    for at, first, last in runs], le, be)

    def patches(self, script):
        """(offset, bytes) that turn the template into ``script``'s build."""
        for at, start, end in self.data_sites:
            chunk = script[start:end]
            yield at, chunk + bytes(end - start - len(chunk))
        for at in self.le_sites:
            yield at, len(script).to_bytes(4, 'little')
        for at in self.be_sites:
            yield at, len(script).to_bytes(4, 'big')
        yield from self._new_ids()

    def _new_ids(self):
        """Fresh isohybrid identifiers, as pycdlib draws them per build.

        The MBR disk signature, and each GPT's disk and partition GUIDs
        (pycdlib draws the backup GPT's apart from the primary's, and
        packs UUID.bytes), with the CRCs made again.
        """
        if self.mbr_id is not None:
            yield self.mbr_id, random.getrandbits(32).to_bytes(4, 'little')
        for header_at, entries_at, parts, crc_len in self.gpts:
            header = bytearray(self.data[header_at:header_at + 92])
            header[56:72] = uuid.uuid4().bytes
            entries = bytearray(self.data[entries_at:entries_at + crc_len])
            for i in range(parts):
                entries[i * 128 + 16:i * 128 + 32] = uuid.uuid4().bytes
            header[88:92] = zlib.crc32(entries).to_bytes(4, 'little')
            header[16:20] = bytes(4)
            header[16:20] = zlib.crc32(header).to_bytes(4, 'little')
            yield header_at, bytes(header)
            yield entries_at, bytes(entries[:parts * 128])

    def write(self, f, script):
        """Write the build to ``f``, a new file: zero runs stay holes."""
        view = memoryview(self.data)
        for start, end in self.runs:
            f.seek(start)
            f.write(view[start:end])
        for at, blob in self.patches(script):
            f.seek(at)
            f.write(blob)
        f.truncate(len(self.data))
        view.release()

    def to_bytes(self, script):
        out = bytearray(self.data)
        for at, blob in self.patches(script):
            out[at:at + len(blob)] = blob
        return bytes(out)


def _hybrid_ids(data):
    """Where a template's isohybrid identifiers are (see _new_ids).

    (offset of the MBR disk signature or None, ((GPT header offset,
    entries offset, entries in use, bytes under the entries CRC), ...)).
    Each GPT must check out as pycdlib writes it, or: _NoTemplate.
    """
    if data[510:512] != b'\x55\xaa':
        return None, ()
    gpts = []
    if data[512:520] == b'EFI PART':
        backup = int.from_bytes(data[512 + 32:512 + 40], 'little') * 512
        for header_at in (512, backup):
            header = bytearray(data[header_at:header_at + 92])
            if header[:8] != b'EFI PART' or _u32(header, 12) != 92:
                raise _NoTemplate('an unexpected GPT header')
            crc = _u32(header, 16)
            header[16:20] = bytes(4)
            if zlib.crc32(header) != crc:
                raise _NoTemplate('a GPT header CRC does not check out')
            entries_at = int.from_bytes(header[72:80], 'little') * 512
            count, size = _u32(header, 80), _u32(header, 84)
            if size != 128 or not 0 < count <= MAX_GPT_ENTRIES:
                raise _NoTemplate('unexpected GPT entries')
            table = data[entries_at:entries_at + count * 128]
            parts = 0
            while parts < count and any(table[parts * 128:parts * 128 + 16]):
                parts += 1
            # pycdlib's CRC covers the entries in use; the spec's, all.
            for crc_len in (parts * 128, count * 128):
                if zlib.crc32(table[:crc_len]) == _u32(header, 88):
                    break
            else:
                raise _NoTemplate('a GPT entries CRC does not check out')
            gpts.append((header_at, entries_at, parts, crc_len))
    return 440, tuple(gpts)


def _be32(data, at):
    return int.from_bytes(data[at:at + 4], 'big')


def _data_runs(data):
    """(start, end) of the parts of ``data`` to write; the rest is zeros.

    Zero runs of at least _HOLE bytes become holes (seeked over), fewer
    bytes for the kernel to copy; a file system without holes fills them
    with the same zeros.
    """
    zero = bytes(_BLOCK)
    runs = []
    for at in range(0, len(data), _BLOCK):
        end = min(at + _BLOCK, len(data))
        if data[at:end] == (zero if end - at == _BLOCK else
                            bytes(end - at)):
            continue
        if runs and at - runs[-1][1] < _HOLE:
            runs[-1][1] = end
        else:
            runs.append([at, end])
    return tuple(tuple(run) for run in runs)


def _template_records(data):
    """(record offset, ISO 9660 path or None, extent, length) of files.

    Every file record of every tree of a template: our own output, walked
    within bounds all the same; any surprise is a _NoTemplate.
    """
    found = []
    for index in range(16, 16 + MAX_DESCRIPTORS):
        vd = data[index * SECTOR:(index + 1) * SECTOR]
        if len(vd) < SECTOR or vd[1:6] != b'CD001':
            raise _NoTemplate('volume descriptor %d' % index)
        if vd[0] == 255:
            break
        if vd[0] not in (1, 2):
            continue
        primary = vd[0] == 1
        pending = [(_u32(vd, 158), _u32(vd, 166), '', 1)]
        visited = 0
        while pending:
            extent, length, path, depth = pending.pop()
            visited += 1
            if depth > MAX_DEPTH or visited > MAX_ENTRIES:
                raise _NoTemplate('too many directories')
            at, end = extent * SECTOR, extent * SECTOR + length
            if end > len(data):
                raise _NoTemplate('a directory past the end')
            while at < end:
                size = data[at]
                if size == 0:
                    at = (at // SECTOR + 1) * SECTOR
                    continue
                if size < 34 or at + size > end:
                    raise _NoTemplate('a malformed record')
                name = data[at + 33:at + 33 + data[at + 32]]
                if name not in (b'\0', b'\1'):
                    child = primary and path + '/' + name.decode('latin-1')
                    if data[at + 25] & 0x02:
                        pending.append((_u32(data, at + 2),
                                        _u32(data, at + 10), child,
                                        depth + 1))
                    else:
                        found.append((at, child or None, _u32(data, at + 2),
                                      _u32(data, at + 10)))
                        if len(found) > 4 * MAX_ENTRIES:
                            raise _NoTemplate('too many records')
                at += size
    else:
        raise _NoTemplate('no volume descriptor terminator')
    return found


def read_iso_file(path, max_size=None, name=None):
    """The bytes of the ISO at ``path``; ``name`` is how messages call it.

    Only a regular file is read, and never more than ``max_size`` (plus
    one byte, to tell a larger file): the size is checked on what is
    read, not on what the file system reports.
    """
    name = name or path
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    except OSError as e:
        raise exception.InvalidIso(source=name, reason='cannot read it: '
                                   '%s' % e.strerror)
    try:
        info = os.fstat(fd)
        # A FIFO or a device has no size to check and may never end.
        if not stat.S_ISREG(info.st_mode):
            raise exception.InvalidIso(
                source=name, reason='it is not a regular file')
        if max_size is not None and info.st_size > max_size:
            raise exception.ImageTooLarge(source=name, size=info.st_size,
                                          limit=max_size)
        data = _read_at_most(fd, None if max_size is None
                             else max_size + 1, info.st_size)
    except OSError as e:
        raise exception.InvalidIso(source=name, reason='cannot read it: '
                                   '%s' % e.strerror)
    finally:
        os.close(fd)
    if max_size is not None and len(data) > max_size:
        # It grew after the size check.
        raise exception.ImageTooLarge(source=name, size='more than %d'
                                      % max_size, limit=max_size)
    return data


def _read_at_most(fd, limit, size_hint=0):
    """Up to ``limit`` bytes of ``fd`` (all if None).

    Read in place into one buffer sized from ``size_hint`` (what fstat
    says), grown a MiB at a time only if the file is longer than that:
    reading costs the data once, and never more than ``limit``.
    """
    data = bytearray(size_hint + 1 if limit is None
                     else min(size_hint + 1, limit))
    have = 0
    while limit is None or have < limit:
        if have == len(data):
            data.extend(bytes(1 << 20 if limit is None
                              else min(1 << 20, limit - have)))
        with memoryview(data) as view:
            got = os.readv(fd, [view[have:]])
        if not got:
            break
        have += got
    del data[have:]
    return data


def _lookup(files, path, cwd='/'):
    full = posixpath.normpath(posixpath.join(cwd, path))
    want = full.lower()
    for f in files:
        if f.path == full:
            return f
    for f in files:
        if (f.path.lower() == want
                or _strip_version(f.iso_path).lower() == want):
            return f
    return None


def _is_script_name(f):
    """Whether a file is named like our script in the root.

    Any of its names counts: it must not survive to shadow the script.
    """
    names = {_strip_version(f.iso_path).lower(), f.path.lower()}
    return '/' + SCRIPT_NAME in names


class _LayoutReader:
    """Reads a :class:`Layout` from an opened pycdlib object, once."""

    def __init__(self, base, cdlib):
        self.base = base
        self.source = base.source
        self.cdlib = cdlib

    def _fail(self, reason):
        raise exception.InvalidIso(source=self.source, reason=reason)

    def read(self):
        cdlib = self.cdlib
        rock_ridge = '1.09' if cdlib.has_rock_ridge() else None
        # Only d-characters survive: the label is cosmetic, and hostile.
        volume_id = re.sub(r'[^A-Z0-9_]', '_', cdlib.pvd.volume_identifier
                           .decode('ascii', 'replace').strip()
                           .upper())[:32] or 'IPXE'
        dirs, files = self._walk(rock_ridge)
        self.files = files
        catalog = cdlib.eltorito_boot_catalog
        if catalog is None:
            self._fail('it has no El Torito boot catalog, so it cannot '
                       'boot from CD')
        bios = self._bios_boot(catalog.initial_entry,
                               catalog.validation_entry.platform_id,
                               rock_ridge)
        efi = self._efi_boot(catalog)
        if bios is None and efi is None:
            self._fail('its boot catalog has neither a BIOS (ISOLINUX) nor '
                       'a UEFI entry')
        return Layout(
            volume_id=volume_id, rock_ridge=rock_ridge,
            joliet=cdlib.has_joliet(),
            interchange_level=cdlib.interchange_level,
            isohybrid=getattr(cdlib, 'isohybrid_mbr', None) is not None,
            dirs=tuple(dirs), files=tuple(files),
            catalog_extent=catalog.extent_location(), bios=bios, efi=efi)

    def _walk(self, rock_ridge):
        cdlib = self.cdlib
        dirs = []
        files = []
        dir_names = set()
        for dirpath, dirnames, filenames in cdlib.walk(iso_path='/'):
            for name in dirnames + filenames:
                _sane_name(name, self.source)
                iso_path = posixpath.join(dirpath, name)
                rec = cdlib.get_record(iso_path=iso_path)
                path = iso_path
                if rock_ridge and rec.rock_ridge is not None:
                    rr = rec.rock_ridge.name().decode('utf-8', 'replace')
                    _sane_name(rr, self.source)
                    path = cdlib.full_path_from_dirrecord(rec,
                                                          rockridge=True)
                path = _strip_version(path)
                if len(path) > MAX_PATH:
                    self._fail('a path is longer than %d characters'
                               % MAX_PATH)
                if name in dirnames:
                    dirs.append((iso_path, path))
                    dir_names.update((path.lower(), iso_path.lower()))
                    continue
                files.append(IsoFile(iso_path, path, rec.extent_location(),
                                     rec.get_data_length()))
        if '/' + SCRIPT_NAME in dir_names:
            self._fail('a directory is named %s, the name of the script it '
                       'would take' % SCRIPT_NAME)
        self._check_extents(files)
        return dirs, files

    def _check_extents(self, files):
        """Files share data only as exact hard links, within the image.

        A build writes each distinct extent once, so with no overlaps the
        output is bounded by the source; a partial overlap would let one
        sector be copied many times under different lengths.
        """
        total = len(self.base.data)
        spans = sorted({(f.extent, f.length) for f in files if f.length})
        used = 0
        end = 0
        for extent, length in spans:
            start = extent * SECTOR
            if start + length > total:
                self._fail('a file at sector %d runs past the end of the '
                           'image (truncated download?)' % extent)
            if start < end:
                self._fail('two files overlap at sector %d (only exact '
                           'hard links may share data)' % extent)
            end = start + -(-length // SECTOR) * SECTOR
            used += length
        if used > total:
            self._fail('its files add up to %d bytes, more than the %d-byte '
                       'image' % (used, total))

    def _by_extent(self, extent):
        for f in self.files:
            if f.extent == extent and f.length:
                return f
        return None

    def _bios_boot(self, entry, platform_id, rock_ridge):
        if entry is None or platform_id == EFI_PLATFORM_ID:
            return None
        base = self.base
        image = self._by_extent(entry.load_rba)
        if image is None:
            self._fail('the BIOS boot image (sector %d) is not a file on '
                       'the ISO' % entry.load_rba)
        if b'ISOLINUX' not in bytes(base.file_bytes(image)):
            self._fail('the BIOS boot image %s is not ISOLINUX; only '
                       'ISOLINUX-based iPXE ISOs are supported'
                       % shown(image.path))
        cfg_dirs = (posixpath.dirname(image.path),) + isolinux.CFG_DIRS
        config = None
        for d in cfg_dirs:
            for name in isolinux.CFG_NAMES:
                config = _lookup(self.files, posixpath.join(d, name))
                if config:
                    break
            if config:
                break
        if config is None:
            self._fail('no isolinux.cfg next to %s or in the places '
                       'ISOLINUX searches' % shown(image.path))
        if config.length > isolinux.MAX_CFG_SIZE:
            self._fail('%s is implausibly large' % shown(config.path))
        text = bytes(base.file_bytes(config)).decode('utf-8', 'replace')
        ref = isolinux.kernel_ref(text)
        if ref is None:
            self._fail('%s names no kernel' % shown(config.path))
        if not isolinux.PATH_RE.match(ref):
            self._fail('%s names the kernel %r, which is not a plain path'
                       % (shown(config.path), ref))
        kernel = _lookup(self.files, ref, posixpath.dirname(config.path))
        if kernel is None:
            self._fail('%s boots %r, which is not on the ISO'
                       % (shown(config.path), ref))
        if not is_ipxe_kernel(base.file_bytes(kernel)):
            self._fail('%s (booted by %s) is not an iPXE kernel (.lkrn/.krn)'
                       % (shown(kernel.path), shown(config.path)))
        # Our isolinux.cfg names the kernel by an absolute path.
        kernel_ref = kernel.path if rock_ridge else _strip_version(
            kernel.iso_path)
        if not isolinux.PATH_RE.match(kernel_ref):
            self._fail('the kernel path %r cannot be written to '
                       'isolinux.cfg' % kernel_ref)
        return BiosBoot(image=image, config=config, kernel=kernel,
                        kernel_ref=kernel_ref)

    def _efi_boot(self, catalog):
        for section in catalog.sections:
            if section.platform_id != EFI_PLATFORM_ID:
                continue
            for entry in section.section_entries:
                image = self._by_extent(entry.load_rba)
                if image is None:
                    LOG.warning('%s: UEFI boot image at sector %d is not a '
                                'file on the ISO; ignored', self.source,
                                entry.load_rba)
                    continue
                return self._efi_details(image)
        return None

    def _efi_details(self, image):
        if image.length > MAX_EFI_IMAGE:
            # Refused rather than written with a clamped or zero count:
            # firmware differs on both, and the isohybrid partition table
            # pycdlib writes takes its size from the same count.
            return EfiBoot(image=image, reason='%s is %d bytes, more than '
                           'the %d bytes an El Torito entry can describe'
                           % (shown(image.path), image.length,
                              MAX_EFI_IMAGE))
        try:
            fat = esp.FatImage(self.base.file_bytes(image), image.path,
                               writable=False)
            loader = fat.read_file(EFI_LOADER)
        except exception.EfiImageError as e:
            return EfiBoot(image=image, reason=e.message)
        if loader is None:
            return EfiBoot(image=image, reason='%s holds no %s' % (
                shown(image.path), EFI_LOADER))
        if b'iPXE' not in loader:
            return EfiBoot(image=image, loader=EFI_LOADER,
                           reason='%s in %s is not iPXE' % (
                               EFI_LOADER, shown(image.path)))
        if not efi_loader_reads_autoexec(loader):
            return EfiBoot(image=image, loader=EFI_LOADER,
                           reason='its EFI iPXE predates autoexec.ipxe '
                                  'support (iPXE before 2021)')
        return EfiBoot(image=image, loader=EFI_LOADER, autoexec=True,
                       cluster_size=fat.cluster_size)
