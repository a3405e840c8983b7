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

import collections
import dataclasses
import io
import os
import posixpath
import struct
import subprocess
import threading
import uuid
import zlib

import fixtures
import hypothesis
from hypothesis import strategies as st
import pycdlib
from testtools import content

from nova_ipxe import capabilities
from nova_ipxe import esp
from nova_ipxe import exception
from nova_ipxe import iso
from nova_ipxe import lru
from tests import base
from tests import samples

SCRIPT = b'#!ipxe\necho per-instance\nchain http://192.0.2.1/menu\n'
boot_iso = samples.boot_iso_bytes


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
        base_iso = iso.BaseIso.from_path(samples.bookworm_iso())
        info = base_iso.describe()
        self.assertEqual('/ipxe.krn', info['bios']['kernel'])
        self.assertEqual('/isolinux.cfg', info['bios']['config'])
        self.assertFalse(info['uefi']['script_injection'])
        self.assertIn('predates autoexec.ipxe', info['uefi']['reason'])
        out, result = self.build(samples.bookworm_iso())
        self.assertEqual((True, False), (result.bios, result.uefi))
        self.assertIn('dropping the UEFI boot entry', logger.output)
        files = self.assertBiosScript(out, '/ipxe.krn')
        self.assertNotIn('/efi.img', files)  # never a script-less UEFI
        self.assertEqual((True, []), self.catalog(out))

    def test_bookworm_uefi_require(self):
        e = self.assertRaises(exception.UefiUnsupported, self.build,
                              samples.bookworm_iso(), uefi='require')
        self.assertIn('predates autoexec.ipxe', str(e))
        self.assertEqual([], os.listdir(self.tmp))

    def test_trixie(self):
        info = iso.BaseIso.from_path(samples.trixie_iso()).describe()
        self.assertTrue(info['uefi']['script_injection'])
        out, result = self.build(samples.trixie_iso())
        self.assertEqual((True, True), (result.bios, result.uefi))
        files = self.assertBiosScript(out, '/ipxe.krn')
        self.assertEfiScript(files['/efi.img'])
        self.assertEqual((True, [0xEF]), self.catalog(out))
        # The loaders are untouched.
        fat = esp.FatImage(files['/efi.img'])
        source = esp.FatImage(samples.iso_files(
            samples.trixie_iso())['/efi.img'])
        self.assertEqual(source.read_file('/EFI/BOOT/BOOTX64.EFI'),
                         fat.read_file('/EFI/BOOT/BOOTX64.EFI'))

    def test_trixie_uefi_off(self):
        out, result = self.build(samples.trixie_iso(), uefi='off')
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
        out, _ = self.build(samples.trixie_iso())
        again = os.path.join(self.tmp, 'again.iso')
        iso.BaseIso.from_path(out).build(b'#!ipxe\necho two\n', again)
        files = samples.iso_files(again)
        self.assertEqual(b'#!ipxe\necho two\n', files['/nipxe.ipx'])
        self.assertEqual(1, sum(1 for f in files if 'nipxe' in f))

    def test_build_bytes_matches_file(self):
        base_iso = iso.BaseIso.from_path(samples.trixie_iso())
        data, result = base_iso.build_bytes(SCRIPT)
        self.assertTrue(result.uefi)
        path = os.path.join(self.tmp, 'mem.iso')
        with open(path, 'wb') as f:
            f.write(data)
        self.assertEqual(SCRIPT, samples.iso_files(path)['/nipxe.ipx'])

    def test_isohybrid_ids_fresh_per_build(self):
        # Patched builds draw the MBR signature and GPT GUIDs anew, as
        # pycdlib does per build, and keep the GPT CRCs true.
        base_iso = iso.BaseIso.from_path(samples.trixie_iso())
        outs = [base_iso.build_bytes(SCRIPT)[0] for _ in range(3)]
        self.assertIsInstance(base_iso._template(SCRIPT, 'auto'),
                              iso.template.Template)
        self.assertEqual(3, len({out[440:444] for out in outs}))
        for out in outs:
            backup = int.from_bytes(out[544:552], 'little') * 512
            guids = set()
            for at in (512, backup):
                header = bytearray(out[at:at + 92])
                self.assertEqual(b'EFI PART', bytes(header[:8]))
                crc = bytes(header[16:20])
                header[16:20] = bytes(4)
                self.assertEqual(zlib.crc32(header).to_bytes(4, 'little'),
                                 crc)
                entries = int.from_bytes(header[72:80], 'little') * 512
                # pycdlib's entries CRC covers the two entries in use.
                self.assertEqual(zlib.crc32(out[entries:entries + 256]),
                                 int.from_bytes(header[88:92], 'little'))
                guids.update((bytes(header[56:72]),
                              out[entries + 16:entries + 32],
                              out[entries + 144:entries + 160]))
            self.assertEqual(6, len(guids))
        self.assertEqual(3, len({out[512 + 56:512 + 72] for out in outs}))


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
        data = bytearray(open(samples.bookworm_iso(), 'rb').read())
        data[17 * 2048:40 * 2048] = os.urandom(23 * 2048)
        self.assertRefused(exception.InvalidIso, self.source(
            bytes(data), 'garbled.iso'), 'is not a usable iPXE ISO')

    def test_empty(self):
        self.assertRefused(exception.InvalidIso, self.source(b''),
                           'not a readable ISO 9660 image')

    def test_truncated(self):
        data = open(samples.trixie_iso(), 'rb').read()
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
        path = samples.isolinux_iso(
            os.path.join(self.tmp, 'x.iso'),
            b'DEFAULT linux\nLABEL linux\n KERNEL vmlinuz\n', {
                ('/VMLINUZ.;1', '/vmlinuz'):
                    b'\0' * 0x202 + b'HdrS' + b'\0' * 99})
        self.assertRefused(exception.InvalidIso, path,
                           'is not an iPXE kernel')

    def test_kernel_not_on_iso(self):
        path = samples.isolinux_iso(
            os.path.join(self.tmp, 'x.iso'),
            b'DEFAULT ipxe\nLABEL ipxe\n KERNEL ../../etc/passwd\n')
        self.assertRefused(exception.InvalidIso, path, 'not on the ISO')

    def test_bios_image_not_isolinux(self):
        path = samples.write_iso(os.path.join(self.tmp, 'x.iso'), {
            ('/BOOT.IMG;1', '/boot.img'): b'\xeb' * 2048,
        }, bios='/BOOT.IMG;1')
        self.assertRefused(exception.InvalidIso, path, 'is not ISOLINUX')

    def test_too_large(self):
        e = self.assertRefused(exception.ImageTooLarge, samples.trixie_iso(),
                               'more than [ipxe] max_iso_size',
                               max_size=1024 * 1024)
        self.assertIn('9437184 bytes', str(e))

    def test_efi_image_full(self):
        _, _, files = samples.bookworm_parts()
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
        path = samples.isolinux_iso(
            os.path.join(self.tmp, 'x.iso'), files['/isolinux.cfg'], {
                ('/IPXE.KRN;1', '/ipxe.krn'): files['/ipxe.krn'],
                ('/EFI.IMG;1', '/efi.img'): open(esp_path, 'rb').read(),
            }, efi='/EFI.IMG;1')
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
        base_iso = iso.BaseIso.from_path(samples.bookworm_iso())
        e = self.assertRaises(exception.IsoBuildFailed, base_iso.build,
                              SCRIPT, out)
        self.assertIn('No space left on device', str(e))
        self.assertEqual(['new.iso'], os.listdir(self.tmp))
        self.assertEqual(b'previous', open(out, 'rb').read())

    def test_output_directory_missing(self):
        e = self.assertRaises(
            exception.IsoBuildFailed,
            iso.BaseIso.from_path(samples.bookworm_iso()).build, SCRIPT,
            os.path.join(self.tmp, 'missing', 'new.iso'))
        self.assertIn('No such file or directory', str(e))


