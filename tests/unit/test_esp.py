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

"""Tests for nova_ipxe.esp, checked against dosfstools and mtools.

Images are made with mkfs.fat and filled with mtools; every successful
write is proven with ``fsck.fat -n``, ``mtype``, ``mdir`` and a read-back.
"""

import os
import random
import re
import struct
import subprocess

from nova_ipxe import esp
from nova_ipxe import exception
from tests import base
from tests import samples

_ENV = dict(os.environ, MTOOLS_SKIP_CHECK='1', LC_ALL='C.UTF-8')
_SUMMARY = re.compile(r'^\S+: (\d+) files, (\d+)/(\d+) clusters$')
_STAMP = 1767225600     # 2026-01-01, fixed so repeated writes compare equal
# mkfs.fat arguments.  mtools takes the FAT type from the cluster count, so
# FAT32 images for it need 65525 clusters or more: 34000 KiB, 512 B each.
FAT12 = (1440, '-s', '1')
FAT16 = (8192, '-F', '16', '-s', '1')
FAT32 = (34000, '-F', '32', '-s', '1')
_83 = re.compile(r'([^.]{1,8})(?:\.([^.]{1,3}))?')


def _blob(size, seed=0):
    return random.Random(seed).randbytes(size)


def _cluster_size(data):
    bps, spc = struct.unpack_from('<HB', data, 11)
    return bps * spc


def _set_fat12(data, cluster, value):
    """Write a FAT12 entry into every FAT copy of a bytearray image.

    As the FAT specification puts it, not as nova_ipxe.esp does: the
    table is a little-endian stream of 12-bit entries, entry n at bit
    12 * n.  test_fat12_helper_agrees_with_mtools checks it on mtools.
    """
    bps, _, reserved, nfats = struct.unpack_from('<HBHB', data, 11)
    fat_size = struct.unpack_from('<H', data, 22)[0] * bps
    for copy in range(nfats):
        start = reserved * bps + copy * fat_size
        table = int.from_bytes(data[start:start + fat_size], 'little')
        shift = 12 * cluster
        table = table & ~(0xFFF << shift) | value << shift
        data[start:start + fat_size] = table.to_bytes(fat_size, 'little')


def _root_offsets(data):
    """Offsets of the root directory slots of a FAT12/16 image."""
    bps, _, reserved, nfats, entries = struct.unpack_from('<HBHBH', data, 11)
    fat_size = struct.unpack_from('<H', data, 22)[0] * bps
    start = reserved * bps + nfats * fat_size
    return range(start, start + entries * 32, 32)


def _root_slots(data):
    return [bytes(data[o:o + 32]) for o in _root_offsets(data)]


def _root_entry(data, short):
    for offset in _root_offsets(data):
        if data[offset:offset + 11] == short:
            return offset
    raise AssertionError('%r not in the root directory' % short)


def _start_cluster(data, short):
    return struct.unpack_from('<H', data, _root_entry(data, short) + 26)[0]


