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

"""FaultProxy: an HTTP reverse proxy on 127.0.0.1 that misbehaves on cue.

It forwards every request (method, target, headers, body) to one upstream
(the lab Glance) and streams the answer back, unless a programmed fault
matches the request::

    with FaultProxy(glance.url) as proxy:
        proxy.add_fault(r'/file$', 'status', times=2, status=503)
        proxy.add_fault(r'/file$', 'reset_mid_body', after_bytes=4096)
        ...  # the client under test talks to proxy.url
        proxy.count('GET', r'/file$')           # requests that came in
        proxy.upstream_count('GET', r'/file$')  # ... and were forwarded

A fault matches on ``re.search(path_regex, target)`` (the target includes
any query string) and, if given, the method.  Matching faults are used in
the order they were added; each serves ``times`` requests (``None``: all)
and then the proxy passes through again.

Kinds and their parameters (defaults in brackets):

``status``          reply ``status`` [503] with ``body`` [b''; bytes, str or
                    JSON-able], ``headers`` [{}]; nothing goes upstream.
``reset_mid_body``  headers, then ``after_bytes`` [half the body] bytes, then
                    (once the client has acknowledged them, at most
                    ``timeout`` s) an abortive close (SO_LINGER 0): the
                    client reads those bytes, then gets ECONNRESET.
``truncate``        headers with the full Content-Length, ``after_bytes``
                    [half the body] bytes, then a clean close (FIN).
                    (For both: a shorter body is sent whole, then cut.)
``corrupt``         the whole body, same length, with ``length`` [1] bytes
                    from ``offset`` [the middle] inverted.  Headers such as
                    Content-MD5 are left as upstream sent them.
``slow``            wait ``delay`` [5] seconds ``before`` ['headers'] or the
                    first body byte ('body'), then answer normally.
``drip``            the headers, then the body ``size`` [1] bytes at a time,
                    waiting ``interval`` [1.0] seconds before each piece: a
                    server that never stalls long enough for a read timeout.
                    With ``before`` 'headers' (default 'body') it drips a
                    status line and a header that never ends instead, and
                    nothing goes upstream.
``grow``            the body plus ``extra_bytes`` [1 MiB] bytes of ``fill``
                    [b'\\0'], framed by ``mode``: 'chunked' (default, no
                    Content-Length), 'eof' (no length, close when done),
                    'length' (a Content-Length that counts the extra bytes)
                    or 'overrun' (upstream's Content-Length, more bytes sent
                    anyway, then close).
``rewrite_json``    the JSON body changed by ``patch`` (a dict merged into
                    the top level; a value of ``DELETE`` removes the key)
                    and/or ``func`` (called with the document; its return
                    value, if not None, replaces it); Content-Length is
                    fixed up.

What requests (2.x, urllib3 2.x) makes of them: reset_mid_body and
truncate raise ``ChunkedEncodingError`` (not a ``ConnectionError``: the
headers had arrived) from ``.content``/``iter_content``; slow before the
headers raises ``ReadTimeout``, slow before the body a ``ConnectionError``
wrapping urllib3's ReadTimeoutError; grow 'overrun' goes unnoticed (the
client stops at Content-Length).

Every socket has a timeout, the server threads are daemons, and ``stop()``
closes open client connections and wakes ``slow`` faults, so a test never
hangs on the proxy.
"""

import collections
import fcntl
import http.client
import http.server
import json
import re
import socket
import struct
import termios
import threading
import time
import urllib.parse

KINDS = ('status', 'reset_mid_body', 'truncate', 'corrupt', 'slow', 'drip',
         'grow', 'rewrite_json')
DELETE = object()  # rewrite_json: patch value that removes the key
CHUNK = 64 * 1024
# Hop-by-hop headers (RFC 9110 7.6.1) are the proxy's own business; Expect
# is answered by the proxy's server before the body is read.
HOP_BY_HOP = frozenset([
    'connection', 'keep-alive', 'proxy-authenticate', 'proxy-authorization',
    'proxy-connection', 'te', 'trailer', 'transfer-encoding', 'upgrade',
    'expect'])

