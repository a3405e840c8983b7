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

import fixtures

from nova_ipxe import builder
from nova_ipxe import exception
from nova_ipxe import netdata
from tests import base


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

    def test_concurrent_misses_parse_once(self):
        import threading
        import time

        from tests import samples
        loads = []
        real = builder.load_base

        def slow(path, conf, name=None):
            loads.append(path)
            time.sleep(0.2)     # long enough for every thread to miss
            return real(path, conf, name)
        self.useFixture(fixtures.MonkeyPatch(
            'nova_ipxe.builder.load_base', slow))
        bases = builder.ParsedBases(size=2)
        got = []
        threads = [threading.Thread(target=lambda: got.append(bases.get(
            'k', samples.bookworm_iso(), self.conf))) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(1, len(loads))
        self.assertEqual(4, len(got))
        self.assertEqual(1, len({id(b) for b in got}))
        # Bounded, oldest out; a failed parse is not cached.
        bases.get('k2', samples.bookworm_iso(), self.conf)
        bases.get('k3', samples.bookworm_iso(), self.conf)
        self.assertEqual(['k2', 'k3'], list(bases._bases))
        self.assertRaises(exception.InvalidIso, bases.get, 'bad',
                          '/nonexistent.iso', self.conf)
        self.assertEqual(['k2', 'k3'], list(bases._bases))
        self.assertEqual({}, bases._loading)

    def test_bytes_keyed_by_the_caller(self):
        from tests import samples
        with open(samples.bookworm_iso(), 'rb') as f:
            data = f.read()
        bases = builder.ParsedBases(size=2)
        first = bases.get_data('h1', data, 'Glance image x', self.conf)
        self.assertIs(first, bases.get_data('h1', b'ignored on a hit',
                                            'Glance image x', self.conf))
        self.assertIsNot(first, bases.get_data('h2', data, 'Glance image x',
                                               self.conf))
        e = self.assertRaises(exception.InvalidIso, bases.get_data, 'h3',
                              b'\0' * 65536, 'Glance image y', self.conf)
        self.assertIn('Glance image y', str(e))
        self.assertEqual(['h1', 'h2'], list(bases._bases))
