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

"""Boot-lab helper processes: an iPXE menu server and a DHCP sentinel.

Standard library only.  ``tools/bootlab/helper.py`` runs this file inside a
network namespace (``ip netns exec NS python menu_server.py ...``); it can
also be run by hand::

    python menu_server.py http --bind 192.0.2.1 --port 8080 \\
        --routes routes.json --log requests.jsonl
    python menu_server.py dhcp --iface br0 --log dhcp.jsonl
    python menu_server.py ra --iface br0 --managed --log ra.jsonl

Both modes print one line ``READY ...`` on stdout once their sockets are
bound, append one JSON object per line to ``--log`` for every request or
packet seen, and exit cleanly on SIGTERM or SIGINT.

http mode
    Serves the bodies of a routes file (JSON object: path -> text).  The file
    is read again whenever it changes, so a caller can swap the menu while
    the server runs.  Any other path gets 404.  The log line holds ``time``
    (``time.time()``), ``client``, ``client_port``, ``method``, ``path``
    (without query), ``raw_path``, ``query`` (name -> last value),
    ``query_all`` (name -> list), ``headers`` (a subset) and ``status``.
    With ``--signing-keys FILE`` (or $NIPXE_MENU_SIGNING_KEYS; a JSON
    object key id -> key) every request that carries ``sig`` is checked
    with ``nova_ipxe.signature.verify`` (what a real menu server would
    do) and logged as ``signature``: ``status`` ok or invalid, the
    ``reason``, the signed ``fields`` and ``kid``, and ``source_matches``
    (the signed ip is the request's source address).

dhcp mode
    Counts DHCP traffic without ever answering: UDP 0.0.0.0:67 with
    SO_BROADCAST (DHCPDISCOVER goes to 255.255.255.255:67) and UDP [::]:547
    joined to ff02::1:2 on each ``--iface``.  The log line holds ``time``,
    ``family`` (4 or 6), ``src``, ``length`` and what could be decoded:
    ``msg_type`` (DHCPv4 option 53 / DHCPv6 msg-type, as a name), ``chaddr``
    and ``xid``.

ra mode
    Sends an ICMPv6 router advertisement to ff02::1 on each ``--iface``
    every ``--interval`` seconds (router lifetime 0 by default: no default
    route), with the M (``--managed``) and O (``--other``) flags and
    optional on-link ``--prefix`` options (A flag with ``--slaac``).  A guest
    that honours M starts DHCPv6 (SOLICIT to ff02::1:2), which the dhcp mode
    sees.  Every advertisement sent is logged.
"""

import argparse
import http.server
import json
import os
import selectors
import signal
import socket
import struct
import sys
import threading
import time
import urllib.parse

# The verifier is standard library only; the repository root holds it
# (this file runs as a script, tools/bootlab/menu_server.py).
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))
from nova_ipxe import signature  # noqa: E402

LOGGED_HEADERS = ('Host', 'User-Agent', 'Accept', 'Connection', 'Range',
                  'Content-Length')

DHCP4_TYPES = {1: 'DHCPDISCOVER', 2: 'DHCPOFFER', 3: 'DHCPREQUEST',
               4: 'DHCPDECLINE', 5: 'DHCPACK', 6: 'DHCPNAK',
               7: 'DHCPRELEASE', 8: 'DHCPINFORM'}
DHCP6_TYPES = {1: 'SOLICIT', 2: 'ADVERTISE', 3: 'REQUEST', 4: 'CONFIRM',
               5: 'RENEW', 6: 'REBIND', 7: 'REPLY', 8: 'RELEASE',
               9: 'DECLINE', 10: 'RECONFIGURE', 11: 'INFORMATION-REQUEST',
               12: 'RELAY-FORW', 13: 'RELAY-REPL'}
DHCP4_MAGIC = b'\x63\x82\x53\x63'
ALL_DHCP6 = 'ff02::1:2'
SYNC_MAGIC = b'NIPXE-SYNC '


class JsonLog:
    """Append-only JSON-lines log; one ``os.write`` per record."""

    def __init__(self, path):
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND,
                           0o644)
        self._lock = threading.Lock()

    def write(self, record):
        line = (json.dumps(record, sort_keys=True) + '\n').encode('utf-8')
        with self._lock:
            os.write(self._fd, line)

    def close(self):
        os.close(self._fd)


def ready(*words):
    print('READY', *words, flush=True)


def _stop_on_signals(callback):
    def handler(signum, frame):
        callback()
    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


# --------------------------------------------------------------------------
# http mode

class Routes:
    """The routes file, re-read when its mtime or size changes."""

    def __init__(self, path):
        self.path = path
        self._stamp = None
        self._routes = {}
        self._lock = threading.Lock()

    def get(self, path):
        with self._lock:
            st = os.stat(self.path)
            stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
            if stamp != self._stamp:
                with open(self.path, encoding='utf-8') as f:
                    self._routes = json.load(f)
                self._stamp = stamp
            return self._routes.get(path)


