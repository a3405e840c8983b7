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

"""A thread-safe least-recently-used map, bounded by a total weight.

The weight of an entry is 1 unless a ``weight`` function says otherwise
(the bytes a parse holds); it is read when the map is trimmed, so an
entry may grow while it is kept.  ``lock`` is reentrant: a caller that
must change the map and its own state at once holds it around both.
"""

import collections
import threading

_MISSING = object()


class Lru:

    def __init__(self, limit=None, weight=None):
        self.limit = limit          # None: the caller trims with its own
        self._weight = weight or (lambda value: 1)
        self._entries = collections.OrderedDict()
        self.lock = threading.RLock()

    def __len__(self):
        with self.lock:
            return len(self._entries)

    def __contains__(self, key):
        with self.lock:
            return key in self._entries

    def items(self):
        """(key, value) pairs, least recently used first (a copy)."""
        with self.lock:
            return list(self._entries.items())

    def values(self):
        with self.lock:
            return list(self._entries.values())

    def peek(self, key, default=None):
        """The value of ``key`` (or default), leaving the order as it is."""
        with self.lock:
            return self._entries.get(key, default)

    def get(self, key, default=None):
        """The value of ``key``, now the most recently used; or default."""
        with self.lock:
            value = self._entries.get(key, _MISSING)
            if value is _MISSING:
                return default
            self._entries.move_to_end(key)
            return value

    def put(self, key, value):
        """Keep ``value`` unless ``key`` has one; return the one kept.

        The first value stays: a twin made by a concurrent caller for the
        same key is dropped, so every caller shares one.
        """
        with self.lock:
            kept = self._entries.setdefault(key, value)
            self._entries.move_to_end(key)
            self.trim()
            return kept

    def get_or_make(self, key, make):
        """The value of ``key``, or ``make()`` kept under it.

        ``make`` runs under the lock: callers asking for the same map at
        once wait for one making rather than each doing it.
        """
        with self.lock:
            value = self.get(key, _MISSING)
            if value is _MISSING:
                value = self.put(key, make())
            return value

    def trim(self, limit=None):
        """Drop least recently used entries until their weight fits.

        Returns the keys dropped.
        """
        limit = self.limit if limit is None else limit
        if limit is None:
            return []
        with self.lock:
            sizes = [(key, self._weight(value))
                     for key, value in self._entries.items()]
            total = sum(size for _, size in sizes)
            dropped = []
            for key, size in sizes:     # oldest first
                if total <= limit:
                    break
                del self._entries[key]
                dropped.append(key)
                total -= size
            return dropped
