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


"""One QEMU (TCG) guest in a lab: NICs, firmware, serial console, QMP."""

import dataclasses
import json
import os
import re
import secrets
import shutil
import socket
import struct
import threading
import time
import zlib

from tools.bootlab import errors
from tools import labproc

QEMU = 'qemu-system-x86_64'
SEABIOS = '/usr/share/seabios/bios-256k.bin'
VGABIOS = '/usr/share/seabios/vgabios-stdvga.bin'
OVMF_CODE = '/usr/share/OVMF/OVMF_CODE.fd'
OVMF_VARS = '/usr/share/OVMF/OVMF_VARS.fd'
MAC_PREFIX = 'fa:16:3e'
COM1 = 0x3f8
PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'

_ANSI_RE = re.compile(r'\x1b(\[[0-?]*[ -/]*[@-~]|[@-Z\\-_]|c)')


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
        raise errors.LabError(
            '%s is not a PNG (signature %r)' % (path, data[:8]))
    length, ctype = struct.unpack('>I4s', data[8:16])
    if ctype != b'IHDR' or length != 13:
        raise errors.LabError('%s: first chunk is %r (%d bytes), not IHDR'
                              % (path, ctype, length))
    body = data[16:16 + length]
    (crc,) = struct.unpack('>I', data[16 + length:20 + length])
    if zlib.crc32(ctype + body) != crc:
        raise errors.LabError('%s: IHDR CRC mismatch' % path)
    width, height = struct.unpack('>II', body[:8])
    if not width or not height:
        raise errors.LabError('%s: empty image %dx%d' % (path, width, height))
    if not data.endswith(b'IEND\xaeB`\x82'):
        raise errors.LabError('%s: no IEND chunk at the end' % path)
    return width, height


def _qemu_opt(value):
    """Escape a value for a QEMU ``key=value,...`` option."""
    return str(value).replace(',', ',,')


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
                    raise errors.LabError('QMP connection closed')
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
            raise errors.LabError('QMP %s: %s' % (command, reply['error']))
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
            raise errors.LabError(
                'give exactly one of cdrom=, disk= or kernel=')
        if initrd and not kernel:
            raise errors.LabError('initrd= needs kernel=')
        if firmware not in ('bios', 'uefi'):
            raise errors.LabError('firmware must be bios or uefi, not %r'
                                  % firmware)
        for path in (cdrom, kernel, initrd, disk):
            if path and not os.path.isfile(path):
                raise errors.LabError('no such file: %s' % path)
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
                raise errors.LabError('no tap %r in lab %s'
                                      % (nic.tap, lab.name))
            argv += ['-netdev', 'tap,id=net%d,ifname=%s,script=no,'
                     'downscript=no' % (i, nic.tap),
                     '-device', '%s,netdev=net%d,mac=%s,romfile=%s'
                     % (nic.model, i, nic.mac, _qemu_opt(nic.romfile))]
        argv += self.extra_args
        self._argv = argv
        return list(argv)

    def start(self):
        if self.proc is not None:
            raise errors.LabError('VM %s already started' % self.name)
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
            raise errors.LabError('VM %s was not started' % self.name)
        left = timeout - (time.monotonic() - self._started_mono)
        if not self._ended.wait(max(left, 0.01)):
            self.timed_out = True
            labproc.terminate(self.proc)
        return self._finish()

    def stop(self):
        """Stop QEMU now (SIGTERM/SIGKILL to its group); return result."""
        if self.result is not None:
            return self.result
        if self.proc is None:
            raise errors.LabError('VM %s was not started' % self.name)
        if not self.exited:
            self.stopped = True
            labproc.terminate(self.proc)
        return self._finish()

    def _finish(self):
        if not self._ended.wait(30):  # pragma: no cover
            raise errors.LabError('QEMU pid %s of VM %s does not exit'
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
                raise errors.LabError(
                    'VM %s ended (%s) before serial output %r:\n%s'
                    % (self.name, self.describe_exit(), pattern,
                       self.serial_tail()))
            if time.monotonic() >= deadline:
                raise errors.LabTimeout(
                    'no serial output %r within %.1f s:\n%s'
                    % (pattern, timeout, self.serial_tail()))
            time.sleep(0.05)

    def qmp(self, command, timeout=10, **arguments):
        """Run one QMP command and return its result."""
        if self.proc is None or self.exited:
            raise errors.LabError('VM %s is not running' % self.name)
        deadline = time.monotonic() + timeout
        while not os.path.exists(self.qmp_path):
            if time.monotonic() > deadline or self.exited:
                raise errors.LabError('no QMP socket for VM %s' % self.name)
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
