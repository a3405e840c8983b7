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

"""A parsed source iPXE ISO (:class:`BaseIso`), and the builds from it.

A parsed base is immutable and builds many per-instance ISOs, in-process
with pycdlib (no mount, no root, no external tool).  Files may share
data only as exact hard links inside the image, and a build writes each
source extent once, so its output is bounded by the source plus the
script (a writer enforces it).  A build patches its script into a
template (:mod:`nova_ipxe.iso.template`) when one fits.
"""

import contextlib
import dataclasses
import io
import os
import posixpath
import secrets
import tempfile
import threading

from oslo_log import log as logging
from pycdlib import pycdlibexception

from nova_ipxe import capabilities as ipxe_caps
from nova_ipxe import esp
from nova_ipxe import exception
from nova_ipxe.iso import cdlib
from nova_ipxe.iso import fileio
from nova_ipxe.iso import layout
from nova_ipxe.iso import structure
from nova_ipxe.iso import template
from nova_ipxe import lru

LOG = logging.getLogger(__name__)

# Metadata a rebuild may add over the source's own (directory records,
# boot catalog, isohybrid padding to a whole MiB).
OUTPUT_SLACK = 2 * 1024 * 1024


@dataclasses.dataclass(frozen=True)
class BuildResult:
    path: str
    size: int
    bios: bool
    uefi: bool


class _Once:
    """True the first time it is asked, thread-safely."""

    def __init__(self):
        self._lock = threading.Lock()
        self._done = False

    def __call__(self):
        with self._lock:
            first, self._done = not self._done, True
        return first


def _caps_info(caps):
    """Capabilities for describe(), with the ISO's names escaped."""
    if caps is None:
        return None
    info = caps.describe()
    info['binary'] = exception.shown(info['binary'])
    if info.get('reason'):
        info['reason'] = exception.shown(info['reason'])
    return info


