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
waiting, so it never removes an entry in use.  Waiting for another
fetch of the same image is bounded (``[ipxe] cache_lock_timeout``): one
stuck download cannot hold every other build of that image.

Eviction only touches what the cache made: regular files owned by this
user whose names match the entry pattern, never through a symlink, and
never another file that happens to end in ``.iso``.

The image record is fetched from Glance on every use, with the caller's
token: a cache hit never bypasses Glance's permission check.
"""

import contextlib
import dataclasses
import errno
import fcntl
import hashlib
import os
import re
import stat
import tempfile
import time
import typing

from oslo_log import log as logging

from nova_ipxe import exception
from nova_ipxe import glance

LOG = logging.getLogger(__name__)

SUFFIX = '.iso'
PART = '.part'
LOCKS = '.locks'
HASH_CHUNK = 1024 * 1024
# ImageInfo.cache_key + SUFFIX: the only names the cache ever made.
ENTRY_RE = re.compile(r'^([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-'
                      r'[0-9a-f]{12})-(sha512|sha384|sha256|md5)-'
                      r'[0-9a-f]{32}' + re.escape(SUFFIX) + '$')
# Polling a busy lock: flock() has no timeout of its own.
LOCK_POLL = (0.01, 0.5)


# progress(bytes received, bytes in all), called while downloading.
Progress = typing.Callable[[int, int], None]


class ImageClient(typing.Protocol):
    """What the cache needs from Glance.

    The CLI's :class:`nova_ipxe.glance.GlanceClient` and the XenAPI
    driver's :class:`nova_ipxe.virt.imageapi.NovaImageClient`.
    """

    def get_image(self, image_id: str,
                  max_size: int) -> glance.ImageInfo:
        """The checked record; a typed error if it is no iPXE image."""

    def download(self, info: glance.ImageInfo, fileobj: typing.BinaryIO,
                 progress: typing.Optional[Progress] = None) -> int:
        """Write exactly the bytes ``info`` describes, verified."""


@dataclasses.dataclass(frozen=True)
class CachedIso:
    path: str
    info: glance.ImageInfo
    downloaded: bool        # this call fetched it from Glance


def default_dir(conf: typing.Any) -> str:
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

    def __init__(self, directory: str, max_size: int, max_age: int = 0,
                 lock_timeout: float = 600) -> None:
        self.directory = os.path.abspath(directory)
        self.max_size = max_size
        self.max_age = max_age
        self.lock_timeout = lock_timeout
        self.lock_dir = os.path.join(self.directory, LOCKS)
        try:
            os.makedirs(self.lock_dir, mode=0o755, exist_ok=True)
            # Fail now, with the real reason, rather than mid-download.
            tempfile.TemporaryFile(dir=self.directory).close()
        except OSError as e:
            raise exception.CacheError(path=self.directory,
                                       reason=e.strerror or str(e))

    @classmethod
    def from_conf(cls, conf: typing.Any) -> 'BaseIsoCache':
        return cls(default_dir(conf), conf.ipxe.cache_max_size,
                   conf.ipxe.cache_max_age, conf.ipxe.cache_lock_timeout)

    # -- locks ---------------------------------------------------------

    @contextlib.contextmanager
    def _image_lock(self, image_id, blocking=True):
        """Exclusive per-image lock; yields False if not blocking and busy.

        A blocking wait ends after ``lock_timeout`` seconds with
        :class:`CacheLockTimeout`.  flock() locks belong to the open file
        description, so threads of one process exclude each other as well
        as processes do.
        """
        path = os.path.join(self.lock_dir, image_id)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW |
                         os.O_CLOEXEC, 0o644)
        except OSError as e:
            raise exception.CacheError(path=path,
                                       reason=e.strerror or str(e))
        try:
            if not self._lock(fd, blocking):
                if not blocking:
                    yield False
                    return
                raise exception.CacheLockTimeout(
                    image=image_id, path=self.directory,
                    seconds=self.lock_timeout)
            yield True
        finally:
            os.close(fd)

    def _lock(self, fd, blocking):
        deadline = time.monotonic() + self.lock_timeout
        delay = LOCK_POLL[0]
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                left = deadline - time.monotonic()
                if not blocking or left <= 0:
                    return False
            time.sleep(min(delay, left))
            delay = min(delay * 2, LOCK_POLL[1])

    # -- use -----------------------------------------------------------

    @contextlib.contextmanager
    def get(self, client: ImageClient, image_id: str, max_size: int,
            progress: typing.Optional[Progress] = None
            ) -> typing.Iterator[CachedIso]:
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
            # Never through a symlink: the entry is ours or it is not used.
            # O_NONBLOCK: a FIFO planted at the name must not hang us.
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK |
                         os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        except OSError as e:
            if e.errno == errno.ELOOP:
                # Not an entry we made: the fetched one is renamed over
                # the link (rename never touches a link's target).
                LOG.warning('%s is a symlink, not a cache entry; fetching '
                            'the image over it', path)
                return None
            raise exception.CacheError(path=path, reason=e.strerror)
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            # Not ours to remove, and in the way of ours.
            raise exception.CacheError(
                path=path, reason='it is not a regular file, so not an '
                                  'entry the cache made; remove it')
        os.set_blocking(fd, True)
        with os.fdopen(fd, 'rb') as f:
            size = st.st_size
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
        try:
            self._unlink(part)  # a crashed fetch's leftover; we hold the lock
        except OSError as e:
            raise exception.CacheError(path=part, reason=e.strerror)
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

    def entries(self) -> typing.List[typing.Tuple[str, int, float]]:
        """[(path, size, mtime)] of the complete entries, oldest first.

        Only what the cache made: a name it gives its entries, a regular
        file (not followed if a symlink) owned by this user.
        """
        out = []
        uid = os.geteuid()
        for name in os.listdir(self.directory):
            if not ENTRY_RE.match(name):
                continue
            path = os.path.join(self.directory, name)
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                continue
            if not stat.S_ISREG(st.st_mode) or st.st_uid != uid:
                continue
            out.append((path, st.st_size, st.st_mtime))
        return sorted(out, key=lambda e: e[2])

    def evict(self, keep: typing.Optional[str] = None) -> typing.List[str]:
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
        match = ENTRY_RE.match(os.path.basename(path))
        if match is None:
            return False  # not a name the cache made (entries() skips it)
        image_id = match.group(1)
        with self._image_lock(image_id, blocking=False) as locked:
            if not locked:
                return False  # being fetched or opened right now
            try:
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW |
                             os.O_CLOEXEC)
            except OSError:
                return False  # gone, or replaced by a symlink
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                st, now = os.fstat(fd), os.lstat(path)
                if (st.st_dev, st.st_ino) != (now.st_dev, now.st_ino) or \
                        not stat.S_ISREG(st.st_mode) or \
                        st.st_uid != os.geteuid():
                    return False  # replaced since it was listed
                self._unlink(path)
            except (BlockingIOError, FileNotFoundError):
                return False  # in use, or gone
            finally:
                os.close(fd)
        LOG.info('Evicted %s from the base-ISO cache', path)
        return True
