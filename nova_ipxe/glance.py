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
``GET /v2/images/{id}/file``.  The record is read within a size and a
nesting bound and checked before a byte is downloaded (active,
``disk_format`` iso, flagged for iPXE boot, within ``max_iso_size``, with
a hash to verify against); the download streams to a file object while
hashing, stops at the cap, resumes with a Range request after a broken
connection, and is compared with ``os_hash_algo``/``os_hash_value``
(``checksum``, MD5, as a fallback).

One retry budget per request: ``retries + 1`` attempts in all, whether an
attempt failed on connecting, on a 5xx or in the middle of the body
(tenacity runs the attempts; only the resume with ``Range`` is ours).
urllib3's ``Retry`` would only see failures inside ``urlopen``; a body
that breaks after the headers surfaces later, so it would need a second
counter, which is how one download used to make ``(retries + 1) ** 2``
requests.  A download (and a record) also has an overall deadline, which
a server sending one byte at a time cannot stretch: reads return what
one ``recv`` brings and check it, and a watchdog shuts the attempt's
sockets down when it passes (even while headers trickle in).

The token travels as ``X-Auth-Token``, only to the endpoint's own origin
(scheme, host and port): redirects are followed here, not by requests,
and a redirect elsewhere goes without it.  It is never logged.
"""

import contextlib
import dataclasses
import hashlib
import http.client
import json
import re
import socket
import threading
import time
import typing
import urllib.parse
import uuid

from oslo_log import log as logging
import requests
from requests import adapters
import tenacity
import urllib3
from urllib3 import connectionpool

from nova_ipxe import exception
from nova_ipxe import image as ipxe_image

LOG = logging.getLogger(__name__)

# Reads return what one recv() brings (read1), so the deadline is checked
# at least once per read timeout however slowly the bytes come.
CHUNK = 256 * 1024
HASH_ALGOS = ('sha512', 'sha384', 'sha256')
HEX_RE = re.compile(r'^[0-9a-f]+$')
RANGE_RE = re.compile(r'^bytes (\d+)-(\d+)/(\d+|\*)$')
# A Glance record is a few KiB (Glance caps properties at 128 of 255
# characters by default); its deepest legitimate nesting is 4.
MAX_RECORD = 1024 * 1024
MAX_RECORD_DEPTH = 32
MAX_REDIRECTS = 3
RETRY_STATUS = (500, 502, 503, 504)
# What a broken connection looks like while reading a streamed body.
READ_ERRORS = (urllib3.exceptions.HTTPError, http.client.HTTPException,
               OSError)
_STRING_RE = re.compile(r'"(?:[^"\\]|\\.)*"', re.S)
_BRACKET_RE = re.compile(r'[\[\]{}]')


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
    def cache_key(self) -> str:
        return '%s-%s-%s' % (self.id, self.hash_algo, self.hash_value[:32])


def check_image_id(image_id: object) -> str:
    """Image IDs are UUIDs; anything else never reaches a URL or a path."""
    try:
        return str(uuid.UUID(str(image_id)))
    except ValueError:
        raise exception.ImageNotFound(image=image_id)


def image_info(record: typing.Mapping[str, typing.Any],
               max_size: int) -> ImageInfo:
    """Validate a ``GET /v2/images/{id}`` record for iPXE boot."""
    image: typing.Any = record.get('id')

    def unusable(reason: str) -> typing.NoReturn:
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
    algo: typing.Any = record.get('os_hash_algo')
    value: typing.Any = record.get('os_hash_value')
    if algo in HASH_ALGOS and isinstance(value, str) and HEX_RE.match(
            value) and len(value) == hashlib.new(algo).digest_size * 2:
        pass
    elif isinstance(record.get('checksum'), str) and HEX_RE.match(
            record['checksum']) and len(record['checksum']) == 32:
        algo, value = 'md5', record['checksum']
    else:
        unusable('Glance has no hash to verify it against (os_hash_algo '
                 '%r, checksum %r)' % (algo, record.get('checksum')))
    name = record.get('name')
    if not isinstance(name, str):
        name = ''
    return ImageInfo(id=image, name=name, size=size, hash_algo=algo,
                     hash_value=value, properties=dict(record))


def json_depth(text: str) -> int:
    """The deepest nesting of arrays and objects in JSON ``text``.

    Counted without parsing (strings removed first), so a hostile document
    costs linear time and no recursion.
    """
    depth = deepest = 0
    for match in _BRACKET_RE.finditer(_STRING_RE.sub('""', text)):
        if match.group() in '[{':
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def parse_record(image: str, body: bytes) -> typing.Dict[str, typing.Any]:
    """The record as a dict, or :class:`InvalidImageRecord`."""
    def invalid(reason):
        raise exception.InvalidImageRecord(image=image, reason=reason)
    try:
        text = body.decode('utf-8')
    except UnicodeDecodeError:
        invalid('it is not UTF-8')
    if json_depth(text) > MAX_RECORD_DEPTH:
        invalid('it nests deeper than %d levels' % MAX_RECORD_DEPTH)
    try:
        record = json.loads(text)
    except ValueError:
        invalid('it is not JSON')
    if not isinstance(record, dict) or record.get('id') != image:
        invalid('it is the record of another image')
    return record


def origin(url: str) -> typing.Tuple[str, str, typing.Optional[int]]:
    """(scheme, host, port) of ``url``, the port made explicit."""
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:
        port = -1
    return (scheme, (parts.hostname or '').lower(),
            port or {'http': 80, 'https': 443}.get(scheme))


# The watchdog of the attempt running in this thread, if any.
_ATTEMPT = threading.local()


class _Watchdog:
    """At the deadline, shut down the sockets an attempt used.

    Per-read timeouts and the checks between reads cannot stop a server
    that trickles its status line and headers; a shut-down socket ends
    any read at once.
    """

    def __init__(self, deadline):
        self.conns = []
        self.fired = False
        self.timer = threading.Timer(max(deadline - time.monotonic(), 0),
                                     self._fire)
        self.timer.daemon = True

    def _fire(self):
        self.fired = True
        for conn in list(self.conns):
            sock = getattr(conn, 'sock', None)
            if sock is not None:
                try:
                    # The plain socket's shutdown, under TLS too.
                    socket.socket.shutdown(sock, socket.SHUT_RDWR)
                except OSError:
                    pass

    @classmethod
    @contextlib.contextmanager
    def running(cls, deadline):
        watchdog = cls(deadline)
        _ATTEMPT.watchdog = watchdog
        watchdog.timer.start()
        try:
            yield watchdog
        finally:
            watchdog.timer.cancel()
            _ATTEMPT.watchdog = None


class _WatchedPool(connectionpool.HTTPConnectionPool):
    def _get_conn(self, timeout=None):
        conn = super()._get_conn(timeout)
        watchdog = getattr(_ATTEMPT, 'watchdog', None)
        if watchdog is not None:
            watchdog.conns.append(conn)
        return conn


class _WatchedHTTPSPool(_WatchedPool, connectionpool.HTTPSConnectionPool):
    pass


class _WatchedAdapter(adapters.HTTPAdapter):
    """requests' adapter, with connections the watchdog can reach."""

    def init_poolmanager(self, *args, **kwargs):
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {
            'http': _WatchedPool, 'https': _WatchedHTTPSPool}


