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
catalog names the BIOS and UEFI boot images, ``isolinux.cfg`` (looked up
where ISOLINUX looks) names the iPXE kernel, and the EFI FAT image holds
the loader.  The source ISO is untrusted: every name and reference read
from it is validated before it is used.

A parsed :class:`BaseIso` is immutable and can build many per-instance
ISOs; :meth:`BaseIso.build` rebuilds a fresh ISO each time rather than
patching the source, so nothing of the source's layout can leak a stale
script.
"""

import array
import contextlib
import dataclasses
import io
import os
import posixpath
import re
import sys
import tempfile

from oslo_log import log as logging
import pycdlib
from pycdlib import pycdlibexception

from nova_ipxe import capabilities as ipxe_caps
from nova_ipxe import esp
from nova_ipxe import exception

LOG = logging.getLogger(__name__)

SECTOR = 2048
EFI_PLATFORM_ID = 0xEF
AUTOEXEC = 'autoexec.ipxe'
# The script as ISOLINUX's INITRD: one name that is the same in ISO9660
# (upper case, 8.3) and Rock Ridge, so it resolves with or without RR.
SCRIPT_ISO_PATH = '/NIPXE.IPX;1'
SCRIPT_NAME = 'nipxe.ipx'
EFI_LOADER = '/EFI/BOOT/BOOTX64.EFI'
# Where ISOLINUX looks for its configuration, after its own directory.
ISOLINUX_CFG_DIRS = ('/boot/isolinux', '/isolinux', '/boot/syslinux',
                     '/syslinux', '/')
ISOLINUX_CFG_NAMES = ('isolinux.cfg', 'syslinux.cfg')
# What a reference in isolinux.cfg may look like before we use it.
CFG_PATH_RE = re.compile(r'^[A-Za-z0-9._+~/-]{1,255}$')
KERNEL_KEYWORDS = ('kernel', 'linux')


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


@dataclasses.dataclass(frozen=True)
class EfiBoot:
    image: IsoFile         # the FAT image (efi.img / esp.img)
    loader: str = None     # path of the x86_64 loader inside the image
    autoexec: bool = False  # the loader runs autoexec.ipxe
    reason: str = None     # why the script cannot be injected, if not


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
            or len(name) > 255):
        raise exception.InvalidIso(source=source,
                                   reason='bad file name %r' % (name,))
    return name


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


def parse_isolinux_cfg(text):
    """Return the kernel reference of the default entry of isolinux.cfg.

    Handles the forms iPXE's ISOs and hand-made ones use: ``DEFAULT`` a
    label or a kernel, ``LABEL`` blocks with ``KERNEL``/``LINUX``, a
    global ``KERNEL``.  Returns None when no kernel is named.
    """
    default = None
    labels = {}
    order = []
    current = None
    global_kernel = None
    menu_default = None
    for raw in text.splitlines():
        words = raw.strip().split(None, 1)
        if not words or words[0].startswith('#'):
            continue
        key = words[0].lower()
        arg = words[1].strip() if len(words) > 1 else ''
        if key == 'default':
            default = arg.split()[0] if arg else None
        elif key == 'label':
            current = arg
            labels.setdefault(current, None)
            order.append(current)
        elif key in KERNEL_KEYWORDS and arg:
            if current is None:
                global_kernel = arg.split()[0]
            elif labels.get(current) is None:
                labels[current] = arg.split()[0]
        elif key == 'menu' and arg.lower() == 'default' and current:
            menu_default = current
    for label in (default, menu_default):
        if label in labels and labels[label]:
            return labels[label]
    if default and default not in labels:
        return default  # DEFAULT may name a kernel directly
    if global_kernel:
        return global_kernel
    for label in order:
        if labels[label]:
            return labels[label]
    return None


def isolinux_cfg(kernel_ref):
    """The ISOLINUX configuration we write: boot iPXE with our script."""
    return ('# Rewritten by nova-ipxe: boot iPXE with the instance script.\n'
            'DEFAULT nova-ipxe\n'
            'PROMPT 0\n'
            'TIMEOUT 0\n'
            'LABEL nova-ipxe\n'
            ' KERNEL %s\n'
            ' INITRD /%s\n' % (kernel_ref, SCRIPT_NAME))


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


if (hasattr(pycdlib.PyCdlib, '_calculate_eltorito_boot_info_table_csum')
        and array.array('I').itemsize == 4):
    pycdlib.PyCdlib._calculate_eltorito_boot_info_table_csum = (
        _boot_info_table_csum)


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


class BaseIso:
    """A parsed source iPXE ISO, held in memory, reusable across builds."""

    def __init__(self, data, source='ISO', max_size=None):
        self.source = source
        if max_size is not None and len(data) > max_size:
            raise exception.IsoTooLarge(source=source, size=len(data),
                                        limit=max_size)
        self.data = memoryview(data)
        self._check_volume_size()
        iso = pycdlib.PyCdlib()
        source_fp = io.BytesIO(data)
        try:
            iso.open_fp(source_fp)
        except Exception as e:
            # pycdlib is not hardened against hostile images: anything it
            # raises while parsing means the bytes are not a usable ISO.
            raise exception.InvalidIso(
                source=source, reason='not a readable ISO 9660 image '
                '(%s: %s)' % (type(e).__name__, e))
        try:
            self._read(iso)
        except exception.NovaIpxeError:
            raise
        except Exception as e:
            # As above: hostile metadata can trip pycdlib anywhere.
            LOG.debug('Reading %s failed', source, exc_info=True)
            raise exception.InvalidIso(source=source, reason='%s: %s' % (
                type(e).__name__, e))
        finally:
            iso.close()
            source_fp.close()  # frees the copy now, not at the next GC

    def _check_volume_size(self):
        """Catch truncated downloads before pycdlib trips over them."""
        pvd = self.data[16 * SECTOR:17 * SECTOR]
        if len(pvd) < SECTOR or bytes(pvd[1:6]) != b'CD001':
            self._fail('not a readable ISO 9660 image (no primary volume '
                       'descriptor)')
        blocks = int.from_bytes(pvd[80:84], 'little')
        block_size = int.from_bytes(pvd[128:130], 'little') or SECTOR
        if blocks * block_size > len(self.data):
            self._fail('it is truncated: the volume is %d bytes, the image '
                       'only %d' % (blocks * block_size, len(self.data)))

    @classmethod
    def from_path(cls, path, max_size=None, name=None):
        """Read and parse ``path``; ``name`` is how messages call it."""
        name = name or path
        try:
            size = os.path.getsize(path)
            if max_size is not None and size > max_size:
                raise exception.IsoTooLarge(source=name, size=size,
                                            limit=max_size)
            with open(path, 'rb') as f:
                data = f.read()
        except OSError as e:
            raise exception.InvalidIso(source=name,
                                       reason='cannot read it: %s'
                                              % e.strerror)
        return cls(data, source=name, max_size=max_size)

    # -- reading -------------------------------------------------------

    def _fail(self, reason):
        raise exception.InvalidIso(source=self.source, reason=reason)

    def _read(self, iso):
        self.rock_ridge = iso.has_rock_ridge() and '1.09'
        self.joliet = iso.has_joliet()
        self.interchange_level = iso.interchange_level
        # Only d-characters survive: the label is cosmetic, and hostile.
        self.volume_id = re.sub(r'[^A-Z0-9_]', '_', iso.pvd.volume_identifier
                                .decode('ascii', 'replace').strip()
                                .upper())[:32] or 'IPXE'
        self.isohybrid = getattr(iso, 'isohybrid_mbr', None) is not None
        self.dirs = []
        self.files = []
        total = len(self.data)
        for dirpath, dirnames, filenames in iso.walk(iso_path='/'):
            for name in dirnames + filenames:
                _sane_name(name, self.source)
                iso_path = posixpath.join(dirpath, name)
                rec = iso.get_record(iso_path=iso_path)
                shown = iso_path
                if self.rock_ridge and rec.rock_ridge is not None:
                    rr = rec.rock_ridge.name().decode('utf-8', 'replace')
                    shown = iso.full_path_from_dirrecord(
                        rec, rockridge=True)
                    _sane_name(rr, self.source)
                if name in dirnames:
                    self.dirs.append((iso_path, _strip_version(shown)))
                    continue
                extent, length = rec.extent_location(), rec.get_data_length()
                if extent * SECTOR + length > total:
                    self._fail('file %s runs past the end of the image '
                               '(truncated download?)' % shown)
                self.files.append(IsoFile(iso_path, _strip_version(shown),
                                          extent, length))
        catalog = iso.eltorito_boot_catalog
        if catalog is None:
            self._fail('it has no El Torito boot catalog, so it cannot '
                       'boot from CD')
        self.catalog_extent = catalog.extent_location()
        self.bios = self._bios_boot(catalog.initial_entry,
                                    catalog.validation_entry.platform_id)
        self.efi = self._efi_boot(catalog)
        if self.bios is None and self.efi is None:
            self._fail('its boot catalog has neither a BIOS (ISOLINUX) nor '
                       'a UEFI entry')

    def _by_extent(self, extent):
        for f in self.files:
            if f.extent == extent and f.length:
                return f
        return None

    def lookup(self, path, cwd='/'):
        """Find a file by a user-visible path, as ISOLINUX would."""
        full = posixpath.normpath(posixpath.join(cwd, path))
        want = full.lower()
        exact = [f for f in self.files if f.path == full]
        if exact:
            return exact[0]
        for f in self.files:
            if (f.path.lower() == want
                    or _strip_version(f.iso_path).lower() == want):
                return f
        return None

    def file_bytes(self, f):
        start = f.extent * SECTOR
        return self.data[start:start + f.length]

    def _bios_boot(self, entry, platform_id):
        if entry is None or platform_id == EFI_PLATFORM_ID:
            return None
        image = self._by_extent(entry.load_rba)
        if image is None:
            self._fail('the BIOS boot image (sector %d) is not a file on '
                       'the ISO' % entry.load_rba)
        if b'ISOLINUX' not in bytes(self.file_bytes(image)):
            self._fail('the BIOS boot image %s is not ISOLINUX; only '
                       'ISOLINUX-based iPXE ISOs are supported' % image.path)
        cfg_dirs = (posixpath.dirname(image.path),) + ISOLINUX_CFG_DIRS
        config = None
        for d in cfg_dirs:
            for name in ISOLINUX_CFG_NAMES:
                config = self.lookup(posixpath.join(d, name))
                if config:
                    break
            if config:
                break
        if config is None:
            self._fail('no isolinux.cfg next to %s or in the places '
                       'ISOLINUX searches' % image.path)
        if config.length > 64 * 1024:
            self._fail('%s is implausibly large' % config.path)
        text = bytes(self.file_bytes(config)).decode('utf-8', 'replace')
        ref = parse_isolinux_cfg(text)
        if ref is None:
            self._fail('%s names no kernel' % config.path)
        if not CFG_PATH_RE.match(ref):
            self._fail('%s names the kernel %r, which is not a plain path'
                       % (config.path, ref))
        kernel = self.lookup(ref, posixpath.dirname(config.path))
        if kernel is None:
            self._fail('%s boots %r, which is not on the ISO'
                       % (config.path, ref))
        if not is_ipxe_kernel(self.file_bytes(kernel)):
            self._fail('%s (booted by %s) is not an iPXE kernel (.lkrn/.krn)'
                       % (kernel.path, config.path))
        return BiosBoot(image=image, config=config, kernel=kernel)

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
        try:
            fat = esp.FatImage(self.file_bytes(image), image.path,
                               writable=False)
            loader = fat.read_file(EFI_LOADER)
        except exception.EfiImageError as e:
            return EfiBoot(image=image, reason=e.message)
        if loader is None:
            return EfiBoot(image=image, reason='%s holds no %s' % (
                image.path, EFI_LOADER))
        if b'iPXE' not in loader:
            return EfiBoot(image=image, loader=EFI_LOADER,
                           reason='%s in %s is not iPXE' % (EFI_LOADER,
                                                            image.path))
        if not efi_loader_reads_autoexec(loader):
            return EfiBoot(image=image, loader=EFI_LOADER,
                           reason='its EFI iPXE predates autoexec.ipxe '
                                  'support (iPXE before 2021)')
        return EfiBoot(image=image, loader=EFI_LOADER, autoexec=True)

    def capabilities(self):
        """{'bios': Capabilities or None, 'uefi': ...}, read once."""
        caps = getattr(self, '_capabilities', None)
        if caps is None:
            caps = {'bios': None, 'uefi': None}
            if self.bios:
                caps['bios'] = ipxe_caps.read(
                    self.file_bytes(self.bios.kernel), self.bios.kernel.path)
            if self.efi and self.efi.loader:
                name = '%s:%s' % (self.efi.image.path, self.efi.loader)
                try:
                    loader = esp.FatImage(self.file_bytes(self.efi.image),
                                          self.efi.image.path,
                                          writable=False).read_file(
                                              self.efi.loader)
                    caps['uefi'] = ipxe_caps.read(loader, name)
                except exception.EfiImageError as e:
                    caps['uefi'] = ipxe_caps.unknown(name, e.message)
            self._capabilities = caps
        return caps

    def describe(self):
        """What was found, for ``nova-ipxe inspect``."""
        info = {
            'source': self.source,
            'size': len(self.data),
            'volume_id': self.volume_id,
            'rock_ridge': bool(self.rock_ridge),
            'joliet': self.joliet,
            'isohybrid': self.isohybrid,
            'files': [f.path for f in self.files],
            'bios': None,
            'uefi': None,
        }
        if self.bios:
            info['bios'] = {'boot_image': self.bios.image.path,
                            'config': self.bios.config.path,
                            'kernel': self.bios.kernel.path,
                            'kernel_size': self.bios.kernel.length,
                            'script_injection': True}
            caps = self.capabilities()['bios']
            info['bios']['ipxe'] = caps and caps.describe()
        if self.efi:
            info['uefi'] = {'boot_image': self.efi.image.path,
                            'loader': self.efi.loader,
                            'script_injection': self.efi.autoexec,
                            'reason': self.efi.reason}
            caps = self.capabilities()['uefi']
            info['uefi']['ipxe'] = caps and caps.describe()
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
            LOG.warning('%s: dropping the UEFI boot entry (%s); the ISO '
                        'will boot BIOS only', self.source, self.efi.reason)
            return False
        return True

    def _efi_image_with(self, script):
        fat = esp.FatImage(self.file_bytes(self.efi.image),
                           self.efi.image.path)
        fat.write_file('/', AUTOEXEC, script)
        # A newer iPXE prefers a script next to the loader: replace one
        # there too, so no stale script can win.
        loader_dir = posixpath.dirname(self.efi.loader)
        if fat.read_file(posixpath.join(loader_dir, AUTOEXEC)) is not None:
            fat.write_file(loader_dir, AUTOEXEC, script)
        return fat.view()

    @contextlib.contextmanager
    def assembled(self, script, uefi='auto'):
        """Yield (pycdlib object of the new ISO, BuildResult).

        On exit the object and every buffer handed to it are closed, so
        the file data is freed at once instead of waiting for the cyclic
        garbage collector (pycdlib's records reference each other); a
        long-running nova-compute keeps a flat memory profile this way.
        """
        readers = []
        new = None
        try:
            new, result = self._assemble(script, uefi, readers)
            yield new, result
        except pycdlibexception.PyCdlibException as e:
            raise exception.IsoBuildFailed(path='(in memory)', reason=str(e))
        finally:
            if new is not None:
                new.close()
            for reader in readers:
                reader.close()

    def _assemble(self, script, uefi, readers):
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
        replaced = {}
        if self.bios:
            replaced[self.bios.config.iso_path] = isolinux_cfg(
                self._cfg_ref(self.bios.kernel)).encode('ascii')
            replaced[SCRIPT_ISO_PATH] = script
        if with_uefi:
            replaced[self.efi.image.iso_path] = self._efi_image_with(script)
        skip = set()
        if self.efi and not with_uefi:
            skip.add(self.efi.image.iso_path)

        new = pycdlib.PyCdlib()
        new.new(interchange_level=self.interchange_level,
                vol_ident=self.volume_id[:32],
                rock_ridge=self.rock_ridge or None,
                joliet=3 if self.joliet else None)
        for iso_path, path in self.dirs:
            new.add_directory(iso_path, **self._names(path))
        for f in self.files:
            if f.extent == self.catalog_extent or f.iso_path in skip:
                continue
            if f.iso_path == SCRIPT_ISO_PATH:
                continue  # our own script replaces a previous one
            data = replaced.get(f.iso_path)
            if data is None and posixpath.basename(
                    f.path).lower() == AUTOEXEC:
                data = script  # no stale stock script stays on the ISO
            if data is None:
                data = self.file_bytes(f)
            new.add_fp(reader(data), len(data), f.iso_path,
                       **self._names(f.path))
        if SCRIPT_ISO_PATH in replaced:
            new.add_fp(reader(script), len(script), SCRIPT_ISO_PATH,
                       **self._names('/' + SCRIPT_NAME))
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

    def _names(self, path):
        names = {}
        if self.rock_ridge:
            names['rr_name'] = posixpath.basename(path)
        # Joliet allows 64 characters a component; longer names stay out
        # of the Joliet tree rather than being cut into collisions.
        if self.joliet and all(len(c) <= 64 for c in path.split('/')):
            names['joliet_path'] = path
        return names

    def _cfg_ref(self, kernel):
        """How our isolinux.cfg names the kernel: an absolute path."""
        ref = kernel.path if self.rock_ridge else _strip_version(
            kernel.iso_path)
        if not CFG_PATH_RE.match(ref):
            self._fail('the kernel path %r cannot be written to '
                       'isolinux.cfg' % ref)
        return ref

    def build(self, script, output, uefi='auto'):
        """Write the per-instance ISO to ``output`` atomically."""
        directory = os.path.dirname(os.path.abspath(output))
        tmp = None
        with self.assembled(script, uefi) as (new, result):
            try:
                fd, tmp = tempfile.mkstemp(
                    dir=directory, prefix='.%s.' % os.path.basename(output),
                    suffix='.tmp')
                with os.fdopen(fd, 'wb') as f:
                    new.write_fp(f)
                    size = f.tell()
                os.chmod(tmp, 0o644)
                os.replace(tmp, output)
                tmp = None
            except (OSError, pycdlibexception.PyCdlibException) as e:
                raise exception.IsoBuildFailed(
                    path=output,
                    reason=getattr(e, 'strerror', None) or str(e))
            finally:
                if tmp is not None:
                    try:
                        os.unlink(tmp)
                    except OSError:
                        pass
        return dataclasses.replace(result, path=output, size=size)

    def build_bytes(self, script, uefi='auto'):
        """The per-instance ISO in memory (for uploads, e.g. XenAPI)."""
        with self.assembled(script, uefi) as (new, result):
            out = io.BytesIO()
            new.write_fp(out)
        return out.getvalue(), result