class MenuHandler(http.server.BaseHTTPRequestHandler):
    server_version = 'nipxe-menu/1'
    protocol_version = 'HTTP/1.1'

    def do_GET(self):
        self._reply(send_body=True)

    def do_HEAD(self):
        self._reply(send_body=False)

    def _reply(self, send_body):
        split = urllib.parse.urlsplit(self.path)
        query_all = urllib.parse.parse_qs(split.query,
                                          keep_blank_values=True)
        body = self.server.routes.get(split.path)
        status = 200 if body is not None else 404
        if body is None:
            body = 'not found: %s\n' % split.path
        data = body.encode('utf-8')
        record = {
            'time': time.time(),
            'client': self.client_address[0],
            'client_port': self.client_address[1],
            'method': self.command,
            'path': split.path,
            'raw_path': self.path,
            'query': {k: v[-1] for k, v in query_all.items()},
            'query_all': query_all,
            'headers': {h: self.headers[h] for h in LOGGED_HEADERS
                        if h in self.headers},
            'status': status,
        }
        if self.server.signing_keys and 'sig' in query_all:
            record['signature'] = self._verify(split)
        self.server.log.write(record)
        self.send_response(status)
        self.send_header('Content-Type', 'text/plain; charset=utf-8')
        self.send_header('Content-Length', str(len(data)))
        self.send_header('Cache-Control', 'no-store')
        self.end_headers()
        if send_body:
            self.wfile.write(data)

    def _verify(self, split):
        try:
            verified = signature.verify(self.server.signing_keys,
                                        split.path, split.query)
        except signature.InvalidSignature as e:
            return {'status': 'invalid', 'reason': str(e)}
        return {'status': 'ok', 'kid': verified.kid, 'ts': verified.ts,
                'fields': verified.fields,
                'source_matches': verified.fields.get('ip')
                == self.client_address[0]}

    def log_message(self, fmt, *args):
        # Every request is in the JSON log; keep stderr for real problems.
        pass


class MenuHTTPServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, bind, port, routes, log, signing_keys=None):
        if ':' in bind:
            self.address_family = socket.AF_INET6
        self.routes = routes
        self.log = log
        self.signing_keys = signing_keys or {}
        super().__init__((bind, port), MenuHandler)


def run_http(args):
    log = JsonLog(args.log)
    keys = None
    keys_path = args.signing_keys or os.environ.get('NIPXE_MENU_SIGNING_KEYS')
    if keys_path:
        with open(keys_path, encoding='utf-8') as f:
            keys = json.load(f)
    server = MenuHTTPServer(args.bind, args.port, Routes(args.routes), log,
                            keys)
    _stop_on_signals(
        lambda: threading.Thread(target=server.shutdown).start())
    ready('http', args.bind, server.server_address[1])
    try:
        server.serve_forever(poll_interval=0.1)
    finally:
        server.server_close()
        log.close()
    return 0


# --------------------------------------------------------------------------
# dhcp mode

def parse_dhcp4(data):
    info = {}
    if len(data) >= 240:
        info['op'] = data[0]
        info['xid'] = '%08x' % struct.unpack('!I', data[4:8])[0]
        hlen = min(data[2], 16)
        info['chaddr'] = ':'.join('%02x' % b for b in data[28:28 + hlen])
        if data[236:240] == DHCP4_MAGIC:
            i = 240
            while i < len(data):
                code = data[i]
                if code == 0:
                    i += 1
                    continue
                if code == 255 or i + 1 >= len(data):
                    break
                length = data[i + 1]
                value = data[i + 2:i + 2 + length]
                if code == 53 and length == 1:
                    info['msg_type'] = DHCP4_TYPES.get(value[0],
                                                       str(value[0]))
                i += 2 + length
    return info


def parse_dhcp6(data):
    info = {}
    if len(data) >= 4:
        info['msg_type'] = DHCP6_TYPES.get(data[0], str(data[0]))
        info['xid'] = data[1:4].hex()
    return info


def open_dhcp_sockets(ifaces):
    socks = []
    s4 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s4.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s4.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    s4.bind(('0.0.0.0', 67))
    socks.append((4, s4))
    s6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    s6.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    s6.bind(('::', 547))
    group = socket.inet_pton(socket.AF_INET6, ALL_DHCP6)
    for name in ifaces:
        index = socket.if_nametoindex(name)
        s6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP,
                      group + struct.pack('@I', index))
    socks.append((6, s6))
    return socks


