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

"""Bounds on a source ISO's structure, checked before pycdlib parses it.

pycdlib parses every directory record, path table entry and volume
descriptor it is pointed at, with no limit; :func:`check_structure` walks
the same descriptors and trees within bounds first.  The directory walk
(:func:`walk_tree`) also maps the records of a build template.
"""

from nova_ipxe import exception

SECTOR = 2048

# An iPXE ISO has a handful of files in a directory or two.  pycdlib's cost
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


def u16(data, at):
    return int.from_bytes(data[at:at + 2], 'little')


def u32(data, at):
    return int.from_bytes(data[at:at + 4], 'little')


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
        if u32(data, header + 80) > MAX_GPT_ENTRIES:
            fail('its GPT claims %d partitions', u32(data, header + 80))


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
            if at + 32 + u16(slot, 2) * 32 <= len(catalog):
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
            block, offset, length = (u32(area, at + 4), u32(area, at + 12),
                                     u32(area, at + 20))
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


def walk_tree(data, root, volume, fail):
    """Every directory record of the tree under ``root``, depth first.

    ``root`` is a root directory record (from a volume descriptor).
    Yields (offset of the record in ``data``, the record, its name, the
    path of its directory, depth), the ``.`` and ``..`` records
    included; a directory's records follow once its own record has been
    yielded.  Directories nest at most MAX_DEPTH deep, none twice, each
    at most MAX_DIR_BYTES inside ``volume`` bytes, and every record is
    well formed, or ``fail(reason, *args)``.
    """
    pending = [(u32(root, 2), u32(root, 10), '', 1)]
    seen = set()
    while pending:
        extent, length, path, depth = pending.pop()
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
            name = bytes(record[33:33 + name_len])
            yield start + pos, record, name, path, depth
            pos += size
            if name not in (b'\0', b'\1') and record[25] & 0x02:
                pending.append((u32(record, 2), u32(record, 10),
                                path + '/' + name.decode('latin-1'),
                                depth + 1))


def _check_tree(data, root, volume, fail):
    """Walk one directory tree (ISO 9660 or Joliet) within the bounds."""
    entries = 0
    susp_budget = [MAX_SUSP_BYTES]
    for _, record, name, _, _ in walk_tree(data, root, volume, fail):
        _check_susp(data, record[33 + len(name):], volume, susp_budget,
                    fail)
        if name in (b'\0', b'\1'):
            continue
        entries += 1
        if entries > MAX_ENTRIES:
            fail('it has more than %d files and directories (an iPXE '
                 'ISO has a handful)', MAX_ENTRIES)
        child, child_len = u32(record, 2), u32(record, 10)
        if (not record[25] & 0x02 and child_len
                and child * SECTOR + child_len > volume):
            fail('file %s lies outside the volume (truncated?)',
                 exception.shown(name.decode('latin-1')))


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
    if u16(pvd, 128) != SECTOR:
        fail('its logical block size is %d, not %d', u16(pvd, 128), SECTOR)
    volume = u32(pvd, 80) * SECTOR
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
            _check_catalog(data, u32(vd, 71), min(volume, total), fail)
        if kind in (1, 2):
            if u32(vd, 132) > MAX_PATH_TABLE:
                fail('its path table is %d bytes, more than %d',
                     u32(vd, 132), MAX_PATH_TABLE)
            if u16(vd, 128) != SECTOR:
                fail('volume descriptor %d has %d-byte blocks', index,
                     u16(vd, 128))
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
