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

"""The nova-ipxe demo: one instance, end to end, on this machine.

Starts a local Glance, uploads Debian's iPXE ISO as ``ipxe-boot`` with
``hw_ipxe_boot=true``, builds the per-instance ISO for a sample instance
(``tools/demo/network_data.json``) by image ID (fetched, verified and
cached as on a compute host), boots it in QEMU on a network namespace with
no DHCP server, and reports what the menu server saw.  Run it through
``tools/demo.sh`` (which installs what it needs); everything it creates
is removed at the end except the output directory (the ISO, the console
screenshot, the serial log).
"""

import argparse
import json
import os
import shutil
import sys
import time
import uuid

from oslo_config import cfg

from nova_ipxe import builder
from nova_ipxe import cache
from nova_ipxe import conf as ipxe_conf
from nova_ipxe import exception
from nova_ipxe import glance
from tools import bootlab
from tools import glancelab
from tools import stock

REPO = stock.REPO
NETWORK_DATA = stock.NETWORK_DATA
TRIXIE_ISO = stock.TRIXIE_ISO
BOOT_TIMEOUT = 180

# A small netboot.xyz-style menu: it shows what iPXE was given, then
# reports the standard settings back and reboots (ending the demo).
MENU = '''#!ipxe
echo
echo ==== nova-ipxe demo menu ====
echo instance ${hostname} is at ${ip}/${netmask} via ${gateway}, dns ${dns}
echo and ${ip6}/${len6} via ${gateway6}, dns ${dns6}
echo no DHCP was used: this menu could now boot an installer with
echo ip=${ip}::${gateway}:${netmask}:::none nameserver=${dns}
sleep 3
chain %(seen)s?ip=${ip}&ip6=${ip6}&dns=${dns} || echo report failed
sleep 1
reboot
'''
BYE = '#!ipxe\necho demo: done\nsleep 1\nreboot\n'


def parse_args(argv):
    p = argparse.ArgumentParser(prog='tools/demo.sh', description=__doc__)
    p.add_argument('--source', default=bootlab.IPXE_ISO,
                   help='stock iPXE ISO (default: Debian\'s)')
    p.add_argument('--uefi', action='store_true',
                   help='boot under OVMF with Debian trixie\'s iPXE ISO')
    p.add_argument('--output', default=os.path.join(REPO, 'demo-output'),
                   help='directory for the ISO, screenshot and serial log')
    return p.parse_args(argv)


def load_conf(menu_url):
    conf = cfg.ConfigOpts()
    ipxe_conf.register_opts(conf)
    conf([], default_config_files=[])
    conf.set_override('boot_menu_url', menu_url, group='ipxe')
    conf.set_override('on_chain_failure', 'reboot', group='ipxe')
    return conf


def main(argv=None):
    args = parse_args(argv)
    firmware = 'uefi' if args.uefi else 'bios'
    source = TRIXIE_ISO if args.uefi else args.source
    bootlab.check_prerequisites(iso=True, uefi=args.uefi)
    with open(NETWORK_DATA) as f:
        network_data = json.load(f)
    link = network_data['links'][0]
    mac = link['ethernet_mac_address']
    os.makedirs(args.output, exist_ok=True)
    iso_path = os.path.join(args.output, 'instance.iso')
    shot = os.path.join(args.output, 'console.png')
    instance_uuid = str(uuid.uuid4())

    with bootlab.Lab() as lab:
        # The sample instance's subnets, on a bridge inside the namespace.
        lab.add_bridge('br0', ipv4='192.0.2.1/24', ipv6='2001:db8::1/64')
        lab.add_tap('tap0', 'br0')
        dhcp = bootlab.DhcpSentinel(lab).start()
        menu = bootlab.MenuServer(lab, '192.0.2.1', 0).start()
        menu.set_routes({'/menu.ipxe': MENU % {
            'seen': menu.url_for('/seen')}, '/seen': BYE})

        conf = load_conf(menu.url_for('/menu.ipxe'))
        with glancelab.GlanceServer() as server:
            image_id = server.create_image('ipxe-boot', source, properties={
                'hw_ipxe_boot': 'true'})
            print('Glance at %s: uploaded %s as ipxe-boot (%s)'
                  % (server.url, source, image_id))
            client = glance.GlanceClient(server.url)
            base_cache = cache.BaseIsoCache(lab.path('cache'),
                                            conf.ipxe.cache_max_size)
            t0 = time.monotonic()
            result, rendered, entry = builder.build_iso_from_image(
                client, base_cache, image_id, builder.Instance(
                    network_data=network_data, uuid=instance_uuid,
                    hostname='demo-1'), iso_path, conf)
            build_ms = (time.monotonic() - t0) * 1000
        print('fetched %d bytes (%s verified, %s) into the base-ISO cache'
              % (entry.info.size, entry.info.hash_algo,
                 'downloaded' if entry.downloaded else 'cached'))
        print('built %s in %.0f ms (%d bytes, BIOS %s, UEFI %s)' % (
            iso_path, build_ms, result.size, 'yes' if result.bios else 'no',
            'yes' if result.uefi else 'no'))
        print('booting it (%s, QEMU TCG) on namespace %s, no DHCP server'
              % (firmware.upper(), lab.name))

        vm = bootlab.Vm(lab, cdrom=iso_path, firmware=firmware,
                        nics=[bootlab.Nic('tap0', mac)])
        vm.start()
        request = menu.wait_for('/menu.ipxe', timeout=BOOT_TIMEOUT, vm=vm)
        # The console still shows iPXE configuring the network and the
        # menu's first lines.
        time.sleep(1.5)
        vm.screenshot(shot)
        seen = menu.wait_for('/seen', timeout=BOOT_TIMEOUT, vm=vm)
        boot = vm.wait(BOOT_TIMEOUT)
        dhcp.sync()
        with open(os.path.join(args.output, 'serial.log'), 'w') as f:
            f.write(boot.serial_clean)
        shutil.copy(NETWORK_DATA, os.path.join(args.output,
                                               'network_data.json'))

        print()
        print('menu server saw       %s from %s' % (request['path'],
                                                    request['client']))
        print('identity query        %s' % ', '.join(
            '%s=%s' % kv for kv in request['query'].items()))
        print('settings it was given ip=%s ip6=%s dns=%s' % (
            seen['query'].get('ip'), seen['query'].get('ip6'),
            seen['query'].get('dns')))
        print('power-on to menu      %.2f s' % (request['time']
                                                - vm.started_at))
        print('DHCP packets sent     %d' % dhcp.count())
        print('VM exit status        %d (the menu rebooted it)'
              % boot.returncode)
        print('console screenshot    %s' % shot)
        print('serial log            %s' % os.path.join(args.output,
                                                        'serial.log'))
        ok = (request['client'] == rendered.menu_nic.ipv4.ip.compressed
              and dhcp.count() == 0 and boot.returncode == 0)
    print('demo %s' % ('OK' if ok else 'FAILED'))
    return 0 if ok else 1


if __name__ == '__main__':
    try:
        sys.exit(main())
    except (exception.NovaIpxeError, bootlab.LabError,
            glancelab.GlanceLabError) as e:
        print('demo: error: %s' % e, file=sys.stderr)
        sys.exit(1)
