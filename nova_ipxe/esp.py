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

"""Put one small file into a FAT12/16/32 image, in-process.

The UEFI El Torito image of an iPXE ISO is a FAT filesystem and iPXE runs
``autoexec.ipxe`` from it.  This does that single job with the standard
library only (pyfatfs needs ``pkg_resources``; we do not shell out to
mtools).  The image comes from an untrusted ISO, so every number read from
it is checked before use, and ``write_file`` plans all changes before it
touches the data, so a failed call leaves the image as it was.
"""

import array
import struct
import sys
import time
import typing

from nova_ipxe import exception

_SLOT = 32                  # bytes per directory entry
_MAX_DIR_SLOTS = 65536      # FAT's limit; also bounds walking a directory
_ATTR_VOLUME = 0x08
_ATTR_DIR = 0x10
_ATTR_ARCHIVE = 0x20
_ATTR_LFN = 0x0F
_DELETED = 0xE5
_LFN_LAST = 0x40
_LFN_BYTES = 26             # 13 UTF-16 units per LFN entry
_NT_LOWER_BASE = 0x08
_NT_LOWER_EXT = 0x10
_DOT = b'.          '
_DOTDOT = b'..         '
_SHORT_CHARS = frozenset('ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789'
                         "!#$%&'()-@^_`{}~")
_LONG_BAD = frozenset('"*/:<>?\\|') | frozenset(map(chr, range(32)))
# Values above the bad-cluster mark end a chain; we write the _EOC ones.
_BAD = {12: 0xFF7, 16: 0xFFF7, 32: 0x0FFFFFF7}
_EOC = {12: 0xFFF, 16: 0xFFFF, 32: 0x0FFFFFFF}
_FSINFO_SIGS = ((0, 0x41615252), (484, 0x61417272), (508, 0xAA550000))
_UNKNOWN = 0xFFFFFFFF       # FSInfo: "not known"
_U32 = 'I' if array.array('I').itemsize == 4 else 'L'


class _Entry:
    """One directory entry set: optional long name plus its short entry."""

    __slots__ = ('short', 'nt', 'attr', 'cluster', 'size', 'long', 'first',
                 'last')

    def __init__(self, short, nt, attr, cluster, size, long, first, last):
        self.short = short          # the 11 raw name bytes
        self.nt = nt                # NT case flags
        self.attr = attr
        self.cluster = cluster
        self.size = size
        self.long = long            # str or None
        self.first = first          # slot index of the first LFN entry
        self.last = last            # slot index of the short entry

    @property
    def is_volume(self):
        return bool(self.attr & _ATTR_VOLUME)

    @property
    def is_dir(self):
        return bool(self.attr & _ATTR_DIR) and not self.is_volume

    def short_name(self, nt_case=True):
        base = self.short[:8].rstrip(b' ')
        ext = self.short[8:].rstrip(b' ')
        if base[:1] == b'\x05':     # 0x05 stands for a leading 0xE5
            base = b'\xe5' + base[1:]
        base = base.decode('cp437')
        ext = ext.decode('cp437')
        if nt_case and self.nt & _NT_LOWER_BASE:
            base = base.lower()
        if nt_case and self.nt & _NT_LOWER_EXT:
            ext = ext.lower()
        return base + '.' + ext if ext else base

    @property
    def name(self):
        return self.long if self.long is not None else self.short_name()

    def matches(self, upper):
        return ((self.long is not None and self.long.upper() == upper) or
                self.short_name(False).upper() == upper)


class _Dir:
    """A parsed directory: slot offsets in the image and its entries."""

    __slots__ = ('offsets', 'clusters', 'entries', 'end')

    def __init__(self, offsets, clusters, entries, end):
        self.offsets = offsets      # image offset of every 32-byte slot
        self.clusters = clusters    # None for the fixed FAT12/16 root
        self.entries = entries
        self.end = end              # index of the first never-used slot


