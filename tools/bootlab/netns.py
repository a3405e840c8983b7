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


"""The lab: one network namespace, its bridges and taps, and cleanup.

A namespace ``nipxe-<hex>`` is created for each lab and deleted
afterwards; it is never connected to the host (no veth, no route out, no
NAT).  Its owner records it in STATE_DIR so that :func:`reap_stale` can
delete the namespaces of owners that died (SIGKILL).
"""

import atexit
import contextlib
import ctypes
import dataclasses
import ipaddress
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time

try:  # Only LabFixture needs it; the rest is standard library.
    import fixtures as _fixtures
except ImportError:  # pragma: no cover
    _fixtures = None

from tools.bootlab import errors
from tools.bootlab import vm
from tools import labproc

IP = 'ip'
NETNS_PREFIX = 'nipxe-'
NETNS_DIR = '/run/netns'
CLONE_NEWNET = 0x40000000
STATE_DIR = '/run/nipxe-bootlab'
IFNAMSIZ = 15


def unique_name(prefix=NETNS_PREFIX, nbytes=4):
    return prefix + secrets.token_hex(nbytes)


DOCUMENTATION_NETS = tuple(ipaddress.ip_network(n) for n in (
    '192.0.2.0/24', '198.51.100.0/24', '203.0.113.0/24', '2001:db8::/32'))


def check_documentation_address(cidr):
    """Raise LabError unless ``cidr`` lies in a documentation range."""
    try:
        iface = ipaddress.ip_interface(cidr)
    except ValueError as e:
        raise errors.LabError('bad address %r: %s' % (cidr, e)) from None
    if '/' not in str(cidr):
        raise errors.LabError('give %r with a prefix length, e.g. 192.0.2.1/24'
                              % cidr)
    if not any(iface.network.subnet_of(net) for net in DOCUMENTATION_NETS
               if net.version == iface.version):
        raise errors.LabError('%s is not in a documentation range (%s)' % (
            cidr, ', '.join(map(str, DOCUMENTATION_NETS))))
    return iface


def _netns_exists(name):
    return os.path.exists(os.path.join(NETNS_DIR, name))


def _netns_pids(name):
    out = subprocess.run([IP, 'netns', 'pids', name], capture_output=True,
                         text=True)
    return [int(p) for p in out.stdout.split() if p.isdigit()]


def _delete_netns(name):
    """Kill what still runs in the namespace, then delete it."""
    if not _netns_exists(name):
        return
    for _ in range(3):
        pids = _netns_pids(name)
        if not pids:
            break
        for pid in pids:  # only processes in our own namespace
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)
    out = subprocess.run([IP, 'netns', 'delete', name], capture_output=True,
                         text=True)
    if out.returncode and _netns_exists(name):
        raise errors.LabError('could not delete network namespace %s: %s'
                              % (name, out.stderr.strip()))


