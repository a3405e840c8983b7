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

"""What a source ISO holds, read once from its parse: :class:`Layout`.

Files are found the way the firmware and ISOLINUX find them: the El Torito
catalog names the BIOS and UEFI boot images, ``isolinux.cfg`` (see
:mod:`nova_ipxe.isolinux`) names the iPXE kernel, and the EFI FAT image
holds the loader.  Every name and reference read from the ISO is
validated before use, and escaped before it is shown.
"""

import dataclasses
import posixpath
import re

from oslo_log import log as logging

from nova_ipxe import esp
from nova_ipxe import exception
from nova_ipxe.iso import structure
from nova_ipxe import isolinux

LOG = logging.getLogger(__name__)

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


def strip_version(iso_path):
    return iso_path.split(';', 1)[0].rstrip('.')


def _sane_name(name, source):
    if (not name or name in ('.', '..') or '/' in name or '\0' in name
            or len(name) > structure.MAX_NAME):
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


def lookup(files, path, cwd='/'):
    full = posixpath.normpath(posixpath.join(cwd, path))
    want = full.lower()
    for f in files:
        if f.path == full:
            return f
    for f in files:
        if (f.path.lower() == want
                or strip_version(f.iso_path).lower() == want):
            return f
    return None


def is_script_name(f):
    """Whether a file is named like our script in the root.

    Any of its names counts: it must not survive to shadow the script.
    """
    names = {strip_version(f.iso_path).lower(), f.path.lower()}
    return '/' + SCRIPT_NAME in names


class LayoutReader:
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
                path = strip_version(path)
                if len(path) > structure.MAX_PATH:
                    self._fail('a path is longer than %d characters'
                               % structure.MAX_PATH)
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
            start = extent * structure.SECTOR
            if start + length > total:
                self._fail('a file at sector %d runs past the end of the '
                           'image (truncated download?)' % extent)
            if start < end:
                self._fail('two files overlap at sector %d (only exact '
                           'hard links may share data)' % extent)
            end = start + -(-length // structure.SECTOR) * structure.SECTOR
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
                       % exception.shown(image.path))
        cfg_dirs = (posixpath.dirname(image.path),) + isolinux.CFG_DIRS
        config = None
        for d in cfg_dirs:
            for name in isolinux.CFG_NAMES:
                config = lookup(self.files, posixpath.join(d, name))
                if config:
                    break
            if config:
                break
        if config is None:
            self._fail('no isolinux.cfg next to %s or in the places '
                       'ISOLINUX searches' % exception.shown(image.path))
        if config.length > isolinux.MAX_CFG_SIZE:
            self._fail('%s is implausibly large'
                       % exception.shown(config.path))
        text = bytes(base.file_bytes(config)).decode('utf-8', 'replace')
        ref = isolinux.kernel_ref(text)
        if ref is None:
            self._fail('%s names no kernel' % exception.shown(config.path))
        if not isolinux.PATH_RE.match(ref):
            self._fail('%s names the kernel %r, which is not a plain path'
                       % (exception.shown(config.path), ref))
        kernel = lookup(self.files, ref, posixpath.dirname(config.path))
        if kernel is None:
            self._fail('%s boots %r, which is not on the ISO'
                       % (exception.shown(config.path), ref))
        if not is_ipxe_kernel(base.file_bytes(kernel)):
            self._fail('%s (booted by %s) is not an iPXE kernel (.lkrn/.krn)'
                       % (exception.shown(kernel.path),
                          exception.shown(config.path)))
        # Our isolinux.cfg names the kernel by an absolute path.
        kernel_ref = kernel.path if rock_ridge else strip_version(
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
                           % (exception.shown(image.path), image.length,
                              MAX_EFI_IMAGE))
        try:
            fat = esp.FatImage(self.base.file_bytes(image), image.path,
                               writable=False)
            loader = fat.read_file(EFI_LOADER)
        except exception.EfiImageError as e:
            return EfiBoot(image=image, reason=e.message)
        if loader is None:
            return EfiBoot(image=image, reason='%s holds no %s' % (
                exception.shown(image.path), EFI_LOADER))
        if b'iPXE' not in loader:
            return EfiBoot(image=image, loader=EFI_LOADER,
                           reason='%s in %s is not iPXE' % (
                               EFI_LOADER, exception.shown(image.path)))
        if not efi_loader_reads_autoexec(loader):
            return EfiBoot(image=image, loader=EFI_LOADER,
                           reason='its EFI iPXE predates autoexec.ipxe '
                                  'support (iPXE before 2021)')
        return EfiBoot(image=image, loader=EFI_LOADER, autoexec=True,
                       cluster_size=fat.cluster_size)