class _Retry(Exception):
    """An attempt failed in a way another attempt may not."""


@dataclasses.dataclass
class _Download:
    """What the attempts of one download have received so far."""

    digest: typing.Any      # a hashlib object
    start: int
    received: int = 0


class GlanceClient:
    """Glance v2 over requests, with one retry budget and deadlines."""

    RETRY_STATUS = RETRY_STATUS

    def __init__(self, endpoint: str, token: typing.Optional[str] = None,
                 ca_file: typing.Optional[str] = None,
                 insecure: bool = False, connect_timeout: float = 10,
                 read_timeout: float = 60, retries: int = 3,
                 retry_delay: float = 1.0, download_timeout: float = 300,
                 session: typing.Optional[requests.Session] = None) -> None:
        if not endpoint or not re.match(r'^https?://', endpoint):
            raise exception.ConfigError(
                reason='the Glance endpoint must be an http(s) URL, got %r'
                       % (endpoint,))
        self.endpoint = endpoint.rstrip('/')
        if self.endpoint.endswith('/v2'):
            self.endpoint = self.endpoint[:-3]
        self.origin = origin(self.endpoint)
        if session is None:
            session = requests.Session()
            for scheme in ('http://', 'https://'):
                session.mount(scheme, _WatchedAdapter())
        self.session = session
        self.session.headers['User-Agent'] = 'nova-ipxe'
        # Per request, never on the session: it must not follow a
        # redirect off the endpoint's origin.
        self.token = token
        self.verify = False if insecure else (ca_file or True)
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.retries = retries
        self.retry_delay = retry_delay
        self.download_timeout = download_timeout

    # -- one attempt ---------------------------------------------------

    def _send(self, image, path, deadline, headers=None):
        """One attempt: a streamed GET, following redirects ourselves."""
        url = '%s/v2/images/%s' % (self.endpoint, path)
        for _ in range(MAX_REDIRECTS + 1):
            sent = dict(headers or {})
            # Compressed bodies are refused: their size is not what we
            # count, and a small one can inflate without bound.
            sent['Accept-Encoding'] = 'identity'
            if self.token and origin(url) == self.origin:
                sent['X-Auth-Token'] = self.token
            read = max(min(self.read_timeout, deadline - time.monotonic()),
                       0.001)
            try:
                resp = self.session.get(
                    url, headers=sent, stream=True, allow_redirects=False,
                    timeout=(self.connect_timeout, read),
                    verify=self.verify)
            except requests.exceptions.SSLError as e:
                raise exception.GlanceError(image=image, reason='TLS: %s'
                                            % e)
            except requests.exceptions.RequestException as e:
                if time.monotonic() >= deadline:
                    raise exception.ImageDownloadTimeout(
                        image=image, reason='no answer by then (%s)'
                                            % type(e).__name__)
                raise _Retry('%s: %s' % (type(e).__name__, e))
            if not resp.is_redirect:
                return self._checked(image, url, resp)
            location = resp.headers['Location']
            resp.close()
            url = urllib.parse.urljoin(url, location)
            if origin(url)[0] not in ('http', 'https'):
                raise exception.GlanceError(
                    image=image, reason='redirected to a URL that is not '
                                        'http(s)')
            LOG.debug('Glance redirected image %s to %s://%s:%s%s', image,
                      origin(url)[0], origin(url)[1], origin(url)[2],
                      '' if origin(url) == self.origin
                      else ' (another origin: without the token)')
        raise exception.GlanceError(image=image, reason='more than %d '
                                    'redirects' % MAX_REDIRECTS)

    @staticmethod
    def _checked(image, url, resp):
        status = resp.status_code
        if status in RETRY_STATUS:
            resp.close()
            raise _Retry('HTTP %d' % status)
        if status == 404:
            resp.close()
            raise exception.ImageNotFound(image=image)
        if status in (401, 403):
            resp.close()
            raise exception.ImageNotAuthorized(image=image, status=status)
        if status not in (200, 206):
            resp.close()
            raise exception.GlanceError(
                image=image, reason='unexpected HTTP %d from %s'
                                    % (status, url.split('?')[0]))
        encoding = resp.headers.get('Content-Encoding', 'identity')
        if encoding.strip().lower() not in ('', 'identity'):
            resp.close()
            raise exception.GlanceError(
                image=image, reason='the answer is compressed (%s), which '
                                    'was not asked for' % encoding[:40])
        return resp

    @staticmethod
    def _read(image, resp, deadline, what):
        """The next bytes of the body (b'' at its end), by the deadline."""
        if time.monotonic() > deadline:
            raise exception.ImageDownloadTimeout(image=image, reason=what)
        try:
            return resp.raw.read1(CHUNK, decode_content=False)
        except READ_ERRORS as e:
            if time.monotonic() >= deadline:
                raise exception.ImageDownloadTimeout(image=image,
                                                     reason=what)
            # urllib3 wraps the socket's error: name that one.
            cause = e.args[-1] if isinstance(
                e, urllib3.exceptions.ProtocolError) and e.args and \
                isinstance(e.args[-1], Exception) else e
            raise _Retry('%s: %s' % (type(cause).__name__, cause))

    # -- the budget ----------------------------------------------------

    def _attempts(self, image, attempt, deadline):
        """Run ``attempt`` until it succeeds, within the one budget."""
        def log(state):
            LOG.warning('Retrying Glance for image %s (%d/%d) after: %s',
                        image, state.attempt_number, self.retries,
                        state.outcome.exception())
        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(_Retry),
            stop=(tenacity.stop_after_attempt(self.retries + 1) |
                  tenacity.stop_before_delay(max(
                      deadline - time.monotonic(), 0))),
            wait=tenacity.wait_exponential(multiplier=self.retry_delay,
                                           max=30),
            before_sleep=log, reraise=True)
        try:
            return retrying(attempt)
        except _Retry as e:
            attempts = retrying.statistics.get('attempt_number', 1)
            if attempts <= self.retries:
                raise exception.ImageDownloadTimeout(
                    image=image, reason='the deadline came after %d '
                    'attempts, last: %s' % (attempts, e))
            raise exception.ImageDownloadFailed(
                image=image, reason='%d attempts failed, last: %s'
                                    % (attempts, e))

    def _deadline(self):
        return time.monotonic() + self.download_timeout

    # -- the API -------------------------------------------------------

    def get_image(self, image_id: str, max_size: int) -> ImageInfo:
        """The validated record of an iPXE boot image."""
        image_id = check_image_id(image_id)
        deadline = self._deadline()

        def attempt():
            with _Watchdog.running(deadline):
                return self._record(image_id, deadline)
        record = self._attempts(image_id, attempt, deadline)
        return image_info(record, max_size)

    def _record(self, image, deadline):
        resp = self._send(image, image, deadline)
        with contextlib.closing(resp):
            length = resp.headers.get('Content-Length', '')
            if length.isdigit() and int(length) > MAX_RECORD:
                raise exception.InvalidImageRecord(
                    image=image, reason='it is %s bytes, more than %d'
                                        % (length, MAX_RECORD))
            body = bytearray()
            while True:
                chunk = self._read(image, resp, deadline,
                                   'reading the image record')
                if not chunk:
                    break
                body += chunk
                if len(body) > MAX_RECORD:
                    raise exception.InvalidImageRecord(
                        image=image, reason='it is longer than %d bytes'
                                            % MAX_RECORD)
        return parse_record(image, bytes(body))

    def download(self, info: ImageInfo, fileobj: typing.BinaryIO,
                 progress: typing.Optional[
                     typing.Callable[[int, int], None]] = None) -> int:
        """Stream the image data into ``fileobj``, verified.

        Stops as soon as the stream goes past the size Glance reported.
        After a broken connection it resumes with a Range request (or
        starts over when the server ignores the range), within the retry
        budget and the deadline.  Raises :class:`ImageChecksumMismatch`,
        :class:`ImageDownloadTimeout` or :class:`ImageDownloadFailed`;
        the caller discards ``fileobj``.
        """
        state = _Download(digest=hashlib.new(info.hash_algo),
                          start=fileobj.tell())
        deadline = self._deadline()

        def attempt():
            with _Watchdog.running(deadline):
                self._download(info, fileobj, state, deadline, progress)
        self._attempts(info.id, attempt, deadline)
        actual = state.digest.hexdigest()
        if actual != info.hash_value:
            raise exception.ImageChecksumMismatch(
                image=info.id, algo=info.hash_algo,
                expected=info.hash_value[:16], actual=actual[:16])
        return state.received

    def _download(self, info, fileobj, state, deadline, progress):
        """One attempt, from where the previous ones stopped."""
        resuming = state.received
        headers = {'Range': 'bytes=%d-' % resuming} if resuming else None
        resp = self._send(info.id, info.id + '/file', deadline, headers)
        with contextlib.closing(resp):
            if resuming:
                if self._resumes(resp, resuming):
                    LOG.warning('Resuming the download of %s at byte %d',
                                info.id, resuming)
                else:
                    LOG.info('Glance ignored the range request for %s; '
                             'downloading it again', info.id)
                    fileobj.seek(state.start)
                    fileobj.truncate()
                    state.digest = hashlib.new(info.hash_algo)
                    state.received = 0
            while True:
                chunk = self._read(info.id, resp, deadline,
                                   'received %d of %d bytes in %d s' % (
                                       state.received, info.size,
                                       self.download_timeout))
                if not chunk:
                    break
                state.received += len(chunk)
                if state.received > info.size:
                    raise exception.ImageDownloadFailed(
                        image=info.id, reason='the stream is longer '
                        'than the %d bytes Glance reported; stopped '
                        'at %d' % (info.size, state.received))
                state.digest.update(chunk)
                fileobj.write(chunk)
                if progress:
                    progress(state.received, info.size)
        if state.received < info.size:
            # A clean close short of the size: resume like a reset.
            raise _Retry('the stream ended after %d of %d bytes' % (
                state.received, info.size))

    @staticmethod
    def _resumes(resp, offset):
        """True when a 206 continues exactly at ``offset``."""
        if resp.status_code != 206:
            return False
        match = RANGE_RE.match(resp.headers.get('Content-Range', ''))
        return match is not None and int(match.group(1)) == offset


def client_from_conf(conf: typing.Any, token: typing.Optional[str] = None,
                     endpoint: typing.Optional[str] = None) -> GlanceClient:
    """A client from the ``[ipxe_glance]`` options (the CLI's)."""
    opts = conf.ipxe_glance
    return GlanceClient(endpoint or opts.url, token=token,
                        ca_file=opts.ca_file, insecure=opts.insecure,
                        connect_timeout=opts.connect_timeout,
                        read_timeout=opts.read_timeout,
                        retries=opts.retries, retry_delay=opts.retry_delay,
                        download_timeout=opts.download_timeout)