class BootInfoChecksumTestCase(base.TestCase):

    def test_fast_checksum_matches_pycdlib(self):
        # Our builds' pycdlib replaces pycdlib's per-word Python loop; the
        # sum must stay identical, padding of a partial sector included.
        csum = iso.cdlib._boot_info_table_csum
        self.assertIs(csum, iso.cdlib.Cdlib.__dict__[
            '_calculate_eltorito_boot_info_table_csum'])
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
            self.assertEqual(slow(data, length), csum(
                Fake(), io.BytesIO(data), length))

    def test_plain_pycdlib_untouched(self):
        # A build happens first: nothing it does may change pycdlib for
        # the other users of the process (nova-compute).
        iso.BaseIso.from_path(samples.bookworm_iso()).build_bytes(SCRIPT)
        method = pycdlib.PyCdlib.__dict__[
            '_calculate_eltorito_boot_info_table_csum']
        self.assertEqual('pycdlib.pycdlib', method.__module__)
        self.assertIsNot(iso.cdlib._boot_info_table_csum, method)
        self.assertNotIn('_calculate_eltorito_boot_info_table_csum',
                         vars(pycdlib.pycdlib.PyCdlib).get('__slots__', ()))
        # And a plain pycdlib writes the same boot info table as ours.
        isolinux, _, _ = samples.bookworm_parts()
        images = []
        for cls in (pycdlib.PyCdlib, iso.cdlib.Cdlib):
            new = cls()
            new.new(interchange_level=3)
            new.add_fp(io.BytesIO(isolinux), len(isolinux), '/ISOLINUX.BIN;1')
            new.add_eltorito('/ISOLINUX.BIN;1', bootcatfile='/BOOT.CAT;1',
                             boot_load_size=4, boot_info_table=True)
            out = io.BytesIO()
            new.write_fp(out)
            new.close()
            out.seek(0)
            new = pycdlib.PyCdlib()
            new.open_fp(out)
            boot = io.BytesIO()
            new.get_file_from_iso_fp(boot, iso_path='/ISOLINUX.BIN;1')
            new.close()
            images.append(boot.getvalue())
        # The boot info table (bytes 8 to 64) carries the checksum.
        self.assertNotEqual(isolinux[8:64], images[0][8:64])
        self.assertEqual(images[0], images[1])


class MutatedIsoTestCase(base.TestCase):
    """Hostile ISO bytes: a stock ISO with its metadata sectors mangled.

    Whatever the damage, the result is a parsed ISO or a typed error,
    never another exception (pycdlib is not hardened against this).
    """

    def test_mangled_metadata(self):
        outcomes = collections.Counter()

        @hypothesis.settings(max_examples=120, deadline=None,
                             suppress_health_check=list(
                                 hypothesis.HealthCheck))
        @hypothesis.given(
            sector=hypothesis.strategies.integers(16, 40),
            offset=hypothesis.strategies.integers(0, 2047),
            junk=hypothesis.strategies.binary(min_size=1, max_size=64))
        def one(sector, offset, junk):
            data = bytearray(self.source())
            start = sector * 2048 + offset
            data[start:start + len(junk)] = junk
            data = bytes(data[:len(self._source)])
            try:
                base_iso = iso.BaseIso(data, 'x.iso')
                out, result = base_iso.build_bytes(SCRIPT)
            except exception.NovaIpxeError as e:
                # Refused: the tenant's fault, said on one line.
                self.assertEqual(exception.TENANT, e.category, str(e))
                self.assertEqual([str(e)], str(e).splitlines())
                outcomes['refused'] += 1
                return
            # Built: within the output bound, and an ISO that boots this
            # script (read back by pycdlib, not by our reader).
            self.assertLessEqual(len(out), base_iso.output_limit(SCRIPT))
            back = pycdlib.PyCdlib()
            back.open_fp(io.BytesIO(out))
            script = io.BytesIO()
            back.get_file_from_iso_fp(script, iso_path=iso.SCRIPT_ISO_PATH)
            back.close()
            self.assertEqual(SCRIPT, script.getvalue())
            self.assertTrue(result.bios)
            outcomes['built'] += 1
        one()
        self.addDetail('outcomes', content.text_content(str(dict(outcomes))))
        # The examples reach both outcomes: damage that matters and damage
        # that does not.
        self.assertGreater(outcomes['refused'], 0, outcomes)
        self.assertGreater(outcomes['built'], 0, outcomes)

    def source(self):
        if not hasattr(type(self), '_source'):
            with open(samples.bookworm_iso(), 'rb') as f:
                type(self)._source = f.read()
        return self._source