class EspTestCase(base.TestCase):

    def setUp(self):
        super().setUp()
        self.counter = 0

    # -- tools --------------------------------------------------------------

    def path(self, name):
        self.counter += 1
        return os.path.join(self.tmp, '%d-%s' % (self.counter, name))

    def run_tool(self, *argv, check=True):
        proc = subprocess.run([samples.require_tool(argv[0]), *argv[1:]],
                              env=_ENV, capture_output=True)
        if check and proc.returncode:
            self.fail('%s failed (%d): %s %s' % (
                ' '.join(argv), proc.returncode, proc.stdout.decode(),
                proc.stderr.decode()))
        return proc

    def mkfs(self, kib, *options):
        img = self.path('img')
        self.run_tool('mkfs.fat', *options, '-C', img, str(kib))
        return img

    def mmd(self, img, *dirs):
        for d in dirs:
            self.run_tool('mmd', '-i', img, '::' + d)

    def mcopy(self, img, dest, content):
        src = self.path('src')
        with open(src, 'wb') as f:
            f.write(content)
        self.run_tool('mcopy', '-o', '-i', img, src, '::' + dest)

    def load(self, img):
        with open(img, 'rb') as f:
            return f.read()

    def save(self, data):
        img = self.path('out')
        with open(img, 'wb') as f:
            f.write(data)
        return img

    def fsck(self, img):
        """Run fsck.fat -n; demand silence; return (used, total) clusters."""
        proc = self.run_tool('fsck.fat', '-n', img, check=False)
        lines = proc.stdout.decode().splitlines()
        self.assertEqual(0, proc.returncode, proc.stdout.decode())
        self.assertEqual(2, len(lines), proc.stdout.decode())
        match = _SUMMARY.match(lines[1])
        self.assertIsNotNone(match, lines[1])
        return int(match.group(2)), int(match.group(3))

    def used(self, img):
        return self.fsck(img)[0]

    def mdir(self, img, directory='/'):
        return self.run_tool('mdir', '-i', img, '::' + directory).stdout

    def extract_bookworm(self):
        out = self.path('efi.img')
        self.run_tool('xorriso', '-osirrox', 'on', '-indev',
                      samples.bookworm_iso(), '-extract', '/efi.img', out)
        return out

    def assert_dir_full(self, data, path):
        directory = esp.FatImage(data)._find_dir(path.split('/')[1:])
        self.assertEqual(len(directory.offsets), directory.end)

    def write(self, data, dir_path, name, content):
        image = esp.FatImage(data)
        image.write_file(dir_path, name, content, mtime=_STAMP)
        return image.to_bytes()

    def assert_written(self, data, dir_path, name, content):
        """Prove that ``data`` holds ``name`` with ``content``; save it."""
        img = self.save(data)
        self.fsck(img)
        dir_path = '/' + dir_path.strip('/')
        path = dir_path.rstrip('/') + '/' + name
        self.assertEqual(content,
                         self.run_tool('mtype', '-i', img, '::' + path).stdout)
        listing = self.mdir(img, dir_path).decode('utf-8', 'replace')
        self.assertEqual(1, len([line for line in listing.splitlines()
                                 if _listed(line, name)]), listing)
        image = esp.FatImage(data)
        self.assertEqual(content, image.read_file(path))
        self.assertEqual(content, image.read_file(path.upper()))
        self.assertIn(name, image.listdir(dir_path))
        return img

    def assert_full(self, data, dir_path, name, content):
        image = esp.FatImage(data)
        error = self.assertRaises(exception.EfiImageFull, image.write_file,
                                  dir_path, name, content)
        self.assertEqual(data, image.to_bytes())
        return error


class ReadTest(EspTestCase):

    def test_short_long_and_lowercase_names(self):
        img = self.mkfs(*FAT12)
        self.mmd(img, '/EFI', '/EFI/BOOT')
        files = {'/EFI/BOOT/bootx64.efi': _blob(3000, 1),
                 '/EFI/BOOT/bootloongarch64.efi': _blob(700, 2),
                 '/README.TXT': b'upper case 8.3',
                 '/Mixed.Txt': b'mixed case',
                 '/efi/boot/empty.bin': b''}
        for dest, content in files.items():
            self.mcopy(img, dest, content)
        data = self.load(img)
        # mtools stores bootx64.efi as a short name with NT lowercase flags.
        boot_dir = esp.FatImage(data)._find_dir(['EFI', 'BOOT'])
        raw = [bytes(data[o:o + 32]) for o in boot_dir.offsets]
        self.assertIn(b'BOOTX64 EFI\x20\x18', [r[:13] for r in raw])

        image = esp.FatImage(data)
        self.assertEqual(['EFI', 'README.TXT', 'Mixed.Txt'], image.listdir())
        self.assertEqual(['bootx64.efi', 'bootloongarch64.efi', 'empty.bin'],
                         image.listdir('/efi/boot'))
        for path, content in files.items():
            self.assertEqual(content, image.read_file(path))
        for path in ('/EFI/BOOT/BOOTX64.EFI', 'efi/boot/BootX64.efi'):
            self.assertEqual(files['/EFI/BOOT/bootx64.efi'],
                             image.read_file(path))
        for path in ('/EFI/BOOT/BOOTLO~1.EFI',
                     '/EFI/BOOT/BOOTLOONGARCH64.EFI'):
            self.assertEqual(files['/EFI/BOOT/bootloongarch64.efi'],
                             image.read_file(path))
        self.assertEqual(b'mixed case', image.read_file('/MIXED.TXT'))
        self.assertIsNone(image.read_file('/EFI/BOOT/nope.efi'))
        self.assertIsNone(image.read_file('/nope/bootx64.efi'))
        self.assertIsNone(image.read_file('/EFI/BOOT'))
        self.assertIsNone(image.read_file('/README.TXT/x'))
        self.assertIsNone(image.read_file('/'))
        self.assertRaises(exception.EfiImageError, image.listdir, '/nope')

    def test_bookworm_efi_img(self):
        # Extract it the way the ISO code will meet it: FAT12, 2 KiB clusters.
        img = self.extract_bookworm()
        image = esp.FatImage(self.load(img), name='efi.img')
        self.assertEqual(12, image._bits)
        self.assertEqual(['efi'], image.listdir())
        self.assertEqual(['bootx64.efi'], image.listdir('/EFI/BOOT'))
        loader = self.run_tool('mtype', '-i', img,
                               '::/efi/boot/bootx64.efi').stdout
        self.assertGreater(len(loader), 100000)
        self.assertEqual(loader, image.read_file('/EFI/BOOT/BOOTX64.EFI'))