def reap_stale():
    """Delete lab namespaces whose owning process is gone; return names.

    Only namespaces recorded in STATE_DIR by a Lab are considered, so other
    users' namespaces are never touched.
    """
    reaped = []
    try:
        entries = os.listdir(STATE_DIR)
    except FileNotFoundError:
        return reaped
    for entry in entries:
        path = os.path.join(STATE_DIR, entry)
        try:
            with open(path) as f:
                state = json.load(f)
            pid, name = int(state['pid']), state['netns']
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if not name.startswith(NETNS_PREFIX) or labproc.pid_alive(pid):
            continue
        try:
            _delete_netns(name)
        except errors.LabError:
            continue
        workdir = state.get('workdir') or ''
        if (state.get('own_workdir') and not state.get('keep_workdir')
                and os.path.basename(workdir).startswith(name + '-')):
            shutil.rmtree(workdir, ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        reaped.append(name)
    return reaped


_open_labs = set()
_open_lock = threading.Lock()


@atexit.register
def _cleanup_open_labs():
    with _open_lock:
        labs = list(_open_labs)
    for lab in labs:
        with contextlib.suppress(Exception):
            lab.cleanup()


_sigterm_installed = False


def _install_sigterm_handler():
    """Turn SIGTERM into SystemExit so cleanups and atexit run.

    Only when nobody else has installed a handler and only from the main
    thread.
    """
    global _sigterm_installed
    if _sigterm_installed:
        return
    _sigterm_installed = True
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return

    def handler(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


# ---------------------------------------------------------------------------
# the lab: one network namespace and everything started in it

def _setns(fd):
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise errors.LabError('setns: %s' % os.strerror(err))


@dataclasses.dataclass
class Bridge:
    name: str
    ipv4: str = None   # with prefix length, '192.0.2.1/24'
    ipv6: str = None   # with prefix length, '2001:db8::1/64'

    @property
    def ip4(self):
        return self.ipv4.split('/')[0] if self.ipv4 else None

    @property
    def ip6(self):
        return self.ipv6.split('/')[0] if self.ipv6 else None


class Lab:
    """A private network namespace for boot tests; a context manager.

    ``cleanup()`` stops every process started through the lab (process
    group, SIGTERM then SIGKILL), kills anything else left in the
    namespace, deletes the namespace (and with it its bridges and taps) and
    removes the work directory (kept if ``keep_workdir`` or the environment
    variable ``NIPXE_LAB_KEEP=1``).  Calling it twice is harmless; it is
    also run at interpreter exit and on SIGTERM.
    """

    def __init__(self, name=None, workdir=None, keep_workdir=None):
        self.name = name or unique_name()
        if not self.name.startswith(NETNS_PREFIX):
            raise errors.LabError('lab namespace names must start with %r'
                                  % NETNS_PREFIX)
        self._workdir_arg = workdir
        if keep_workdir is None:
            keep_workdir = os.environ.get('NIPXE_LAB_KEEP') == '1'
        self.keep_workdir = keep_workdir
        self.workdir = None
        self.bridges = {}
        self.taps = {}
        self._procs = []
        self._lock = threading.Lock()
        self._netns_created = False
        self._state_file = None
        self._cleaned = False
        self._set_up = False

    # -- lifecycle

    def setup(self):
        if self._cleaned:
            raise errors.LabError('lab %s was cleaned up; make a new one'
                                  % self.name)
        if self._set_up:
            return self
        # Register the cleanup before anything exists.
        with _open_lock:
            _open_labs.add(self)
        _install_sigterm_handler()
        self._set_up = True
        reap_stale()
        if self._workdir_arg:
            os.makedirs(self._workdir_arg, exist_ok=True)
            self.workdir = self._workdir_arg
        else:
            self.workdir = tempfile.mkdtemp(prefix=self.name + '-')
        os.makedirs(STATE_DIR, exist_ok=True)
        self._state_file = os.path.join(STATE_DIR, self.name + '.json')
        with open(self._state_file, 'w') as f:
            json.dump({'netns': self.name, 'pid': os.getpid(),
                       'created': time.time(), 'workdir': self.workdir,
                       'own_workdir': not self._workdir_arg,
                       'keep_workdir': self.keep_workdir}, f)
        if _netns_exists(self.name):
            raise errors.LabError('network namespace %s already exists'
                                  % self.name)
        self._netns_created = True  # before: an interrupt may come in between
        self._ip('netns', 'add', self.name)
        self.run([IP, 'link', 'set', 'lo', 'up'])
        # A closed lab network: nothing is forwarded, nothing is learned
        # from router advertisements, new addresses need no DAD.
        for key, value in (('net/ipv4/ip_forward', '0'),
                           ('net/ipv6/conf/all/forwarding', '0'),
                           ('net/ipv6/conf/default/accept_ra', '0'),
                           ('net/ipv6/conf/default/accept_dad', '0'),
                           ('net/ipv6/conf/default/autoconf', '0')):
            self.sysctl(key, value)
        return self

    def __enter__(self):
        try:
            return self.setup()
        except BaseException:
            self.cleanup()
            raise

    def __exit__(self, *exc):
        self.cleanup()
        return False

    def cleanup(self):
        if self._cleaned:
            return
        problems = []
        with self._lock:
            procs = list(reversed(self._procs))
        for proc in procs:
            try:
                labproc.terminate(proc)
            except Exception as e:  # pragma: no cover
                problems.append('stopping pid %s: %s' % (proc.pid, e))
        for proc in procs:
            for stream in (proc.stdout, proc.stderr, proc.stdin):
                if stream is not None:
                    with contextlib.suppress(Exception):
                        stream.close()
        if self._netns_created:
            try:
                _delete_netns(self.name)
                self._netns_created = False
            except errors.LabError as e:
                problems.append(str(e))
        if not problems:
            if self._state_file:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self._state_file)
            if (self.workdir and not self.keep_workdir
                    and not self._workdir_arg):
                shutil.rmtree(self.workdir, ignore_errors=True)
            self._cleaned = True
            with _open_lock:
                _open_labs.discard(self)
        if problems:
            raise errors.LabError('boot lab cleanup of %s: %s'
                                  % (self.name, '; '.join(problems)))

    @property
    def exists(self):
        """Whether the namespace currently exists."""
        return _netns_exists(self.name)

    # -- commands

    def _ip(self, *args):
        out = subprocess.run([IP, *args],
                             capture_output=True, text=True)
        if out.returncode:
            raise errors.LabError('ip %s failed: %s'
                                  % (' '.join(args), out.stderr.strip()))
        return out.stdout

    def netns_argv(self, argv):
        return [IP, 'netns', 'exec',
                self.name, *[str(a) for a in argv]]

    def run(self, argv, check=True, timeout=60, **kw):
        """Run a command in the namespace; return CompletedProcess."""
        self._require_setup()
        kw.setdefault('capture_output', True)
        kw.setdefault('text', True)
        out = subprocess.run(self.netns_argv(argv), timeout=timeout, **kw)
        if check and out.returncode:
            raise errors.LabError('in %s: %s exited %d: %s' % (
                self.name, ' '.join(map(str, argv)), out.returncode,
                (out.stderr or '').strip() if kw.get('text') else
                out.stderr))
        return out

    def popen(self, argv, **kw):
        """Start a command in the namespace (own process group, tracked).

        The process is stopped by ``cleanup()`` and dies with the calling
        thread (PR_SET_PDEATHSIG).
        """
        self._require_setup()
        kw.setdefault('start_new_session', True)
        kw.setdefault('stdin', subprocess.DEVNULL)
        if kw.pop('die_with_parent', True):
            kw.setdefault('preexec_fn', labproc.die_with_parent)
        with self._lock:
            proc = subprocess.Popen(self.netns_argv(argv), **kw)
            self._procs.append(proc)
        return proc

    def listen(self, host, port=0, backlog=16):
        """A TCP socket listening on host:port inside the namespace.

        For a server that runs in this process (a WSGI application
        under test): the calling thread enters the namespace only to
        create the socket (setns(2) is per thread), which then stays in
        the namespace.  The caller closes it.
        """
        self._require_setup()
        family = socket.AF_INET6 if ':' in host else socket.AF_INET
        own = os.open('/proc/thread-self/ns/net', os.O_RDONLY)
        target = os.open(os.path.join(NETNS_DIR, self.name), os.O_RDONLY)
        try:
            _setns(target)
            try:
                sock = socket.socket(family, socket.SOCK_STREAM)
                try:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR,
                                    1)
                    sock.bind((host, port))
                    sock.listen(backlog)
                except OSError:
                    sock.close()
                    raise
            finally:
                _setns(own)
        finally:
            os.close(own)
            os.close(target)
        return sock

    def sysctl(self, key, value):
        """Write /proc/sys/KEY inside the namespace."""
        if '/' not in key:  # dotted form; interface names may hold dots
            key = key.replace('.', '/')
        path = '/proc/sys/' + key
        self.run(['sh', '-c', 'printf %s "$2" > "$1"', 'sh', path,
                  str(value)])

    def _require_setup(self):
        if not self._set_up or self._cleaned:
            raise errors.LabError('lab %s is not set up (use it as a context '
                                  'manager or call setup())' % self.name)

    def path(self, name):
        """A path inside the lab's work directory."""
        return os.path.join(self.workdir, name)

    def write_file(self, name, data):
        """Write text or bytes to the work directory; return its path."""
        path = self.path(name)
        mode = 'wb' if isinstance(data, bytes) else 'w'
        with open(path, mode) as f:
            f.write(data)
        return path

    # -- network

    @staticmethod
    def _check_ifname(name):
        if not re.fullmatch(r'[A-Za-z0-9_.-]{1,%d}' % IFNAMSIZ, name):
            raise errors.LabError('bad interface name %r (1-%d of A-Z a-z 0-9 '
                                  '_ . -)' % (name, IFNAMSIZ))

    def add_bridge(self, name, ipv4=None, ipv6=None, any_address=False):
        """A bridge with optional static addresses (CIDR notation).

        STP and multicast snooping are off (ports forward at once, the
        DHCPv6 multicast reaches the host); the IPv6 address is added with
        ``nodad`` and router advertisements are ignored.  Addresses must be
        in documentation ranges unless ``any_address``.
        """
        self._check_ifname(name)
        for addr in (ipv4, ipv6):
            if addr and not any_address:
                check_documentation_address(addr)
        self.run([IP, 'link', 'add', name, 'type', 'bridge', 'stp_state',
                  '0', 'mcast_snooping', '0'])
        for key, value in (('accept_dad', '0'), ('accept_ra', '0'),
                           ('autoconf', '0'), ('forwarding', '0'),
                           ('disable_ipv6', '0')):
            self.sysctl('net/ipv6/conf/%s/%s' % (name, key), value)
        if ipv4:
            self.run([IP, '-4', 'addr', 'add', ipv4, 'dev', name])
        if ipv6:
            self.run([IP, '-6', 'addr', 'add', ipv6, 'dev', name, 'nodad'])
        self.run([IP, 'link', 'set', name, 'up'])
        bridge = Bridge(name, ipv4, ipv6)
        self.bridges[name] = bridge
        return bridge

    def add_tap(self, name, bridge):
        """A tap device for QEMU, attached to ``bridge`` and up."""
        self._check_ifname(name)
        bridge = getattr(bridge, 'name', bridge)
        if bridge not in self.bridges:
            raise errors.LabError('no bridge %r in lab %s'
                                  % (bridge, self.name))
        self.run([IP, 'tuntap', 'add', 'dev', name, 'mode', 'tap'])
        # The port needs no IPv6 of its own (no link-local noise).
        self.sysctl('net/ipv6/conf/%s/disable_ipv6' % name, '1')
        self.run([IP, 'link', 'set', name, 'master', bridge])
        self.run([IP, 'link', 'set', name, 'up'])
        self.taps[name] = bridge
        return name

    # -- diagnostics

    def collect_logs(self, limit=20000):
        """The tail of every log in the work directory, as one text."""
        if not self.workdir or not os.path.isdir(self.workdir):
            return '(no work directory)'
        parts = []
        for entry in sorted(os.listdir(self.workdir)):
            if not entry.endswith(('.log', '.jsonl')):
                continue
            try:
                with open(os.path.join(self.workdir, entry), 'rb') as f:
                    data = f.read()
            except OSError as e:  # pragma: no cover
                data = str(e).encode()
            text = data[-limit:].decode('utf-8', 'replace')
            if entry.startswith('serial'):
                text = vm.clean_serial(text)
            parts.append('==> %s (%d bytes) <==\n%s' % (entry, len(data),
                                                        text))
        return '\n'.join(parts) or '(no logs)'


if _fixtures is not None:
    class LabFixture(_fixtures.Fixture):
        """A Lab for testtools tests: ``self.useFixture(LabFixture())``.

        Adds a ``bootlab-logs`` detail (serial consoles, request and DHCP
        logs, QEMU stderr) that testtools shows when a test fails.
        """

        def __init__(self, **lab_kwargs):
            super().__init__()
            self._lab_kwargs = lab_kwargs
            self.lab = None

        def _setUp(self):
            self.lab = Lab(**self._lab_kwargs)
            self.addCleanup(self.lab.cleanup)
            self.lab.setup()
            try:
                from testtools import content
            except ImportError:  # pragma: no cover
                return
            lab = self.lab
            self.addDetail('bootlab-logs', content.Content(
                content.UTF8_TEXT,
                lambda: [lab.collect_logs().encode('utf-8')]))
