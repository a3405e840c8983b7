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

"""A real compute host: libvirtd 9.0 and QEMU in a network namespace.

One boot lab (``tools/bootlab``: a namespace ``nipxe-<hex>``, deleted
afterwards) holds a bridge with the subnet's gateway address, the menu
server on it, a DHCP sentinel that counts (never answers) DHCP, and
libvirtd with virtlogd.  The daemons run in a mount namespace of their
own with tmpfs over /run/libvirt, /var/lib/libvirt, /var/log/libvirt,
/var/cache/libvirt and /etc/libvirt: nothing they write outlives them,
and a libvirtd of the machine (if any) is neither seen nor touched.
libvirtd listens on a socket in the lab's work directory
(``uri``).  The taps Nova creates land in the namespace when the Nova
process joins it (:meth:`RealHost.enter`); a port binder, the stand-in
for Neutron's L2 agent, puts every tap it sees on the bridge.

Needs root, the packages of bindep.txt, and the user ``libvirt-qemu``
and group ``libvirt-qemu`` that Debian's libvirtd is built to run QEMU
as (``tools/install-deps.sh`` creates them; libvirt-daemon-system would).
"""

import contextlib
import ctypes
import os
import shutil
import subprocess
import time

from tools import bootlab
from tools import labproc

GATEWAY = '192.0.2.1'
PREFIX = 24
BRIDGE = 'br-nova'
# Directories libvirtd writes to, each a tmpfs in its mount namespace.
LIBVIRT_DIRS = ('/run/libvirt', '/var/lib/libvirt', '/var/log/libvirt',
                '/var/cache/libvirt', '/etc/libvirt')
CLONE_NEWNET = 0x40000000
CLONE_NEWNS = 0x00020000
MS_REC = 0x4000
MS_SLAVE = 1 << 19
MNT_DETACH = 2

# Runs in the namespace (ip netns exec gives it a mount namespace of its
# own): private state directories, then virtlogd and libvirtd.  Where
# /dev/kvm exists but QEMU cannot use it (no VT-x here) and the QEMU user
# cannot open it, libvirt 9.0 probes QEMU with KVM yet finds KVM unusable
# for that user, and so throws its capabilities cache away on every
# lookup (seconds per API call, a minute per domain start): give the
# daemons a /dev/kvm that is no KVM device (then QEMU may not get a /dev
# of its own, where libvirt would fail to move that mount: namespaces).
START_DAEMONS = r'''
set -e
for d in %(dirs)s; do mount -t tmpfs -o mode=0755 tmpfs "$d"; done
if [ -e /dev/kvm ]; then
    : > /run/libvirt/no-kvm
    chmod 600 /run/libvirt/no-kvm
    mount --bind /run/libvirt/no-kvm /dev/kvm
    echo 'namespaces = []' > /etc/libvirt/qemu.conf
fi
printf 'unix_sock_dir = "%%s"\n' "$1" > /etc/libvirt/libvirtd.conf
virtlogd -d
exec libvirtd
''' % {'dirs': ' '.join(LIBVIRT_DIRS)}

# The stand-in for Neutron's L2 agent: every tap in the namespace goes on
# the bridge, up (Nova's vif_type=tap leaves that to the agent).
PORT_BINDER = r'''
while :; do
  for d in /sys/class/net/tap*; do
    [ -e "$d" ] || continue
    [ -e "$d/master" ] && continue
    ip link set "${d##*/}" master "$1" up 2>/dev/null || true
  done
  sleep 0.1
done
'''


class HostError(RuntimeError):
    """The real compute host could not be set up."""


def _check_prerequisites():
    missing = [t for t in ('libvirtd', 'virtlogd', 'virsh', 'ip',
                           'qemu-system-x86_64', 'qemu-img', 'nsenter')
               if shutil.which(t) is None]
    if missing:
        raise HostError('missing commands %s: run tools/install-deps.sh '
                        '(bindep.txt)' % ', '.join(missing))
    for what, db in (('user', 'passwd'), ('group', 'group')):
        if subprocess.run(['getent', db, 'libvirt-qemu'],
                          capture_output=True).returncode:
            raise HostError('no %s libvirt-qemu (Debian\'s libvirtd runs '
                            'QEMU as libvirt-qemu:libvirt-qemu): run '
                            'tools/install-deps.sh' % what)


