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

"""ISO reading and rebuilding on real iPXE ISOs (no QEMU here: the
functional tests boot what these tests build)."""

import io
import os
import subprocess

import fixtures
import hypothesis
import pycdlib

from nova_ipxe import esp
from nova_ipxe import exception
from nova_ipxe import iso
from tests import base
from tests import samples

SCRIPT = b'#!ipxe\necho per-instance\nchain http://192.0.2.1/menu\n'


class IsoTestCase(base.TestCase):

    def build(self, source, uefi='auto', name='out.iso'):
        out = os.path.join(self.tmp, name)
        result = iso.BaseIso.from_path(source).build(SCRIPT, out, uefi=uefi)
        self.assertEqual(os.path.getsize(out), result.size)
        self.assertEqual(['out.iso'] if name == 'out.iso' else [name],
                         [f for f in os.listdir(self.tmp)
                          if f.endswith(('.iso', '.tmp')) and f != 'src'
                          and not f.startswith(('genfsimg', 'plain'))])
        return out, result

    def assertBiosScript(self, out, kernel):
        files = samples.iso_files(out)
        cfg = files.get('/isolinux.cfg') or files.get(
            '/isolinux/isolinux.cfg')
        self.assertIn(b' KERNEL %s\n' % kernel.encode(), cfg)
        self.assertIn(b' INITRD /nipxe.ipx\n', cfg)
        self.assertNotIn(b'APPEND', cfg)
        self.assertEqual(SCRIPT, files['/nipxe.ipx'])
        return files

    def assertEfiScript(self, efi_bytes):
        img = os.path.join(self.tmp, 'efi-check.img')
        with open(img, 'wb') as f:
            f.write(efi_bytes)
        fsck = subprocess.run(['fsck.fat', '-n', img], capture_output=True,
                              text=True)
        self.assertEqual(0, fsck.returncode, fsck.stdout + fsck.stderr)
        mtype = subprocess.run(['mtype', '-i', img, '::/autoexec.ipxe'],
                               capture_output=True, check=True)
        self.assertEqual(SCRIPT, mtype.stdout)

    def catalog(self, path):
        p = pycdlib.PyCdlib()
        p.open(path)
        try:
            cat = p.eltorito_boot_catalog
            return (cat.initial_entry is not None,
                    [s.platform_id for s in cat.sections])
        finally:
            p.close()

    def test_bookworm(self):
        logger = self.useFixture(fixtures.FakeLogger())
        base_iso = iso.BaseIso.from_path(base.BOOKWORM_ISO)
        info = base_iso.describe()
        self.assertEqual('/ipxe.krn', info['bios']['kernel'])
        self.assertEqual('/isolinux.cfg', info['bios']['config'])
        self.assertFalse(info['uefi']['script_injection'])
        self.assertIn('predates autoexec.ipxe', info['uefi']['reason'])
        out, result = self.build(base.BOOKWORM_ISO)
        self.assertEqual((True, False), (result.bios, result.uefi))
        self.assertIn('dropping the UEFI boot entry', logger.output)
        files = self.assertBiosScript(out, '/ipxe.krn')
        self.assertNotIn('/efi.img', files)  # never a script-less UEFI
        self.assertEqual((True, []), self.catalog(out))

    def test_bookworm_uefi_require(self):
        e = self.assertRaises(exception.UefiUnsupported, self.build,
                              base.BOOKWORM_ISO, uefi='require')
        self.assertIn('predates autoexec.ipxe', str(e))
        self.assertEqual([], os.listdir(self.tmp))

    def test_trixie(self):
        info = iso.BaseIso.from_path(base.TRIXIE_ISO).describe()
        self.assertTrue(info['uefi']['script_injection'])
        out, result = self.build(base.TRIXIE_ISO)
        self.assertEqual((True, True), (result.bios, result.uefi))
        files = self.assertBiosScript(out, '/ipxe.krn')
        self.assertEfiScript(files['/efi.img'])
        self.assertEqual((True, [0xEF]), self.catalog(out))
        # The loaders are untouched.
        fat = esp.FatImage(files['/efi.img'])
        source = esp.FatImage(samples.iso_files(
            base.TRIXIE_ISO)['/efi.img'])
        self.assertEqual(source.read_file('/EFI/BOOT/BOOTX64.EFI'),
                         fat.read_file('/EFI/BOOT/BOOTX64.EFI'))

    def test_trixie_uefi_off(self):
        out, result = self.build(base.TRIXIE_ISO, uefi='off')
        self.assertFalse(result.uefi)
        self.assertNotIn('/efi.img', samples.iso_files(out))

    def test_genfsimg_layout(self):
        source = samples.genfsimg_iso(self.tmp)
        info = iso.BaseIso.from_path(source).describe()
        self.assertEqual('/ipxe.lkrn', info['bios']['kernel'])
        self.assertEqual('/esp.img', info['uefi']['boot_image'])
        out, result = self.build(source)
        self.assertTrue(result.uefi)
        files = self.assertBiosScript(out, '/ipxe.lkrn')
        # The stock script (which runs dhcp) is gone everywhere.
        self.assertEqual(SCRIPT, files['/autoexec.ipxe'])
        self.assertEfiScript(files['/esp.img'])

    def test_plain_iso9660_names(self):
        source = samples.plain_iso(self.tmp)
        base_iso = iso.BaseIso.from_path(source)
        self.assertFalse(base_iso.rock_ridge)
        info = base_iso.describe()
        self.assertEqual('/ISOLINUX/ISOLINUX.CFG', info['bios']['config'])
        self.assertEqual('/IPXE.LKR', info['bios']['kernel'])
        self.assertIsNone(info['uefi'])
        out, _ = self.build(source)
        rebuilt = iso.BaseIso.from_path(out)
        cfg = bytes(rebuilt.file_bytes(rebuilt.bios.config))
        self.assertIn(b'KERNEL /IPXE.LKR\n', cfg)
        self.assertEqual(SCRIPT, bytes(rebuilt.file_bytes(
            rebuilt.lookup('/nipxe.ipx'))))

    def test_rebuild_own_output(self):
        out, _ = self.build(base.TRIXIE_ISO)
        again = os.path.join(self.tmp, 'again.iso')
        iso.BaseIso.from_path(out).build(b'#!ipxe\necho two\n', again)
        files = samples.iso_files(again)
        self.assertEqual(b'#!ipxe\necho two\n', files['/nipxe.ipx'])
        self.assertEqual(1, sum(1 for f in files if 'nipxe' in f))

    def test_build_bytes_matches_file(self):
        base_iso = iso.BaseIso.from_path(base.TRIXIE_ISO)
        data, result = base_iso.build_bytes(SCRIPT)
        self.assertTrue(result.uefi)
        path = os.path.join(self.tmp, 'mem.iso')
        with open(path, 'wb') as f:
            f.write(data)
        self.assertEqual(SCRIPT, samples.iso_files(path)['/nipxe.ipx'])


