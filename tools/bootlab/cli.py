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


"""``python -m tools.bootlab``: boot an ISO on a fresh lab, or reap."""

import argparse
import json
import shlex

from tools.bootlab import dhcp
from tools.bootlab import menu
from tools.bootlab import netns
from tools.bootlab import prerequisites
from tools.bootlab import vm


def _cmd_boot(args):
    prerequisites.check_prerequisites(uefi=args.firmware == 'uefi')
    body = '#!ipxe\necho bootlab: menu reached\nreboot\n'
    if args.menu_file:
        with open(args.menu_file, encoding='utf-8') as f:
            body = f.read()
    with netns.Lab(keep_workdir=args.keep) as lab:
        br = lab.add_bridge('br0', ipv4=args.bridge_ipv4,
                            ipv6=args.bridge_ipv6)
        lab.add_tap('tap0', 'br0')
        servers = [menu.MenuServer(lab, addr, args.port, {args.path: body},
                                   name='menu%d' % i).start()
                   for i, addr in enumerate(a for a in (br.ip4, br.ip6)
                                            if a)]
        sentinel = dhcp.DhcpSentinel(lab).start()
        guest = vm.Vm(lab, cdrom=args.cdrom, firmware=args.firmware,
                      nics=[vm.Nic('tap0', args.mac or vm.unique_mac(),
                                   args.model)])
        guest.start()
        result = guest.wait(args.timeout)
        sentinel.sync()
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
            'requests': reqs, 'dhcp_packets': sentinel.count(),
        }
        if args.serial:
            summary['serial'] = result.serial_clean
        print(json.dumps(summary, indent=2))
        return 0 if result.ok and reqs else 1


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog='python -m tools.bootlab',
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
    p.set_defaults(func=lambda a: print('\n'.join(netns.reap_stale())) or 0)
    args = parser.parse_args(argv)
    return args.func(args)