_PARAMS = {
    'status': {'status', 'body', 'headers'},
    'reset_mid_body': {'after_bytes'},
    'truncate': {'after_bytes'},
    'corrupt': {'offset', 'length'},
    'slow': {'delay', 'before'},
    'drip': {'size', 'interval', 'before'},
    'grow': {'extra_bytes', 'fill', 'mode'},
    'rewrite_json': {'patch', 'func'},
}
_GROW_MODES = ('chunked', 'eof', 'length', 'overrun')


class Fault:
    """One programmed fault; ``used`` counts the requests it served."""

    def __init__(self, path_regex, kind, times, method, params):
        if kind not in KINDS:
            raise ValueError('unknown fault kind %r (one of %s)' % (
                kind, ', '.join(KINDS)))
        unknown = set(params) - _PARAMS[kind]
        if unknown:
            raise ValueError('fault %s takes %s, not %s' % (
                kind, ', '.join(sorted(_PARAMS[kind])),
                ', '.join(sorted(unknown))))
        if times is not None and times < 1:
            raise ValueError('times must be >= 1 or None, not %r' % times)
        if kind == 'grow' and params.get('mode', 'chunked') not in \
                _GROW_MODES:
            raise ValueError('grow mode must be one of %s' % (
                ', '.join(_GROW_MODES)))
        if kind in ('slow', 'drip') and params.get(
                'before', 'headers') not in ('headers', 'body'):
            raise ValueError("%s before must be 'headers' or 'body'" % kind)
        if kind == 'rewrite_json' and not (
                'patch' in params or 'func' in params):
            raise ValueError('rewrite_json needs patch= or func=')
        self.pattern = re.compile(path_regex)
        self.kind = kind
        self.times = times
        self.method = method.upper() if method else None
        self.params = params
        self.used = 0

    @property
    def exhausted(self):
        return self.times is not None and self.used >= self.times

    def matches(self, method, target):
        return ((self.method is None or self.method == method) and
                self.pattern.search(target) is not None)

    def __repr__(self):
        return '<Fault %s %s %s used %d/%s>' % (
            self.kind, self.method or '*', self.pattern.pattern, self.used,
            self.times)


class Record:
    """One request: method, target, headers, fault kind, upstream."""

    __slots__ = ('method', 'target', 'fault', 'upstream', 'headers')

    def __init__(self, method, target, fault, headers=None):
        self.method = method
        self.target = target
        self.fault = fault
        self.headers = dict(headers or {})
        self.upstream = False  # set once the request went upstream

    def __repr__(self):
        return '<Record %s %s fault=%s upstream=%s>' % (
            self.method, self.target, self.fault, self.upstream)


class _Abort(Exception):
    """End the connection now (the response is deliberately broken)."""


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # stop() must not wait for keep-alive clients

    def handle_error(self, request, client_address):
        # Clients that hang up mid-response are part of the game here.
        self.proxy._note_error()


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'  # keep-alive, like a real Glance
    server_version = 'FaultProxy'

    @property
    def proxy(self):
        return self.server.proxy

    def setup(self):
        self.timeout = self.server.proxy.timeout  # applied by setup()
        super().setup()
        self.proxy._track(self.connection, True)

    def finish(self):
        try:
            super().finish()
        finally:
            self.proxy._track(self.connection, False)

    def log_message(self, format, *args):
        pass  # the counters are the record; keep test output clean

    def do_any(self):
        try:
            self.proxy._serve(self)
        except _Abort:
            self.close_connection = True

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_any
    do_OPTIONS = do_any