_libc = ctypes.CDLL(None, use_errno=True)


def _check(result, what):
    if result != 0:
        raise HostError('%s: %s' % (what, os.strerror(ctypes.get_errno())))


def _setns(path):
    with open(path) as f:
        _check(_libc.setns(f.fileno(), CLONE_NEWNET), 'setns(%s)' % path)


def _own_sysfs():
    """A mount namespace of this process's own with its netns's /sys.

    What ``ip netns exec`` does: Nova looks for its taps under
    /sys/class/net before it deletes them.
    """
    _check(_libc.unshare(CLONE_NEWNS), 'unshare(CLONE_NEWNS) (only a '
           'single-threaded process can: enter the host before Nova '
           'starts threads)')
    _check(_libc.mount(b'none', b'/', None, MS_REC | MS_SLAVE, None),
           'mount --make-rslave /')
    _check(_libc.umount2(b'/sys', MNT_DETACH), 'umount /sys')
    _check(_libc.mount(b'sysfs', b'/sys', b'sysfs', 0, None),
           'mount sysfs /sys')


class RealHost:
    """The lab with libvirtd, menu server, DHCP sentinel, port binder."""

    def __init__(self, menu_body):
        self.menu_body = menu_body
        self.lab = None
        self.menu = None
        self.dhcp = None
        self.libvirtd = None
        self.uri = None
        self._home_ns = None
        self._home_mnt = None

    def start(self, timeout=60):
        _check_prerequisites()
        for d in LIBVIRT_DIRS:
            # Mount points for the daemons' tmpfs (empty, what Debian's
            # package would create).
            os.makedirs(d, exist_ok=True)
        self.lab = bootlab.Lab().setup()
        try:
            self._start(timeout)
        except BaseException:
            self.cleanup()
            raise
        return self

    def _start(self, timeout):
        lab = self.lab
        # QEMU runs as libvirt-qemu: it must reach the instance files.
        os.chmod(lab.workdir, 0o755)
        lab.add_bridge(BRIDGE, ipv4='%s/%d' % (GATEWAY, PREFIX))
        self.menu = bootlab.MenuServer(lab, GATEWAY, 0,
                                       {'/menu': self.menu_body}).start()
        self.dhcp = bootlab.DhcpSentinel(lab).start()
        sock_dir = lab.path('libvirt-sock')
        os.mkdir(sock_dir)
        self.libvirtd_log = lab.path('libvirtd.log')
        with open(self.libvirtd_log, 'ab') as log:
            self.libvirtd = lab.popen(
                ['sh', '-c', START_DAEMONS, 'start-daemons', sock_dir],
                stdout=log, stderr=subprocess.STDOUT)
        lab.popen(['sh', '-c', PORT_BINDER, 'port-binder', BRIDGE],
                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.uri = 'qemu:///system?socket=%s/libvirt-sock' % sock_dir
        deadline = time.monotonic() + timeout
        while self.virsh('version', check=False).returncode:
            if self.libvirtd.poll() is not None or (
                    time.monotonic() > deadline):
                raise HostError('libvirtd did not start: %s'
                                % labproc.tail(
                                    self.libvirtd_log))
            time.sleep(0.2)

    def enter(self):
        """Move this process into the namespace for good.

        The taps Nova creates then land there and Nova sees them in /sys.

        Call it before any other thread starts.
        """
        if self._home_ns is None:
            self._home_ns = os.open('/proc/self/ns/net', os.O_RDONLY)
            self._home_mnt = os.open('/proc/self/ns/mnt', os.O_RDONLY)
        _setns(os.path.join(bootlab.netns.NETNS_DIR, self.lab.name))
        _own_sysfs()

    def leave(self):
        if self._home_ns is not None:
            _setns('/proc/self/fd/%d' % self._home_ns)

    def cleanup(self):
        with contextlib.suppress(Exception):
            self.leave()
        if self._home_ns is not None:
            os.close(self._home_ns)
            self._home_ns = None
        if self.uri:
            # Guests first (QEMU is a child of libvirtd, not of the lab).
            for name in self.domains():
                self.virsh('destroy', name, check=False)
        if self.lab is not None and self._home_mnt is not None:
            # This process has a mount namespace of its own (enter): the
            # namespace's name must go from the machine's /run/netns.
            for pid in bootlab.netns._netns_pids(self.lab.name):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, 9)
            subprocess.run(['nsenter', '--mount=/proc/%d/fd/%d' % (
                os.getpid(), self._home_mnt), 'ip', 'netns', 'delete',
                self.lab.name], capture_output=True)
        if self.lab is not None:
            self.lab.cleanup()

    # -- what the host holds ---------------------------------------------

    def virsh(self, *args, check=True):
        out = subprocess.run(['virsh', '-q', '-c', self.uri, *args],
                             capture_output=True, text=True, timeout=120)
        if check and out.returncode:
            raise HostError('virsh %s: %s' % (' '.join(args),
                                              out.stderr.strip()))
        return out

    def domains(self):
        out = self.virsh('list', '--all', '--name', check=False)
        return [n for n in out.stdout.split() if n]

    def links(self):
        """{name: master} of the namespace's network devices."""
        out = self.lab.run(['ip', '-o', 'link', 'show'])
        links = {}
        for line in out.stdout.splitlines():
            name = line.split(':')[1].strip().split('@')[0]
            master = None
            words = line.split()
            if 'master' in words:
                master = words[words.index('master') + 1]
            links[name] = master
        return links

    def delete_taps(self):
        """Delete the taps left in the namespace (after a failed test)."""
        for name in self.links():
            if name.startswith('tap'):
                self.lab.run(['ip', 'link', 'delete', name], check=False)

    def bridge_ports(self):
        return sorted(n for n, m in self.links().items() if m == BRIDGE)

    def domain_log(self, name):
        """QEMU's log of the domain (libvirtd's tmpfs, via /proc)."""
        path = '/proc/%d/root/var/log/libvirt/qemu/%s.log' % (
            self.libvirtd.pid, name)
        try:
            with open(path, errors='replace') as f:
                return f.read()
        except OSError as e:
            return '(no log: %s)' % e

    def screenshot(self, name, path):
        """The guest's screen as PNG at ``path`` (libvirt's screenshot)."""
        raw = path + '.screen'
        self.virsh('screenshot', name, raw)
        try:
            with open(raw, 'rb') as f:
                data = f.read()
        finally:
            os.unlink(raw)
        if not data.startswith(b'\x89PNG'):
            data = ppm_to_png(data)
        with open(path, 'wb') as f:
            f.write(data)
        bootlab.check_png(path)
        return path