class HostileIsoTestCase(base.TestCase):
    """What a tenant's ISO must not do to the compute host."""

    def assertInvalid(self, data, text, exc=exception.InvalidIso):
        e = self.assertRaises(exc, iso.BaseIso, data, 'hostile.iso')
        self.assertIn(text, str(e))
        self.assertEqual(exception.TENANT, e.category)
        self.assertNotIn('\n', str(e))
        return e

    def test_hard_links_written_once(self):
        def links(new):
            for i in range(100):
                new.add_hard_link(iso_old_path='/IPXE.KRN;1',
                                  iso_new_path='/L%d.;1' % i,
                                  rr_name='l%d' % i)
        data = boot_iso(links)
        base_iso = iso.BaseIso(data, 'links.iso')
        self.assertEqual(105, len(base_iso.files))
        out, _ = base_iso.build_bytes(SCRIPT)
        # 100 names of a 300 KB kernel, and the output is no larger than
        # the source plus one script (and a few sectors of records).
        self.assertLess(len(out), len(data) + len(SCRIPT) + 64 * 2048)
        rebuilt = iso.BaseIso(out, 'out.iso')
        kernel = rebuilt.lookup('/ipxe.krn')
        self.assertEqual({kernel.extent}, {
            f.extent for f in rebuilt.files if f.path[2:].isdigit()})

    def test_overlapping_extents_refused(self):
        def two(new):
            new.add_fp(io.BytesIO(b'a' * 5000), 5000, '/A.;1', rr_name='a')
            new.add_fp(io.BytesIO(b'b' * 5000), 5000, '/B.;1', rr_name='b')
        data = bytearray(boot_iso(two))
        a, = samples.record_offsets(data, b'A.;1')
        b, = samples.record_offsets(data, b'B.;1')
        extent = int.from_bytes(data[a + 2:a + 6], 'little')
        # B starts one sector into A, with A's length: a partial overlap.
        data[b + 2:b + 10] = (extent + 1).to_bytes(4, 'little') + (
            extent + 1).to_bytes(4, 'big')
        self.assertInvalid(bytes(data), 'overlap')

    def test_extent_beyond_volume(self):
        data = bytearray(boot_iso())
        r = samples.record_offsets(data, b'LDLINUX.C32;1')[0]
        data[r + 2:r + 10] = (0xFFFFF0).to_bytes(4, 'little') + (
            0xFFFFF0).to_bytes(4, 'big')
        self.assertInvalid(bytes(data), 'outside the volume')

    def test_too_many_entries(self):
        def many(new):
            for i in range(iso.structure.MAX_ENTRIES):
                new.add_fp(io.BytesIO(b''), 0, '/F%d.;1' % i,
                           rr_name='f%d' % i)
        self.assertInvalid(boot_iso(many), 'more than %d files'
                           % iso.structure.MAX_ENTRIES)

    def test_entries_at_the_limit_build(self):
        def many(new):
            for i in range(iso.structure.MAX_ENTRIES - 10):
                new.add_fp(io.BytesIO(b''), 0, '/F%d.;1' % i,
                           rr_name='f%d' % i, joliet_path='/f%d' % i)
        out, result = iso.BaseIso(boot_iso(many), 'x').build_bytes(SCRIPT)
        self.assertTrue(result.bios)

    def test_too_deep(self):
        def deep(new):
            path = ''
            for i in range(iso.structure.MAX_DEPTH + 1):
                path += '/D%d' % i
                new.add_directory(path)
        data = boot_iso(deep, rock_ridge=False, interchange_level=4)
        self.assertInvalid(data, 'deeper than %d' % iso.structure.MAX_DEPTH)

    def test_directory_loop(self):
        def sub(new):
            new.add_directory('/SUB', rr_name='sub', joliet_path='/sub')
        data = bytearray(boot_iso(sub))
        r = samples.record_offsets(data, b'SUB')[0]
        root = data[16 * 2048 + 156 + 2:16 * 2048 + 156 + 10]
        data[r + 2:r + 10] = root   # /SUB is the root again
        self.assertInvalid(bytes(data), 'appears twice')

    def test_rock_ridge_continuation_bounded(self):
        data = bytearray(boot_iso())
        r = samples.record_offsets(data, b'LDLINUX.C32;1')[0]
        su = r + 33 + len(b'LDLINUX.C32;1') + 1

        def ce(block, offset, length):
            both = b''.join(v.to_bytes(4, 'little') + v.to_bytes(4, 'big')
                            for v in (block, offset, length))
            return b'CE\x1c\x01' + both
        # One area as large as the image; then a chain that loops on itself.
        huge = bytearray(data)
        huge[su:su + 28] = ce(20, 0, len(data))
        self.assertInvalid(bytes(huge), 'continuation area is')
        loop = bytearray(data)
        loop[su:su + 28] = ce(20, 0, 28)
        loop[20 * 2048:20 * 2048 + 28] = ce(20, 0, 28)
        self.assertInvalid(bytes(loop), 'continuation areas add up')

    def test_endless_boot_catalog(self):
        data = bytearray(boot_iso())
        catalog = int.from_bytes(data[17 * 2048 + 71:17 * 2048 + 75],
                                 'little')
        start = catalog * 2048 + 64
        for at in range(start, start + iso.structure.MAX_CATALOG, 32):
            data[at:at + 32] = b'\x88' + b'\x01' * 31
        self.assertInvalid(bytes(data), 'boot catalog does not end')

    def test_gpt_partition_count_bounded(self):
        base_iso = iso.BaseIso.from_path(samples.trixie_iso())
        out, _ = base_iso.build_bytes(SCRIPT)
        data = bytearray(out)
        self.assertEqual(b'EFI PART', data[512:520])   # isohybrid, UEFI
        backup = int.from_bytes(data[544:552], 'little') * 512
        data[backup + 80:backup + 84] = (70000).to_bytes(4, 'little')
        self.assertInvalid(bytes(data), 'its GPT claims 70000 partitions')

    def test_udf_bridge_refused(self):
        new = pycdlib.PyCdlib()
        new.new(udf='2.60')
        new.add_fp(io.BytesIO(b'x'), 1, udf_path='/x')
        out = io.BytesIO()
        new.write_fp(out)
        new.close()
        self.assertInvalid(out.getvalue(), 'UDF file system')

    def test_descriptors_bounded(self):
        data = bytearray(boot_iso())
        pvd = data[16 * 2048:17 * 2048]
        # Every sector after the PVD another descriptor, no terminator.
        for sector in range(17, 17 + iso.structure.MAX_DESCRIPTORS):
            data[sector * 2048:(sector + 1) * 2048] = pvd
        self.assertInvalid(bytes(data), 'no volume descriptor terminator')

    def test_not_a_regular_file(self):
        fifo = os.path.join(self.tmp, 'fifo')
        os.mkfifo(fifo)
        for path in (fifo, '/dev/zero', self.tmp):
            e = self.assertRaises(exception.InvalidIso, iso.BaseIso.from_path,
                                  path, max_size=64 * 2 ** 20)
            self.assertIn('not a regular file', str(e))

    def test_reads_at_most_max_size(self):
        calls = []
        real = iso.fileio.read_at_most

        def spy(fd, limit, *args):
            calls.append(limit)
            return real(fd, limit, *args)
        self.useFixture(fixtures.MonkeyPatch(
            'nova_ipxe.iso.fileio.read_at_most', spy))
        limit = os.path.getsize(samples.bookworm_iso()) + 10
        iso.BaseIso.from_path(samples.bookworm_iso(), max_size=limit)
        self.assertEqual([limit + 1], calls)
        # A file that grows after the size check is cut at max_size + 1.
        path = os.path.join(self.tmp, 'big')
        with open(path, 'wb') as f:
            f.write(b'\0' * 3000)
        fd = os.open(path, os.O_RDONLY)
        self.addCleanup(os.close, fd)
        self.assertEqual(1001, len(real(fd, 1001)))
        os.lseek(fd, 0, os.SEEK_SET)
        self.assertEqual(3000, len(real(fd, None, 10)))   # grows
        os.lseek(fd, 0, os.SEEK_SET)
        self.assertEqual(3000, len(real(fd, 5000, 3000)))

    def test_describe_escapes_names(self):
        def names(new):
            for iso_path, rr_name in (('/ESC.;1', '\x1b[2J\x1b]0;owned\x07'),
                                      ('/BIDI.;1', 'evil\u202etxt.exe')):
                new.add_fp(io.BytesIO(b'x'), 1, iso_path, rr_name=rr_name,
                           joliet_path=iso_path.lower()[:-3])
        info = iso.BaseIso(boot_iso(names), 'x').describe()
        shown = ' '.join(info['files'])
        self.assertIn('\\x1b[2J', shown)
        self.assertIn('evil\\u202etxt.exe', shown)
        self.assertTrue(shown.isprintable())

    def test_script_name_cannot_be_shadowed(self):
        def shadows(new):
            # Same Rock Ridge name in another case, an ISO 9660 name with
            # another version, and the Joliet name alone.
            for iso_path, rr_name, joliet_path in (
                    ('/OTHER.;1', 'NIPXE.IPX', '/other'),
                    ('/NIPXE.IPX;2', 'x2', '/x2'),
                    ('/J.;1', 'j', '/nipxe.ipx')):
                new.add_fp(io.BytesIO(b'#!ipxe\nstale\n'), 13, iso_path,
                           rr_name=rr_name, joliet_path=joliet_path)
        out, _ = iso.BaseIso(boot_iso(shadows), 'x').build_bytes(SCRIPT)
        new = pycdlib.PyCdlib()
        new.open_fp(io.BytesIO(out))
        try:
            for kind, key in (('iso_path', 'iso_path'),
                              ('rr_path', 'rr_path'),
                              ('joliet_path', 'joliet_path')):
                names = [posixpath.join(d, n) for d, _, fs in
                         new.walk(**{key: '/'}) for n in fs]
                hits = [n for n in names if 'nipxe' in n.lower()]
                self.assertEqual(1, len(hits), (kind, names))
                buf = io.BytesIO()
                new.get_file_from_iso_fp(buf, **{key: hits[0]})
                self.assertEqual(SCRIPT, buf.getvalue())
        finally:
            new.close()

    def test_directory_named_like_the_script(self):
        def sub(new):
            new.add_directory('/NIPXE', rr_name='nipxe.ipx',
                              joliet_path='/nipxe.ipx')
        self.assertInvalid(boot_iso(sub), 'the name of the script')

    def test_efi_image_over_32_mib(self):
        loader = samples.trixie_file('ipxe.efi')
        img = samples.fat_image(os.path.join(self.tmp, 'big.img'), {
            '/EFI/BOOT/BOOTX64.EFI': loader}, size_kib=34000, fat_bits=32)
        with open(img, 'rb') as f:
            efi = f.read()
        self.assertGreater(len(efi), iso.MAX_EFI_IMAGE)
        base_iso = iso.BaseIso(boot_iso(efi=efi), 'big-efi.iso')
        self.assertIn('an El Torito entry can describe',
                      base_iso.describe()['uefi']['reason'])
        e = self.assertRaises(exception.UefiUnsupported,
                              base_iso.build_bytes, SCRIPT, uefi='require')
        self.assertIn('El Torito', str(e))
        out, result = base_iso.build_bytes(SCRIPT)
        self.assertEqual((True, False), (result.bios, result.uefi))
        self.assertLess(len(out), 2 * 2 ** 20)  # the EFI image is dropped

    def test_output_bounded_while_writing(self):
        base_iso = iso.BaseIso.from_path(samples.bookworm_iso())
        self.useFixture(fixtures.MonkeyPatch(
            'nova_ipxe.iso.base.OUTPUT_SLACK', -len(base_iso.data)))
        out = os.path.join(self.tmp, 'out.iso')
        self.assertRaises(exception.InvalidIso, base_iso.build, SCRIPT, out)
        self.assertEqual([], os.listdir(self.tmp))

    def test_pycdlib_failure_while_rebuilding_is_typed(self):
        base_iso = iso.BaseIso.from_path(samples.bookworm_iso())
        out = os.path.join(self.tmp, 'out.iso')
        for method in ('add_fp', 'write_fp'):
            def trip(*args, **kwargs):
                raise struct.error('ushort format requires 0 <= number')
            with fixtures.MonkeyPatch('nova_ipxe.iso.cdlib.Cdlib.' + method,
                                      trip):
                e = self.assertRaises(exception.InvalidIso, base_iso.build,
                                      SCRIPT, out)
            self.assertIn('cannot be rebuilt (error: ushort', str(e))
            self.assertEqual([], os.listdir(self.tmp))


