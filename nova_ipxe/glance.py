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

"""A small Glance v2 client on requests: image record and verified,
streamed download.

Only what nova-ipxe needs: ``GET /v2/images/{id}`` and
``GET /v2/images/{id}/file``.  The record is checked before a byte is
downloaded (active, ``disk_format`` iso, flagged for iPXE boot, within
``max_iso_size``, with a hash to verify against); the download streams to
a file object while hashing, stops at the cap, resumes with a Range
request after a broken connection, and is compared with
``os_hash_algo``/``os_hash_value`` (``checksum``, MD5, as a fallback).
The token travels as ``X-Auth-Token`` and is never logged.
"""

import dataclasses
import hashlib
import re
import time
import uuid

from oslo_log import log as logging
import requests

from nova_ipxe import exception
from nova_ipxe import image as ipxe_image

LOG = logging.getLogger(__name__)

CHUNK = 1024 * 1024
HASH_ALGOS = ('sha512', 'sha384', 'sha256')
HEX_RE = re.compile(r'^[0-9a-f]+$')
RANGE_RE = re.compile(r'^bytes (\d+)-(\d+)/(\d+|\*)$')


@dataclasses.dataclass(frozen=True)
class ImageInfo:
    """A verified Glance image record: what the download must match."""

    id: str
    name: str
    size: int
    hash_algo: str
    hash_value: str
    properties: dict

    @property
    def cache_key(self):
        return '%s-%s-%s' % (self.id, self.hash_algo, self.hash_value[:32])


def check_image_id(image_id):
    """Image IDs are UUIDs; anything else never reaches a URL or a path."""
    try:
        return str(uuid.UUID(str(image_id)))
    except ValueError:
        raise exception.ImageNotFound(image=image_id)


def image_info(record, max_size):
    """Validate a ``GET /v2/images/{id}`` record for iPXE boot."""
    image = record.get('id')

    def unusable(reason):
        raise exception.ImageNotUsable(image=image, reason=reason)
    if record.get('status') != 'active':
        unusable('its status is %r, not active' % record.get('status'))
    if record.get('disk_format') != 'iso':
        unusable('its disk_format is %r; iPXE boot images are iso'
                 % record.get('disk_format'))
    if not ipxe_image.is_ipxe_image('iso', record):
        unusable('it is not flagged for iPXE boot; set the image property '
                 'hw_ipxe_boot=true')
    size = record.get('size')
    if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
        unusable('Glance reports no usable size (%r)' % (size,))
    if size > max_size:
        raise exception.ImageTooLarge(source='Image %s' % image, size=size,
                                      limit=max_size)
    algo = record.get('os_hash_algo')
    value = record.get('os_hash_value')
    if algo in HASH_ALGOS and isinstance(value, str) and HEX_RE.match(
            value) and len(value) == hashlib.new(algo).digest_size * 2:
        pass
    elif isinstance(record.get('checksum'), str) and HEX_RE.match(
            record['checksum']) and len(record['checksum']) == 32:
        algo, value = 'md5', record['checksum']
    else:
        unusable('Glance has no hash to verify it against (os_hash_algo '
                 '%r, checksum %r)' % (algo, record.get('checksum')))
    name = record.get('name') if isinstance(record.get('name'), str) else ''
    return ImageInfo(id=image, name=name, size=size, hash_algo=algo,
                     hash_value=value, properties=dict(record))