class BadIsoTestCase(base.TestCase):

    def source(self, data, name='bad.iso'):
        path = os.path.join(self.tmp, name)
        with open(path, 'wb') as f:
            f.write(data)
        return path

    def assertRefused(self, exc, path, text, **kw):
        out = os.path.join(self.tmp, 'out', 'new.iso')
        os.makedirs(os.path.dirname(out), exist_ok=True)

        def build():
            iso.BaseIso.from_path(path, **kw).build(SCRIPT, out)
        e = self.assertRaises(exc, build)
        self.assertIn(text, str(e))
        self.assertEqual([], os.listdir(os.path.dirname(out)))
        return e

    def test_not_an_iso(self):
        self.assertRefused(exception.InvalidIso, self.source(
            os.urandom(64 * 1024)), 'not a readable ISO 9660 image')
        # A valid volume descriptor over garbage: pycdlib's own errors
        # become the same typed error.
        data = bytearray(open(base.BOOKWORM_ISO, 'rb').read())
        data[17 * 2048:40 * 2048] = os.urandom(23 * 2048)
        self.assertRefused(exception.InvalidIso, self.source(
            bytes(data), 'garbled.iso'), 'is not a usable iPXE ISO')

    def test_empty(self):
        self.assertRefused(exception.InvalidIso, self.source(b''),
                           'not a readable ISO 9660 image')

    def test_truncated(self):
        data = open(base.TRIXIE_ISO, 'rb').read()
        e = self.assertRefused(exception.InvalidIso,
                               self.source(data[:len(data) // 2]),
                               'is not a usable iPXE ISO')
        self.assertIn('it is truncated', str(e))

    def test_missing_file(self):
        self.assertRefused(exception.InvalidIso,
                           os.path.join(self.tmp, 'nope.iso'),
                           'cannot read it')

    def test_no_el_torito(self):
        path = samples.write_iso(os.path.join(self.tmp, 'plain.iso'), {
            ('/README.;1', '/README'): b'hello'})
        self.assertRefused(exception.InvalidIso, path, 'no El Torito')

    def test_no_ipxe_kernel(self):
        isolinux, ldlinux, _ = samples.bookworm_parts()
        path = samples.write_iso(os.path.join(self.tmp, 'x.iso'), {
            ('/ISOLINUX.BIN;1', '/isolinux.bin'): isolinux,
            ('/LDLINUX.C32;1', '/ldlinux.c32'): ldlinux,
            ('/ISOLINUX.CFG;1', '/isolinux.cfg'):
                b'DEFAULT linux\nLABEL linux\n KERNEL vmlinuz\n',
            ('/VMLINUZ.;1', '/vmlinuz'): b'\0' * 0x202 + b'HdrS' + b'\0' * 99,
        }, bios='/ISOLINUX.BIN;1')
        self.assertRefused(exception.InvalidIso, path,
                           'is not an iPXE kernel')

    def test_kernel_not_on_iso(self):
        isolinux, ldlinux, _ = samples.bookworm_parts()
        path = samples.write_iso(os.path.join(self.tmp, 'x.iso'), {
            ('/ISOLINUX.BIN;1', '/isolinux.bin'): isolinux,
            ('/LDLINUX.C32;1', '/ldlinux.c32'): ldlinux,
            ('/ISOLINUX.CFG;1', '/isolinux.cfg'):
                b'DEFAULT ipxe\nLABEL ipxe\n KERNEL ../../etc/passwd\n',
        }, bios='/ISOLINUX.BIN;1')
        self.assertRefused(exception.InvalidIso, path, 'not on the ISO')

    def test_bios_image_not_isolinux(self):
        path = samples.write_iso(os.path.join(self.tmp, 'x.iso'), {
            ('/BOOT.IMG;1', '/boot.img'): b'\xeb' * 2048,
        }, bios='/BOOT.IMG;1')
        self.assertRefused(exception.InvalidIso, path, 'is not ISOLINUX')

    def test_too_large(self):
        e = self.assertRefused(exception.IsoTooLarge, base.TRIXIE_ISO,
                               'more than [ipxe] max_iso_size',
                               max_size=1024 * 1024)
        self.assertIn('9437184 bytes', str(e))

    def test_efi_image_full(self):
        isolinux, ldlinux, files = samples.bookworm_parts()
        loader = samples.trixie_file('ipxe.efi')
        esp_path = samples.fat_image(
            os.path.join(self.tmp, 'full.img'),
            {'/EFI/BOOT/BOOTX64.EFI': loader}, size_kib=1000)
        # Fill every free cluster.
        free = subprocess.run(['minfo', '-i', esp_path], check=True,
                              capture_output=True, text=True)
        filler = os.path.join(self.tmp, 'filler')
        size = 1000 * 1024
        while size > 0:
            with open(filler, 'wb') as f:
                f.write(b'x' * size)
            r = subprocess.run(['mcopy', '-o', '-i', esp_path, filler,
                                '::/filler'], capture_output=True)
            if r.returncode == 0:
                break
            size -= 2048
        self.assertTrue(free.stdout)
        path = samples.write_iso(os.path.join(self.tmp, 'x.iso'), {
            ('/ISOLINUX.BIN;1', '/isolinux.bin'): isolinux,
            ('/LDLINUX.C32;1', '/ldlinux.c32'): ldlinux,
            ('/ISOLINUX.CFG;1', '/isolinux.cfg'): files['/isolinux.cfg'],
            ('/IPXE.KRN;1', '/ipxe.krn'): files['/ipxe.krn'],
            ('/EFI.IMG;1', '/efi.img'): open(esp_path, 'rb').read(),
        }, bios='/ISOLINUX.BIN;1', efi='/EFI.IMG;1')
        self.assertRefused(exception.EfiImageFull, path, 'has no room for '
                           'autoexec.ipxe')

    def test_write_failure_leaves_nothing(self):
        out = os.path.join(self.tmp, 'new.iso')
        with open(out, 'wb') as f:
            f.write(b'previous')

        def fail(self, fp, *a, **kw):
            fp.write(b'partial')
            raise OSError(28, 'No space left on device')
        self.useFixture(fixtures.MonkeyPatch(
            'pycdlib.PyCdlib.write_fp', fail))
        e = self.assertRaises(exception.IsoBuildFailed,
                              iso.BaseIso.from_path(base.BOOKWORM_ISO).build,
                              SCRIPT, out)
        self.assertIn('No space left on device', str(e))
        self.assertEqual(['new.iso'], os.listdir(self.tmp))
        self.assertEqual(b'previous', open(out, 'rb').read())

    def test_output_directory_missing(self):
        e = self.assertRaises(
            exception.IsoBuildFailed,
            iso.BaseIso.from_path(base.BOOKWORM_ISO).build, SCRIPT,
            os.path.join(self.tmp, 'missing', 'new.iso'))
        self.assertIn('No such file or directory', str(e))


class BootInfoChecksumTestCase(base.TestCase):

    def test_fast_checksum_matches_pycdlib(self):
        # nova_ipxe.iso replaces pycdlib's per-word Python loop; the sum
        # must stay identical, padding of a partial sector included.
        original = pycdlib.pycdlib.PyCdlib.__dict__.get(
            '_calculate_eltorito_boot_info_table_csum')
        self.assertIs(iso._boot_info_table_csum, original)
        isolinux, _, _ = samples.bookworm_parts()

        class Fake:
            logical_block_size = 2048

        def slow(data, length):
            total = 0
            padded = data.ljust(-(-length // 2048) * 2048, b'\0')
            for i in range(64, len(padded), 4):
                total = (total + int.from_bytes(padded[i:i + 4],
                                                'little')) & 0xffffffff
            return total
        for length in (len(isolinux), len(isolinux) - 3, 100, 2048, 2049):
            data = isolinux[:length]
            self.assertEqual(slow(data, length), iso._boot_info_table_csum(
                Fake(), io.BytesIO(data), length))


class IsolinuxCfgTestCase(base.TestCase):

    def test_forms(self):
        for text, kernel in [
                ('DEFAULT ipxe.lkrn\nLABEL ipxe.lkrn\n KERNEL ipxe.krn\n',
                 'ipxe.krn'),
                ('default a\nlabel b\n kernel b.krn\nlabel a\n linux a.krn'
                 ' quiet\n', 'a.krn'),
                ('DEFAULT ipxe.lkrn initrd=x\n', 'ipxe.lkrn'),
                ('KERNEL /boot/ipxe.lkrn\n', '/boot/ipxe.lkrn'),
                ('UI menu.c32\nLABEL x\n KERNEL x.krn\nLABEL y\n MENU '
                 'DEFAULT\n KERNEL y.krn\n', 'y.krn'),
                ('# nothing\n', None)]:
            self.assertEqual(kernel, iso.parse_isolinux_cfg(text), text)


class MutatedIsoTestCase(base.TestCase):
    """Hostile ISO bytes: a stock ISO with its metadata sectors mangled.

    Whatever the damage, the result is a parsed ISO or a typed error,
    never another exception (pycdlib is not hardened against this).
    """

    @hypothesis.settings(max_examples=120, deadline=None,
                         suppress_health_check=list(hypothesis.HealthCheck))
    @hypothesis.given(
        sector=hypothesis.strategies.integers(16, 40),
        offset=hypothesis.strategies.integers(0, 2047),
        junk=hypothesis.strategies.binary(min_size=1, max_size=64))
    def test_mangled_metadata(self, sector, offset, junk):
        data = bytearray(self.source())
        start = sector * 2048 + offset
        data[start:start + len(junk)] = junk
        try:
            base_iso = iso.BaseIso(bytes(data[:len(self._source)]), 'x.iso')
            base_iso.build_bytes(SCRIPT)
        except exception.NovaIpxeError:
            pass

    def source(self):
        if not hasattr(type(self), '_source'):
            with open(base.BOOKWORM_ISO, 'rb') as f:
                type(self)._source = f.read()
        return self._source
