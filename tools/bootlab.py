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

"""Boot lab: boot a VM in QEMU (TCG) on a private network with no DHCP.

Used by the functional tests and by the demo.  Standard library only
(``LabFixture`` additionally needs the ``fixtures`` package).  Needs root,
``ip`` (iproute2), ``qemu-system-x86_64`` (qemu-system-x86), and for the
stock images ``ipxe`` and, for UEFI, ``ovmf``.

Everything happens inside a network namespace ``nipxe-<hex>`` created for
the lab and deleted afterwards; it is never connected to the host (no veth,
no route out, no NAT).  Use documentation addresses only (192.0.2.0/24,
198.51.100.0/24, 203.0.113.0/24, 2001:db8::/32)::

    from tools import bootlab

    bootlab.check_prerequisites()
    with bootlab.Lab() as lab:
        lab.add_bridge('br0', ipv4='192.0.2.1/24', ipv6='2001:db8::1/64')
        lab.add_tap('tap0', 'br0')
        menu = bootlab.MenuServer(lab, '192.0.2.1', 8080,
                                  {'/menu': '#!ipxe\\nreboot\\n'}).start()
        dhcp = bootlab.DhcpSentinel(lab).start()
        vm = bootlab.Vm(lab, cdrom='/path/to/regenerated.iso',
                        nics=[bootlab.Nic('tap0', bootlab.unique_mac())])
        vm.start()
        first = menu.wait_for('/menu', timeout=60, vm=vm)
        result = vm.wait(timeout=120)
        print(first['time'] - vm.started_at, result.wall_time,
              dhcp.count())

A guest ``reboot`` makes QEMU exit 0 (``-no-reboot``): end boots with it.
Times: ``Vm.started_at`` and the ``time`` of every logged request or DHCP
packet are ``time.time()`` values (same clock, different processes).

``RouterAdvertiser`` sends IPv6 router advertisements (M/O flags) so a
test can prove that a static script ignores them (iPXE's ``dhcp`` then
sends DHCPv6 SOLICITs, which the sentinel counts).

Findings (QEMU 7.2, SeaBIOS 1.16.2, iPXE 1.0.0+git-20190125, TCG):
without ``-fw_cfg name=etc/sercon-port`` the serial log of an lkrn boot is
empty (QEMU warns that the name lacks ``opt/``; SeaBIOS reads only this
name).  SeaBIOS's serial console buffers the last line: output written just
before ``reboot`` can be cut off (add ``sleep 1`` if it matters).  With
e1000 the guest ignores the lab's immediate ARP replies for about 1 s after
``ifopen`` (probably QEMU's emulated link negotiation), so a static boot
reaches the menu ~1.9 s after power-on with e1000 and ~0.9 s with
virtio-net-pci.

Command line: ``python -m tools.bootlab boot --cdrom X.iso`` boots an ISO on
a fresh lab and prints a JSON summary; ``python -m tools.bootlab reap``
deletes namespaces left behind by lab owners that died (SIGKILL).
"""

import argparse
import atexit
import contextlib
import ctypes
import dataclasses
import ipaddress
import json
import os
import re
import secrets
import select
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib

try:  # Only LabFixture needs it; the rest is standard library.
    import fixtures as _fixtures
except ImportError:  # pragma: no cover
    _fixtures = None

QEMU = 'qemu-system-x86_64'
IP = 'ip'
IPXE_ISO = '/usr/lib/ipxe/ipxe.iso'
IPXE_LKRN = '/boot/ipxe.lkrn'
SEABIOS = '/usr/share/seabios/bios-256k.bin'
VGABIOS = '/usr/share/seabios/vgabios-stdvga.bin'
OVMF_CODE = '/usr/share/OVMF/OVMF_CODE.fd'
OVMF_VARS = '/usr/share/OVMF/OVMF_VARS.fd'
MENU_SERVER = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                           'menu_server.py')
NETNS_PREFIX = 'nipxe-'
NETNS_DIR = '/run/netns'
STATE_DIR = '/run/nipxe-bootlab'
MAC_PREFIX = 'fa:16:3e'
COM1 = 0x3f8
IFNAMSIZ = 15
PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'

_ANSI_RE = re.compile(r'\x1b(\[[0-?]*[ -/]*[@-~]|[@-Z\\-_]|c)')


# ---------------------------------------------------------------------------
# errors and helpers

class LabError(Exception):
    """Something in the boot lab failed; the message says what."""


class PrerequisiteError(LabError):
    """A tool or file the boot lab needs is missing."""


class LabTimeout(LabError, TimeoutError):
    """An expected event (request, packet, serial text) did not happen."""