class GlanceClient:
    """Glance v2 over requests, with bounded retries and timeouts."""

    RETRY_STATUS = (500, 502, 503, 504)

    def __init__(self, endpoint, token=None, ca_file=None, insecure=False,
                 connect_timeout=10, read_timeout=60, retries=3,
                 retry_delay=1.0, session=None):
        if not endpoint or not re.match(r'^https?://', endpoint):
            raise exception.ConfigError(
                reason='the Glance endpoint must be an http(s) URL, got %r'
                       % (endpoint,))
        self.endpoint = endpoint.rstrip('/')
        if self.endpoint.endswith('/v2'):
            self.endpoint = self.endpoint[:-3]
        self.session = session or requests.Session()
        self.session.headers['User-Agent'] = 'nova-ipxe'
        if token:
            self.session.headers['X-Auth-Token'] = token
        self.verify = False if insecure else (ca_file or True)
        self.timeout = (connect_timeout, read_timeout)
        self.retries = retries
        self.retry_delay = retry_delay

    def _sleep(self, attempt):
        # Exponential backoff, capped: 1, 2, 4 ... 30 s by default.
        time.sleep(min(self.retry_delay * (2 ** attempt), 30))

    def _get(self, image, path, stream=False, headers=None):
        """GET with retries on connection errors, timeouts and 5xx."""
        url = '%s/v2/images/%s' % (self.endpoint, path)
        last = None
        for attempt in range(self.retries + 1):
            if attempt:
                LOG.warning('Retrying GET %s (%d/%d) after: %s', url,
                            attempt, self.retries, last)
                self._sleep(attempt - 1)
            try:
                resp = self.session.get(url, stream=stream, headers=headers,
                                        timeout=self.timeout,
                                        verify=self.verify)
            except requests.exceptions.SSLError as e:
                raise exception.GlanceError(image=image, reason='TLS: %s'
                                            % e)
            except requests.exceptions.RequestException as e:
                last = '%s: %s' % (type(e).__name__, e)
                continue
            if resp.status_code in self.RETRY_STATUS:
                last = 'HTTP %d' % resp.status_code
                resp.close()
                continue
            if resp.status_code == 404:
                resp.close()
                raise exception.ImageNotFound(image=image)
            if resp.status_code in (401, 403):
                resp.close()
                raise exception.ImageNotAuthorized(image=image,
                                                   status=resp.status_code)
            if resp.status_code not in (200, 206):
                resp.close()
                raise exception.GlanceError(
                    image=image, reason='unexpected HTTP %d from %s'
                                        % (resp.status_code, url))
            return resp
        raise exception.ImageDownloadFailed(
            image=image, reason='%d attempts failed, last: %s'
                                % (self.retries + 1, last))

    def get_image(self, image_id, max_size):
        """The validated record of an iPXE boot image."""
        image_id = check_image_id(image_id)
        resp = self._get(image_id, image_id)
        try:
            record = resp.json()
        except ValueError:
            raise exception.GlanceError(image=image_id,
                                        reason='the image record is not '
                                               'JSON')
        if not isinstance(record, dict) or record.get('id') != image_id:
            raise exception.GlanceError(image=image_id,
                                        reason='the record is for another '
                                               'image')
        return image_info(record, max_size)

    def download(self, info, fileobj, progress=None):
        """Stream the image data into ``fileobj``, verified.

        Stops as soon as the stream goes past the size Glance reported.
        After a broken connection it resumes with a Range request (or
        starts over when the server ignores the range), within the retry
        budget.  Raises :class:`ImageChecksumMismatch` or
        :class:`ImageDownloadFailed`; the caller discards ``fileobj``.
        """
        digest = hashlib.new(info.hash_algo)
        received = 0
        failures = 0
        start = fileobj.tell()
        while True:
            headers = {'Range': 'bytes=%d-' % received} if received else None
            resp = self._get(info.id, info.id + '/file', stream=True,
                             headers=headers)
            try:
                if received and not self._resumes(resp, received):
                    LOG.info('Glance ignored the range request for %s; '
                             'downloading it again', info.id)
                    fileobj.seek(start)
                    fileobj.truncate()
                    digest = hashlib.new(info.hash_algo)
                    received = 0
                for chunk in resp.iter_content(CHUNK):
                    received += len(chunk)
                    if received > info.size:
                        raise exception.ImageDownloadFailed(
                            image=info.id, reason='the stream is longer '
                            'than the %d bytes Glance reported; stopped '
                            'at %d' % (info.size, received))
                    digest.update(chunk)
                    fileobj.write(chunk)
                    if progress:
                        progress(received, info.size)
            except requests.exceptions.RequestException as e:
                failures += 1
                if failures > self.retries:
                    raise exception.ImageDownloadFailed(
                        image=info.id, reason='connection failed %d times, '
                        'last: %s' % (failures, e))
                LOG.warning('Download of %s broke after %d bytes (%s); '
                            'resuming', info.id, received, e)
                self._sleep(failures - 1)
                continue
            finally:
                resp.close()
            if received < info.size:
                # A clean close short of the size: resume like a reset.
                failures += 1
                if failures > self.retries:
                    raise exception.ImageDownloadFailed(
                        image=info.id, reason='the stream ended after %d of '
                        '%d bytes, %d times' % (received, info.size,
                                                failures))
                LOG.warning('Download of %s ended early (%d of %d bytes); '
                            'resuming', info.id, received, info.size)
                continue
            break
        actual = digest.hexdigest()
        if actual != info.hash_value:
            raise exception.ImageChecksumMismatch(
                image=info.id, algo=info.hash_algo,
                expected=info.hash_value[:16], actual=actual[:16])
        return received

    @staticmethod
    def _resumes(resp, offset):
        """True when a 206 continues exactly at ``offset``."""
        if resp.status_code != 206:
            return False
        match = RANGE_RE.match(resp.headers.get('Content-Range', ''))
        return bool(match) and int(match.group(1)) == offset


def client_from_conf(conf, token=None, endpoint=None):
    """A client from the ``[ipxe] glance_*`` options."""
    opts = conf.ipxe
    return GlanceClient(endpoint or opts.glance_url, token=token,
                        ca_file=opts.glance_ca_file,
                        insecure=opts.glance_insecure,
                        connect_timeout=opts.glance_connect_timeout,
                        read_timeout=opts.glance_read_timeout,
                        retries=opts.glance_retries,
                        retry_delay=opts.glance_retry_delay)
