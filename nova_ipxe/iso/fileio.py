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

"""The files pycdlib reads and writes, and the bounded read of a source.

pycdlib takes file objects: a source's data is served from memory
without a copy (:class:`ViewReader`), and every output is written
through a writer that enforces the output bound (:class:`BoundedWriter`)
into a file or one preallocated buffer (:class:`MemoryWriter`).
"""

import io
import os
import stat

from nova_ipxe import exception


class ViewReader(io.RawIOBase):
    """A read-only file over a buffer, without copying it.

    io.BytesIO copies a memoryview up front; pycdlib reads file data in
    32 KiB chunks, so serving chunks from the view keeps every build's
    large allocations down to the one EFI image it edits.
    """

    def __init__(self, data):
        super().__init__()
        self._view = memoryview(data)
        self._pos = 0

    def readable(self):
        return True

    def seekable(self):
        return True

    def read(self, size=-1):
        end = len(self._view) if size is None or size < 0 else min(
            len(self._view), self._pos + size)
        chunk = bytes(self._view[self._pos:end])
        self._pos = max(self._pos, end)
        return chunk

    def seek(self, offset, whence=io.SEEK_SET):
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos,
                io.SEEK_END: len(self._view)}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def tell(self):
        return self._pos

    def close(self):
        self._view.release()
        super().close()


class BoundedWriter(io.RawIOBase):
    """A write-only file that refuses to grow past ``limit`` bytes.

    The last guard on the output size: whatever pycdlib plans, a build
    never writes more than the source plus the script allow.
    """

    mode = 'wb'

    def __init__(self, fp, limit, source):
        super().__init__()
        self._source = source
        self._fp = fp
        self._limit = limit
        self.size = 0

    def writable(self):
        return True

    def seekable(self):
        return True

    def write(self, data):
        end = self._fp.tell() + len(data)
        if end > self._limit:
            raise exception.InvalidIso(
                source=self._source, reason='its rebuild would be larger '
                'than the source plus the script (%d bytes)' % self._limit)
        self.size = max(self.size, end)
        return self._fp.write(data)

    def seek(self, offset, whence=io.SEEK_SET):
        return self._fp.seek(offset, whence)

    def tell(self):
        return self._fp.tell()


class MemoryWriter(io.RawIOBase):
    """A seekable file writing into one bytearray of ``size`` bytes.

    io.BytesIO grows its buffer in small steps, copying it each time: for
    a 9 MiB ISO written 32 KiB at a time that costs more than the build.
    The bytes written (and any gap sought over) are :meth:`value`.
    """

    def __init__(self, size):
        super().__init__()
        self.data = bytearray(size)
        self._pos = 0
        self._end = 0

    def value(self):
        del self.data[self._end:]
        return self.data

    def writable(self):
        return True

    def seekable(self):
        return True

    def write(self, chunk):
        end = self._pos + len(chunk)
        if end > len(self.data):    # the bounded writer above stops it
            self.data.extend(bytes(end - len(self.data)))
        self.data[self._pos:end] = chunk
        self._pos = end
        self._end = max(self._end, end)
        return len(chunk)

    def seek(self, offset, whence=io.SEEK_SET):
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos,
                io.SEEK_END: self._end}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def tell(self):
        return self._pos


def read_at_most(fd, limit, size_hint=0):
    """Up to ``limit`` bytes of ``fd`` (all if None).

    Read in place into one buffer sized from ``size_hint`` (what fstat
    says), grown a MiB at a time only if the file is longer than that:
    reading costs the data once, and never more than ``limit``.
    """
    data = bytearray(size_hint + 1 if limit is None
                     else min(size_hint + 1, limit))
    have = 0
    while limit is None or have < limit:
        if have == len(data):
            data.extend(bytes(1 << 20 if limit is None
                              else min(1 << 20, limit - have)))
        with memoryview(data) as view:
            got = os.readv(fd, [view[have:]])
        if not got:
            break
        have += got
    del data[have:]
    return data


def read_iso_file(path, max_size=None, name=None):
    """The bytes of the ISO at ``path``; ``name`` is how messages call it.

    Only a regular file is read, and never more than ``max_size`` (plus
    one byte, to tell a larger file): the size is checked on what is
    read, not on what the file system reports.
    """
    name = name or path
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    except OSError as e:
        raise exception.InvalidIso(source=name, reason='cannot read it: '
                                   '%s' % e.strerror)
    try:
        info = os.fstat(fd)
        # A FIFO or a device has no size to check and may never end.
        if not stat.S_ISREG(info.st_mode):
            raise exception.InvalidIso(
                source=name, reason='it is not a regular file')
        if max_size is not None and info.st_size > max_size:
            raise exception.ImageTooLarge(source=name, size=info.st_size,
                                          limit=max_size)
        data = read_at_most(fd, None if max_size is None
                            else max_size + 1, info.st_size)
    except OSError as e:
        raise exception.InvalidIso(source=name, reason='cannot read it: '
                                   '%s' % e.strerror)
    finally:
        os.close(fd)
    if max_size is not None and len(data) > max_size:
        # It grew after the size check.
        raise exception.ImageTooLarge(source=name, size='more than %d'
                                      % max_size, limit=max_size)
    return data


def is_iso_file(path):
    """An ISO 9660 image (its first volume descriptor), not a placeholder.

    Only the descriptor's tag is read: whether a file Nova left in place
    (zeros, an empty file) is an ISO a build wrote, not whether it is a
    good one.
    """
    try:
        with open(path, 'rb') as f:
            f.seek(16 * 2048 + 1)
            return f.read(5) == b'CD001'
    except OSError:
        return False
