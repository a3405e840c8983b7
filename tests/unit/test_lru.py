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

"""nova_ipxe.lru: the one least-recently-used map the caches share."""

import threading

from nova_ipxe import lru
from tests import base


class LruTestCase(base.TestCase):

    def test_count_bound_drops_the_least_recently_used(self):
        cache = lru.Lru(2)
        cache.put('a', 1)
        cache.put('b', 2)
        self.assertEqual(1, cache.get('a'))    # b is now the oldest
        cache.put('c', 3)
        self.assertEqual([('a', 1), ('c', 3)], cache.items())
        self.assertIsNone(cache.get('b'))
        self.assertEqual('gone', cache.get('b', 'gone'))

    def test_peek_leaves_the_order(self):
        cache = lru.Lru(2)
        cache.put('a', 1)
        cache.put('b', 2)
        self.assertEqual(1, cache.peek('a'))
        cache.put('c', 3)
        self.assertNotIn('a', cache)
        self.assertEqual(['b', 'c'], [k for k, _ in cache.items()])

    def test_put_keeps_the_first_value(self):
        cache = lru.Lru(4)
        first, twin = object(), object()
        self.assertIs(first, cache.put('k', first))
        self.assertIs(first, cache.put('k', twin))
        self.assertEqual(1, len(cache))

    def test_none_is_a_value(self):
        cache = lru.Lru(2)
        made = []
        for _ in range(3):
            self.assertIsNone(cache.get_or_make(
                'k', lambda: made.append(1)))
        self.assertEqual([1], made)
        self.assertEqual([None], cache.values())

    def test_weight_bound_read_when_trimmed(self):
        sizes = {'a': 5, 'b': 5, 'c': 5}
        cache = lru.Lru(weight=lambda key: sizes[key])
        for key in 'abc':
            cache.put(key, key)     # no limit: nothing dropped
        self.assertEqual(3, len(cache))
        sizes['c'] = 8              # an entry grew while kept
        self.assertEqual(['a', 'b'], cache.trim(10))
        self.assertEqual(['c'], cache.values())
        self.assertEqual([], cache.trim(10))
        self.assertEqual(['c'], cache.trim(7))
        self.assertEqual(0, len(cache))

    def test_one_making_for_callers_at_once(self):
        cache = lru.Lru(2)
        calls = []
        started = threading.Event()
        release = threading.Event()
        results = []

        def make():
            calls.append(1)
            started.set()
            release.wait(30)
            return 'made'

        asking = threading.Event()

        def ask(event=None):
            if event:
                event.set()
            results.append(cache.get_or_make('k', make))

        first = threading.Thread(target=ask)
        first.start()
        self.assertTrue(started.wait(30))
        # The second caller asks while the first is making: it waits on
        # the lock (it cannot see the map), then finds the value.
        second = threading.Thread(target=ask, args=(asking,))
        second.start()
        self.assertTrue(asking.wait(30))
        release.set()
        first.join(30)
        second.join(30)
        self.assertEqual(['made', 'made'], results)
        self.assertEqual([1], calls)

    def test_lock_is_reentrant_for_compound_changes(self):
        cache = lru.Lru(2)
        with cache.lock:
            cache.put('a', 1)
            self.assertEqual(1, cache.get('a'))
            self.assertEqual([], cache.trim())
