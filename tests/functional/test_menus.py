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

"""Real menus behind a nova-ipxe ISO, booted in QEMU (TCG) on a network
namespace with no DHCP server.

The menu served here is made of the lines that boot.rackspace.com's and
netboot.xyz's menus use to hand an installer the network settings (copied
below with attribution); it reports what they would put on a kernel
command line back to the menu server, then ends the way their "boot from
local disk" entries do (``exit 0`` / ``exit 1``).  The tests assert what
the menu server received, that the menu was fetched once, and that the
fallback ran once.  The boot banner of each iPXE is compared with what
:mod:`nova_ipxe.capabilities` reads from the binary.
"""

import json
import os
import re
import urllib.parse

import fixtures

from nova_ipxe import capabilities
from nova_ipxe import iso
from nova_ipxe import signature
from tests.functional import test_boot
from tests import samples
from tools import bootlab

BOOT_TIMEOUT = test_boot.BOOT_TIMEOUT
GW = '192.0.2.1'
DNS = '192.0.2.53'
KEY = 'lab-shared-key-0123456789abcdef'

# %(report)s is the report URL; %(exit)s how the menu ends.
MENU = '''#!ipxe
# From netboot.xyz, roles/netbootxyz/templates/menu/oracle.ipxe.j2 (and
# centos, fedora, almalinux), github.com/netbootxyz/netboot.xyz at 5e6620cc,
# Apache-2.0: static mode when no DHCP server answered.
isset ${dhcp-server} && set ipparam ip=dhcp || \
set ipparam ip=${ip}::${gateway}:${netmask}:::none nameserver=${dns}
set ipparam BOOTIF=${netX/mac} ${ipparam}
# From boot.rackspace.com, src/ubuntu.ipxe line 10, github.com/rackerlabs/
# boot.rackspace.com at 9c2a7bdb, Apache-2.0 (there behind
# "iseq ${manufacturer} Xen"; QEMU is not Xen).
set netcfg netcfg/get_ipaddress=${netX/ip} \
netcfg/get_netmask=${netX/netmask} netcfg/get_gateway=${netX/gateway} \
netcfg/get_nameservers=${dns} netcfg/confirm_static=true
# boot.rackspace.com's "Network card info" entry (src/menu.ipxe :netinfo)
# reads the same per-NIC views.
imgfetch %(report)s?oracle=${ipparam:uristring}&ubuntu=${netcfg:uristring}\
&mac=${netX/mac}&ip=${netX/ip}&netmask=${netX/netmask}\
&gateway=${netX/gateway}&dns=${netX/dns}&dhcp=${netX/dhcp-server} ||
echo nova-ipxe-test: leaving the menu with exit %(exit)s
exit %(exit)s
'''
REPORT = '#!ipxe\necho nova-ipxe-test: report received\n'


CONSOLE_COLUMNS = 80


def banner_features(serial):
    """The feature names of the first iPXE banner on the console.

    The console wraps at 80 columns: a full line continues on the next.
    """
    lines = re.split(r'\r?\n', serial)
    for i, line in enumerate(lines):
        if line.startswith('Features:'):
            text = line
            while (len(lines[i]) >= CONSOLE_COLUMNS
                   and i + 1 < len(lines)):
                i += 1
                text += lines[i]
            return text[len('Features:'):].split()
    return None


