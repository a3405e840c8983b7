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

"""What a spawn pays inside nova_ipxe.iso, step by step, in one process.

For each source ISO: ``BaseIso.from_path`` (a cold parse), the first
``capabilities()`` of that base, its first ``build`` and, from one parsed
base, ``--builds`` warm builds with a different script each time (same
length class, as instances of one network differ), each to a fresh output
path (removed untimed, as Nova removes an instance's ISO when it deletes
the server).  Prints min/p50/p90/p99/max in ms and the load average, which
on a shared machine says how far to trust them.

Run from the repository root with the project's Python::

    python bench/core_costs.py [--parses 20] [--builds 200]
    python bench/core_costs.py --code /path/to/other/checkout   # compare
    python bench/core_costs.py --no-templates   # what templates buy
"""

import argparse
import logging
import os
import shutil
import sys
import tempfile
import time

import benchlib  # bench/ itself, the script directory

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ISOS = (('bookworm', '/usr/lib/ipxe/ipxe.iso'),
        ('trixie', os.path.join(REPO, '.cache', 'trixie-ipxe', 'usr', 'lib',
                                'ipxe', 'ipxe.iso')))


def script(i):
    """A script like the driver renders, different per instance."""
    return ('#!ipxe\n' + ''.join(
        'set net%d/ip 192.0.2.%d\nset net%d/netmask 255.255.255.0\n'
        % (n, 10 + i % 200, n) for n in range(20))
        + 'chain http://192.0.2.1/menu?uuid=%08d\n' % i).encode()


def figures(values):
    ordered = sorted(values)

    def rank(p):
        return ordered[max(1, -(-p * len(ordered) // 100)) - 1] * 1e3
    return 'min %6.2f  p50 %6.2f  p90 %6.2f  p99 %6.2f  max %6.2f' % (
        ordered[0] * 1e3, rank(50), rank(90), rank(99), ordered[-1] * 1e3)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--parses', type=int, default=20)
    parser.add_argument('--builds', type=int, default=200)
    parser.add_argument('--code', default=REPO,
                        help='the checkout whose nova_ipxe to time')
    parser.add_argument('--no-templates', action='store_true',
                        help='build every ISO the long way (no template)')
    args = parser.parse_args()
    sys.path.insert(0, os.path.abspath(args.code))
    from nova_ipxe import iso
    logging.getLogger('nova_ipxe').setLevel(logging.ERROR)
    if args.no_templates:
        # "No template fits": each build assembles and writes in full.
        iso.BaseIso._template = lambda self, script, uefi: None
    out = tempfile.mkdtemp(prefix='core-costs.')
    print('nova_ipxe from %s%s; load average %s' % (
        os.path.dirname(os.path.dirname(sys.modules['nova_ipxe'].__file__)),
        ', no templates' if args.no_templates else '',
        ' '.join('%.2f' % x for x in os.getloadavg())))
    try:
        for name, path in ISOS:
            if not os.path.exists(path):
                raise benchlib.BenchError('%s ISO %s is missing' % (name,
                                                                    path))
            steps = {'from_path': [], 'capabilities 1st': [],
                     'build 1st': [], 'build warm': []}
            for i in range(args.parses):
                start = time.perf_counter()
                base = iso.BaseIso.from_path(path)
                steps['from_path'].append(time.perf_counter() - start)
                start = time.perf_counter()
                base.capabilities()
                steps['capabilities 1st'].append(time.perf_counter() - start)
                target = os.path.join(out, 'first.iso')
                start = time.perf_counter()
                base.build(script(i), target)
                steps['build 1st'].append(time.perf_counter() - start)
                os.unlink(target)
            for i in range(args.builds):
                target = os.path.join(out, 'vm%d.iso' % i)
                start = time.perf_counter()
                base.build(script(i), target)
                steps['build warm'].append(time.perf_counter() - start)
                os.unlink(target)
            for step, values in steps.items():
                print('%-9s %-17s %s ms (n=%d)' % (name, step,
                                                   figures(values),
                                                   len(values)))
    finally:
        shutil.rmtree(out, ignore_errors=True)
    print('load average after: %s' % ' '.join('%.2f' % x
                                              for x in os.getloadavg()))
    return 0


if __name__ == '__main__':
    benchlib.run_main(main, 'core_costs')
