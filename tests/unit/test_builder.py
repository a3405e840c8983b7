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
from nova_ipxe import iso
from nova_ipxe import netdata
from tests import base
from tests import samples


class StockOnFailureTestCase(base.TestCase):
    """Hostile network data always meets on_build_failure."""

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


_REAL_LOCK = threading.Lock


class _WatchedLock:
    """A threading.Lock that tells its watcher who waits for whom.

    It is a lock like any other; a thread that finds it held reports,
    before it blocks, that it waits on this lock, whose ``owner`` says
    which thread holds it.
    """

    def __init__(self, watcher):
        self._lock = _REAL_LOCK()
        self._watcher = watcher
        self.owner = None

    def acquire(self, blocking=True, timeout=-1):
        me = threading.get_ident()
        if not self._lock.acquire(False):
            if not blocking:
                return False
            self._watcher.waiting(me, self)
            if not self._lock.acquire(True, timeout):
                return False
        self.owner = me
        self._watcher.waiting(me, None)
        return True

    def release(self):
        self.owner = None
        self._lock.release()

    def locked(self):
        return self._lock.locked()

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


class _Watcher:
    """Which thread waits on which watched lock, for a condition wait."""

    def __init__(self):
        self.cond = threading.Condition()
        self.blocked_on = {}    # thread ident: the lock it waits for

    def waiting(self, thread, lock):
        with self.cond:
            self.blocked_on[thread] = lock
            self.cond.notify_all()

    def lock(self):
        return _WatchedLock(self)

    def wait_for(self, predicate, what, timeout=60):
        # The timeout only ends a test that went wrong; no outcome
        # depends on how long anything took.
        with self.cond:
            if not self.cond.wait_for(predicate, timeout):
                raise AssertionError('gave up waiting for %s' % what)


class ParsedBasesTestCase(base.TestCase):

    def setUp(self):
        super().setUp()
        with open(samples.bookworm_iso(), 'rb') as f:
            self.bookworm = f.read()
        with open(samples.trixie_iso(), 'rb') as f:
            self.trixie = f.read()

    def test_concurrent_misses_parse_once(self):
        # One thread reads and parses; three more ask for the same key
        # while that is under way, and must wait for it rather than read
        # and parse again.  Seen from outside: the reads, and which
        # thread holds the lock each other thread blocks on.
        watcher = _Watcher()
        loads = []          # thread idents of the reads
        release = threading.Event()
        real = iso.read_iso_file

        def read(path, max_size, name=None):
            with watcher.cond:
                loads.append(threading.get_ident())
                watcher.cond.notify_all()
            release.wait()
            return real(path, max_size, name)
        self.useFixture(fixtures.MonkeyPatch('nova_ipxe.iso.read_iso_file',
                                             read))
        got = {}

        def get():
            got[threading.get_ident()] = bases.get(
                'k', samples.bookworm_iso(), self.conf)
        threads = [threading.Thread(target=get) for _ in range(4)]
        with fixtures.MonkeyPatch('threading.Lock', watcher.lock):
            bases = builder.ParsedBases()
            threads[0].start()
            watcher.wait_for(lambda: loads, 'the first read')
            loader = loads[0]
            for t in threads[1:]:
                t.start()

            def others_settled():
                # Each other thread has either started a read of its own
                # (a broken single flight) or blocks on a lock the
                # reading thread holds.
                return all(
                    t.ident in loads or (
                        watcher.blocked_on.get(t.ident) is not None
                        and watcher.blocked_on[t.ident].owner == loader)
                    for t in threads[1:])
            watcher.wait_for(others_settled, 'the other threads to wait')
            release.set()
            for t in threads:
                t.join()
        self.assertEqual([loader], loads)
        self.assertEqual(4, len(got))
        self.assertEqual(1, len({id(b.layout) for b in got.values()}))
        self.assertEqual(1, len(bases))

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
