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

import os
import threading

import fixtures

from nova_ipxe import builder
from nova_ipxe import exception
from nova_ipxe import netdata
from tests import base
from tests import samples


class StockOnFailureTestCase(base.TestCase):
    """Issue 7.9: hostile network data always meets on_build_failure."""

    def render(self, data):
        return builder.render_script(builder.Instance(network_data=data),
                                     self.conf)

    def hostile(self):
        deep = []
        for _ in range(100000):
            deep = [deep]
        cases = []
        for key, value in (('netmask', '\u00b2'), ('netmask', '5' * 5000),
                           ('netmask', 10 ** 5000), ('netmask', deep),
                           ('ip_address', deep), ('ip_address', 10 ** 5000),
                           ('ip_address', '2001:db8::1%eth0\nforged'),
                           ('routes', deep), ('services', 1.5)):
            data = self.network_data()
            data['networks'][0][key] = value
            cases.append(data)
        return cases + [deep, {'links': deep}, {'links': [deep]}]

    def test_every_hostile_case_is_typed_and_goes_stock(self):
        self.flags(on_build_failure='stock')
        logger = self.useFixture(fixtures.FakeLogger(level='ERROR'))
        for data in self.hostile():
            e = self.assertRaises(exception.InvalidNetworkData, self.render,
                                  data)
            self.assertTrue(builder.stock_on_failure(e, self.conf))
        lines = logger.output.splitlines()
        self.assertEqual(len(self.hostile()), len(lines))
        for line in lines:
            self.assertIn('on_build_failure = stock: tenant error: ', line)

    def test_untyped_parse_error_still_meets_the_policy(self):
        # Defence in depth: should netdata ever miss a case, the plain
        # Python error from tenant data is still a typed, logged error.
        self.useFixture(fixtures.MockPatchObject(
            netdata, 'parse', side_effect=RecursionError('deep')))
        logger = self.useFixture(fixtures.FakeLogger(level='ERROR'))
        e = self.assertRaises(exception.InvalidNetworkData, self.render,
                              self.network_data())
        self.assertIn('unparseable (RecursionError)', str(e))
        self.assertIn('Traceback', logger.output)
        self.flags(on_build_failure='stock')
        self.assertTrue(builder.stock_on_failure(e, self.conf))

    def test_failure_policy(self):
        error = exception.InvalidIso(source='x', reason='y')
        self.assertRaises(exception.InvalidIso, builder.stock_on_failure,
                          error, self.conf)
        self.flags(on_build_failure='stock')
        self.assertTrue(builder.stock_on_failure(error, self.conf))
        # Programming errors are never papered over.
        self.assertRaises(KeyError, builder.stock_on_failure, KeyError('k'),
                          self.conf)

    def test_fail_policy_and_programming_errors_re_raise(self):
        error = exception.InvalidNetworkData(field='f', reason='r')
        self.assertRaises(exception.InvalidNetworkData,
                          builder.stock_on_failure, error, self.conf)
        self.flags(on_build_failure='stock')
        self.assertRaises(KeyError, builder.stock_on_failure, KeyError('k'),
                          self.conf)
        self.assertRaises(TypeError, builder.stock_on_failure,
                          'not an exception', self.conf)


class ParsedBasesTestCase(base.TestCase):

    def setUp(self):
        super().setUp()
        with open(samples.bookworm_iso(), 'rb') as f:
            self.bookworm = f.read()
        with open(samples.trixie_iso(), 'rb') as f:
            self.trixie = f.read()

    def test_concurrent_misses_parse_once(self):
        bases = builder.ParsedBases()
        loads, missed = [], set()
        arrived = threading.Condition()
        release = threading.Event()
        real_cached = bases._cached

        def cached(key):
            got = real_cached(key)
            if got is None:
                with arrived:
                    missed.add(threading.get_ident())
                    arrived.notify_all()
            return got

        def read():
            loads.append(1)
            # Hold the parse until every thread has missed the cache.
            release.wait(60)
            return self.bookworm
        bases._cached = cached
        got = []
        threads = [threading.Thread(target=lambda: got.append(bases._get(
            'k', read, 'ISO', self.conf))) for _ in range(4)]
        for t in threads:
            t.start()
        with arrived:
            self.assertTrue(arrived.wait_for(lambda: len(missed) == 4, 60))
        release.set()
        for t in threads:
            t.join()
        self.assertEqual(1, len(loads))
        self.assertEqual(4, len(got))
        self.assertEqual(1, len({id(b.layout) for b in got}))

    def test_a_failed_parse_is_not_kept(self):
        bases = builder.ParsedBases()
        bases.get_data('k', self.bookworm, 'ISO', self.conf)
        e = self.assertRaises(exception.InvalidIso, bases.get_data, 'bad',
                              b'\0' * 65536, 'Glance image y', self.conf)
        self.assertIn('Glance image y', str(e))
        self.assertRaises(exception.InvalidIso, bases.get, 'gone',
                          os.path.join(self.tmp, 'nonexistent.iso'),
                          self.conf)
        self.assertEqual(1, len(bases))
        self.assertEqual(len(self.bookworm), bases.nbytes)

    def test_same_bytes_kept_once_named_per_key(self):
        bases = builder.ParsedBases()
        first = bases.get_data('image-a', self.bookworm, 'Glance image a',
                               self.conf)
        second = bases.get_data('image-b', bytes(self.bookworm),
                                'Glance image b', self.conf)
        self.assertEqual(1, len(bases))
        self.assertEqual(len(self.bookworm), bases.nbytes)
        self.assertIs(first.layout, second.layout)
        self.assertEqual(('Glance image a', 'Glance image b'),
                         (first.source, second.source))
        # A hit by key does not read the bytes again.
        self.assertIs(first.layout, bases.get_data(
            'image-a', b'not read on a hit', 'x', self.conf).layout)

    def test_bounded_by_bytes_between_builds(self):
        instance = builder.Instance(network_data=self.network_data())
        out = os.path.join(self.tmp, 'out.iso')

        def build(bases, key, data):
            b = bases.get_data(key, data, key, self.conf)
            builder.build_iso(b, instance, out, self.conf)
            bases.trim(self.conf)
            return os.path.getsize(out)
        # What one parse of each holds after a build: its bytes and the
        # template of that build (a whole output ISO).
        bookworm_kept = len(self.bookworm) + build(
            builder.ParsedBases(), 'b', self.bookworm)
        trixie_kept = len(self.trixie) + build(
            builder.ParsedBases(), 't', self.trixie)
        limit = bookworm_kept + trixie_kept - 1
        self.flags(parsed_iso_memory=limit)
        bases = builder.ParsedBases()
        build(bases, 'b', self.bookworm)
        self.assertEqual(bookworm_kept, bases.nbytes)
        build(bases, 't', self.trixie)
        # Both do not fit: the least recently used one went.
        self.assertEqual(trixie_kept, bases.nbytes)
        self.assertLessEqual(bases.nbytes, limit)
        build(bases, 'b', self.bookworm)
        self.assertEqual(bookworm_kept, bases.nbytes)
        self.flags(parsed_iso_memory=0)
        build(bases, 't', self.trixie)
        self.assertEqual((0, 0), (len(bases), bases.nbytes))