class WriteTest(EspTestCase):

    def check_sizes(self, img, dir_path='/'):
        """Write sizes 0, 1, a cluster, a cluster + 1, several clusters."""
        base = self.load(img)
        cs = _cluster_size(base)
        used = self.used(img)
        for size in (0, 1, cs, cs + 1, 3 * cs + 7):
            content = _blob(size, size)
            data = self.write(base, dir_path, 'autoexec.ipxe', content)
            out = self.assert_written(data, dir_path, 'autoexec.ipxe',
                                      content)
            self.assertEqual(used + -(-size // cs), self.used(out),
                             'size %d' % size)

    def test_fat12_root(self):
        img = self.mkfs(*FAT12)
        self.assertEqual(12, esp.FatImage(self.load(img))._bits)
        self.check_sizes(img)

    def test_fat16_root(self):
        img = self.mkfs(*FAT16)
        self.assertEqual(16, esp.FatImage(self.load(img))._bits)
        self.check_sizes(img)

    def test_fat32_root(self):
        img = self.mkfs(*FAT32)
        image = esp.FatImage(self.load(img))
        self.assertEqual(32, image._bits)
        self.assertGreater(image._max, 65525)
        self.check_sizes(img)

    def test_small_fat32(self):
        # FAT32 is told by its zero 16-bit FAT size, as Linux, dosfstools
        # and EDK2 do, even below 65525 clusters.  mtools disagrees and
        # cannot read these, so fsck.fat and read-back are the proof.
        base = self.load(self.mkfs(2048, '-F', '32', '-s', '1'))
        self.assertEqual(32, esp.FatImage(base)._bits)
        self.assertLess(esp.FatImage(base)._max, 65525)
        used = self.used(self.save(base))
        data = base
        for n in range(20):     # grows the 16-slot root cluster too
            data = self.write(data, '/', 'file-%d.ipxe' % n, _blob(700, n))
        self.assertEqual(used + 20 * 2 + 2, self.used(self.save(data)))
        image = esp.FatImage(data)
        for n in range(20):
            self.assertEqual(_blob(700, n),
                             image.read_file('/FILE-%d.IPXE' % n))

    def test_subdirectory(self):
        for options in (FAT12, FAT16, FAT32):
            img = self.mkfs(*options)
            self.mmd(img, '/EFI', '/EFI/BOOT')
            loader = _blob(5000, 9)
            self.mcopy(img, '/EFI/BOOT/bootx64.efi', loader)
            self.check_sizes(img, '/EFI/BOOT')
            data = self.write(self.load(img), 'efi/boot', 'autoexec.ipxe',
                              b'#!ipxe\n')
            out = self.assert_written(data, '/EFI/BOOT', 'autoexec.ipxe',
                                      b'#!ipxe\n')
            self.assertEqual(loader, self.run_tool(
                'mtype', '-i', out, '::/EFI/BOOT/bootx64.efi').stdout)

    def test_replace_frees_old_clusters(self):
        for options in (FAT12, FAT16, FAT32):
            img = self.mkfs(*options)
            data = self.load(img)
            cs = _cluster_size(data)
            used = self.used(img)
            for clusters in (5, 1, 0, 7, 2):
                content = _blob(clusters * cs - (clusters > 0), clusters)
                data = self.write(data, '/', 'autoexec.ipxe', content)
                out = self.assert_written(data, '/', 'autoexec.ipxe',
                                          content)
                self.assertEqual(used + clusters, self.used(out))

    def test_replace_file_made_by_mtools(self):
        img = self.mkfs(*FAT12)
        self.mcopy(img, '/autoexec.ipxe', _blob(2000))
        self.mcopy(img, '/other.txt', b'keep me')
        used = self.used(img)
        # The match is case-insensitive; the new entry takes the new name.
        data = self.write(self.load(img), '/', 'AutoExec.IPXE', b'#!ipxe\n')
        self.assert_written(data, '/', 'AutoExec.IPXE', b'#!ipxe\n')
        out = self.assert_written(data, '/', 'other.txt', b'keep me')
        self.assertEqual(used - 3, self.used(out))
        self.assertEqual(['AutoExec.IPXE', 'other.txt'],
                         esp.FatImage(data).listdir())

    def test_same_write_twice_is_stable(self):
        data = self.load(self.mkfs(*FAT12))
        once = self.write(data, '/', 'autoexec.ipxe', b'#!ipxe\n' * 100)
        twice = self.write(once, '/', 'autoexec.ipxe', b'#!ipxe\n' * 100)
        self.assertEqual(once, twice)

    def test_short_name_is_unique(self):
        img = self.mkfs(*FAT12)
        self.mcopy(img, '/autoexec.ipxf', b'other')   # takes AUTOEX~1.IPX
        data = self.write(self.load(img), '/', 'autoexec.ipxe', b'mine')
        self.assert_written(data, '/', 'autoexec.ipxe', b'mine')
        out = self.assert_written(data, '/', 'autoexec.ipxf', b'other')
        self.assertIn(b'AUTOEX~2 IPX', self.mdir(out))
        self.assertEqual(b'mine',
                         esp.FatImage(data).read_file('/AUTOEX~2.IPX'))

    def test_plain_short_name_needs_no_lfn(self):
        data = self.write(self.load(self.mkfs(*FAT12)), '/', 'AUTOEXEC.IPX',
                          b'#!ipxe\n')
        self.assert_written(data, '/', 'AUTOEXEC.IPX', b'#!ipxe\n')
        attrs = [slot[11] for slot in _root_slots(data) if slot[0]]
        self.assertEqual([0x20], attrs)

    def test_long_names(self):
        # 26 UTF-16 units fill two LFN entries exactly (no terminator).
        names = ['a' * 26, 'a-rather-long-name-for-an-ipxe-script.ipxe',
                 'x' * 255, 'with space;and+more.ipxe', '.hidden.ipxe']
        for name in names:
            data = self.write(self.load(self.mkfs(*FAT12)), '/', name, b'x')
            self.assert_written(data, '/', name, b'x')
        data = self.write(self.load(self.mkfs(*FAT12)), '/', 'grüße.ipxe',
                          b'u')
        self.fsck(self.save(data))
        self.assertEqual(['grüße.ipxe'], esp.FatImage(data).listdir())
        self.assertEqual(b'u', esp.FatImage(data).read_file('/GRÜSSE.IPXE'))

    def test_bad_arguments(self):
        data = self.load(self.mkfs(*FAT12))
        image = esp.FatImage(data)
        for name in ('', '.', '..', 'a/b', 'a\\b', 'a:b', 'a.', 'a ',
                     'x' * 256, 'a\nb', '\udc80'):
            self.assertRaises(ValueError, image.write_file, '/', name, b'x')
        self.assertRaises(TypeError, image.write_file, '/', 'a', 'text')
        self.assertRaises(TypeError, esp.FatImage, 'text')
        error = self.assertRaises(exception.EfiImageError, image.write_file,
                                  '/EFI/BOOT', 'autoexec.ipxe', b'x')
        self.assertIn('/EFI/BOOT', str(error))
        self.assertEqual(data, image.to_bytes())

    def test_in_place(self):
        # Editing a slice of a larger buffer (an ISO being assembled) in
        # place does what editing a copy does, and touches nothing else.
        data = self.load(self.mkfs(*FAT12))
        copy = esp.FatImage(data)
        copy.write_file('/', 'autoexec.ipxe', b'#!ipxe\n' * 500,
                        mtime=1.7e9)
        outer = bytearray(b'\xaa' * 4096 + data + b'\xbb' * 4096)
        with memoryview(outer)[4096:4096 + len(data)] as view:
            image = esp.FatImage(view, writable='in place')
            image.write_file('/', 'autoexec.ipxe', b'#!ipxe\n' * 500,
                             mtime=1.7e9)
            self.assertEqual(b'#!ipxe\n' * 500,
                             image.read_file('/autoexec.ipxe'))
            del image
        self.assertEqual(copy.to_bytes(), bytes(outer[4096:-4096]))
        self.assertEqual(b'\xaa' * 4096, bytes(outer[:4096]))
        self.assertEqual(b'\xbb' * 4096, bytes(outer[-4096:]))
        # Only a writable byte buffer can be edited in place.
        for buffer in (data, memoryview(outer).toreadonly()):
            self.assertRaises(TypeError, esp.FatImage, buffer,
                              writable='in place')
        looking = esp.FatImage(outer[4096:-4096], writable=False)
        self.assertRaises(TypeError, looking.write_file, '/', 'a', b'x')

    def test_cannot_replace_a_directory(self):
        img = self.mkfs(*FAT12)
        self.mmd(img, '/autoexec.ipxe')
        data = self.load(img)
        image = esp.FatImage(data)
        self.assertRaises(exception.EfiImageError, image.write_file, '/',
                          'autoexec.ipxe', b'x')
        self.assertEqual(data, image.to_bytes())

    def test_fat32_fsinfo_kept_true(self):
        # fsck.fat -n checks the FSInfo free count; so read it back too.
        img = self.mkfs(*FAT32)
        data = self.load(img)
        for size in (40000, 100, 0):
            data = self.write(data, '/', 'autoexec.ipxe', _blob(size))
            used, total = self.fsck(self.save(data))
            free, hint = struct.unpack_from('<II', data, 512 + 488)
            self.assertEqual(total - used, free)
            self.assertTrue(2 <= hint <= total + 1)

    def test_fat32_reserved_bits(self):
        # The top 4 bits of a FAT32 entry are reserved: ignored when read,
        # kept when written.
        img = self.mkfs(*FAT32)
        self.mcopy(img, '/autoexec.ipxe', _blob(1000))
        data = bytearray(self.load(img))
        bps, _, reserved, nfats = struct.unpack_from('<HBHB', data, 11)
        fat_size = struct.unpack_from('<I', data, 36)[0] * bps
        last = 3 + 1        # root is cluster 2; the file has 3 and 4
        self.assertEqual(0x0FFFFFFF, struct.unpack_from(
            '<I', data, reserved * bps + last * 4)[0])
        for copy in range(nfats):
            struct.pack_into('<I', data, reserved * bps + copy * fat_size +
                             last * 4, 0xFFFFFFFF)
        data = bytes(data)
        self.assertEqual(_blob(1000),
                         esp.FatImage(data).read_file('/autoexec.ipxe'))
        out = self.write(data, '/', 'autoexec.ipxe', b'x')
        self.assert_written(out, '/', 'autoexec.ipxe', b'x')
        self.assertEqual(0xF0000000, struct.unpack_from(
            '<I', out, reserved * bps + last * 4)[0])

    def test_fat32_unmirrored_fat(self):
        # With mirroring off only the active FAT is live and written.
        data = bytearray(self.load(self.mkfs(2048, '-F', '32')))
        struct.pack_into('<H', data, 40, 0x81)
        bps, _, reserved, _ = struct.unpack_from('<HBHB', data, 11)
        fat_size = struct.unpack_from('<I', data, 36)[0] * bps
        first_fat = bytes(data[reserved * bps:reserved * bps + fat_size])
        out = self.write(bytes(data), '/', 'autoexec.ipxe', _blob(3000))
        self.assertEqual(first_fat,
                         out[reserved * bps:reserved * bps + fat_size])
        self.assertEqual(_blob(3000),
                         esp.FatImage(out).read_file('/autoexec.ipxe'))


class TrixieLikeTest(EspTestCase):
    """A mkfs.fat image shaped like Debian trixie's efi.img."""

    def image(self):
        img = self.mkfs(7808, '-s', '4', '-R', '4')
        self.mmd(img, '/efi', '/efi/boot')
        for arch in ('aa64', 'loongarch64', 'riscv64', 'x64'):
            self.mcopy(img, '/efi/boot/boot%s.efi' % arch, _blob(9000))
        return self.load(img)

    def test_read_and_write(self):
        data = self.image()
        image = esp.FatImage(data)
        self.assertEqual(['efi'], image.listdir('/'))
        self.assertEqual(['bootaa64.efi', 'bootloongarch64.efi',
                          'bootriscv64.efi', 'bootx64.efi'],
                         image.listdir('/EFI/BOOT'))
        loader = image.read_file('/EFI/BOOT/BOOTLOONGARCH64.EFI')
        self.assertEqual(loader, image.read_file('/efi/boot/BOOTLO~1.EFI'))
        x64 = image.read_file('/EFI/BOOT/BOOTX64.EFI')
        script = b'#!ipxe\nchain http://192.0.2.1/menu.ipxe || exit\n'
        for dir_path in ('/', '/EFI/BOOT'):
            out = self.write(data, dir_path, 'autoexec.ipxe', script)
            self.assert_written(out, dir_path, 'autoexec.ipxe', script)
            self.assertEqual(x64, esp.FatImage(out).read_file(
                '/efi/boot/bootx64.efi'))


class TrixieTest(TrixieLikeTest):
    """Debian trixie's own efi.img (from its ipxe.iso), same checks."""

    def image(self):
        return samples.iso_files(samples.trixie_iso())['/efi.img']


class FullTest(EspTestCase):

    def filled(self, spare_clusters):
        """A FAT12 image with all but ``spare_clusters`` clusters used."""
        img = self.mkfs(*FAT12)
        used, total = self.fsck(img)
        cs = _cluster_size(self.load(img))
        self.mcopy(img, '/FILLER.BIN',
                   bytes((total - used - spare_clusters) * cs))
        return img

    def test_no_free_clusters(self):
        img = self.filled(2)
        data = self.load(img)
        cs = _cluster_size(data)
        error = self.assert_full(data, '/', 'autoexec.ipxe', bytes(2 * cs + 1))
        self.assertEqual(3 * cs, error.kwargs['needed'])
        self.assertEqual(2 * cs, error.kwargs['free'])
        self.assertIn('autoexec.ipxe', str(error))
        data = self.write(data, '/', 'autoexec.ipxe', bytes(2 * cs))
        out = self.assert_written(data, '/', 'autoexec.ipxe', bytes(2 * cs))
        used, total = self.fsck(out)
        self.assertEqual(total, used)
        # Full, yet a replacement of the same size fits in the old chain.
        data = self.write(data, '/', 'autoexec.ipxe', b'y' * (2 * cs))
        self.assert_written(data, '/', 'autoexec.ipxe', b'y' * (2 * cs))
        self.assert_full(data, '/', 'autoexec.ipxe', bytes(2 * cs + 1))

    def test_bookworm_efi_img_is_nearly_full(self):
        data = self.load(self.extract_bookworm())
        free = self.fsck(self.save(data))
        cs = _cluster_size(data)
        spare = (free[1] - free[0]) * cs
        self.assert_full(data, '/', 'autoexec.ipxe', bytes(spare + 1))
        data = self.write(data, '/EFI/BOOT', 'autoexec.ipxe', b'#!ipxe\n')
        self.assert_written(data, '/EFI/BOOT', 'autoexec.ipxe', b'#!ipxe\n')

    def test_fat12_root_directory_full(self):
        img = self.mkfs(*FAT12, '-r', '16')
        for n in range(15):
            self.mcopy(img, '/F%02d.TXT' % n, b'%d' % n)
        data = self.load(img)
        # One slot left: a long name needs two, a plain 8.3 name one.
        error = self.assert_full(data, '/', 'autoexec.ipxe', b'x')
        self.assertEqual(64, error.kwargs['needed'])
        self.assertEqual(32, error.kwargs['free'])
        data = self.write(data, '/', 'AUTOEXEC.IPX', b'x')
        self.assert_written(data, '/', 'AUTOEXEC.IPX', b'x')
        self.assert_full(data, '/', 'AUTOEXEC.IP2', b'x')
        # Replacing in a full root reuses the entry's own slots.
        data = self.write(data, '/', 'F07.TXT', b'seven')
        self.assert_written(data, '/', 'F07.TXT', b'seven')

    def test_subdirectory_grows(self):
        for options in (FAT12, FAT32):
            img = self.mkfs(*options)
            self.mmd(img, '/EFI')
            # '.', '..' and 14 files fill a 512-byte directory cluster.
            for n in range(14):
                self.mcopy(img, '/EFI/F%02d.TXT' % n, b'%d' % n)
            used = self.used(img)
            self.assert_dir_full(self.load(img), '/EFI')
            data = self.write(self.load(img), '/EFI', 'autoexec.ipxe', b'x')
            out = self.assert_written(data, '/EFI', 'autoexec.ipxe', b'x')
            self.assertEqual(used + 2, self.used(out))
            self.assertEqual(15, len(esp.FatImage(data).listdir('/EFI')))

    def test_fat32_root_grows(self):
        img = self.mkfs(*FAT32)
        for n in range(16):
            self.mcopy(img, '/F%02d.TXT' % n, b'%d' % n)
        used = self.used(img)
        self.assert_dir_full(self.load(img), '')
        data = self.write(self.load(img), '/', 'autoexec.ipxe', b'x')
        out = self.assert_written(data, '/', 'autoexec.ipxe', b'x')
        self.assertEqual(used + 2, self.used(out))

    def test_no_cluster_to_grow_directory(self):
        img = self.mkfs(*FAT12)
        self.mmd(img, '/EFI')
        for n in range(14):
            self.mcopy(img, '/EFI/F%02d.TXT' % n, b'%d' % n)
        used, total = self.fsck(img)
        self.mcopy(img, '/FILLER.BIN', bytes((total - used - 1) * 512))
        data = self.load(img)
        self.assert_dir_full(data, '/EFI')
        # One free cluster: enough for the file or the directory, not both.
        self.assert_full(data, '/EFI', 'autoexec.ipxe', b'x')
        data = self.write(data, '/EFI', 'autoexec.ipxe', b'')
        self.assert_written(data, '/EFI', 'autoexec.ipxe', b'')


class BrokenImageTest(EspTestCase):

    def assert_broken(self, data):
        self.assertRaises(exception.EfiImageError, esp.FatImage, bytes(data),
                          name='efi.img')

    def test_not_fat(self):
        for data in (b'', b'\0' * 511, b'\0' * 512, b'\0' * 65536,
                     _blob(65536), _blob(510) + b'\x55\xaa'):
            self.assert_broken(data)

    def test_truncated(self):
        data = self.load(self.mkfs(*FAT12))
        error = self.assertRaises(exception.EfiImageError, esp.FatImage,
                                  data[:len(data) // 2], name='x/efi.img')
        self.assertIn('x/efi.img', str(error))
        self.assert_broken(data[:512])

    def test_bad_boot_sector_fields(self):
        good = self.load(self.mkfs(*FAT12))
        esp.FatImage(good)
        patches = [
            (11, '<H', 700),        # bytes per sector
            (11, '<H', 8192),
            (11, '<H', 256),
            (13, '<B', 0),          # sectors per cluster
            (13, '<B', 3),
            (14, '<H', 0),          # reserved sectors
            (16, '<B', 0),          # number of FATs
            (17, '<H', 0),          # FAT12 without root entries
            (19, '<H', 0),          # no total sectors at all
            (19, '<H', 5760),       # larger than the image
            (22, '<H', 0),          # FAT12 claiming FAT32 without fields
            (22, '<H', 3000),       # FATs past the end
            (22, '<H', 1),          # FAT too small for the clusters
            (510, '<H', 0),         # signature
        ]
        for offset, fmt, value in patches:
            data = bytearray(good)
            struct.pack_into(fmt, data, offset, value)
            self.assert_broken(data)

    def test_bad_fat32_fields(self):
        good = self.load(self.mkfs(2048, '-F', '32'))
        esp.FatImage(good)
        for offset, fmt, value in ((44, '<I', 1), (44, '<I', 1 << 20),
                                   (17, '<H', 512), (40, '<H', 0x85)):
            data = bytearray(good)
            struct.pack_into(fmt, data, offset, value)
            self.assert_broken(data)

    def test_fat12_helper_agrees_with_mtools(self):
        # The corruptions below are written with _set_fat12: what mtools
        # reads back proves it writes the entry it is asked to, at odd
        # and even clusters, in every FAT copy mtools may read.
        img = self.mkfs(*FAT12)
        self.mcopy(img, '/A.BIN', _blob(3000))     # six 512-byte clusters
        first = _start_cluster(self.load(img), b'A       BIN')
        cases = (
            (first + 1, first + 3, '<%d-%d> <%d-%d>' % (
                first, first + 1, first + 3, first + 5)),
            (first, first + 2,
             '<%d> <%d-%d>' % (first, first + 2, first + 5)),
            (first + 2, 0xFFF, '<%d-%d>' % (first, first + 2)),
            (first + 1, 0xFFF, '<%d-%d>' % (first, first + 1)),
        )
        for cluster, value, chain in cases:
            data = bytearray(self.load(img))
            _set_fat12(data, cluster, value)
            shown = self.run_tool('mshowfat', '-i', self.save(bytes(data)),
                                  '::/A.BIN').stdout.decode().split()
            self.assertEqual(['::/A.BIN'] + chain.split(), shown)

    def test_file_chain_loop(self):
        img = self.mkfs(*FAT12)
        self.mcopy(img, '/LOOP.BIN', _blob(1500))
        self.mcopy(img, '/autoexec.ipxe', _blob(1500))
        data = bytearray(self.load(img))
        first = _start_cluster(data, b'LOOP    BIN')
        _set_fat12(data, first + 2, first)     # last cluster -> first
        self.assert_loop(bytes(data), '/LOOP.BIN')
        data = bytearray(self.load(img))
        first = _start_cluster(data, b'AUTOEX~1IPX')
        _set_fat12(data, first, first)         # a cluster pointing at itself
        self.assert_loop(bytes(data), '/autoexec.ipxe')

    def assert_loop(self, data, path):
        image = esp.FatImage(data)
        error = self.assertRaises(exception.EfiImageError, image.read_file,
                                  path)
        self.assertIn('loops', str(error))
        self.assertRaises(exception.EfiImageError, image.write_file, '/',
                          path.strip('/'), b'x')
        self.assertEqual(data, image.to_bytes())

    def test_bad_chains(self):
        img = self.mkfs(*FAT12)
        self.mcopy(img, '/F.BIN', _blob(1500))
        good = self.load(img)
        first = _start_cluster(good, b'F       BIN')
        for cluster, value in ((first, 0), (first, 1), (first + 1, 0xFF7),
                               (first + 1, 0xFF0), (first, 0xFFF),
                               (first + 2, first + 3)):
            data = bytearray(good)
            _set_fat12(data, cluster, value)
            image = esp.FatImage(bytes(data))
            self.assertRaises(exception.EfiImageError, image.read_file,
                              '/F.BIN')
            self.assertRaises(exception.EfiImageError, image.write_file,
                              '/', 'f.bin', b'x')
            self.assertEqual(bytes(data), image.to_bytes())

    def test_directory_chain_loop(self):
        img = self.mkfs(*FAT12)
        self.mmd(img, '/EFI')
        data = bytearray(self.load(img))
        cluster = _start_cluster(data, b'EFI        ')
        _set_fat12(data, cluster, cluster)
        image = esp.FatImage(bytes(data))
        self.assertRaises(exception.EfiImageError, image.listdir, '/EFI')
        self.assertRaises(exception.EfiImageError, image.read_file, '/EFI/x')
        self.assertRaises(exception.EfiImageError, image.write_file, '/EFI',
                          'autoexec.ipxe', b'x')
        self.assertEqual(bytes(data), image.to_bytes())

    def test_entry_cluster_out_of_range(self):
        img = self.mkfs(*FAT12)
        self.mcopy(img, '/F.BIN', b'abc')
        self.mmd(img, '/EFI')
        good = self.load(img)
        cases = ((b'F       BIN', 5000, '/', 'F.BIN'),
                 (b'F       BIN', 1, '/', 'F.BIN'),
                 (b'F       BIN', 0, '/', 'F.BIN'),
                 (b'EFI        ', 9999, '/EFI', 'x'),
                 (b'EFI        ', 0, '/EFI', 'x'))
        for short, cluster, dir_path, name in cases:
            data = bytearray(good)
            struct.pack_into('<H', data, _root_entry(data, short) + 26,
                             cluster)
            data = bytes(data)
            image = esp.FatImage(data)
            self.assertRaises(exception.EfiImageError, image.read_file,
                              dir_path.rstrip('/') + '/' + name)
            self.assertRaises(exception.EfiImageError, image.write_file,
                              dir_path, name, b'x')
            self.assertEqual(data, image.to_bytes())


def _listed(line, name):
    """Whether an mdir line shows ``name`` (long, else as 'NAME EXT')."""
    if line.endswith(' ' + name):
        return True
    short = _83.fullmatch(name)
    return bool(short) and line.upper().startswith('%-8s %-3s ' % (
        short.group(1).upper(), (short.group(2) or '').upper()))


class ReadOnlyTest(EspTestCase):

    def test_read_only_reads_in_place_and_refuses_writes(self):
        data = self.load(self.extract_bookworm())
        ro = esp.FatImage(memoryview(data), 'efi.img', writable=False)
        rw = esp.FatImage(data, 'efi.img')
        self.assertEqual(rw.read_file('/EFI/BOOT/BOOTX64.EFI'),
                         ro.read_file('/EFI/BOOT/BOOTX64.EFI'))
        self.assertEqual(rw.listdir('/EFI/BOOT'), ro.listdir('/EFI/BOOT'))
        self.assertRaises(TypeError, ro.write_file, '/', 'x.txt', b'x')

    def test_read_only_fat32(self):
        # The read path (BaseIso reads the EFI image in place) on FAT32,
        # reserved FAT bits set as in test_fat32_reserved_bits.
        img = self.mkfs(*FAT32)
        self.mcopy(img, '/autoexec.ipxe', b'#!ipxe\n')
        data = bytearray(self.load(img))
        bps, _, reserved = struct.unpack_from('<HBH', data, 11)
        data[reserved * bps + 3] |= 0xF0
        for view in (memoryview(bytes(data)), bytes(data)):
            ro = esp.FatImage(view, 'efi.img', writable=False)
            self.assertEqual(b'#!ipxe\n', ro.read_file('/autoexec.ipxe'))
            self.assertIn('autoexec.ipxe', ro.listdir('/'))