class MenuBootTestCase(test_boot.BootTestCase):

    def lan(self, count):
        """``count`` NICs on one bridge: (menu server, [(tap, mac)])."""
        self.lab.add_bridge('br0', ipv4=GW + '/24')
        taps = []
        for i, mac in enumerate(bootlab.unique_macs(count)):
            self.lab.add_tap('tap%d' % i, 'br0')
            taps.append(('tap%d' % i, mac))
        self.start_dhcp_sentinel()
        self.server = bootlab.MenuServer(self.lab, GW, 0, name='menu-4')
        return self.server, taps

    def serve(self, server, exit_code, **server_kw):
        server.start()
        server.set_routes({
            '/menu.ipxe': MENU % {'report': server.url_for('/report'),
                                  'exit': exit_code},
            '/report': REPORT})

    def boot_menu(self, nics, menu_index, exit_code=1, source=None,
                  firmware='bios', **flags):
        """Boot ``nics`` (.10, .11, ...), menu NIC ``nics[menu_index]``.

        The menu NIC is the only one with a gateway.
        Returns (report query, serial console text, menu server, Vm).
        """
        server = self.server
        data = samples.network_data_of(*[
            samples.nic_data(mac, 'port-%d' % i, ipv4=(
                '192.0.2.%d' % (10 + i), 24,
                GW if i == menu_index else None))
            for i, (_, mac) in enumerate(nics)], dns=[DNS])
        self.iso_path, _ = self.build(
            data, source=source or samples.bookworm_iso(),
            boot_menu_url=server.url_for('/menu.ipxe'),
            on_chain_failure='reboot', **flags)
        self.assertEqual(nics[menu_index][1], self.rendered.menu_nic.mac)
        self.firmware = firmware
        vm = self.boot(self.iso_path,
                       [bootlab.Nic(tap, mac) for tap, mac in nics])
        request = server.wait_for('/menu.ipxe', timeout=BOOT_TIMEOUT, vm=vm)
        # e.g. menus-two_nics_menu_nic_second_trixie
        self.record('menus-' + self.id().rsplit('.test_', 1)[-1], vm,
                    request)
        report = server.wait_for('/report', timeout=BOOT_TIMEOUT, vm=vm)
        result = vm.wait(BOOT_TIMEOUT)
        serial = result.serial_clean
        self.assertEqual(0, result.returncode, serial[-3000:])
        return report['query'], serial, server, request

    def assertInstallerArgs(self, query, ip, mac):
        """What the installers would be handed: the menu NIC's values."""
        self.assertEqual(
            'BOOTIF=%s ip=%s::%s:255.255.255.0:::none nameserver=%s'
            % (mac, ip, GW, DNS), query['oracle'])
        self.assertEqual(
            'netcfg/get_ipaddress=%s netcfg/get_netmask=255.255.255.0 '
            'netcfg/get_gateway=%s netcfg/get_nameservers=%s '
            'netcfg/confirm_static=true' % (ip, GW, DNS), query['ubuntu'])
        self.assertEqual({'mac': mac, 'ip': ip, 'netmask': '255.255.255.0',
                          'gateway': GW, 'dns': DNS, 'dhcp': ''},
                         {k: query[k] for k in ('mac', 'ip', 'netmask',
                                                'gateway', 'dns', 'dhcp')})

    def assertRanOnceThenFallback(self, server, serial, exit_code):
        paths = [r['path'] for r in server.requests()]
        self.assertEqual(['/menu.ipxe', '/report'], paths)
        self.assertEqual(1, serial.count('fetching the boot menu, try'))
        self.assertIn('leaving the menu with exit %s' % exit_code, serial)
        self.assertEqual(1, serial.count('nova-ipxe: the boot menu returned'))
        self.assertEqual(1, serial.count('nova-ipxe: rebooting'))
        self.assertNotIn('no boot menu after', serial)
        self.assertNoDhcp()

    def assertBannerMatches(self, serial, caps):
        self.assertEqual(list(caps.features), banner_features(serial))


