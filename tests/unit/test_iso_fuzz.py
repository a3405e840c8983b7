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

"""Property test of the ISO parser on generated hostile ISOs.

Each example is a real iPXE ISO (bookworm's boot files) made with
pycdlib, with extra files, hard links, directories and hostile names,
and some of its metadata bytes overwritten.  Whatever the input, the
parser ends in a typed error or a build whose output carries the script
and is no larger than the source plus the script.  The test counts how
far each example got, and demands that enough of them reached the deep
stages: a fuzz that mostly fails early proves little.
"""

import collections
import io

import hypothesis
from hypothesis import strategies as st
import pycdlib

from nova_ipxe import exception
from nova_ipxe import iso
from tests import base
from tests import isofactory

SCRIPT = b'#!ipxe\necho per-instance\nchain http://192.0.2.1/menu\n'
STAGES = ('structure checked', 'parsed by pycdlib', 'layout read', 'built')

names = st.text(st.characters(codec='utf-8', exclude_characters='/\0'),
                min_size=1, max_size=40)
extra_file = st.tuples(names, st.integers(0, 5000),
                       st.one_of(st.none(), st.integers(0, 30)))
REGIONS = ('descriptors', 'directories', 'records', 'catalog', 'any')
mutation = st.tuples(st.sampled_from(REGIONS), st.integers(0, 2 ** 20),
                     st.binary(min_size=1, max_size=8))


def _make(rock_ridge, files, depth, with_efi):
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
    efi = stock['/efi.img'] if with_efi else None
    return isofactory.boot_iso_bytes(extra, rock_ridge=rock_ridge, efi=efi)


def _stock_files(cache=[]):
    if not cache:
        cache.append(isofactory.bookworm_parts()[2])
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


class IsoParserPropertyTestCase(base.TestCase):

    def test_hostile_isos_end_typed_or_bounded(self):
        reached = collections.Counter()

        @hypothesis.settings(max_examples=150, deadline=None, database=None,
                             derandomize=True,
                             suppress_health_check=list(
                                 hypothesis.HealthCheck))
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


def _text(text):
    from testtools import content
    return content.text_content(text)