def run_dhcp(args):
    log = JsonLog(args.log)
    socks = open_dhcp_sockets(args.iface)
    sel = selectors.DefaultSelector()
    for family, sock in socks:
        sock.setblocking(False)
        sel.register(sock, selectors.EVENT_READ, family)
    stop = threading.Event()
    _stop_on_signals(stop.set)
    ready('dhcp', ','.join(args.iface))
    try:
        while not stop.is_set():
            for key, _ in sel.select(timeout=0.2):
                try:
                    data, src = key.fileobj.recvfrom(65535)
                except BlockingIOError:
                    continue
                family = key.data
                record = {'time': time.time(), 'family': family,
                          'src': src[0], 'src_port': src[1],
                          'length': len(data)}
                if data.startswith(SYNC_MAGIC):
                    # A marker from the lab itself (see send_sync): every
                    # packet queued before it has been logged.
                    record['sync'] = data[len(SYNC_MAGIC):].decode(
                        'ascii', 'replace')
                elif family == 4:
                    record.update(parse_dhcp4(data))
                else:
                    record['scope_id'] = src[3]
                    record.update(parse_dhcp6(data))
                log.write(record)
    finally:
        for _, sock in socks:
            sock.close()
        log.close()
    return 0


def send_sync(token):
    """Send a sync marker to the dhcp mode over loopback (v4 and v6)."""
    payload = SYNC_MAGIC + token.encode('ascii')
    for family, addr, port in ((socket.AF_INET, '127.0.0.1', 67),
                               (socket.AF_INET6, '::1', 547)):
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.sendto(payload, (addr, port))
    return 0


# --------------------------------------------------------------------------
# ra mode

def build_ra(managed, other, prefixes, slaac, lifetime):
    flags = (0x80 if managed else 0) | (0x40 if other else 0)
    # type, code, checksum (the kernel fills it in), cur hop limit, flags,
    # router lifetime, reachable time, retrans timer
    ra = struct.pack('!BBHBBHII', 134, 0, 0, 64, flags, lifetime, 0, 0)
    for prefix in prefixes:
        addr, _, plen = prefix.partition('/')
        pflags = 0x80 | (0x40 if slaac else 0)  # L, A
        ra += struct.pack('!BBBBIII', 3, 4, int(plen or 64), pflags,
                          3600, 1800, 0)
        ra += socket.inet_pton(socket.AF_INET6, addr)
    return ra


def run_ra(args):
    log = JsonLog(args.log)
    sock = socket.socket(socket.AF_INET6, socket.SOCK_RAW,
                         socket.IPPROTO_ICMPV6)
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, 0)
    indexes = [(name, socket.if_nametoindex(name)) for name in args.iface]
    ra = build_ra(args.managed, args.other, args.prefix, args.slaac,
                  args.router_lifetime)
    stop = threading.Event()
    _stop_on_signals(stop.set)
    ready('ra', ','.join(args.iface))
    try:
        while not stop.is_set():
            for name, index in indexes:
                try:
                    sock.sendto(ra, ('ff02::1', 0, 0, index))
                except OSError as e:  # e.g. the bridge has no carrier yet
                    log.write({'time': time.time(), 'iface': name,
                               'error': str(e)})
                else:
                    log.write({'time': time.time(), 'iface': name,
                               'length': len(ra)})
            stop.wait(args.interval)
    finally:
        sock.close()
        log.close()
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    sub = parser.add_subparsers(dest='mode', required=True)
    p = sub.add_parser('http', help='serve iPXE scripts, log requests')
    p.add_argument('--bind', required=True,
                   help='IPv4 or IPv6 address to listen on')
    p.add_argument('--port', type=int, default=0,
                   help='TCP port (0: any free port, see READY line)')
    p.add_argument('--routes', required=True,
                   help='JSON file: {"/path": "body text", ...}')
    p.add_argument('--log', required=True, help='JSON-lines request log')
    p.add_argument('--signing-keys', metavar='FILE',
                   help='JSON {key id: key}: verify signed identities')
    p.set_defaults(func=run_http)
    p = sub.add_parser('dhcp', help='count DHCPv4/DHCPv6 packets')
    p.add_argument('--iface', action='append', default=[],
                   help='interface to join ff02::1:2 on (repeatable)')
    p.add_argument('--log', required=True, help='JSON-lines packet log')
    p.set_defaults(func=run_dhcp)
    p = sub.add_parser('sync', help='send a sync marker to the dhcp mode')
    p.add_argument('token')
    p.set_defaults(func=lambda a: send_sync(a.token))
    p = sub.add_parser('ra', help='send IPv6 router advertisements')
    p.add_argument('--iface', action='append', default=[], required=True)
    p.add_argument('--interval', type=float, default=1.0)
    p.add_argument('--managed', action='store_true', help='M flag')
    p.add_argument('--other', action='store_true', help='O flag')
    p.add_argument('--prefix', action='append', default=[],
                   help='on-link prefix, e.g. 2001:db8::/64 (repeatable)')
    p.add_argument('--slaac', action='store_true',
                   help='set the A flag on the prefixes')
    p.add_argument('--router-lifetime', type=int, default=0)
    p.add_argument('--log', required=True, help='JSON-lines log')
    p.set_defaults(func=run_ra)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == '__main__':
    sys.exit(main())