def check_prerequisites(uefi=False, iso=False, kernel=False):
    """Raise PrerequisiteError naming what is missing (never skips).

    Always checks root, ``/dev/net/tun``, ``ip`` and QEMU with SeaBIOS.
    ``uefi`` adds OVMF; ``iso``/``kernel`` add the stock iPXE ISO/lkrn.
    """
    missing = []

    def need(ok, what, package):
        if not ok:
            missing.append((what, package))

    need(shutil.which(QEMU), QEMU, 'qemu-system-x86')
    need(os.path.exists(SEABIOS), SEABIOS, 'seabios')
    need(os.path.exists(VGABIOS), VGABIOS, 'seabios')
    need(shutil.which(IP), 'ip', 'iproute2')
    if uefi:
        need(os.path.exists(OVMF_CODE), OVMF_CODE, 'ovmf')
        need(os.path.exists(OVMF_VARS), OVMF_VARS, 'ovmf')
    if iso:
        need(os.path.exists(IPXE_ISO), IPXE_ISO, 'ipxe')
    if kernel:
        need(os.path.exists(IPXE_LKRN), IPXE_LKRN, 'ipxe')
    problems = []
    if missing:
        packages = sorted({p for _, p in missing})
        problems.append(
            'missing %s; install with: apt-get install '
            '--no-install-recommends %s' % (
                ', '.join('%s (Debian package %s)' % m for m in missing),
                ' '.join(packages)))
    if os.geteuid() != 0:
        problems.append('the boot lab must run as root (it creates network '
                        'namespaces and tap devices)')
    if not os.path.exists('/dev/net/tun'):
        problems.append('/dev/net/tun is missing (kernel module tun; '
                        'in a container pass the device through)')
    if problems:
        raise PrerequisiteError('boot lab prerequisites: ' +
                                '; '.join(problems))


_used_macs = set()
_used_lock = threading.Lock()


def unique_mac(prefix=MAC_PREFIX):
    """A random MAC with OpenStack's prefix, unique within this process."""
    with _used_lock:
        while True:
            mac = prefix + ''.join(
                ':%02x' % b for b in secrets.token_bytes(
                    6 - len(prefix.split(':'))))
            if mac not in _used_macs:
                _used_macs.add(mac)
                return mac


def unique_macs(count, prefix=MAC_PREFIX):
    """``count`` distinct MACs (lowercase, colon-separated)."""
    return [unique_mac(prefix) for _ in range(count)]


def unique_name(prefix=NETNS_PREFIX, nbytes=4):
    return prefix + secrets.token_hex(nbytes)


def clean_serial(text):
    """Strip ANSI escape sequences and carriage returns, apply backspaces."""
    text = _ANSI_RE.sub('', text).replace('\r', '')
    if '\b' not in text:
        return text
    out = []
    for ch in text:
        if ch == '\b':
            if out and out[-1] != '\n':
                out.pop()
        else:
            out.append(ch)
    return ''.join(out)


def check_png(path):
    """Validate a PNG file (signature, IHDR first, CRC); return (w, h)."""
    with open(path, 'rb') as f:
        data = f.read()
    if not data.startswith(PNG_SIGNATURE):
        raise LabError('%s is not a PNG (signature %r)' % (path, data[:8]))
    length, ctype = struct.unpack('>I4s', data[8:16])
    if ctype != b'IHDR' or length != 13:
        raise LabError('%s: first chunk is %r (%d bytes), not IHDR'
                       % (path, ctype, length))
    body = data[16:16 + length]
    (crc,) = struct.unpack('>I', data[16 + length:20 + length])
    if zlib.crc32(ctype + body) != crc:
        raise LabError('%s: IHDR CRC mismatch' % path)
    width, height = struct.unpack('>II', body[:8])
    if not width or not height:
        raise LabError('%s: empty image %dx%d' % (path, width, height))
    if not data.endswith(b'IEND\xaeB`\x82'):
        raise LabError('%s: no IEND chunk at the end' % path)
    return width, height


DOCUMENTATION_NETS = tuple(ipaddress.ip_network(n) for n in (
    '192.0.2.0/24', '198.51.100.0/24', '203.0.113.0/24', '2001:db8::/32'))


def check_documentation_address(cidr):
    """Raise LabError unless ``cidr`` lies in a documentation range."""
    try:
        iface = ipaddress.ip_interface(cidr)
    except ValueError as e:
        raise LabError('bad address %r: %s' % (cidr, e)) from None
    if '/' not in str(cidr):
        raise LabError('give %r with a prefix length, e.g. 192.0.2.1/24'
                       % cidr)
    if not any(iface.network.subnet_of(net) for net in DOCUMENTATION_NETS
               if net.version == iface.version):
        raise LabError('%s is not in a documentation range (%s)' % (
            cidr, ', '.join(map(str, DOCUMENTATION_NETS))))
    return iface


