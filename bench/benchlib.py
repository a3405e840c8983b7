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

"""Helpers shared by the benchmarks in this directory."""

import os
import platform
import statistics
import subprocess
import sys


def proc_status(key):
    """VmRSS / VmHWM of this process in KiB (None off Linux)."""
    try:
        with open('/proc/self/status') as f:
            for line in f:
                if line.startswith(key + ':'):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def reset_peak_rss():
    # "5" resets VmHWM to the current RSS (Linux 4.0+).
    try:
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')
        return True
    except OSError:
        return False


def unlink(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def median(values):
    return statistics.median(values) if values else None


def p95(values):
    # Nearest rank: an observed value, no interpolation.
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-95 * len(ordered) // 100))
    return ordered[rank - 1]


def first_line(argv):
    try:
        proc = subprocess.run(argv, capture_output=True, text=True)
    except OSError:
        return None
    for line in (proc.stdout + proc.stderr).splitlines():
        if line.strip():
            return line.strip()
    return None


def fs_type(path):
    best = ('', '?')
    try:
        with open('/proc/mounts') as f:
            for line in f:
                fields = line.split()
                mnt = fields[1]
                if (path == mnt or path.startswith(mnt.rstrip('/') + '/')) \
                        and len(mnt) >= len(best[0]):
                    best = (mnt, fields[2])
    except OSError:
        pass
    return best[1]


def cpu_model():
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or '?'


def progress(text):
    if sys.stderr.isatty():
        print('  ... ' + text, file=sys.stderr)


class BenchError(Exception):
    """A problem worth one line to the user, not a traceback."""


def run_main(main, name):
    """Run a benchmark's main(): one line and exit 2 for a BenchError."""
    try:
        sys.exit(main())
    except BenchError as e:
        print('%s: %s' % (name, e), file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
    except BrokenPipeError:
        # Output piped into head and the like: stop quietly.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