def ppm_to_png(data):
    """A binary PPM (P6, 8-bit: what QEMU's screendump writes) as PNG."""
    import struct
    import zlib
    fields = []
    pos = 0
    while len(fields) < 4:
        while data[pos:pos + 1].isspace():
            pos += 1
        if data[pos:pos + 1] == b'#':
            pos = data.index(b'\n', pos) + 1
            continue
        end = pos
        while not data[end:end + 1].isspace():
            end += 1
        fields.append(data[pos:end])
        pos = end
    magic, width, height, maxval = fields
    if magic != b'P6' or int(maxval) != 255:
        raise HostError('not an 8-bit P6 PPM: %r' % fields)
    width, height = int(width), int(height)
    pixels = data[pos + 1:pos + 1 + width * height * 3]
    stride = width * 3
    raw = b''.join(b'\0' + pixels[y * stride:(y + 1) * stride]
                   for y in range(height))

    def chunk(kind, body):
        return (struct.pack('>I', len(body)) + kind + body
                + struct.pack('>I', zlib.crc32(kind + body)))
    return (b'\x89PNG\r\n\x1a\n'
            + chunk(b'IHDR', struct.pack('>IIBBBBB', width, height, 8, 2,
                                         0, 0, 0))
            + chunk(b'IDAT', zlib.compress(raw, 6))
            + chunk(b'IEND', b''))
