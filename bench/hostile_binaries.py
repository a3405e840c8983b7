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

"""What the worst hostile iPXE binaries cost one ``nova-ipxe build-iso``.

An attack pass (December 2026) put binaries into ISOs that made reading their
capabilities run for hours (12 KiB of zero bytes after the setup header:
49 s; a kernel ending in zeros: an estimated 15 hours; a 96-byte LZMA
stream of names: 17.6 s; 20,000 PE sections: 8.9 s and 52 MB).  Each
case here wraps one such binary (tests/hostile.py) in an ISO, BIOS
(``ipxe.krn``) or UEFI (``efi.img:/EFI/BOOT/BOOTX64.EFI``), runs the CLI
on it in a fresh process and reports that process's CPU time and peak
memory (``wait4`` rusage), beside Debian's stock ISOs built the same way.

Run from the repository root with the project's Python::

    python bench/hostile_binaries.py
"""

import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

from tests import hostile  # noqa: E402
from tests import samples  # noqa: E402

# The goal for the worst case (security notes).
CPU_GOAL_S = 5.0
RSS_GOAL_MB = 500


def bios_iso(tmp, name, kernel):
    return samples.isolinux_iso(
        os.path.join(tmp, name + '.iso'),
        b'DEFAULT ipxe\nLABEL ipxe\n KERNEL /ipxe.krn\n',
        {('/IPXE.KRN;1', '/ipxe.krn'): kernel})


def uefi_iso(tmp, name, loader):
    _, _, files = samples.bookworm_parts()
    efi = samples.fat_image(os.path.join(tmp, name + '.img'), {
        '/EFI/BOOT/BOOTX64.EFI': loader}, size_kib=4096)
    with open(efi, 'rb') as f:
        image = f.read()
    return samples.isolinux_iso(
        os.path.join(tmp, name + '.iso'),
        b'DEFAULT ipxe\nLABEL ipxe\n KERNEL /ipxe.krn\n',
        {('/IPXE.KRN;1', '/ipxe.krn'): files['/ipxe.krn'],
         ('/EFI.IMG;1', '/efi.img'): image}, efi='/EFI.IMG;1')


def build(source, out):
    """(exit status, CPU seconds, peak RSS MB, wall s, last stderr line)."""
    cmd = [sys.executable, '-m', 'nova_ipxe.cli', 'build-iso',
           '--source', source, '--network-data', samples.NETWORK_DATA,
           '--menu-url', 'http://192.0.2.1:8080/menu.ipxe', '--output', out]
    start = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, cwd=samples.REPO)
    err = proc.stderr.read().decode('utf-8', 'replace')
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    lines = [line for line in err.splitlines() if 'WARNING' in line
             or 'error' in line]
    note = lines[-1].split('] ', 1)[-1] if lines else ''
    return (proc.returncode, usage.ru_utime + usage.ru_stime,
            usage.ru_maxrss / 1024, wall, note)


def main():
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        cases = [('stock bookworm', samples.bookworm_iso()),
                 ('stock trixie', samples.trixie_iso())]
        for name, (make, what) in hostile.CASES.items():
            data = make()
            cases.append((name, (uefi_iso if data[:2] == b'MZ'
                                 else bios_iso)(tmp, name, data)))
        for name, source in cases:
            status, cpu, rss, wall, note = build(
                source, os.path.join(tmp, 'out.iso'))
            rows.append((name, status, cpu, rss, wall, note))
    print('%-20s %6s %8s %9s %8s  %s' % (
        'case', 'exit', 'CPU s', 'peak MB', 'wall s', 'what the build said'))
    for name, status, cpu, rss, wall, note in rows:
        print('%-20s %6d %8.2f %9.0f %8.2f  %s' % (name, status, cpu, rss,
                                                   wall, note[:90]))
    worst = max(rows, key=lambda r: r[2])
    heaviest = max(rows, key=lambda r: r[3])
    print('worst CPU: %s, %.2f s (goal %.0f s); largest peak: %s, %.0f MB '
          '(goal %d MB)' % (worst[0], worst[2], CPU_GOAL_S, heaviest[0],
                            heaviest[3], RSS_GOAL_MB))
    return 0 if worst[2] <= CPU_GOAL_S and heaviest[3] <= RSS_GOAL_MB else 1


if __name__ == '__main__':
    sys.exit(main())
