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

"""Glance through Nova's image API, as the base-ISO cache's client.

:class:`nova_ipxe.cache.BaseIsoCache` asks a client for a checked image
record (:func:`nova_ipxe.glance.image_info`) and for the image's bytes
into a file.  The ``nova-ipxe`` command's client is
:class:`nova_ipxe.glance.GlanceClient`; inside nova-compute this one
speaks to Glance with Nova's own endpoint, TLS settings and the request's
context, so the image's permission check is Glance's, as for any image
Nova boots.

The bytes are hashed while they are written and compared with the
record's ``os_hash_value`` (``checksum`` as a fallback): Nova's
``download`` does not check them itself.  Nova's image errors become the
core's typed errors, so the drivers' one error mapping applies.
"""

import hashlib
import typing

from nova import exception as nova_exception

from nova_ipxe import exception
from nova_ipxe import glance


def _record(image):
    """A Nova image dict as the flat Glance v2 record the core checks."""
    flat = dict(image.get('properties') or {})
    flat.update((k, v) for k, v in image.items() if k != 'properties')
    return flat


class NovaImageClient:
    """The base-ISO cache's client over ``nova.image.glance.API``."""

    def __init__(self, image_api: typing.Any, context: typing.Any) -> None:
        self.image_api = image_api
        self.context = context

    def _translated(self, image_id, call):
        try:
            return call()
        except nova_exception.ImageNotFound:
            raise exception.ImageNotFound(image=image_id)
        except nova_exception.ImageNotAuthorized:
            raise exception.ImageNotAuthorized(image=image_id, status=403)
        except nova_exception.GlanceConnectionFailed as e:
            raise exception.ImageDownloadFailed(image=image_id,
                                                reason=e.format_message())

    def get_image(self, image_id: str,
                  max_size: int) -> glance.ImageInfo:
        """The checked record of an iPXE boot image."""
        image_id = glance.check_image_id(image_id)
        image = self._translated(
            image_id, lambda: self.image_api.get(self.context, image_id))
        record = _record(image)
        if record.get('id') != image_id:
            raise exception.InvalidImageRecord(
                image=image_id, reason='it is the record of another image')
        return glance.image_info(record, max_size)

    def download(self, info: glance.ImageInfo, fileobj: typing.BinaryIO,
                 progress: typing.Optional[
                     typing.Callable[[int, int], None]] = None) -> int:
        """Write the image's bytes into ``fileobj``, verified."""
        sink = _VerifyingSink(info, fileobj, progress)
        self._translated(info.id, lambda: self.image_api.download(
            self.context, info.id, data=sink))
        sink.check()
        return sink.received


class _VerifyingSink:
    """What Nova's download writes to: counted, capped and hashed."""

    def __init__(self, info, fileobj, progress):
        self.info = info
        self.fileobj = fileobj
        self.progress = progress
        self.digest = hashlib.new(info.hash_algo)
        self.received = 0

    def write(self, chunk):
        self.received += len(chunk)
        if self.received > self.info.size:
            raise exception.ImageDownloadFailed(
                image=self.info.id, reason='the stream is longer than the '
                '%d bytes Glance reported; stopped at %d'
                % (self.info.size, self.received))
        self.digest.update(chunk)
        self.fileobj.write(chunk)
        if self.progress:
            self.progress(self.received, self.info.size)
        return len(chunk)

    def truncate(self, size=0):
        # Nova calls it when a signature check fails; the cache discards
        # the file anyway.
        return self.fileobj.truncate(size)

    def check(self):
        if self.received != self.info.size:
            raise exception.ImageDownloadFailed(
                image=self.info.id, reason='the stream ended after %d of '
                '%d bytes' % (self.received, self.info.size))
        actual = self.digest.hexdigest()
        if actual != self.info.hash_value:
            raise exception.ImageChecksumMismatch(
                image=self.info.id, algo=self.info.hash_algo,
                expected=self.info.hash_value[:16], actual=actual[:16])