class FaultProxy:
    """A fault-injecting reverse proxy for ``upstream``; a context manager.

    ``url`` is ``http://127.0.0.1:PORT`` once started.  ``timeout`` bounds
    every socket operation, towards the client and towards upstream.
    """

    def __init__(self, upstream, port=0, timeout=30.0, ssl_context=None):
        self.ssl_context = ssl_context  # serve clients over TLS
        parsed = urllib.parse.urlsplit(upstream)
        if parsed.scheme != 'http' or not parsed.hostname:
            raise ValueError('upstream must be an http:// URL, not %r' %
                             upstream)
        self.upstream = upstream
        self._up_host = parsed.hostname
        self._up_port = parsed.port or 80
        self._up_prefix = parsed.path.rstrip('/')
        self.port = port
        self.timeout = timeout
        self.url = None
        self.errors = 0  # connections that ended in an exception
        self._lock = threading.Lock()
        self._faults = []
        self._log = []
        self._conns = set()
        self._stopping = threading.Event()
        self._server = None
        self._thread = None

    # -- life cycle ---------------------------------------------------------

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def start(self):
        self._server = _Server(('127.0.0.1', self.port), _Handler)
        self._server.proxy = self
        self.port = self._server.server_address[1]
        self.url = 'http://127.0.0.1:%d' % self.port
        if self.ssl_context is not None:
            # TLS towards the client; upstream stays plain HTTP.
            self._server.socket = self.ssl_context.wrap_socket(
                self._server.socket, server_side=True)
            self.url = 'https://127.0.0.1:%d' % self.port
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={'poll_interval': 0.1},
            name='faultproxy-%d' % self.port, daemon=True)
        self._thread.start()
        return self

    def stop(self):
        """Stop accepting, wake slow faults, close client connections."""
        if self._server is None:
            return
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._thread.join(5)
        self._server = None

    # -- programming and counting -------------------------------------------

    def add_fault(self, path_regex, kind, times=1, method=None, **params):
        """Queue a fault; returns it (see the module doc for kinds)."""
        fault = Fault(path_regex, kind, times, method, params)
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear_faults(self):
        with self._lock:
            self._faults = []

    @property
    def faults(self):
        """The faults not used up yet, in the order they will be used."""
        with self._lock:
            return [f for f in self._faults if not f.exhausted]

    @property
    def records(self):
        """A Record (method, target, fault, upstream) per request seen."""
        with self._lock:
            return list(self._log)

    def _matching(self, method, path_regex, upstream_only):
        pattern = re.compile(path_regex) if path_regex else None
        method = method.upper() if method else None
        return sum(1 for r in self.records
                   if (method is None or r.method == method) and
                   (pattern is None or pattern.search(r.target)) and
                   (r.upstream or not upstream_only))

    def count(self, method=None, path_regex=None):
        """Requests that reached the proxy (optionally filtered)."""
        return self._matching(method, path_regex, False)

    def upstream_count(self, method=None, path_regex=None):
        """Requests the proxy forwarded upstream (optionally filtered)."""
        return self._matching(method, path_regex, True)

    def counts(self):
        """A Counter of (method, target) over every request seen."""
        return collections.Counter((r.method, r.target)
                                   for r in self.records)

    # -- the proxy ------------------------------------------------------------

    def _track(self, conn, add):
        with self._lock:
            if add:
                self._conns.add(conn)
            else:
                self._conns.discard(conn)

    def _note_error(self):
        with self._lock:
            self.errors += 1

    def _take_fault(self, method, target):
        with self._lock:
            for fault in self._faults:
                if not fault.exhausted and fault.matches(method, target):
                    fault.used += 1
                    return fault
        return None

    def _record(self, method, target, fault, headers=None):
        record = Record(method, target, fault.kind if fault else None,
                        headers)
        with self._lock:
            self._log.append(record)
        return record

    def _serve(self, h):
        method, target = h.command, h.path
        body = self._read_request_body(h)
        fault = self._take_fault(method, target)
        kind = fault.kind if fault else None
        p = fault.params if fault else {}
        record = self._record(method, target, fault, h.headers.items())
        if kind == 'status':
            self._reply_status(h, p)
            return
        if kind == 'drip' and p.get('before') == 'headers':
            h.wfile.write(b'HTTP/1.1 200 OK\r\nX-Drip: ')
            while True:
                self._sleep(p.get('interval', 1.0))
                h.wfile.write(b'a' * p.get('size', 1))
        if kind == 'slow' and p.get('before', 'headers') == 'headers':
            self._sleep(p.get('delay', 5.0))
        try:
            resp, conn = self._forward(h, method, target, body, record)
        except (OSError, http.client.HTTPException) as e:
            self._reply_status(h, {'status': 502, 'body': (
                'FaultProxy: upstream %s failed: %r\n' % (
                    self.upstream, e)).encode()})
            return
        try:
            self._respond(h, method, resp, kind, p)
        finally:
            conn.close()

    def _read_request_body(self, h):
        # Buffered: the lab's uploads are a few MiB, and a whole body makes
        # the upstream request simple to replay with a Content-Length.
        if 'chunked' in h.headers.get('Transfer-Encoding', '').lower():
            parts = []
            while True:
                size = int(h.rfile.readline(1024).split(b';')[0], 16)
                if size == 0:
                    while h.rfile.readline(1024) not in (b'\r\n', b'\n', b''):
                        pass  # trailers
                    return b''.join(parts)
                parts.append(h.rfile.read(size))
                h.rfile.readline(1024)
        length = h.headers.get('Content-Length')
        return h.rfile.read(int(length)) if length else None

    def _forward(self, h, method, target, body, record):
        headers = [(k, v) for k, v in h.headers.items()
                   if k.lower() not in HOP_BY_HOP and
                   k.lower() != 'content-length']
        if body is not None:
            headers.append(('Content-Length', str(len(body))))
        conn = http.client.HTTPConnection(self._up_host, self._up_port,
                                          timeout=self.timeout)
        try:
            # Host is passed on as the client sent it (the links Glance
            # makes then point at the proxy, as behind a real one).
            conn.putrequest(method, self._up_prefix + target,
                            skip_host=True, skip_accept_encoding=True)
            for k, v in headers:
                conn.putheader(k, v)
            conn.endheaders(body)
            with self._lock:
                record.upstream = True
            return conn.getresponse(), conn
        except BaseException:
            conn.close()
            raise

    def _sleep(self, seconds):
        # Event.wait, not time.sleep: stop() cuts the delay short.
        if self._stopping.wait(seconds):
            raise _Abort()

    def _reply_status(self, h, p):
        body = p.get('body', b'')
        if isinstance(body, str):
            body = body.encode()
        elif not isinstance(body, bytes):
            body = json.dumps(body).encode()
        h.send_response(p.get('status', 503))
        for k, v in (p.get('headers') or {}).items():
            h.send_header(k, v)
        h.send_header('Content-Length', str(len(body)))
        h.end_headers()
        if h.command != 'HEAD':
            h.wfile.write(body)

    def _respond(self, h, method, resp, kind, p):
        headers = [(k, v) for k, v in resp.getheaders()
                   if k.lower() not in HOP_BY_HOP]
        length = resp.getheader('Content-Length')
        length = int(length) if length is not None else None
        bodyless = (method == 'HEAD' or resp.status in (204, 304) or
                    100 <= resp.status < 200)
        if kind == 'rewrite_json' and not bodyless:
            self._respond_json(h, resp, headers, p)
            return
        if bodyless:
            # HEAD keeps upstream's Content-Length: it describes the GET.
            h.send_response_only(resp.status, resp.reason)
            for k, v in headers:
                h.send_header(k, v)
            h.end_headers()
            return
        framing = 'length' if length is not None else 'chunked'
        if kind == 'grow':
            framing = p.get('mode', 'chunked')
            if framing == 'length' and length is None:
                framing = 'chunked'  # no honest length to add to
            elif framing == 'length':
                length += p.get('extra_bytes', 1 << 20)
            elif framing == 'overrun' and length is None:
                framing = 'eof'  # no length to overrun
        h.send_response_only(resp.status, resp.reason)
        for k, v in headers:
            if k.lower() != 'content-length':
                h.send_header(k, v)
        if framing in ('length', 'overrun'):
            h.send_header('Content-Length', str(length))
        elif framing == 'chunked':
            h.send_header('Transfer-Encoding', 'chunked')
        if framing in ('eof', 'overrun'):
            h.close_connection = True
            h.send_header('Connection', 'close')
        h.end_headers()
        if kind == 'slow' and p.get('before') == 'body':
            self._sleep(p.get('delay', 5.0))
        self._relay_body(h, resp, kind, p, framing)

    def _relay_body(self, h, resp, kind, p, framing):
        known = int(resp.getheader('Content-Length') or 0) or None
        cut = None
        if kind in ('reset_mid_body', 'truncate'):
            cut = p.get('after_bytes', (known or 2 * CHUNK) // 2)
        flip_at = flip_end = None
        if kind == 'corrupt':
            flip_at = p.get('offset', (known or 0) // 2)
            flip_end = flip_at + p.get('length', 1)
        sent = 0

        def write(data):
            if framing == 'chunked':
                h.wfile.write(b'%x\r\n%s\r\n' % (len(data), data))
            else:
                h.wfile.write(data)

        while True:
            if kind == 'drip':
                self._sleep(p.get('interval', 1.0))
                data = resp.read(p.get('size', 1))
            else:
                data = resp.read(CHUNK)
            if not data:
                break
            if flip_at is not None and flip_at < sent + len(data) and \
                    flip_end > sent:
                buf = bytearray(data)
                for i in range(max(flip_at - sent, 0),
                               min(flip_end - sent, len(buf))):
                    buf[i] ^= 0xff
                data = bytes(buf)
            if cut is not None and sent + len(data) >= cut:
                if cut > sent:  # an empty chunk would end a chunked body
                    write(data[:cut - sent])
                self._break(h, kind)
            write(data)
            sent += len(data)
        if cut is not None:  # the body was shorter than after_bytes
            self._break(h, kind)
        if kind == 'grow':
            extra = p.get('extra_bytes', 1 << 20)
            fill = p.get('fill', b'\0') or b'\0'
            while extra > 0:
                n = min(extra, CHUNK)
                write((fill * (n // len(fill) + 1))[:n])
                extra -= n
        if framing == 'chunked':
            h.wfile.write(b'0\r\n\r\n')

    def _break(self, h, kind):
        sock = h.connection
        if kind == 'reset_mid_body':
            # An RST discards what is still in our send queue, so first let
            # the client acknowledge the bytes it was meant to get.
            self._drain(sock)
            # SO_LINGER with a zero timeout: close() sends RST, not FIN.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                            struct.pack('ii', 1, 0))
            # detach + close of the fd: the handler's file objects still
            # hold the socket, and the server would shut it down (FIN)
            # before closing it.
            fd = sock.detach()
            socket.socket(fileno=fd).close()
        raise _Abort()

    def _drain(self, sock):
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            try:
                # Linux SIOCOUTQ (= TIOCOUTQ): bytes not yet acknowledged.
                pending = struct.unpack('i', fcntl.ioctl(
                    sock.fileno(), termios.TIOCOUTQ, b'\0' * 4))[0]
            except OSError:
                return
            if pending == 0 or self._stopping.wait(0.01):
                return

    def _respond_json(self, h, resp, headers, p):
        raw = resp.read()
        doc = json.loads(raw)
        patch = p.get('patch') or {}
        for key, value in patch.items():
            if value is DELETE:
                doc.pop(key, None)
            else:
                doc[key] = value
        if p.get('func') is not None:
            new = p['func'](doc)
            doc = doc if new is None else new
        body = json.dumps(doc).encode()
        h.send_response_only(resp.status, resp.reason)
        for k, v in headers:
            if k.lower() not in ('content-length', 'content-md5'):
                h.send_header(k, v)
        h.send_header('Content-Length', str(len(body)))
        h.end_headers()
        h.wfile.write(body)
