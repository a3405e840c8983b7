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

"""The base-ISO cache with the real client, Glance answered by
requests-mock: single download, bounded lock wait, and eviction that
touches only the cache's own entries.  Against a real Glance (faults,
processes, full disks): tests/functional/test_glance.py."""

import fcntl
import hashlib
import os
import threading

import fixtures
from requests_mock.contrib import fixture as requests_mock

from nova_ipxe import cache
from nova_ipxe import exception
from nova_ipxe import glance
from tests import base

ENDPOINT = 'http://glance.example:9292'
IMAGES = ('0b9c2d4e-6f8a-4b1c-9d2e-3f4a5b6c7d8e',
          '1c0d3e5f-7a9b-4c2d-8e3f-4a5b6c7d8e9f')


def data_of(image):
    return (image.encode() * 4096)[:100000]


def record(image):
    data = data_of(image)
    return {'id': image, 'name': 'ipxe', 'status': 'active',
            'disk_format': 'iso', 'size': len(data), 'hw_ipxe_boot': 'true',
            'os_hash_algo': 'sha512',
            'os_hash_value': hashlib.sha512(data).hexdigest()}


class CacheTestCase(base.TestCase):

    def setUp(self):
        super().setUp()
        self.http = self.useFixture(requests_mock.Fixture())
        for image in IMAGES:
            url = '%s/v2/images/%s' % (ENDPOINT, image)
            self.http.get(url, json=record(image))
            self.http.get(url + '/file', content=data_of(image))
        self.client = glance.GlanceClient(ENDPOINT, retries=0)
        self.dir = os.path.join(self.tmp, 'cache')

    def cache(self, **kw):
        kw.setdefault('max_size', 2 ** 30)
        return cache.BaseIsoCache(self.dir, **kw)

    def downloads(self):
        return sum(1 for r in self.http.request_history
                   if r.path.endswith('/file'))

    def fetch(self, image=IMAGES[0], c=None):
        with (c or self.cache()).get(self.client, image, 2 ** 26) as e:
            return e

    def names(self):
        return sorted(n for n in os.listdir(self.dir) if n != cache.LOCKS)

    def test_one_download_then_hits(self):
        first = self.fetch()
        self.assertTrue(first.downloaded)
        self.assertFalse(self.fetch().downloaded)
        self.assertEqual(1, self.downloads())
        self.assertEqual([os.path.basename(first.path)], self.names())
        self.assertRegex(self.names()[0], cache.ENTRY_RE)
        with open(first.path, 'rb') as f:
            self.assertEqual(data_of(IMAGES[0]), f.read())

    def test_from_conf(self):
        self.flags(cache_dir=self.dir, cache_lock_timeout=7,
                   cache_max_age=5)
        c = cache.BaseIsoCache.from_conf(self.conf)
        self.assertEqual((self.dir, 7, 5), (c.directory, c.lock_timeout,
                                            c.max_age))

    def test_lock_wait_is_bounded(self):
        c = self.cache(lock_timeout=0.3)
        self.fetch(c=c)  # makes .locks
        # Another fetch of the image holds the lock (flock is per open
        # file description, so a second open conflicts in-process too).
        fd = os.open(os.path.join(self.dir, cache.LOCKS, IMAGES[0]),
                     os.O_RDWR)
        self.addCleanup(os.close, fd)
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.unlink(os.path.join(self.dir, self.names()[0]))
        e = self.assertRaises(exception.CacheLockTimeout, self.fetch, c=c)
        self.assertEqual(exception.INFRASTRUCTURE, e.category)
        self.assertIn('Waited 0.3 s for another fetch of image %s'
                      % IMAGES[0], str(e))
        self.assertNotIn(self.dir, e.safe_message)
        self.assertEqual([], self.names())  # no .part, no entry
        self.assertEqual(1, self.downloads())
        # Another image is not held up by it.
        self.assertTrue(self.fetch(IMAGES[1], c=c).downloaded)

    def test_lock_waiter_gets_the_entry_when_released(self):
        c = self.cache(lock_timeout=60)
        os.makedirs(os.path.join(self.dir, cache.LOCKS), exist_ok=True)
        fd = os.open(os.path.join(self.dir, cache.LOCKS, IMAGES[0]),
                     os.O_RDWR | os.O_CREAT)
        self.addCleanup(os.close, fd)
        fcntl.flock(fd, fcntl.LOCK_EX)
        # The kernel tells the waiter the image's lock is busy: seen
        # through flock itself, so the release below comes after it.
        busy = threading.Event()
        real_flock = fcntl.flock

        def flock(lock_fd, operation):
            try:
                return real_flock(lock_fd, operation)
            except BlockingIOError:
                if threading.current_thread() is waiter:
                    busy.set()
                raise
        self.useFixture(fixtures.MonkeyPatch('fcntl.flock', flock))
        result = []
        waiter = threading.Thread(target=lambda: result.append(
            self.fetch(c=c)))
        waiter.start()
        # A bound for a test gone wrong, not a timing.
        self.assertTrue(busy.wait(60), 'the fetch never met the lock')
        fcntl.flock(fd, fcntl.LOCK_UN)
        waiter.join()
        # It waited (a fetch that gave up on a busy lock has no result)
        # and then fetched the image itself.
        self.assertEqual(1, len(result))
        self.assertTrue(result[0].downloaded)
        self.assertEqual(1, self.downloads())

    def test_eviction_touches_only_its_own_entries(self):
        ours = self.fetch().path
        outside = os.path.join(self.tmp, 'precious.iso')
        with open(outside, 'wb') as f:
            f.write(b'not the cache\'s')
        key = os.path.basename(ours)
        other_key = key.replace(IMAGES[0], IMAGES[1])
        strangers = {
            'someone-elses.iso': 'file',
            IMAGES[1] + '.iso': 'file',             # not the key pattern
            key.upper(): 'file',
            other_key: 'symlink',                   # pattern, but a link
            other_key.replace('sha512', 'sha256'): 'dir',
            other_key.replace('sha512', 'sha384'): 'foreign',  # other uid
        }
        for name, kind in strangers.items():
            path = os.path.join(self.dir, name)
            if kind == 'symlink':
                os.symlink(outside, path)
            elif kind == 'dir':
                os.mkdir(path)
            else:
                with open(path, 'wb') as f:
                    f.write(b'x' * 10)
                if kind == 'foreign':
                    os.chown(path, 12345, 12345)  # tests run as root
            os.utime(path, (1, 1), follow_symlinks=False)
        os.utime(ours, (1, 1))
        removed = self.cache(max_size=0, max_age=1).evict()
        self.assertEqual([ours], removed)
        self.assertEqual(sorted(strangers), self.names())
        with open(outside, 'rb') as f:
            self.assertEqual(b'not the cache\'s', f.read())
        self.assertEqual([], [p for p, _, _ in self.cache().entries()])

    def test_symlink_at_an_entry_name_is_not_followed(self):
        # A link planted at the entry's own name is neither read nor its
        # target touched: the image is fetched and replaces the link.
        info = self.client.get_image(IMAGES[0], 2 ** 26)
        outside = os.path.join(self.tmp, 'target')
        with open(outside, 'wb') as f:
            f.write(data_of(IMAGES[0]))  # even with the right bytes
        os.chmod(outside, 0o444)
        os.makedirs(self.dir)
        link = os.path.join(self.dir, info.cache_key + cache.SUFFIX)
        os.symlink(outside, link)
        entry = self.fetch()
        self.assertTrue(entry.downloaded)
        self.assertFalse(os.path.islink(link))
        self.assertTrue(os.path.isfile(link))
        with open(outside, 'rb') as f:
            self.assertEqual(data_of(IMAGES[0]), f.read())

    def test_no_regular_file_at_an_entry_name(self):
        # A directory or a FIFO where the entry goes: a typed error, no
        # hang on the FIFO, nothing downloaded, nothing removed.
        info = self.client.get_image(IMAGES[0], 2 ** 26)
        path = os.path.join(self.dir, info.cache_key + cache.SUFFIX)
        os.makedirs(self.dir)
        for make in (os.mkdir, os.mkfifo):
            make(path)
            e = self.assertRaises(exception.CacheError, self.fetch)
            self.assertIn('not a regular file', str(e))
            self.assertTrue(os.path.exists(path))
            self.assertEqual(0, self.downloads())
            (os.rmdir if make is os.mkdir else os.unlink)(path)
        # Nor in the place of the temporary file.
        part = os.path.join(self.dir, '.' + info.cache_key + cache.PART)
        os.mkdir(part)
        e = self.assertRaises(exception.CacheError, self.fetch)
        self.assertIn('Is a directory', str(e))
        self.assertTrue(os.path.isdir(part))
        self.assertEqual(0, self.downloads())

    def test_failed_download_leaves_nothing(self):
        self.http.get('%s/v2/images/%s/file' % (ENDPOINT, IMAGES[0]),
                      content=b'wrong bytes')
        self.assertRaises(exception.ImageDownloadFailed, self.fetch)
        self.assertEqual([], self.names())
        self.assertEqual([], [p for p, _, _ in self.cache().entries()])
