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

"""The base-ISO cache: one verified copy per Glance image and hash.

Single flight across threads and processes on a host: fetching an image
holds an exclusive ``flock`` on ``.locks/<image id>``, so fifty instances
booting at once cost one download.  An entry is written to a ``.part``
file, verified, fsynced and renamed; it is hashed again before every use
(a corrupted or truncated entry is dropped and fetched again).  Users hold
a shared ``flock`` on the entry while they read it, and eviction (by age,
then least recently used beyond the size bound) takes both locks without
waiting, so it never removes an entry in use.

The image record is fetched from Glance on every use, with the caller's
token: a cache hit never bypasses Glance's permission check.
"""

import contextlib
import dataclasses
import fcntl
import hashlib
import os
import tempfile
import time

from oslo_log import log as logging

from nova_ipxe import exception

LOG = logging.getLogger(__name__)

SUFFIX = '.iso'
PART = '.part'
LOCKS = '.locks'
HASH_CHUNK = 1024 * 1024


@dataclasses.dataclass(frozen=True)
class CachedIso:
    path: str
    info: object            # nova_ipxe.glance.ImageInfo
    downloaded: bool        # this call fetched it from Glance


def default_dir(conf):
    if conf.ipxe.cache_dir:
        return conf.ipxe.cache_dir
    state_path = getattr(conf, 'state_path', None)  # inside Nova
    if state_path:
        return os.path.join(state_path, 'ipxe', 'base')
    return '/var/cache/nova-ipxe'


def _hash_file(fileobj, algo):
    digest = hashlib.new(algo)
    for chunk in iter(lambda: fileobj.read(HASH_CHUNK), b''):
        digest.update(chunk)
    return digest.hexdigest()


class BaseIsoCache:

    def __init__(self, directory, max_size, max_age=0):
        self.directory = os.path.abspath(directory)
        self.max_size = max_size
        self.max_age = max_age
        self.lock_dir = os.path.join(self.directory, LOCKS)
        try:
            os.makedirs(self.lock_dir, mode=0o755, exist_ok=True)
            # Fail now, with the real reason, rather than mid-download.
            tempfile.TemporaryFile(dir=self.directory).close()
        except OSError as e:
            raise exception.CacheError(path=self.directory,
                                       reason=e.strerror or str(e))

    @classmethod
    def from_conf(cls, conf):
        return cls(default_dir(conf), conf.ipxe.cache_max_size,
                   conf.ipxe.cache_max_age)

    # -- locks ---------------------------------------------------------

    @contextlib.contextmanager
    def _image_lock(self, image_id, blocking=True):
        """Exclusive per-image lock; yields False if not blocking and busy.

        flock() locks belong to the open file description, so threads of
        one process exclude each other as well as processes do.
        """
        path = os.path.join(self.lock_dir, image_id)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (
                    0 if blocking else fcntl.LOCK_NB))
            except BlockingIOError:
                yield False
                return
            yield True
        finally:
            os.close(fd)

    # -- use -----------------------------------------------------------

    @contextlib.contextmanager
    def get(self, client, image_id, max_size, progress=None):
        """Yield a :class:`CachedIso` for the image, fetching it if needed.

        The entry stays protected from eviction until the block ends.
        """
        info = client.get_image(image_id, max_size)
        path = os.path.join(self.directory, info.cache_key + SUFFIX)
        downloaded = False
        with self._image_lock(info.id):
            fd = self._open_verified(path, info)
            if fd is None:
                # Verified while streaming, written under this lock: no
                # second hash of what was just fetched.
                fd = self._fetch(client, info, path, progress)
                downloaded = True
            fcntl.flock(fd, fcntl.LOCK_SH)  # in use: not evictable
        try:
            try:
                os.utime(path)  # least recently used ordering
            except OSError:
                pass
            self.evict(keep=path)
            yield CachedIso(path=path, info=info, downloaded=downloaded)
        finally:
            os.close(fd)

    def _open_verified(self, path, info):
        """Open ``path`` if it holds exactly the image, else drop it."""
        try:
            f = open(path, 'rb')
        except FileNotFoundError:
            return None
        except OSError as e:
            raise exception.CacheError(path=path, reason=e.strerror)
        with f:
            size = os.fstat(f.fileno()).st_size
            if size == info.size and _hash_file(
                    f, info.hash_algo) == info.hash_value:
                return os.dup(f.fileno())
        LOG.warning('Dropping the corrupted cache entry %s (%d of %d '
                    'bytes, hash mismatch or truncated); fetching it again',
                    path, size, info.size)
        self._unlink(path)
        return None

    def _fetch(self, client, info, path, progress):
        part = os.path.join(self.directory, '.' + info.cache_key + PART)
        self._unlink(part)  # a crashed fetch's leftover; we hold the lock
        started = time.monotonic()
        rfd = None
        try:
            fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            with os.fdopen(fd, 'wb') as f:
                client.download(info, f, progress=progress)
                f.flush()
                os.fsync(f.fileno())
            rfd = os.open(part, os.O_RDONLY)  # follows the rename
            if os.fstat(rfd).st_size != info.size:
                raise exception.CacheError(
                    path=part, reason='wrote %d bytes, expected %d' % (
                        os.fstat(rfd).st_size, info.size))
            os.rename(part, path)
            self._fsync_dir()
        except OSError as e:
            self._discard(part, rfd)
            raise exception.CacheError(path=self.directory,
                                       reason='writing %s: %s' % (
                                           os.path.basename(path),
                                           e.strerror or e))
        except BaseException:
            self._discard(part, rfd)
            raise
        LOG.info('Cached image %s (%d bytes, %s verified) in %.1f s',
                 info.id, info.size, info.hash_algo,
                 time.monotonic() - started)
        return rfd

    def _discard(self, part, fd):
        if fd is not None:
            os.close(fd)
        self._unlink(part)

    def _fsync_dir(self):
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    @staticmethod
    def _unlink(path):
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass

    # -- eviction ------------------------------------------------------

    def entries(self):
        """[(path, size, mtime)] of the complete entries, oldest first."""
        out = []
        for name in os.listdir(self.directory):
            if not name.endswith(SUFFIX) or name.startswith('.'):
                continue
            path = os.path.join(self.directory, name)
            try:
                st = os.stat(path)
            except FileNotFoundError:
                continue
            out.append((path, st.st_size, st.st_mtime))
        return sorted(out, key=lambda e: e[2])

    def evict(self, keep=None):
        """Drop expired, then least recently used entries beyond the bound.

        Never one in use, never ``keep``.  Returns the paths removed.
        """
        now = time.time()
        entries = self.entries()
        total = sum(size for _, size, _ in entries)
        removed = []
        for path, size, mtime in entries:
            expired = self.max_age and now - mtime > self.max_age
            if path == keep or not (expired or total > self.max_size):
                continue
            if self._remove_unused(path):
                removed.append(path)
                total -= size
        return removed

    def _remove_unused(self, path):
        image_id = os.path.basename(path)[:36]
        with self._image_lock(image_id, blocking=False) as locked:
            if not locked:
                return False  # being fetched or opened right now
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                return False
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False  # in use
            else:
                self._unlink(path)
                LOG.info('Evicted %s from the base-ISO cache', path)
                return True
            finally:
                os.close(fd)
