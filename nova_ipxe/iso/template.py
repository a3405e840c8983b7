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

"""Build templates: a full build's output with a placeholder script.

Every build of a base rebuilds the ISO from the source's files, so
nothing of the source's layout can leak a stale script; the rebuild is
done once per size class of script, with a placeholder script, and a
build patches its script into that (:class:`Template`).  The result is
byte for byte what a full rebuild with that script writes (but for its
time stamps, which are the template's), and a template whose every
placeholder byte and size is not accounted for is not used (the build
then rebuilds in full).
"""

import random
import uuid
import zlib

from nova_ipxe import esp
from nova_ipxe.iso import layout
from nova_ipxe.iso import structure

# Scripts up to this size are patched into a template; larger ones (none
# a real network config renders) are built the long way.
MAX_TEMPLATE_SCRIPT = 64 * 1024
# Templates kept per base: one per script size class in use.
MAX_TEMPLATES = 2
_BLOCK = 16 * 1024  # the granularity of zero runs left as holes
_HOLE = 64 * 1024   # shorter zero runs are written


class NoTemplate(Exception):
    pass


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


def template_records(data):
    """(record offset, ISO 9660 path or None, extent, length) of files.

    Every file record of every tree of a template: our own output, walked
    within bounds all the same; any surprise is a NoTemplate.
    """
    def fail(reason, *args):
        raise NoTemplate(reason % args)

    found = []
    for index in range(16, 16 + structure.MAX_DESCRIPTORS):
        vd = data[index * structure.SECTOR:(index + 1) * structure.SECTOR]
        if len(vd) < structure.SECTOR or vd[1:6] != b'CD001':
            raise NoTemplate('volume descriptor %d' % index)
        if vd[0] == 255:
            break
        if vd[0] not in (1, 2):
            continue
        primary = vd[0] == 1
        for at, record, name, path, _ in structure.walk_tree(
                data, vd[156:190], len(data), fail):
            if name in (b'\0', b'\1') or record[25] & 0x02:
                continue
            child = primary and path + '/' + name.decode('latin-1')
            found.append((at, child or None, structure.u32(record, 2),
                          structure.u32(record, 10)))
            if len(found) > 4 * structure.MAX_ENTRIES:
                raise NoTemplate('too many records')
    else:
        raise NoTemplate('no volume descriptor terminator')
    return found


def _hybrid_ids(data):
    """Where a template's isohybrid identifiers are (see _new_ids).

    (offset of the MBR disk signature or None, ((GPT header offset,
    entries offset, entries in use, bytes under the entries CRC), ...)).
    Each GPT must check out as pycdlib writes it, or: NoTemplate.
    """
    if data[510:512] != b'\x55\xaa':
        return None, ()
    gpts = []
    if data[512:520] == b'EFI PART':
        backup = int.from_bytes(data[512 + 32:512 + 40], 'little') * 512
        for header_at in (512, backup):
            header = bytearray(data[header_at:header_at + 92])
            if header[:8] != b'EFI PART' or structure.u32(header, 12) != 92:
                raise NoTemplate('an unexpected GPT header')
            crc = structure.u32(header, 16)
            header[16:20] = bytes(4)
            if zlib.crc32(header) != crc:
                raise NoTemplate('a GPT header CRC does not check out')
            entries_at = int.from_bytes(header[72:80], 'little') * 512
            count, size = structure.u32(header, 80), structure.u32(header, 84)
            if size != 128 or not 0 < count <= structure.MAX_GPT_ENTRIES:
                raise NoTemplate('unexpected GPT entries')
            table = data[entries_at:entries_at + count * 128]
            parts = 0
            while parts < count and any(table[parts * 128:parts * 128 + 16]):
                parts += 1
            # pycdlib's CRC covers the entries in use; the spec's, all.
            for crc_len in (parts * 128, count * 128):
                if zlib.crc32(table[:crc_len]) == structure.u32(header, 88):
                    break
            else:
                raise NoTemplate('a GPT entries CRC does not check out')
            gpts.append((header_at, entries_at, parts, crc_len))
    return 440, tuple(gpts)


class Template:
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
            raise NoTemplate(reason % args)

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
        for record, path, extent, length in template_records(data):
            if extent * structure.SECTOR in starts:
                if length != slot or _be32(data, record + 14) != slot:
                    fail('a record of the script has length %d', length)
                le.append(record + 10)
                be.append(record + 14)
                claimed.add(extent * structure.SECTOR)
            if efi and path == efi[0].iso_path:
                if length != efi[0].length:
                    fail('the EFI image changed size')
                efi_base = extent * structure.SECTOR
        if efi:
            if efi_base is None:
                fail('no EFI image record')
            view = memoryview(data)[efi_base:efi_base + efi[0].length]
            fat = esp.FatImage(view, efi[0].path, writable=False)
            for path in efi[1]:
                where = fat.file_location(path)
                if where is None:
                    if path == '/' + layout.AUTOEXEC:
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