class TemplateCase(base.TestCase):
    """A build patched into the base's template is the full build.

    Both run on one clock and with one MBR id and GPT GUIDs, so they must
    agree byte for byte; a decoy script of the same size class makes the
    template first, so nothing of it may survive a build.
    """

    LENGTHS = (1, 16, 511, 512, 513, 2047, 2048, 2049, 6000)

    def setUp(self):
        super().setUp()
        self.useFixture(fixtures.MonkeyPatch('time.time', lambda: 1.7e9))
        self.useFixture(fixtures.MonkeyPatch('random.getrandbits',
                                             lambda bits: 0x5eed))
        self.useFixture(fixtures.MonkeyPatch('uuid.uuid4',
                                             lambda: uuid.UUID(int=7)))

    @staticmethod
    def script(length, fill=b'echo per-instance\n'):
        return (b'#!ipxe\n' + fill * (length // len(fill) + 1))[:length]

    def assertPatchedIsFull(self, base_iso, script, uefi='auto'):
        base_iso.build_bytes(self.script(len(script), b'exit 1\n'),
                             uefi=uefi)
        self.assertIsInstance(base_iso._template(script, uefi),
                              iso.template.Template)
        patched, result = base_iso.build_bytes(script, uefi=uefi)
        full, full_result = base_iso._full_bytes(script, uefi=uefi)
        self.assertEqual(full_result, result)
        self.assertEqual(len(full), len(patched))
        if patched != full:
            at = next(i for i, (a, b) in enumerate(zip(patched, full))
                      if a != b)
            self.fail('%d-byte script: the patched build differs from the '
                      'full one at byte %d' % (len(script), at))
        return patched

    def uefi_iso(self, rock_ridge=True, stale=True):
        """A BIOS+UEFI ISO whose FAT has 512-byte clusters (not sectors).

        With ``stale``, stock scripts everywhere a build replaces them:
        /EFI/BOOT/autoexec.ipxe in the FAT, /autoexec.ipxe on the ISO.
        """
        img = os.path.join(self.tmp, 'esp-%s.img' % rock_ridge)
        subprocess.run(['mkfs.fat', '-C', '-F', '12', '-s', '1', img,
                        '2048'], check=True, capture_output=True)
        files = {'EFI/BOOT/BOOTX64.EFI': samples.trixie_file('ipxe.efi')}
        if stale:
            files['EFI/BOOT/autoexec.ipxe'] = b'#!ipxe\ndhcp\n'
        subprocess.run(['mmd', '-i', img, '::/EFI', '::/EFI/BOOT'],
                       check=True, capture_output=True)
        for name, data in files.items():
            src = os.path.join(self.tmp, 'part')
            with open(src, 'wb') as f:
                f.write(data)
            subprocess.run(['mcopy', '-i', img, src, '::/' + name],
                           check=True, capture_output=True)
        with open(img, 'rb') as f:
            efi = f.read()

        def extra(new):
            if stale:
                kw = ({'rr_name': 'autoexec.ipxe',
                       'joliet_path': '/autoexec.ipxe'} if rock_ridge
                      else {})
                new.add_fp(io.BytesIO(b'#!ipxe\ndhcp\n'), 13,
                           '/AUTOEXEC.IPX;1', **kw)
        return iso.BaseIso(boot_iso(extra, rock_ridge=rock_ridge, efi=efi),
                           'uefi.iso')


class TemplateTestCase(TemplateCase):

    def test_stock_isos(self):
        for source, uefis in ((samples.bookworm_iso(), ('auto',)),
                              (samples.trixie_iso(), ('auto', 'off'))):
            base_iso = iso.BaseIso.from_path(source)
            for uefi in uefis:
                for length in self.LENGTHS:
                    self.assertPatchedIsFull(base_iso, self.script(length),
                                             uefi)

    def test_small_clusters_and_stale_scripts(self):
        for rock_ridge in (True, False):
            base_iso = self.uefi_iso(rock_ridge)
            self.assertEqual(512, base_iso.efi.cluster_size)
            for length in self.LENGTHS:
                script = self.script(length)
                out = self.assertPatchedIsFull(base_iso, script)
                rebuilt = iso.BaseIso(out, 'out.iso')
                self.assertEqual(script, bytes(rebuilt.file_bytes(
                    rebuilt.lookup('/nipxe.ipx'))))
                fat = esp.FatImage(rebuilt.file_bytes(rebuilt.efi.image),
                                   writable=False)
                self.assertEqual(script, fat.read_file('/autoexec.ipxe'))
                self.assertEqual(script,
                                 fat.read_file('/EFI/BOOT/autoexec.ipxe'))
            # One template per size class in use, at most MAX_TEMPLATES.
            self.assertEqual(iso.template.MAX_TEMPLATES,
                             len(base_iso._templates))

    def test_file_output_is_the_bytes(self):
        base_iso = iso.BaseIso.from_path(samples.trixie_iso())
        out = os.path.join(self.tmp, 'out.iso')
        for length in (100, 300):
            script = self.script(length)
            result = base_iso.build(script, out)
            with open(out, 'rb') as f:
                data = f.read()
            self.assertEqual(base_iso.build_bytes(script)[0], data)
            self.assertEqual(len(data), result.size)
            self.assertEqual(0o644, os.stat(out).st_mode & 0o777)
        self.assertEqual(['out.iso'], os.listdir(self.tmp))
        self.assertEqual(self.script(300),
                         samples.iso_files(out)['/nipxe.ipx'])

    def test_long_script_built_the_long_way(self):
        self.useFixture(fixtures.MonkeyPatch(
            'nova_ipxe.iso.template.MAX_TEMPLATE_SCRIPT', 4096))
        base_iso = iso.BaseIso.from_path(samples.trixie_iso())
        script = self.script(5000)
        self.assertIsNone(base_iso._template(script, 'auto'))
        out, result = base_iso.build_bytes(script)
        self.assertTrue(result.uefi)
        self.assertEqual({}, dict(base_iso._templates.items()))
        rebuilt = iso.BaseIso(out, 'out.iso')
        self.assertEqual(script, bytes(rebuilt.file_bytes(
            rebuilt.lookup('/nipxe.ipx'))))

    def test_unmapped_template_falls_back(self):
        def refuse(*args):
            raise iso.template.NoTemplate('refused')
        self.useFixture(fixtures.MonkeyPatch(
            'nova_ipxe.iso.template.Template.map', refuse))
        logger = self.useFixture(fixtures.FakeLogger(level='DEBUG'))
        base_iso = iso.BaseIso.from_path(samples.trixie_iso())
        out, _ = base_iso.build_bytes(SCRIPT)
        self.assertEqual(base_iso._full_bytes(SCRIPT)[0], out)
        self.assertEqual([None], list(base_iso._templates.values()))
        self.assertIn('no build template (NoTemplate: refused)',
                      logger.output)

    def test_map_refuses_an_incomplete_placeholder(self):
        nonce = b'N' * 12
        self.useFixture(fixtures.MonkeyPatch('secrets.token_bytes',
                                             lambda n: nonce))
        base_iso = iso.BaseIso.from_path(samples.trixie_iso())
        template = base_iso._template(SCRIPT, 'auto')
        data = template.data
        efi = (base_iso.efi.image, ['/autoexec.ipxe'])
        slot = 2048
        # As made, it maps to the same sites.
        again = iso.template.Template.map(data, nonce, slot,
                                          template.result, efi)
        self.assertEqual(template.data_sites, again.data_sites)
        self.assertEqual(template.le_sites, again.le_sites)
        site = template.data_sites[0][0]
        record = template.le_sites[0] - 10
        cases = {
            # A block of one copy gone: a stale copy could survive.
            'a block lost': (site + 32, b'\0' * 16),
            # A block where none belongs.
            'a stray block': (len(data) - 4096, nonce + b'\0\0\0\1'),
            # A block numbered past the placeholder.
            'a block past the end': (site, nonce + b'\xff' * 4),
            # A copy whose record says another length.
            'a record of another length': (record + 10,
                                           (2047).to_bytes(4, 'little')),
        }
        for name, (at, junk) in cases.items():
            bad = data[:at] + junk + data[at + len(junk):]
            self.assertRaises(iso.template.NoTemplate,
                              iso.template.Template.map, bad,
                              nonce, slot, template.result, efi)
        # No size for a copy in the FAT image: no EFI image to look in.
        self.assertRaises(iso.template.NoTemplate,
                          iso.template.Template.map, data, nonce,
                          slot, template.result, None)

    def test_output_bounded_with_a_template(self):
        base_iso = iso.BaseIso.from_path(samples.bookworm_iso())
        base_iso.build_bytes(SCRIPT)
        self.assertIsInstance(base_iso._template(SCRIPT, 'auto'),
                              iso.template.Template)
        self.useFixture(fixtures.MonkeyPatch(
            'nova_ipxe.iso.base.OUTPUT_SLACK', -len(base_iso.data)))
        out = os.path.join(self.tmp, 'out.iso')
        self.assertRaises(exception.InvalidIso, base_iso.build, SCRIPT, out)
        self.assertEqual([], os.listdir(self.tmp))

    def test_concurrent_builds(self):
        base_iso = iso.BaseIso.from_path(samples.trixie_iso())
        scripts = [self.script(1000, b'echo %d\n' % i) for i in range(6)]
        outs = [None] * len(scripts)

        def one(i):
            outs[i] = base_iso.build_bytes(scripts[i])[0]
        threads = [threading.Thread(target=one, args=(i,))
                   for i in range(len(scripts))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(1, len(base_iso._templates))
        for script, out in zip(scripts, outs):
            rebuilt = iso.BaseIso(out, 'out.iso')
            self.assertEqual(script, bytes(rebuilt.file_bytes(
                rebuilt.lookup('/nipxe.ipx'))))
            fat = esp.FatImage(rebuilt.file_bytes(rebuilt.efi.image),
                               writable=False)
            self.assertEqual(script, fat.read_file('/autoexec.ipxe'))


class ImmutableBaseTestCase(base.TestCase):

    def test_layout_is_frozen(self):
        base_iso = iso.BaseIso.from_path(samples.bookworm_iso())
        self.assertRaises(AttributeError, setattr, base_iso, 'efi', None)
        self.assertRaises(AttributeError, setattr, base_iso, 'new', 1)
        self.assertRaises(AttributeError, delattr, base_iso, 'layout')
        self.assertRaises(dataclasses.FrozenInstanceError, setattr,
                          base_iso.layout, 'bios', None)
        self.assertIsInstance(base_iso.files, tuple)
        self.assertIsInstance(base_iso.dirs, tuple)
        self.assertRaises(TypeError, base_iso.data.__setitem__, 0, 0)

    def test_capabilities_read_once_per_binary(self):
        # Bases of the same bytes (two Glance images of one stock ISO)
        # share the reading; the name stays each ISO's own.
        self.useFixture(fixtures.MonkeyPatch(
            'nova_ipxe.capabilities._CACHE', lru.Lru(16)))
        reads = []
        real = capabilities.read

        def counted(data, binary):
            reads.append(binary)
            return real(data, binary)
        self.useFixture(fixtures.MonkeyPatch(
            'nova_ipxe.capabilities.read', counted))
        with open(samples.trixie_iso(), 'rb') as f:
            data = f.read()
        first = iso.BaseIso(data, 'image 1').capabilities()
        self.assertEqual(2, len(reads))
        second = iso.BaseIso(data, 'image 2')
        self.assertEqual(first, second.capabilities())
        self.assertEqual(first, second.capabilities())
        self.assertEqual(2, len(reads))
        _, _, files = samples.bookworm_parts()
        renamed = iso.BaseIso.from_path(samples.isolinux_iso(
            os.path.join(self.tmp, 'renamed.iso'),
            b'DEFAULT ipxe\nLABEL ipxe\n KERNEL /other.krn\n',
            {('/OTHER.KRN;1', '/other.krn'): files['/ipxe.krn']}))
        original = iso.BaseIso.from_path(samples.bookworm_iso())
        caps = renamed.capabilities()['bios']
        self.assertEqual('/other.krn', caps.binary)
        self.assertEqual('/ipxe.krn', original.capabilities()['bios'].binary)
        self.assertEqual(caps.features,
                         original.capabilities()['bios'].features)
        # Bookworm's kernel once, under the first name; then its loader.
        self.assertEqual(['/other.krn', '/efi.img:/EFI/BOOT/BOOTX64.EFI'],
                         reads[2:])

    def test_uefi_warning_once_per_base(self):
        logger = self.useFixture(fixtures.FakeLogger())
        first = iso.BaseIso.from_path(samples.bookworm_iso())
        for _ in range(3):
            first.build_bytes(SCRIPT)
        self.assertEqual(1, logger.output.count('dropping the UEFI boot'))
        iso.BaseIso.from_path(samples.bookworm_iso()).build_bytes(SCRIPT)
        self.assertEqual(2, logger.output.count('dropping the UEFI boot'))


# --------------------------------------------------------------------------
# Property test of the ISO parser on generated hostile ISOs.
#
# Each example is a real iPXE ISO (bookworm's boot files) made with
# pycdlib, with extra files, hard links, directories and hostile names,
# and some of its metadata bytes overwritten.  Whatever the input, the
# parser ends in a typed error or a build whose output carries the script
# and is no larger than the source plus the script.  The test counts how
# far each example got, and demands that enough of them reached the deep
# stages: a fuzz that mostly fails early proves little.

STAGES = ('structure checked', 'parsed by pycdlib', 'layout read', 'built')

names = st.text(st.characters(codec='utf-8', exclude_characters='/\0'),
                min_size=1, max_size=40)
extra_file = st.tuples(names, st.integers(0, 5000),
                       st.one_of(st.none(), st.integers(0, 30)))
REGIONS = ('descriptors', 'directories', 'records', 'catalog', 'any')
mutation = st.tuples(st.sampled_from(REGIONS), st.integers(0, 2 ** 20),
                     st.binary(min_size=1, max_size=8))


def _make(rock_ridge, files, depth, with_efi, efi=None):
    """(bytes, sectors holding directory records) of one example ISO."""
    stock = _stock_files()

    def extra(new):
        paths = []
        parent = ''
        for level in range(depth):
            parent += '/D%d' % level
            new.add_directory(parent, **(
                {'rr_name': 'd%d' % level, 'joliet_path': parent.lower()}
                if rock_ridge else {}))
        for i, (name, size, link) in enumerate(files):
            path = '%s/F%03d.;1' % (parent if i % 2 else '', i)
            kw = {'rr_name': name} if rock_ridge else {}
            if link is not None and paths:
                new.add_hard_link(iso_old_path=paths[link % len(paths)],
                                  iso_new_path=path, **kw)
                continue
            data = bytes([i % 251]) * size
            new.add_fp(io.BytesIO(data), size, path, **kw)
            paths.append(path)
    if with_efi:
        efi = stock['/efi.img']
    return samples.boot_iso_bytes(extra, rock_ridge=rock_ridge, efi=efi)


def _stock_files(cache=[]):
    if not cache:
        cache.append(samples.bookworm_parts()[2])
    return cache[0]


def _mutate(data, mutations):
    data = bytearray(data)
    root = int.from_bytes(data[16 * 2048 + 158:16 * 2048 + 162], 'little')
    catalog = int.from_bytes(data[17 * 2048 + 71:17 * 2048 + 75], 'little')
    for region, at, junk in mutations:
        if region == 'descriptors':
            start, size = 16 * 2048, 4 * 2048
        elif region == 'directories':
            start, size = root * 2048, 4 * 2048
        elif region == 'records':
            # The numbers of one root directory record: extent, length,
            # flags, name length.
            records = _records(data, root)
            start = records[at % len(records)]
            at, size = at // len(records), 33
        elif region == 'catalog':
            start, size = catalog * 2048, 256
        else:
            start, size = 0, len(data)
        at = start + at % size
        data[at:at + len(junk)] = junk
    return bytes(data)


def _records(data, extent):
    """Offsets of the records of the directory at ``extent``."""
    start = extent * 2048
    offsets = []
    at = start
    while at < start + 2048 and data[at]:
        offsets.append(at)
        at += data[at]
    return offsets or [start]


def _reproducible(max_examples):
    """The same examples on every run and machine, no example database."""
    return hypothesis.settings(
        max_examples=max_examples, deadline=None, database=None,
        derandomize=True, suppress_health_check=list(hypothesis.HealthCheck))


class IsoParserPropertyTestCase(base.TestCase):

    def test_hostile_isos_end_typed_or_bounded(self):
        reached = collections.Counter()

        @_reproducible(max_examples=150)
        @hypothesis.given(
            rock_ridge=st.booleans(),
            files=st.lists(extra_file, max_size=12),
            depth=st.integers(0, 3),
            with_efi=st.booleans(),
            mutations=st.one_of(st.just([]),
                                st.lists(mutation, min_size=1, max_size=3)))
        def one(rock_ridge, files, depth, with_efi, mutations):
            try:
                source = _make(rock_ridge, files, depth, with_efi)
            except pycdlib.pycdlibexception.PyCdlibException:
                hypothesis.assume(False)   # a name pycdlib cannot write
            data = _mutate(source, mutations)
            reached['examples'] += 1
            try:
                iso.check_structure(memoryview(data), 'fuzz.iso')
                reached['structure checked'] += 1
                cdlib = pycdlib.PyCdlib()
                try:
                    cdlib.open_fp(io.BytesIO(data))
                    reached['parsed by pycdlib'] += 1
                    cdlib.close()
                except Exception:
                    pass    # BaseIso must turn this into InvalidIso
                parsed = iso.BaseIso(data, 'fuzz.iso')
                reached['layout read'] += 1
                out, result = parsed.build_bytes(SCRIPT)
            except exception.NovaIpxeError as e:
                self.assertNotIn('\n', str(e))
                self.assertIn(e.category, exception.CATEGORIES)
                return
            self.assertLessEqual(len(out), parsed.output_limit(SCRIPT))
            rebuilt = iso.BaseIso(out, 'rebuilt.iso')
            self.assertEqual(SCRIPT, bytes(rebuilt.file_bytes(
                rebuilt.lookup('/nipxe.ipx'))))
            reached['built'] += 1

        one()
        total = reached['examples']
        report = ', '.join('%s %d' % (s, reached[s]) for s in STAGES)
        self.addDetail('stages', _text('%d examples: %s' % (total, report)))
        self.assertGreater(total, 100)
        # The deep stages must see a fair share of the examples.
        self.assertGreaterEqual(reached['parsed by pycdlib'], total * 0.5,
                                report)
        self.assertGreaterEqual(reached['layout read'], total * 0.4, report)
        self.assertGreaterEqual(reached['built'], total * 0.3, report)
        # And the early stages must refuse some: the mutations do bite.
        self.assertLess(reached['built'], total, report)


class TemplatePropertyTestCase(TemplateCase):
    """Patched is full on generated layouts.

    Extra files, directories, hard links, Rock Ridge or not, UEFI or not,
    any script length.
    """

    def test_generated_layouts(self):
        made = self.uefi_iso(stale=True)
        esp_bytes = bytes(made.file_bytes(made.efi.image))
        built = collections.Counter()

        @_reproducible(max_examples=40)
        @hypothesis.given(
            rock_ridge=st.booleans(),
            files=st.lists(extra_file, max_size=8),
            depth=st.integers(0, 3),
            with_efi=st.booleans(),
            length=st.integers(1, 9000))
        def one(rock_ridge, files, depth, with_efi, length):
            try:
                source = _make(rock_ridge, files, depth, False,
                               efi=esp_bytes if with_efi else None)
            except pycdlib.pycdlibexception.PyCdlibException:
                hypothesis.assume(False)
            try:
                base_iso = iso.BaseIso(source, 'gen.iso')
            except exception.NovaIpxeError:
                hypothesis.assume(False)  # e.g. a name clash refused
            self.assertPatchedIsFull(base_iso, self.script(length))
            built[with_efi] += 1

        one()
        # Both kinds were built, not only refused.
        self.assertGreater(built[True], 5, built)
        self.assertGreater(built[False], 5, built)


def _text(text):
    from testtools import content
    return content.text_content(text)


class IsIsoFileTestCase(base.TestCase):
    """is_iso_file: an ISO a build wrote, or what Nova left in its place."""

    def write(self, name, data):
        path = os.path.join(self.tmp, name)
        with open(path, 'wb') as f:
            f.write(data)
        return path

    def test_iso_images(self):
        self.assertTrue(iso.is_iso_file(samples.bookworm_iso()))
        # The tag alone: 16 sectors of system area, then "\x01CD001".
        self.assertTrue(iso.is_iso_file(self.write(
            'tag.iso', bytes(16 * 2048) + b'\x01CD001')))

    def test_placeholders(self):
        self.assertFalse(iso.is_iso_file(self.write(
            'zeros', bytes(64 * 1024))))
        self.assertFalse(iso.is_iso_file(self.write('empty', b'')))
        self.assertFalse(iso.is_iso_file(self.write(
            'short', bytes(16 * 2048) + b'\x01CD0')))
        self.assertFalse(iso.is_iso_file(self.write(
            'shifted', bytes(16 * 2048) + b'CD001')))
        self.assertFalse(iso.is_iso_file(os.path.join(self.tmp, 'none')))
        self.assertFalse(iso.is_iso_file(self.tmp))