class BiosMenuTestCase(MenuBootTestCase):

    def test_one_nic_exit_1(self):
        # netboot.xyz's "Boot from local hdd" ends with "exit 1".
        server, nics = self.lan(1)
        self.serve(server, 1)
        query, serial, server, request = self.boot_menu(nics, 0)
        self.assertInstallerArgs(query, '192.0.2.10', nics[0][1])
        self.assertRanOnceThenFallback(server, serial, 1)
        caps = iso.BaseIso.from_path(samples.bookworm_iso()).capabilities()
        self.assertBannerMatches(serial, caps['bios'])
        self.assertNotIn('HTTPS', banner_features(serial))

    def test_two_nics_menu_nic_first_exit_0(self):
        # boot.rackspace.com's "Boot from local hdd" ends with "exit 0".
        server, nics = self.lan(2)
        self.serve(server, 0)
        query, serial, server, _ = self.boot_menu(nics, 0)
        self.assertInstallerArgs(query, '192.0.2.10', nics[0][1])
        self.assertRanOnceThenFallback(server, serial, 0)

    def test_two_nics_menu_nic_second_trixie(self):
        server, nics = self.lan(2)
        self.serve(server, 1)
        query, serial, server, _ = self.boot_menu(nics, 1,
                                                  source=samples.trixie_iso())
        self.assertInstallerArgs(query, '192.0.2.11', nics[1][1])
        self.assertRanOnceThenFallback(server, serial, 1)
        caps = iso.BaseIso.from_path(samples.trixie_iso()).capabilities()
        self.assertBannerMatches(serial, caps['bios'])
        self.assertIn('HTTPS', banner_features(serial))

    def test_genfsimg_layout_banner(self):
        source = samples.genfsimg_iso(self.tmp)
        server, nics = self.lan(1)
        self.serve(server, 0)
        query, serial, _, _ = self.boot_menu(nics, 0, source=source)
        self.assertInstallerArgs(query, '192.0.2.10', nics[0][1])
        caps = iso.BaseIso.from_path(source).capabilities()
        self.assertBannerMatches(serial, caps['bios'])

    def test_signed_identity_verified_by_the_menu_server(self):
        keys = os.path.join(self.tmp, 'menu-keys.json')
        with open(keys, 'w') as f:
            json.dump({'k1': 'an-older-key-0123456789', 'k2': KEY}, f)
        # The menu server process inherits it (tools/bootlab/menu_server.py).
        self.useFixture(fixtures.EnvironmentVariable(
            'NIPXE_MENU_SIGNING_KEYS', keys))
        server, nics = self.lan(1)
        self.serve(server, 0)
        query, serial, server, request = self.boot_menu(
            nics, 0, menu_signing_key=KEY, menu_signing_key_id='k2')
        verdict = request['signature']
        self.assertEqual('ok', verdict['status'], verdict)
        self.assertEqual({'uuid': test_boot.UUID, 'hostname': 'vm-1',
                          'mac': nics[0][1], 'ip': '192.0.2.10'},
                         verdict['fields'])
        self.assertEqual('k2', verdict['kid'])
        self.assertTrue(verdict['source_matches'])
        # The same verifier, run here on what the server received.
        verified = signature.verify(
            {'k2': KEY}, request['path'],
            urllib.parse.urlsplit(request['raw_path']).query)
        self.assertEqual(verdict['fields'], verified.fields)
        # The key itself is nowhere in the ISO the instance booted.
        with open(self.iso_path, 'rb') as f:
            self.assertNotIn(KEY.encode(), f.read())


class UefiMenuTestCase(MenuBootTestCase):

    firmware = 'uefi'

    def test_trixie_uefi_two_nics_menu_second(self):
        server, nics = self.lan(2)
        self.serve(server, 1)
        query, serial, server, _ = self.boot_menu(
            nics, 1, source=samples.trixie_iso(), firmware='uefi',
            uefi='require')
        self.assertInstallerArgs(query, '192.0.2.11', nics[1][1])
        self.assertRanOnceThenFallback(server, serial, 1)
        caps = iso.BaseIso.from_path(samples.trixie_iso()).capabilities()
        self.assertBannerMatches(serial, caps['uefi'])

    def test_bookworm_uefi_banner(self):
        # Bookworm's EFI iPXE cannot run our script (no autoexec.ipxe):
        # boot the stock ISO only to read its banner.
        self.lab.add_bridge('br0', ipv4=GW + '/24')
        vm = bootlab.Vm(self.lab, cdrom=samples.bookworm_iso(),
                        firmware='uefi')
        vm.start()
        vm.wait_serial(r'Features:[^\r\n]*\r?\n', timeout=BOOT_TIMEOUT)
        vm.stop()
        caps = iso.BaseIso.from_path(samples.bookworm_iso()).capabilities()
        self.assertBannerMatches(vm.serial_text(clean=True), caps['uefi'])
        self.assertEqual(capabilities.PE, caps['uefi'].format)