class FatImage:
    """A FAT12/16/32 image held in memory, able to add or replace a file."""

    def __init__(self, data: typing.Union[bytes, bytearray, memoryview],
                 name: str = 'efi.img',
                 writable: typing.Union[bool, str] = True) -> None:
        """Parse a FAT12/16/32 image from bytes.

        ``name`` is only used in error messages.  Anything that is not a
        sane FAT image raises :class:`~nova_ipxe.exception.EfiImageError`.
        A writable image works on its own copy of ``data``; a read-only
        one (``writable=False``) reads ``data`` in place, which saves a
        copy when only looking.  ``writable='in place'`` edits ``data``
        itself, a writable buffer (a bytearray or a slice of one).
        """
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError('a FAT image must be bytes, not %s'
                            % type(data).__name__)
        self._name = name
        self._data: typing.Union[memoryview, bytearray]
        if writable == 'in place':
            self._data = memoryview(data)
            if self._data.readonly or self._data.format != 'B':
                raise TypeError('in-place editing needs a writable byte '
                                'buffer')
        elif writable:
            self._data = bytearray(data)
        else:
            self._data = memoryview(data).toreadonly()
        self._parse_boot_sector()
        self._fat = self._load_fat()

    # -- public API ---------------------------------------------------------

    def read_file(self, path: str) -> typing.Optional[bytes]:
        """Return the bytes of the file at ``path``, or None if absent.

        Names match case-insensitively, by long or by short name.
        """
        parts = _split(path)
        if not parts:
            return None
        directory = self._find_dir(parts[:-1])
        if directory is None:
            return None
        entry = self._find(directory, parts[-1])
        if entry is None or entry.is_dir or entry.is_volume:
            return None
        # One slice per run of consecutive clusters (a file written in
        # one go is one run), not per cluster.
        runs: typing.List[typing.List[int]] = []
        for cluster in self._file_clusters(entry, path):
            if runs and runs[-1][1] == cluster:
                runs[-1][1] = cluster + 1
            else:
                runs.append([cluster, cluster + 1])
        d = self._data
        return b''.join(d[self._cluster_offset(first):
                          self._cluster_offset(end)]
                        for first, end in runs)[:entry.size]

    def file_location(self, path: str) -> typing.Optional[
            typing.Tuple[int, int, typing.List[int]]]:
        """(entry offset, size, cluster offsets) of the file at ``path``.

        The image offsets of its short directory entry and of each of its
        clusters, in order; None if there is no such file.  What a caller
        needs to rewrite the file's bytes and size in place, keeping its
        cluster chain.
        """
        parts = _split(path)
        directory = self._find_dir(parts[:-1]) if parts else None
        entry = directory and self._find(directory, parts[-1])
        if directory is None or entry is None or entry.is_dir or \
                entry.is_volume:
            return None
        return (directory.offsets[entry.last], entry.size,
                [self._cluster_offset(c)
                 for c in self._file_clusters(entry, path)])

    @property
    def cluster_size(self) -> int:
        return self._cs

    def listdir(self, path: str = '/') -> typing.List[str]:
        """Names in directory ``path``: long name, else the short one."""
        directory = self._find_dir(_split(path))
        if directory is None:
            raise self._error('it has no directory %s', path)
        return [e.name for e in directory.entries
                if not e.is_volume and e.short not in (_DOT, _DOTDOT)]

    def write_file(self, dir_path: str, name: str, content: bytes,
                   mtime: typing.Optional[float] = None) -> None:
        """Create or replace file ``name`` in existing directory ``dir_path``.

        ``mtime`` (seconds since the epoch, default now) sets the DOS
        timestamps.  Raises EfiImageFull when clusters or directory slots
        run out, EfiImageError for a broken image, ValueError for a name
        FAT cannot hold.  The image is unchanged when anything is raised.
        """
        if getattr(self._data, 'readonly', False):
            raise TypeError('this FatImage was opened read-only')
        if not isinstance(content, (bytes, bytearray, memoryview)):
            raise TypeError('file content must be bytes, not %s'
                            % type(content).__name__)
        content = bytes(content)
        _check_long_name(name)
        if len(content) > 0xFFFFFFFF:
            raise ValueError('%s is too large for FAT' % name)
        cs = self._cs
        d = self._data
        directory = self._find_dir(_split(dir_path))
        if directory is None:
            raise self._error('it has no directory %s for %s', dir_path,
                              name)

        old = self._find(directory, name)
        old_clusters = []
        old_slots = range(0)
        if old is not None:
            if old.is_dir or old.is_volume:
                raise self._error('%s in %s is not a file', name, dir_path)
            old_clusters = self._file_clusters(old, name)
            if directory.clusters and not set(old_clusters).isdisjoint(
                    directory.clusters):
                raise self._error('%s shares clusters with its directory',
                                  name)
            old_slots = range(old.first, old.last + 1)

        short = self._short_name(name, directory, old)
        long_name = None if _display(short) == name else name
        records = _lfn_records(long_name, _checksum(short))
        start, grow = self._find_slots(directory, len(records) + 1,
                                       old_slots, name)

        # Clusters: reuse the old file's chain first, then free ones.
        count = -(-len(content) // cs)
        total = count + grow
        missing = max(0, total - len(old_clusters))
        fresh = self._find_free(missing)
        if len(fresh) < missing:
            raise exception.EfiImageFull(
                image=self._name, name=name, needed=total * cs,
                free=(self._free_count() + len(old_clusters)) * cs)
        pool = old_clusters + fresh
        file_clusters = pool[:count]
        dir_clusters = pool[count:total]
        released = pool[total:]

        changes = {}
        for chain in (file_clusters, dir_clusters):
            for here, following in zip(chain, chain[1:]):
                changes[here] = following
            if chain:
                changes[chain[-1]] = _EOC[self._bits]
        if dir_clusters:
            changes[directory.clusters[-1]] = dir_clusters[0]
        for cluster in released:
            changes[cluster] = 0

        writes = []
        for i in old_slots:
            writes.append((directory.offsets[i], bytes((_DELETED,))))
        for index, cluster in enumerate(file_clusters):
            chunk = content[index * cs:(index + 1) * cs]
            writes.append((self._cluster_offset(cluster),
                           chunk + bytes(cs - len(chunk))))
        all_offsets = list(directory.offsets)
        for cluster in dir_clusters:
            base = self._cluster_offset(cluster)
            writes.append((base, bytes(cs)))
            all_offsets.extend(range(base, base + cs, _SLOT))
        records.append(_short_record(
            short, file_clusters[0] if file_clusters else 0, len(content),
            _dos_stamp(mtime), self._bits == 32))
        for index, record in enumerate(records):
            writes.append((all_offsets[start + index], record))
        after = start + len(records)
        if directory.end <= after < len(all_offsets):
            # Past the end mark anything may linger; keep the mark.
            writes.append((all_offsets[after], bytes(_SLOT)))

        # Commit: nothing below can fail on a validated plan.
        for offset, blob in writes:
            d[offset:offset + len(blob)] = blob
        for cluster, value in changes.items():
            self._fat[cluster] = value
            for base in self._fat_copies:
                self._put_fat(base, cluster, value)
        if changes:
            self._update_fsinfo(fresh)

    def to_bytes(self) -> bytes:
        """The image bytes, including any changes made."""
        return bytes(self._data)

    def view(self) -> memoryview:
        """A read-only view of the image bytes, without a copy."""
        return memoryview(self._data).toreadonly()

    # -- parsing ------------------------------------------------------------

    def _error(self, reason, *args):
        return exception.EfiImageError(
            image=self._name, reason=reason % args if args else reason)

    def _parse_boot_sector(self):
        d = self._data
        if len(d) < 512:
            raise self._error('it is only %d bytes long', len(d))
        if d[510:512] != b'\x55\xaa':
            raise self._error('its boot sector has no 55 AA signature')
        (bps, spc, reserved, nfats, root_entries, total16, _media,
         fat16) = struct.unpack_from('<HBHBHHBH', d, 11)
        total32, fat32 = struct.unpack_from('<II', d, 32)
        if bps not in (512, 1024, 2048, 4096):
            raise self._error('%d bytes per sector is not supported', bps)
        if not spc or spc & (spc - 1):
            raise self._error('%d sectors per cluster is invalid', spc)
        if not reserved or not nfats:
            raise self._error('no reserved sectors or no FAT')
        total = total16 or total32
        fat_sectors = fat16 or fat32
        if not fat_sectors:
            raise self._error('its FAT size is 0')
        if total * bps > len(d):
            raise self._error('it is truncated (%d of %d bytes)', len(d),
                              total * bps)
        root_sectors = -(-root_entries * _SLOT // bps)
        data_sector = reserved + nfats * fat_sectors + root_sectors
        if data_sector >= total:
            raise self._error('FATs and root directory (%d sectors) do not '
                              'fit in %d sectors', data_sector, total)
        clusters = (total - data_sector) // spc
        if not clusters:
            raise self._error('it has no data clusters')

        # FAT32 is told by a zero 16-bit FAT size, as Linux, dosfstools and
        # EDK2 do (mkfs.fat makes small FAT32 images).
        active = 0
        copies: typing.Sequence[int] = range(nfats)
        if fat16 == 0:
            bits = 32
            if root_entries:
                raise self._error('FAT32 with a fixed root directory')
            if clusters > 0x0FFFFFF5:
                raise self._error('%d clusters is too many', clusters)
            ext_flags, root_cluster, fsinfo = struct.unpack_from(
                '<H2xIH', d, 40)
            if ext_flags & 0x80:    # mirroring off: only one FAT is live
                active = ext_flags & 0x0F
                if active >= nfats:
                    raise self._error('active FAT %d of %d', active, nfats)
                copies = (active,)
        else:
            if not root_entries:
                raise self._error('it has no root directory entries')
            if clusters >= 65525:
                raise self._error('%d clusters is too many for FAT16',
                                  clusters)
            bits = 12 if clusters < 4085 else 16
        if fat_sectors * bps < (bits * (clusters + 2) + 7) // 8:
            raise self._error('its FAT (%d bytes) cannot hold %d clusters',
                              fat_sectors * bps, clusters)

        self._bits = bits
        self._cs = bps * spc
        self._max = clusters + 1    # highest valid cluster number
        self._dir_limit = max(1, _MAX_DIR_SLOTS * _SLOT // self._cs)
        fat_base = reserved * bps
        fat_bytes = fat_sectors * bps
        self._fat_off = fat_base + active * fat_bytes
        self._fat_copies = [fat_base + i * fat_bytes for i in copies]
        self._root_off = fat_base + nfats * fat_bytes
        self._root_slots = root_entries
        self._data_off = data_sector * bps
        self._root_cluster = None
        self._fsinfo = None
        if bits == 32:
            if not 2 <= root_cluster <= self._max:
                raise self._error('its root directory is at invalid cluster '
                                  '%d', root_cluster)
            self._root_cluster = root_cluster
            offset = fsinfo * bps
            if 1 <= fsinfo < reserved and all(
                    struct.unpack_from('<I', d, offset + at)[0] == sig
                    for at, sig in _FSINFO_SIGS):
                self._fsinfo = offset

    def _load_fat(self):
        """Decode the live FAT into a list/array indexed by cluster."""
        n = self._max + 1
        off = self._fat_off
        fat: typing.MutableSequence[int]
        d = self._data
        if self._bits == 12:
            raw = bytes(d[off:off + (n * 3 + 1) // 2])
            raw += bytes(-len(raw) % 3)
            lo, mid, hi = raw[0::3], raw[1::3], raw[2::3]
            fat = [0] * (2 * len(lo))
            fat[0::2] = [a | (b & 0x0F) << 8 for a, b in zip(lo, mid)]
            fat[1::2] = [b >> 4 | c << 4 for b, c in zip(mid, hi)]
            del fat[n:]
            return fat
        size = self._bits // 8
        fat = packed = array.array('H' if size == 2 else _U32)
        packed.frombytes(d[off:off + n * size])
        if sys.byteorder == 'big':
            packed.byteswap()
        # FAT32 entries are 28 bits; the top 4 are reserved.
        # bytes(): a read-only image is a memoryview, which has no
        # translate().
        if size == 4 and bytes(d[off + 3:off + n * 4:4]).translate(
                None, bytes(range(16))):
            fat = array.array(_U32, (v & 0x0FFFFFFF for v in fat))
        return fat

    def _cluster_offset(self, cluster):
        return self._data_off + (cluster - 2) * self._cs

    def _chain(self, start, what, limit, exact=False):
        """Clusters of the chain at ``start``; refuses bad links and loops.

        At most ``limit`` clusters, or with ``exact`` exactly that many.
        """
        fat = self._fat
        top = self._max
        bad = _BAD[self._bits]
        if not 2 <= start <= top:
            raise self._error('%s starts at invalid cluster %d', what, start)
        chain = [start]
        seen = {start}
        value = fat[start]
        while value <= bad:
            if not 2 <= value <= top:
                raise self._error('%s: cluster %d links to invalid value %#x',
                                  what, chain[-1], value)
            if value in seen:
                raise self._error('%s: cluster chain loops at cluster %d',
                                  what, value)
            if len(chain) >= limit:
                raise self._error('%s: cluster chain is longer than %d '
                                  'clusters', what, limit)
            chain.append(value)
            seen.add(value)
            value = fat[value]
        if exact and len(chain) != limit:
            raise self._error('%s: cluster chain has %d clusters, its size '
                              'needs %d', what, len(chain), limit)
        return chain

    def _file_clusters(self, entry, what):
        if not entry.size:
            if entry.cluster:
                raise self._error('%s is empty but starts at cluster %d',
                                  what, entry.cluster)
            return []
        return self._chain(entry.cluster, what, -(-entry.size // self._cs),
                           exact=True)

    def _root(self):
        if self._root_cluster is None:
            offsets = range(self._root_off,
                            self._root_off + self._root_slots * _SLOT, _SLOT)
            return self._read_dir(offsets, None)
        return self._open_chain(self._root_cluster, 'root directory')

    def _open_chain(self, start, what):
        clusters = self._chain(start, what, self._dir_limit)
        cs = self._cs
        offsets = [o for c in clusters
                   for o in range(self._cluster_offset(c),
                                  self._cluster_offset(c) + cs, _SLOT)]
        return self._read_dir(offsets, clusters)

    def _read_dir(self, offsets, clusters):
        d = self._data
        entries = []
        pending = None      # [first slot, next seq expected, checksum, parts]
        end = len(offsets)
        for i, off in enumerate(offsets):
            first = d[off]
            if first == 0:
                end = i
                break
            if first == _DELETED:
                pending = None
                continue
            attr = d[off + 11]
            if attr & 0x3F == _ATTR_LFN:
                part = b''.join((d[off + 1:off + 11], d[off + 14:off + 26],
                                 d[off + 28:off + 32]))
                seq = first & 0x1F
                if first & ~0x1F == _LFN_LAST and 1 <= seq <= 20:
                    pending = [i, seq - 1, d[off + 13], [part]]
                elif (pending and first == pending[1] != 0 and
                        d[off + 13] == pending[2]):
                    pending[1] -= 1
                    pending[3].append(part)
                else:
                    pending = None  # an orphan; it keeps its slots
                continue
            short = bytes(d[off:off + 11])
            long_name = None
            begin = i
            if pending and not pending[1] and pending[2] == _checksum(short):
                text = b''.join(reversed(pending[3])).decode(
                    'utf-16-le', 'replace').split('\0', 1)[0]
                if text:
                    long_name = text
                    begin = pending[0]
            pending = None
            nt, high, low, size = struct.unpack_from('<B7xH4xHI', d, off + 12)
            cluster = high << 16 | low if self._bits == 32 else low
            entries.append(_Entry(short, nt, attr, cluster, size, long_name,
                                  begin, i))
        return _Dir(offsets, clusters, entries, end)

    def _find(self, directory, name):
        upper = name.upper()
        hits = [e for e in directory.entries
                if not e.is_volume and e.matches(upper)]
        if len(hits) > 1:
            raise self._error('%d directory entries are named %s', len(hits),
                              name)
        return hits[0] if hits else None

    def _find_dir(self, parts):
        directory = self._root()
        for part in parts:
            entry = self._find(directory, part)
            if entry is None or not entry.is_dir:
                return None
            if entry.cluster:
                directory = self._open_chain(entry.cluster, part)
            elif entry.short == _DOTDOT:    # '..' of a top-level directory
                directory = self._root()
            else:
                raise self._error('directory %s has no cluster', part)
        return directory

    # -- writing ------------------------------------------------------------

    def _short_name(self, name, directory, old):
        """A unique 11-byte short name for ``name`` (Windows' basis rule)."""
        others = [e for e in directory.entries if e is not old]
        taken = {e.short for e in others}
        longs = {e.long.upper() for e in others if e.long is not None}
        for raw in _short_candidates(*_basis(name)):
            if raw not in taken and _display(raw) not in longs:
                return raw
        raise self._error('no free short name for %s', name)

    def _find_slots(self, directory, needed, old_slots, name):
        """(first slot, clusters to add) for ``needed`` adjacent entries.

        Free slots are deleted ones, never-used ones and ``old_slots``;
        a cluster-chained directory may grow, the fixed root may not.
        """
        d = self._data
        offsets = directory.offsets
        run = 0
        for i in range(directory.end):
            if d[offsets[i]] == _DELETED or i in old_slots:
                run += 1
                if run == needed:
                    return i + 1 - run, 0
            else:
                run = 0
        start = directory.end - run
        have = len(offsets) - start
        if have >= needed:
            return start, 0
        per = self._cs // _SLOT
        grow = -(-(needed - have) // per)
        if (directory.clusters is None or
                len(offsets) + grow * per > _MAX_DIR_SLOTS):
            free = len(offsets) - directory.end + sum(
                1 for i in range(directory.end)
                if d[offsets[i]] == _DELETED or i in old_slots)
            raise exception.EfiImageFull(
                image=self._name, name=name, needed=needed * _SLOT,
                free=free * _SLOT)
        return start, grow

    def _find_free(self, count, start=None):
        """Up to ``count`` free clusters, searching from the FSInfo hint."""
        fat = self._fat
        top = self._max
        if start is None and self._fsinfo is not None:
            start = struct.unpack_from('<I', self._data, self._fsinfo + 492)[0]
        if start is None or not 2 <= start <= top:
            start = 2
        found: typing.List[int] = []
        for low, high in ((start, top + 1), (2, start)):
            at = low
            while len(found) < count:
                try:
                    at = fat.index(0, at, high)
                except ValueError:
                    break
                found.append(at)
                at += 1
        return found

    def _free_count(self):
        fat = self._fat
        return fat.count(0) - (fat[0] == 0) - (fat[1] == 0)

    def _put_fat(self, base, cluster, value):
        d = self._data
        if self._bits == 12:
            off = base + cluster * 3 // 2
            if cluster & 1:
                d[off] = d[off] & 0x0F | (value & 0x0F) << 4
                d[off + 1] = value >> 4
            else:
                d[off] = value & 0xFF
                d[off + 1] = d[off + 1] & 0xF0 | value >> 8
        elif self._bits == 16:
            struct.pack_into('<H', d, base + cluster * 2, value)
        else:
            off = base + cluster * 4
            high = struct.unpack_from('<I', d, off)[0] & 0xF0000000
            struct.pack_into('<I', d, off, high | value)

    def _update_fsinfo(self, allocated):
        """Keep FSInfo's free count and next-free hint true (fsck checks)."""
        if self._fsinfo is None:
            return
        off = self._fsinfo + 488
        free, hint = struct.unpack_from('<II', self._data, off)
        if free != _UNKNOWN:
            free = self._free_count()
        if hint != _UNKNOWN and allocated:
            after = self._find_free(1, allocated[-1] + 1)
            hint = after[0] if after else _UNKNOWN
        struct.pack_into('<II', self._data, off, free, hint)


def _split(path):
    return [p for p in path.split('/') if p and p != '.']


def _check_long_name(name):
    if not isinstance(name, str) or not name:
        raise ValueError('a file name is needed, not %r' % (name,))
    if (name.endswith(('.', ' ')) or name in ('.', '..') or
            not _LONG_BAD.isdisjoint(name)):
        raise ValueError('%r is not a valid FAT file name' % name)
    try:
        units = len(name.encode('utf-16-le')) // 2
    except UnicodeEncodeError:
        raise ValueError('%r is not a valid FAT file name' % name)
    if units > 255:
        raise ValueError('%r is longer than FAT allows' % name)


def _basis(name):
    """Short-name basis (base, ext) and whether it loses information."""
    lossy = not name.isascii()
    upper = ''.join(c if c.isascii() else '_' for c in name).upper()
    text = upper.replace(' ', '').lstrip('.')
    lossy |= text != upper
    dot = text.rfind('.')
    main, ext = (text[:dot], text[dot + 1:]) if dot >= 0 else (text, '')
    if '.' in main:
        main = main[:main.index('.')]
        lossy = True
    base = ''.join(c if c in _SHORT_CHARS else '_' for c in main) or '_'
    suffix = ''.join(c if c in _SHORT_CHARS else '_' for c in ext)
    lossy |= base != main or suffix != ext or len(base) > 8 or len(ext) > 3
    return base[:8], suffix[:3], lossy


def _short_candidates(base, ext, lossy):
    """The basis itself if lossless, then numeric tails ~1, ~2, ..."""
    if not lossy:
        yield _raw_short(base, ext)
    for n in range(1, 1000000):
        tail = '~%d' % n
        yield _raw_short(base[:8 - len(tail)] + tail, ext)


def _raw_short(base, ext):
    return (base.ljust(8) + ext.ljust(3)).encode('ascii')


def _display(raw):
    base = raw[:8].rstrip(b' ').decode('cp437')
    ext = raw[8:].rstrip(b' ').decode('cp437')
    return base + '.' + ext if ext else base


def _checksum(short):
    total = 0
    for byte in short:
        total = ((total & 1) << 7 | total >> 1) + byte & 0xFF
    return total


def _lfn_records(name, checksum):
    """LFN slots for ``name`` in on-disk order (last part first)."""
    if name is None:
        return []
    raw = name.encode('utf-16-le')
    count = -(-len(raw) // _LFN_BYTES)
    if len(raw) % _LFN_BYTES:
        raw += b'\0\0'      # terminator only when there is room
    raw = raw.ljust(count * _LFN_BYTES, b'\xff')
    records = []
    for seq in range(count, 0, -1):
        part = raw[(seq - 1) * _LFN_BYTES:seq * _LFN_BYTES]
        order = seq | (_LFN_LAST if seq == count else 0)
        records.append(bytes((order,)) + part[:10] +
                       bytes((_ATTR_LFN, 0, checksum)) + part[10:22] +
                       b'\0\0' + part[22:])
    return records


def _short_record(short, cluster, size, stamp, fat32):
    date, clock, tenths = stamp
    return struct.pack('<11sBBBHHHHHHHI', short, _ATTR_ARCHIVE, 0, tenths,
                       clock, date, date, cluster >> 16 if fat32 else 0,
                       clock, date, cluster & 0xFFFF, size)


def _dos_stamp(when):
    """(date, time, tenths) in DOS format, clamped to 1980..2107."""
    t = time.localtime(time.time() if when is None else when)
    if t.tm_year < 1980:
        return 1 << 5 | 1, 0, 0
    if t.tm_year > 2107:
        return 127 << 9 | 12 << 5 | 31, 23 << 11 | 59 << 5 | 29, 100
    sec = min(t.tm_sec, 59)
    return ((t.tm_year - 1980) << 9 | t.tm_mon << 5 | t.tm_mday,
            t.tm_hour << 11 | t.tm_min << 5 | sec // 2,
            sec % 2 * 100)