class BaseIso:
    """A parsed source iPXE ISO, held in memory, reusable across builds.

    Immutable once parsed: the bytes are read-only and the layout is a
    frozen :class:`Layout`, so concurrent builds share it safely.
    """

    __slots__ = ('source', 'data', 'layout', '_uefi_dropped_once',
                 '_capabilities', '_caps_lock', '_templates')

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
        # One template per script size class in use: see _template().
        put('_templates', lru.Lru(template.MAX_TEMPLATES))
        structure.check_structure(self.data, source)
        parsed = cdlib.Cdlib()
        source_fp = fileio.ViewReader(self.data)
        try:
            parsed.open_fp(source_fp)
        except Exception as e:
            # pycdlib is not hardened against hostile images: anything it
            # raises while parsing means the bytes are not a usable ISO.
            raise exception.InvalidIso(
                source=source, reason='not a readable ISO 9660 image '
                '(%s: %s)' % (type(e).__name__, e))
        try:
            put('layout', layout.LayoutReader(self, parsed).read())
        except exception.NovaIpxeError:
            raise
        except Exception as e:
            # As above: hostile metadata can trip pycdlib anywhere.
            LOG.debug('Reading %s failed', source, exc_info=True)
            raise exception.InvalidIso(source=source, reason='%s: %s' % (
                type(e).__name__, e))
        finally:
            parsed.close()
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
        templates = self._templates.values()
        return len(self.data) + sum(len(t.data) for t in templates if t)

    def __delattr__(self, name):
        raise AttributeError('a parsed BaseIso is immutable')

    @classmethod
    def from_path(cls, path, max_size=None, name=None):
        """Read (:func:`fileio.read_iso_file`) and parse ``path``."""
        name = name or path
        return cls(fileio.read_iso_file(path, max_size, name), source=name,
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
        return layout.lookup(self.layout.files, path, cwd)

    def file_bytes(self, f):
        start = f.extent * structure.SECTOR
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
            caps['bios'] = ipxe_caps.read_cached(
                self.file_bytes(self.bios.kernel), self.bios.kernel.path)
        if self.efi and self.efi.loader:
            name = '%s:%s' % (self.efi.image.path, self.efi.loader)
            try:
                loader = esp.FatImage(self.file_bytes(self.efi.image),
                                      self.efi.image.path,
                                      writable=False).read_file(
                                          self.efi.loader)
                caps['uefi'] = ipxe_caps.read_cached(loader, name)
            except exception.EfiImageError as e:
                caps['uefi'] = ipxe_caps.unknown(name, e.message)
        return caps

    def efi_loader_signed(self):
        """The UEFI iPXE loader is signed (Secure Boot can run it)."""
        if self.efi is None or not self.efi.loader:
            return False
        try:
            fat = esp.FatImage(self.file_bytes(self.efi.image),
                               self.efi.image.path, writable=False)
            return ipxe_caps.pe_signed(fat.read_file(self.efi.loader)
                                       or b'')
        except exception.NovaIpxeError:
            return False

    def describe(self):
        """What was found, for ``nova-ipxe inspect``.

        Names are escaped: they come from the ISO and may carry escapes.
        """
        info = {
            'source': exception.shown(self.source),
            'size': len(self.data),
            'volume_id': self.volume_id,
            'rock_ridge': bool(self.rock_ridge),
            'joliet': self.joliet,
            'isohybrid': self.isohybrid,
            'files': [exception.shown(f.path) for f in self.files],
            'bios': None,
            'uefi': None,
        }
        if self.bios:
            info['bios'] = {
                'boot_image': exception.shown(self.bios.image.path),
                'config': exception.shown(self.bios.config.path),
                'kernel': exception.shown(self.bios.kernel.path),
                'kernel_size': self.bios.kernel.length,
                'script_injection': True}
            info['bios']['ipxe'] = _caps_info(self.capabilities()['bios'])
        if self.efi:
            info['uefi'] = {
                'boot_image': exception.shown(self.efi.image.path),
                'loader': self.efi.loader,
                'script_injection': self.efi.autoexec,
                'reason': self.efi.reason and exception.shown(
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
                            'ISOs will boot BIOS only',
                            exception.shown(self.source),
                            exception.shown(self.efi.reason))
            return False
        return True

    def _efi_image_with(self, script):
        fat = esp.FatImage(self.file_bytes(self.efi.image),
                           self.efi.image.path)
        self._put_script(fat, script)
        return fat.view()

    def _put_script(self, fat, script):
        """Write ``script`` as the EFI image's autoexec.ipxe."""
        fat.write_file('/', layout.AUTOEXEC, script)
        # A newer iPXE prefers a script next to the loader: replace one
        # there too, so no stale script can win.
        loader_dir = posixpath.dirname(self.efi.loader)
        beside = posixpath.join(loader_dir, layout.AUTOEXEC)
        if fat.read_file(beside) is not None:
            fat.write_file(loader_dir, layout.AUTOEXEC, script)

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
                    or f.iso_path in skip or layout.is_script_name(f)):
                continue  # the catalog is remade; our script replaces
            key, data = replaced.get(f.iso_path, (None, None))
            if key is None and posixpath.basename(
                    f.path).lower() == layout.AUTOEXEC:
                key, data = 'script', script  # no stale stock script
            if key is None:
                key, data = ('extent', f.extent, f.length), None
            contents.append((f, key, data))
        if self.bios:
            contents.append((None, 'script', script))
        return contents

    def _assemble(self, script, uefi, readers, efi_as_is=False):
        def reader(data):
            readers.append(fileio.ViewReader(data))
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
                planned += -(-length // structure.SECTOR) * structure.SECTOR
        if planned > self.output_limit(script) - OUTPUT_SLACK:
            self._fail('its files would make a %d-byte ISO, more than the '
                       'source plus the script' % planned)

        new = cdlib.Cdlib()
        new.new(interchange_level=self.interchange_level,
                vol_ident=self.volume_id[:32],
                rock_ridge=self.rock_ridge or None,
                joliet=3 if self.joliet else None)
        for iso_path, path in self.dirs:
            new.add_directory(iso_path, **self._names(path))
        written = {}
        for f, key, data in contents:
            iso_path, path = ((f.iso_path, f.path) if f else
                              (layout.SCRIPT_ISO_PATH,
                               '/' + layout.SCRIPT_NAME))
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
        bounded = fileio.BoundedWriter(fp, self.output_limit(script),
                                       self.source)
        new.write_fp(bounded)
        return bounded.size

    def build(self, script, output, uefi='auto'):
        """Write the per-instance ISO to ``output`` atomically."""
        if isinstance(script, str):
            script = script.encode('ascii')
        patched = self._template(script, uefi)
        if patched is not None:
            size = self._to_file(output, lambda f: patched.write(f, script))
            return dataclasses.replace(patched.result, path=output,
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
        patched = self._template(script, uefi)
        if patched is not None:
            return patched.to_bytes(script), patched.result
        return self._full_bytes(script, uefi)

    def _full_bytes(self, script, uefi='auto'):
        """build_bytes() the long way, with no template."""
        with self.assembled(script, uefi) as (new, result):
            out = io.BytesIO()
            self._write(new, out, script)
        return out.getvalue(), result

    # -- templates: the layout built once, the script patched in ----------

    def _template(self, script, uefi):
        """The :class:`template.Template` ``script`` fits, made on first use.

        None means: build the long way (no usable template for this
        script, or making one failed; the long way then raises whatever
        error the build ends in).
        """
        with_uefi = self._plan_uefi(uefi)
        if self.bios is None and not with_uefi:
            return None
        cs = self.efi.cluster_size if with_uefi else 1
        if not 0 < len(script) <= template.MAX_TEMPLATE_SCRIPT or not cs:
            return None
        # Scripts of the same sector and cluster counts share a layout.
        key = (with_uefi, -(-len(script) // structure.SECTOR),
               -(-len(script) // cs) if with_uefi else 0)
        patched = self._templates.get_or_make(
            key, lambda: self._make_template(with_uefi, *key[1:]))
        if patched is None or len(patched.data) > self.output_limit(
                script):
            return None
        return patched

    def _make_template(self, with_uefi, sectors, clusters):
        """A build with a placeholder script of the key's counts, mapped.

        The placeholder is 16-byte blocks of a random nonce and the block
        number: every copy of it in the output is found by its bytes,
        wherever pycdlib and the FAT writer put it, and must be found
        whole.  Anything unexpected: no template (None).
        """
        slot = sectors * structure.SECTOR
        if with_uefi:
            slot = min(slot, clusters * self.efi.cluster_size)
        nonce = secrets.token_bytes(12)
        placeholder = b''.join(nonce + i.to_bytes(4, 'big')
                               for i in range(slot // 16))
        try:
            with self.assembled(placeholder,
                                'require' if with_uefi else 'off',
                                efi_as_is=True) as (new, result):
                out = fileio.MemoryWriter(self.output_limit(placeholder))
                self._write(new, out, placeholder)
            data = out.value()
            efi = None
            if with_uefi:
                # The EFI image went in as is: the script goes in now, in
                # the output (its size, all pycdlib's layout knows of it,
                # is the same).
                at = [extent * structure.SECTOR for _, path, extent, length
                      in template.template_records(data)
                      if path == self.efi.image.iso_path
                      and length == self.efi.image.length]
                if len(at) != 1:
                    raise template.NoTemplate('no one EFI image record')
                with memoryview(data)[at[0]:at[0] + self.efi.image.length] \
                        as view:
                    self._put_script(esp.FatImage(view, self.efi.image.path,
                                                  writable='in place'),
                                     placeholder)
                efi = (self.efi.image, sorted({
                    '/' + layout.AUTOEXEC, posixpath.join(
                        posixpath.dirname(self.efi.loader), layout.AUTOEXEC)}))
            return template.Template.map(data, nonce, slot, result, efi)
        except Exception as e:
            # The long way will raise the build's own error, if any.
            LOG.debug('%s: no build template (%s: %s)', self.source,
                      type(e).__name__, e)
            return None