def _qemu_opt(value):
    """Escape a value for a QEMU ``key=value,...`` option."""
    return str(value).replace(',', ',,')


_libc = None


def _die_with_parent():  # runs in the child between fork and exec
    # PR_SET_PDEATHSIG: the child gets SIGKILL when the thread that started
    # it dies, so QEMU and helpers never outlive a SIGKILLed test runner.
    if _libc is not None:
        _libc.prctl(1, signal.SIGKILL, 0, 0, 0)


try:
    _libc = ctypes.CDLL(None, use_errno=True)
except OSError:  # pragma: no cover
    _libc = None


def _terminate(proc, grace=3.0):
    """Stop a process started in its own session, group first."""
    if proc.poll() is not None:
        return proc.returncode
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        except PermissionError:  # pragma: no cover
            proc.send_signal(sig)
        try:
            return proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
    return proc.poll()


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
        raise LabError('could not delete network namespace %s: %s'
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
        if not name.startswith(NETNS_PREFIX) or _pid_alive(pid):
            continue
        try:
            _delete_netns(name)
        except LabError:
            continue
        workdir = state.get('workdir') or ''
        if (state.get('own_workdir') and not state.get('keep_workdir')
                and os.path.basename(workdir).startswith(name + '-')):
            shutil.rmtree(workdir, ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        reaped.append(name)
    return reaped


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover
        return True
    return True


# Labs still open at interpreter exit (also after SIGTERM, see below).
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
            raise LabError('lab namespace names must start with %r'
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
            raise LabError('lab %s was cleaned up; make a new one'
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
            raise LabError('network namespace %s already exists' % self.name)
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
        errors = []
        with self._lock:
            procs = list(reversed(self._procs))
        for proc in procs:
            try:
                _terminate(proc)
            except Exception as e:  # pragma: no cover
                errors.append('stopping pid %s: %s' % (proc.pid, e))
        for proc in procs:
            for stream in (proc.stdout, proc.stderr, proc.stdin):
                if stream is not None:
                    with contextlib.suppress(Exception):
                        stream.close()
        if self._netns_created:
            try:
                _delete_netns(self.name)
                self._netns_created = False
            except LabError as e:
                errors.append(str(e))
        if not errors:
            if self._state_file:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self._state_file)
            if (self.workdir and not self.keep_workdir
                    and not self._workdir_arg):
                shutil.rmtree(self.workdir, ignore_errors=True)
            self._cleaned = True
            with _open_lock:
                _open_labs.discard(self)
        if errors:
            raise LabError('boot lab cleanup of %s: %s'
                           % (self.name, '; '.join(errors)))

    @property
    def exists(self):
        """Whether the namespace currently exists."""
        return _netns_exists(self.name)

    # -- commands

    def _ip(self, *args):
        out = subprocess.run([IP, *args], capture_output=True, text=True)
        if out.returncode:
            raise LabError('ip %s failed: %s'
                           % (' '.join(args), out.stderr.strip()))
        return out.stdout

    def netns_argv(self, argv):
        return [IP, 'netns', 'exec', self.name, *[str(a) for a in argv]]

    def run(self, argv, check=True, timeout=60, **kw):
        """Run a command in the namespace; return CompletedProcess."""
        self._require_setup()
        kw.setdefault('capture_output', True)
        kw.setdefault('text', True)
        out = subprocess.run(self.netns_argv(argv), timeout=timeout, **kw)
        if check and out.returncode:
            raise LabError('in %s: %s exited %d: %s' % (
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
            kw.setdefault('preexec_fn', _die_with_parent)
        with self._lock:
            proc = subprocess.Popen(self.netns_argv(argv), **kw)
            self._procs.append(proc)
        return proc

    def sysctl(self, key, value):
        """Write /proc/sys/KEY inside the namespace."""
        if '/' not in key:  # dotted form; interface names may hold dots
            key = key.replace('.', '/')
        path = '/proc/sys/' + key
        self.run(['sh', '-c', 'printf %s "$2" > "$1"', 'sh', path,
                  str(value)])

    def _require_setup(self):
        if not self._set_up or self._cleaned:
            raise LabError('lab %s is not set up (use it as a context '
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
            raise LabError('bad interface name %r (1-%d of A-Z a-z 0-9 _ . -)'
                           % (name, IFNAMSIZ))

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
            raise LabError('no bridge %r in lab %s' % (bridge, self.name))
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
                text = clean_serial(text)
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


# ---------------------------------------------------------------------------
# helper processes run inside the namespace

class _Helper:
    """A menu_server.py mode run in the namespace, ready after READY."""

    mode = None

    def __init__(self, lab, name):
        self.lab = lab
        self.name = name
        self.proc = None
        self.log_path = lab.path('%s.jsonl' % name)
        self.stderr_path = lab.path('%s-stderr.log' % name)
        self.ready_words = None

    def _argv(self):
        raise NotImplementedError

    def start(self, timeout=15):
        if self.proc is not None:
            raise LabError('%s already started' % self.name)
        open(self.log_path, 'a').close()
        with open(self.stderr_path, 'ab') as err:
            self.proc = self.lab.popen(
                [sys.executable, '-u', MENU_SERVER, self.mode,
                 *self._argv()],
                stdout=subprocess.PIPE, stderr=err)
        deadline = time.monotonic() + timeout
        buf = b''
        fd = self.proc.stdout.fileno()
        while b'\n' not in buf:
            left = deadline - time.monotonic()
            if left <= 0:
                self.stop()
                raise LabTimeout('%s did not get ready within %.0f s: %s'
                                 % (self.name, timeout, self._stderr()))
            ready, _, _ = select.select([fd], [], [], min(left, 0.5))
            if ready:
                chunk = os.read(fd, 4096)
                if not chunk:
                    self.proc.wait(timeout=5)
                    raise LabError('%s exited with %s before it was ready: '
                                   '%s' % (self.name, self.proc.returncode,
                                           self._stderr()))
                buf += chunk
        line = buf.split(b'\n', 1)[0].decode()
        if not line.startswith('READY'):
            self.stop()
            raise LabError('%s: unexpected first line %r'
                           % (self.name, line))
        self.ready_words = line.split()[1:]
        return self

    def _stderr(self):
        try:
            with open(self.stderr_path, errors='replace') as f:
                return f.read()[-4000:].strip() or '(no stderr)'
        except OSError:  # pragma: no cover
            return '(no stderr)'

    @property
    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self):
        if self.proc is not None:
            _terminate(self.proc)

    def records(self):
        """Every JSON line logged so far."""
        out = []
        try:
            with open(self.log_path, encoding='utf-8') as f:
                for line in f:
                    if line.endswith('\n'):
                        out.append(json.loads(line))
        except FileNotFoundError:
            pass
        return out

    def _wait(self, describe, find, timeout, vm=None, interval=0.05):
        deadline = time.monotonic() + timeout
        while True:
            found = find(self.records())
            if found is not None:
                return found
            if self.proc is not None and self.proc.poll() is not None:
                raise LabError('%s exited (%s) while waiting for %s: %s' % (
                    self.name, self.proc.returncode, describe,
                    self._stderr()))
            if vm is not None and vm.exited:
                found = find(self.records())
                if found is not None:
                    return found
                raise LabError('VM %s ended (%s) before %s; serial console '
                               'tail:\n%s' % (vm.name, vm.describe_exit(),
                                              describe, vm.serial_tail()))
            if time.monotonic() >= deadline:
                msg = 'no %s within %.1f s' % (describe, timeout)
                if vm is not None:
                    msg += '; serial console tail:\n%s' % vm.serial_tail()
                raise LabTimeout(msg)
            time.sleep(interval)


class MenuServer(_Helper):
    """An HTTP server in the lab serving iPXE scripts from ``routes``.

    ``routes`` maps a path (no query) to a body text, for example
    ``{'/menu': '#!ipxe\\nreboot\\n'}``; other paths get 404.  Every request
    is logged (see ``tools/menu_server.py``).  ``port=0`` picks a free port
    (see ``port`` after ``start()``).
    """

    mode = 'http'

    def __init__(self, lab, bind, port=0, routes=None, name='menu'):
        super().__init__(lab, name)
        self.bind = bind
        self.port = port
        self.routes_path = lab.path('%s-routes.json' % name)
        self.set_routes(routes or {})

    def _argv(self):
        return ['--bind', self.bind, '--port', str(self.port),
                '--routes', self.routes_path, '--log', self.log_path]

    def start(self, timeout=15):
        super().start(timeout)
        self.port = int(self.ready_words[2])
        return self

    def set_routes(self, routes):
        """Replace the served routes (effective for the next request)."""
        for path, body in routes.items():
            if not path.startswith('/') or not isinstance(body, str):
                raise LabError('routes map "/path" to text, got %r: %r'
                               % (path, type(body)))
        tmp = self.routes_path + '.tmp'
        with open(tmp, 'w', encoding='utf-8') as f:
            json.dump(routes, f)
        os.replace(tmp, self.routes_path)

    @property
    def url(self):
        host = '[%s]' % self.bind if ':' in self.bind else self.bind
        return 'http://%s:%d' % (host, self.port)

    def url_for(self, path):
        return self.url + path

    def requests(self):
        """Logged requests, oldest first (dicts, see menu_server.py)."""
        return self.records()

    def wait_for(self, path, timeout=60, vm=None, predicate=None):
        """The first request for ``path`` (and matching ``predicate``).

        Raises LabTimeout after ``timeout`` seconds, or LabError at once
        when ``vm`` is given and its QEMU has ended without the request.
        """
        def find(requests):
            for req in requests:
                if req['path'] == path and (predicate is None
                                            or predicate(req)):
                    return req
            return None
        try:
            return self._wait('request for %s on %s' % (path, self.url),
                              find, timeout, vm)
        except LabError as e:
            seen = ['%s %s from %s' % (r['method'], r['raw_path'],
                                       r['client'])
                    for r in self.requests()]
            raise type(e)('%s (requests seen: %s)'
                          % (e, ', '.join(seen) or 'none')) from None


class RouterAdvertiser(_Helper):
    """Sends IPv6 router advertisements on the lab's bridges.

    With ``managed=True`` (M flag) iPXE's ``dhcp``/``ifconf`` starts
    DHCPv6; a static-only script must not.  Router lifetime 0: no default
    route is announced.
    """

    mode = 'ra'

    def __init__(self, lab, ifaces=None, managed=True, other=False,
                 prefixes=(), slaac=False, interval=0.5, name='ra'):
        super().__init__(lab, name)
        self.ifaces = list(ifaces if ifaces is not None else lab.bridges)
        if not self.ifaces:
            raise LabError('RouterAdvertiser needs at least one interface')
        self.managed, self.other, self.slaac = managed, other, slaac
        self.prefixes = list(prefixes)
        self.interval = interval

    def _argv(self):
        argv = ['--log', self.log_path, '--interval', str(self.interval)]
        for iface in self.ifaces:
            argv += ['--iface', iface]
        for prefix in self.prefixes:
            argv += ['--prefix', prefix]
        for flag in ('managed', 'other', 'slaac'):
            if getattr(self, flag):
                argv.append('--' + flag)
        return argv

    def sent(self):
        return len([r for r in self.records() if 'error' not in r])


class DhcpSentinel(_Helper):
    """Counts DHCPv4 (UDP 67) and DHCPv6 (UDP 547) packets; never answers.

    ``ifaces`` are joined to ff02::1:2 (default: all bridges of the lab at
    construction time).  Start it after the bridges exist.
    """

    mode = 'dhcp'

    def __init__(self, lab, ifaces=None, name='dhcp'):
        super().__init__(lab, name)
        self.ifaces = list(ifaces if ifaces is not None else lab.bridges)
        if not self.ifaces:
            raise LabError('DhcpSentinel needs at least one interface')

    def _argv(self):
        argv = ['--log', self.log_path]
        for iface in self.ifaces:
            argv += ['--iface', iface]
        return argv

    def packets(self, family=None):
        """DHCP packets seen so far (dicts, see menu_server.py)."""
        return [p for p in self.records() if 'sync' not in p
                and (family is None or p['family'] == family)]

    def count(self, family=None):
        """Packets seen so far (family 4, 6 or None for both).

        Call ``sync()`` first for an exact figure after a boot ended.
        """
        return len(self.packets(family))

    def sync(self, timeout=10):
        """Wait until every packet that reached the sentinel is logged.

        Sends a marker over loopback (IPv4 and IPv6) from inside the
        namespace and waits for both to show up in the log.
        """
        token = secrets.token_hex(8)
        self.lab.run([sys.executable, MENU_SERVER, 'sync', token])

        def find(records):
            fams = {r['family'] for r in records if r.get('sync') == token}
            return True if fams == {4, 6} else None
        self._wait('sync marker %s' % token, find, timeout)

    def wait_for_count(self, n=1, timeout=60, family=None, vm=None):
        """Wait until ``n`` packets were seen; return them."""
        def find(records):
            got = [p for p in records if 'sync' not in p
                   and (family is None or p['family'] == family)]
            return got if len(got) >= n else None
        return self._wait('%d DHCP packet(s)' % n, find, timeout, vm)


# ---------------------------------------------------------------------------
# QEMU

@dataclasses.dataclass
class Nic:
    tap: str
    mac: str
    model: str = 'e1000'      # or 'virtio-net-pci'
    romfile: str = ''         # '' = no option ROM (the NIC never PXEs)


@dataclasses.dataclass
class BootResult:
    returncode: int           # None if it could not be reaped
    timed_out: bool           # killed by wait() after its timeout
    stopped: bool             # ended by stop() (QEMU exits 0 on SIGTERM)
    wall_time: float          # seconds from process start to exit
    started_at: float         # time.time() just before the process start
    ended_at: float           # time.time() at exit
    serial: str               # raw serial console text
    stderr: str
    argv: list

    @property
    def ok(self):
        return (self.returncode == 0 and not self.timed_out
                and not self.stopped)

    @property
    def serial_clean(self):
        return clean_serial(self.serial)


class Qmp:
    """A minimal QMP client over a unix socket."""

    def __init__(self, path, timeout=10):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self._buf = b''
        self._read()  # greeting
        self.execute('qmp_capabilities')

    def _read(self):
        while True:
            while b'\n' not in self._buf:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise LabError('QMP connection closed')
                self._buf += chunk
            line, self._buf = self._buf.split(b'\n', 1)
            if not line.strip():
                continue
            msg = json.loads(line)
            if 'event' not in msg:
                return msg

    def execute(self, command, **arguments):
        req = {'execute': command}
        if arguments:
            req['arguments'] = arguments
        self.sock.sendall(json.dumps(req).encode() + b'\n')
        reply = self._read()
        if 'error' in reply:
            raise LabError('QMP %s: %s' % (command, reply['error']))
        return reply.get('return')

    def close(self):
        self.sock.close()


class Vm:
    """One QEMU (TCG) guest in the lab.

    Give either ``cdrom`` (booted with ``-boot d``) or ``kernel`` (and
    ``initrd``; with ``/boot/ipxe.lkrn`` an initrd starting with ``#!ipxe``
    is run as its script).  ``nics`` is a list of ``Nic`` (or tuples
    ``(tap, mac[, model])``).  ``firmware`` is ``'bios'`` (SeaBIOS, console
    mirrored to serial through ``etc/sercon-port``) or ``'uefi'`` (OVMF,
    private copy of the variable store).
    """

    def __init__(self, lab, *, cdrom=None, kernel=None, initrd=None,
                 append=None, nics=(), firmware='bios', memory=256,
                 machine=None, name='vm', sercon=True, extra_args=(),
                 disk=None):
        if sum(1 for x in (cdrom, kernel, disk) if x) != 1:
            raise LabError('give exactly one of cdrom=, disk= or kernel=')
        if initrd and not kernel:
            raise LabError('initrd= needs kernel=')
        if firmware not in ('bios', 'uefi'):
            raise LabError('firmware must be bios or uefi, not %r'
                           % firmware)
        for path in (cdrom, kernel, initrd, disk):
            if path and not os.path.isfile(path):
                raise LabError('no such file: %s' % path)
        self.lab = lab
        self.cdrom = cdrom and os.path.abspath(cdrom)
        self.disk = disk and os.path.abspath(disk)
        self.kernel = kernel and os.path.abspath(kernel)
        self.initrd = initrd and os.path.abspath(initrd)
        self.append = append
        self.nics = [n if isinstance(n, Nic) else Nic(*n) for n in nics]
        self.firmware = firmware
        self.memory = memory
        self.machine = machine
        self.name = name
        self.sercon = sercon
        self.extra_args = list(extra_args)
        self.serial_path = lab.path('serial-%s.log' % name)
        self.stderr_path = lab.path('qemu-%s-stderr.log' % name)
        self.qmp_path = lab.path('qmp-%s.sock' % name)
        self.proc = None
        self.started_at = None
        self._started_mono = None
        self._ended_mono = None
        self._ended = threading.Event()
        self.ended_at = None
        self.timed_out = False
        self.stopped = False
        self.result = None
        self._argv = None

    def command(self):
        """The QEMU argv (run inside the namespace by ``start()``)."""
        if self._argv is not None:
            return list(self._argv)
        lab = self.lab
        argv = [QEMU, '-name', self.name, '-accel', 'tcg',
                '-m', str(self.memory), '-nodefaults', '-no-reboot']
        if self.machine:
            argv += ['-machine', self.machine]
        argv += ['-vga', 'std', '-display', 'none',
                 '-chardev', 'file,id=serial0,path=%s'
                 % _qemu_opt(self.serial_path),
                 '-serial', 'chardev:serial0',
                 '-qmp', 'unix:%s,server=on,wait=off'
                 % _qemu_opt(self.qmp_path)]
        if self.firmware == 'bios':
            if self.sercon:
                port = lab.write_file('sercon-port.bin',
                                      struct.pack('<H', COM1))
                argv += ['-fw_cfg', 'name=etc/sercon-port,file=%s'
                         % _qemu_opt(port)]
        else:
            vars_copy = lab.path('ovmf-vars-%s.fd' % self.name)
            shutil.copyfile(OVMF_VARS, vars_copy)
            argv += ['-drive', 'if=pflash,format=raw,unit=0,readonly=on,'
                     'file=%s' % _qemu_opt(OVMF_CODE),
                     '-drive', 'if=pflash,format=raw,unit=1,file=%s'
                     % _qemu_opt(vars_copy)]
        if self.cdrom:
            argv += ['-cdrom', self.cdrom, '-boot', 'd']
        elif self.disk:
            # A raw image as the first hard disk (an isohybrid ISO, say);
            # snapshot=on keeps the file unchanged.
            argv += ['-drive', 'file=%s,format=raw,if=virtio,snapshot=on'
                     % _qemu_opt(self.disk), '-boot', 'c']
        else:
            argv += ['-kernel', self.kernel]
            if self.initrd:
                argv += ['-initrd', self.initrd]
            if self.append:
                argv += ['-append', self.append]
        for i, nic in enumerate(self.nics):
            if nic.tap not in lab.taps:
                raise LabError('no tap %r in lab %s' % (nic.tap, lab.name))
            argv += ['-netdev', 'tap,id=net%d,ifname=%s,script=no,'
                     'downscript=no' % (i, nic.tap),
                     '-device', '%s,netdev=net%d,mac=%s,romfile=%s'
                     % (nic.model, i, nic.mac, _qemu_opt(nic.romfile))]
        argv += self.extra_args
        self._argv = argv
        return list(argv)

    def start(self):
        if self.proc is not None:
            raise LabError('VM %s already started' % self.name)
        argv = self.command()
        open(self.serial_path, 'a').close()
        with open(self.stderr_path, 'ab') as err:
            self.started_at = time.time()
            self._started_mono = time.monotonic()
            self.proc = self.lab.popen(argv, stdout=err, stderr=err)
        # Record the exit time as it happens, whoever looks later.
        threading.Thread(target=self._reap, daemon=True,
                         name='bootlab-reap-%s' % self.name).start()
        return self

    def _reap(self):
        self.proc.wait()
        self._ended_mono = time.monotonic()
        self.ended_at = time.time()
        self._ended.set()

    @property
    def exited(self):
        return self._ended.is_set()

    @property
    def elapsed(self):
        """Seconds since the process start (until exit, once exited)."""
        if self._started_mono is None:
            return 0.0
        end = self._ended_mono if self.exited else time.monotonic()
        return end - self._started_mono

    def wait(self, timeout=120):
        """Wait for QEMU to exit; return a BootResult.

        ``timeout`` counts from the process start; QEMU is killed (SIGTERM,
        then SIGKILL) when it runs longer, and the result says timed_out.
        """
        if self.result is not None:
            return self.result
        if self.proc is None:
            raise LabError('VM %s was not started' % self.name)
        left = timeout - (time.monotonic() - self._started_mono)
        if not self._ended.wait(max(left, 0.01)):
            self.timed_out = True
            _terminate(self.proc)
        return self._finish()

    def stop(self):
        """Stop QEMU now (SIGTERM/SIGKILL to its group); return result."""
        if self.result is not None:
            return self.result
        if self.proc is None:
            raise LabError('VM %s was not started' % self.name)
        if not self.exited:
            self.stopped = True
            _terminate(self.proc)
        return self._finish()

    def _finish(self):
        if not self._ended.wait(30):  # pragma: no cover
            raise LabError('QEMU pid %s of VM %s does not exit'
                           % (self.proc.pid, self.name))
        self.result = BootResult(
            returncode=self.proc.returncode, timed_out=self.timed_out,
            stopped=self.stopped,
            wall_time=self._ended_mono - self._started_mono,
            started_at=self.started_at, ended_at=self.ended_at,
            serial=self.serial_text(), stderr=self._read(self.stderr_path),
            argv=self.lab.netns_argv(self.command()))
        return self.result

    def describe_exit(self):
        if self.proc is None:
            return 'not started'
        if not self.exited:
            return 'running for %.1f s' % self.elapsed
        return 'exit %s after %.1f s%s%s' % (
            self.proc.returncode, self.elapsed,
            ', timed out' if self.timed_out else '',
            ', stopped' if self.stopped else '')

    @staticmethod
    def _read(path):
        try:
            with open(path, 'rb') as f:
                return f.read().decode('utf-8', 'replace')
        except FileNotFoundError:
            return ''

    def serial_text(self, clean=False):
        text = self._read(self.serial_path)
        return clean_serial(text) if clean else text

    def serial_tail(self, lines=25):
        tail = self.serial_text(clean=True).splitlines()[-lines:]
        # QEMU warns that etc/sercon-port is not under opt/; SeaBIOS only
        # reads that exact name, so the warning is expected noise.
        stderr = '\n'.join(
            line for line in self._read(self.stderr_path).splitlines()
            if 'externally provided fw_cfg item names' not in line).strip()
        out = '\n'.join(tail) or '(serial console empty)'
        if stderr:
            out += '\n[qemu stderr] ' + stderr[-2000:]
        return out

    def wait_serial(self, pattern, timeout=60):
        """Wait until the (cleaned) serial text matches regex ``pattern``."""
        deadline = time.monotonic() + timeout
        rx = re.compile(pattern)
        while True:
            m = rx.search(self.serial_text(clean=True))
            if m:
                return m
            if self.exited:
                raise LabError('VM %s ended (%s) before serial output %r:\n%s'
                               % (self.name, self.describe_exit(), pattern,
                                  self.serial_tail()))
            if time.monotonic() >= deadline:
                raise LabTimeout('no serial output %r within %.1f s:\n%s'
                                 % (pattern, timeout, self.serial_tail()))
            time.sleep(0.05)

    def qmp(self, command, timeout=10, **arguments):
        """Run one QMP command and return its result."""
        if self.proc is None or self.exited:
            raise LabError('VM %s is not running' % self.name)
        deadline = time.monotonic() + timeout
        while not os.path.exists(self.qmp_path):
            if time.monotonic() > deadline or self.exited:
                raise LabError('no QMP socket for VM %s' % self.name)
            time.sleep(0.05)
        client = Qmp(self.qmp_path, timeout=timeout)
        try:
            return client.execute(command, **arguments)
        finally:
            client.close()

    def screenshot(self, path):
        """Save the VGA screen as PNG; return (width, height)."""
        path = os.path.abspath(path)
        self.qmp('screendump', filename=path, format='png')
        return check_png(path)


def boot(lab, timeout=120, **vm_kwargs):
    """Start a Vm (see its arguments), wait for it, return BootResult."""
    return Vm(lab, **vm_kwargs).start().wait(timeout)


# ---------------------------------------------------------------------------
# command line (for the demo and for poking around)

def _cmd_boot(args):
    check_prerequisites(uefi=args.firmware == 'uefi')
    body = '#!ipxe\necho bootlab: menu reached\nreboot\n'
    if args.menu_file:
        with open(args.menu_file, encoding='utf-8') as f:
            body = f.read()
    with Lab(keep_workdir=args.keep) as lab:
        br = lab.add_bridge('br0', ipv4=args.bridge_ipv4,
                            ipv6=args.bridge_ipv6)
        lab.add_tap('tap0', 'br0')
        servers = [MenuServer(lab, addr, args.port, {args.path: body},
                              name='menu%d' % i).start()
                   for i, addr in enumerate(a for a in (br.ip4, br.ip6)
                                            if a)]
        dhcp = DhcpSentinel(lab).start()
        vm = Vm(lab, cdrom=args.cdrom, firmware=args.firmware,
                nics=[Nic('tap0', args.mac or unique_mac(), args.model)])
        vm.start()
        result = vm.wait(args.timeout)
        dhcp.sync()
        reqs = sorted((r for m in servers for r in m.requests()),
                      key=lambda r: r['time'])
        first = min((r['time'] for r in reqs), default=None)
        summary = {
            'namespace': lab.name, 'workdir': lab.workdir,
            'workdir_kept': bool(args.keep),
            'command': shlex.join(result.argv),
            'returncode': result.returncode,
            'timed_out': result.timed_out, 'wall_time': result.wall_time,
            'first_request_after': (first - result.started_at
                                    if first else None),
            'requests': reqs, 'dhcp_packets': dhcp.count(),
        }
        if args.serial:
            summary['serial'] = result.serial_clean
        print(json.dumps(summary, indent=2))
        return 0 if result.ok and reqs else 1


def main(argv=None):
    parser = argparse.ArgumentParser(
        description='Boot an ISO on a private lab network with no DHCP: '
                    'one bridge, a menu server on each bridge address, a '
                    'DHCP sentinel.')
    sub = parser.add_subparsers(dest='cmd', required=True)
    p = sub.add_parser('boot', help='boot an ISO, print a JSON summary')
    p.add_argument('--cdrom', required=True)
    p.add_argument('--firmware', choices=('bios', 'uefi'), default='bios')
    p.add_argument('--model', default='e1000')
    p.add_argument('--mac')
    p.add_argument('--port', type=int, default=8080)
    p.add_argument('--path', default='/menu')
    p.add_argument('--menu-file',
                   help='iPXE script served at --path (default: reboot)')
    p.add_argument('--bridge-ipv4', default='192.0.2.1/24')
    p.add_argument('--bridge-ipv6', default='2001:db8::1/64')
    p.add_argument('--timeout', type=float, default=120)
    p.add_argument('--serial', action='store_true',
                   help='include the serial console in the summary')
    p.add_argument('--keep', action='store_true', help='keep the workdir')
    p.set_defaults(func=_cmd_boot)
    p = sub.add_parser('reap', help='delete namespaces of dead labs')
    p.set_defaults(func=lambda a: print('\n'.join(reap_stale())) or 0)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == '__main__':
    sys.exit(main())
