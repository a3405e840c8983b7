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

"""Proof by booting: per-instance ISOs built by nova-ipxe, booted in QEMU
(TCG) on a network namespace with no DHCP server anywhere.

Each test asserts what the menu server saw (source address, identity
query, the standard settings a netboot.xyz-style menu would hand to an
installer) or what the VM did, and that no DHCP packet was sent.
Power-on-to-menu times are attached as the ``boot-timing`` detail and
appended to $NOVA_IPXE_BOOT_TIMINGS when that is set (tools/run-tests.sh
prints them).
"""

import json
import os
import time
import urllib.parse
import uuid

from testtools import content

from nova_ipxe import builder
from nova_ipxe import exception
from tests import base
from tests import samples
from tools import bootlab

BOOT_TIMEOUT = 180
UUID = str(uuid.uuid4())
VM_V4 = ('192.0.2.10', 24, '192.0.2.1')  # address, prefix, gateway
# Nothing listens on port 9 of the bridge: every try is refused.
UNREACHABLE = 'http://192.0.2.1:9/m'

# What a netboot.xyz-style menu does: read the standard settings (for an
# installer's ip= argument) and move on; here it reports them back.
MENU = '''#!ipxe
echo nova-ipxe-test: menu reached from ${ip}${ip6}
chain %(seen)s?ip=${ip}&netmask=${netmask}&gateway=${gateway}&dns=${dns}\
&ip6=${ip6}&dns6=${dns6}&hostname=${hostname} || echo seen failed
sleep 1
reboot
'''


class BootTestCase(base.TestCase):

    firmware = 'bios'

    def setUp(self):
        super().setUp()
        bootlab.check_prerequisites(iso=True, uefi=self.firmware == 'uefi')
        self.lab = self.useFixture(bootlab.LabFixture()).lab
        self.dhcp = None
        self.timing = {}
        self.addDetail('boot-timing', content.Content(
            content.UTF8_TEXT, lambda: [json.dumps(self.timing).encode()]))

    def start_dhcp_sentinel(self):
        self.dhcp = bootlab.DhcpSentinel(self.lab).start()

    def one_lan(self, ipv4=None, ipv6=None, menu=True):
        """br0 with tap0, the DHCP sentinel, and a menu server on br0."""
        self.lab.add_bridge('br0', ipv4=ipv4 and ipv4 + '/24',
                            ipv6=ipv6 and ipv6 + '/64')
        self.lab.add_tap('tap0', 'br0')
        self.start_dhcp_sentinel()
        return self.menu_server(ipv4 or ipv6) if menu else None

    def menu_server(self, bind):
        server = bootlab.MenuServer(self.lab, bind, 0, name='menu-' + (
            '6' if ':' in bind else '4'))
        server.start()
        server.set_routes({'/menu.ipxe': MENU % {
            'seen': server.url_for('/seen')}, '/seen': samples.BYE_MENU})
        return server

    def build(self, data, source=samples.BOOKWORM_ISO, hostname='vm-1',
              **flags):
        flags.setdefault('chain_timeout', 10)
        flags.setdefault('chain_retry_delay', 1)
        self.flags(**flags)
        out = os.path.join(self.tmp, 'instance.iso')
        instance = builder.Instance(network_data=data, uuid=UUID,
                                    hostname=hostname)
        base_iso = builder.load_base(source, self.conf)
        # A decoy of the same length first, as a warm nova-compute has
        # built other instances' ISOs: the ISO booted is the decoy's
        # template with this script patched in, and any byte of the decoy
        # left would stop the boot.
        text = builder.render_script(instance, self.conf).text.encode()
        decoy = b'#!ipxe\necho decoy\nexit 1\n'.ljust(len(text), b'#')
        try:
            base_iso.build_bytes(decoy, uefi=self.conf.ipxe.uefi)
        except exception.NovaIpxeError:
            pass    # the build below raises it
        result, rendered = builder.build_iso(base_iso, instance, out,
                                             self.conf)
        self.rendered = rendered
        return out, result

    def boot(self, iso, nics, as_disk=False):
        media = {'disk' if as_disk else 'cdrom': iso}
        vm = bootlab.Vm(self.lab, nics=nics, firmware=self.firmware,
                        **media)
        vm.start()
        return vm

    def record(self, name, vm, request):
        self.timing = {
            'case': name, 'firmware': self.firmware,
            'power_on_to_menu_s': round(request['time'] - vm.started_at, 2)}
        self.write_timing()

    def write_timing(self):
        path = os.environ.get('NOVA_IPXE_BOOT_TIMINGS')
        if path:
            with open(path, 'a') as f:
                f.write(json.dumps(self.timing) + '\n')

    def assertNoDhcp(self):
        self.dhcp.sync()
        self.assertEqual([], self.dhcp.packets())

    def assertMenuFlow(self, menu, vm, name, client, mac, ip):
        request = menu.wait_for('/menu.ipxe', timeout=BOOT_TIMEOUT, vm=vm)
        self.record(name, vm, request)
        self.assertEqual(client, request['client'])
        self.assertEqual({'uuid': UUID, 'hostname': 'vm-1', 'mac': mac,
                          'ip': ip}, request['query'])
        seen = menu.wait_for('/seen', timeout=BOOT_TIMEOUT, vm=vm)
        result = vm.wait(BOOT_TIMEOUT)
        self.assertEqual(0, result.returncode, result.serial_clean[-2000:])
        self.assertIn('nova-ipxe: %s configured on net' % mac,
                      result.serial_clean)
        return seen['query'], result

    def v4_vm(self, menu=True, model='e1000', as_disk=False, **flags):
        """One NIC at VM_V4 on br0, the ISO built and booted.

        Returns (menu server or None, MAC, started Vm, BuildResult).
        """
        server = self.one_lan(ipv4='192.0.2.1', menu=menu)
        mac = bootlab.unique_mac()
        data = samples.network_data_of(
            samples.nic_data(mac, 'tap-a', ipv4=VM_V4), dns=['192.0.2.53'])
        if server:
            flags.setdefault('boot_menu_url', server.url_for('/menu.ipxe'))
        iso, result = self.build(data, **flags)
        vm = self.boot(iso, [bootlab.Nic('tap0', mac, model=model)],
                       as_disk=as_disk)
        return server, mac, vm, result

    def assertV4Menu(self, name, menu, mac, vm):
        seen, result = self.assertMenuFlow(menu, vm, name, VM_V4[0], mac,
                                           VM_V4[0])
        self.assertNoDhcp()
        return seen, result


class BiosBootTestCase(BootTestCase):

    def one_nic_v4(self, model):
        menu, mac, vm, result = self.v4_vm(model=model)
        self.assertEqual((True, False), (result.bios, result.uefi))
        seen, _ = self.assertV4Menu('bios-' + model, menu, mac, vm)
        # The standard settings are left for the menu to use.
        self.assertEqual('192.0.2.10', seen['ip'])
        self.assertEqual('255.255.255.0', seen['netmask'])
        self.assertEqual('192.0.2.1', seen['gateway'])
        self.assertEqual('192.0.2.53', seen['dns'])
        self.assertEqual('vm-1', seen['hostname'])

    def test_e1000(self):
        self.one_nic_v4('e1000')

    def test_virtio_net(self):
        self.one_nic_v4('virtio-net-pci')

    def test_genfsimg_layout(self):
        # ipxe.lkrn booted with "INITRD autoexec.ipxe" (a stock script
        # that runs dhcp) in the source: ours must replace it.
        self.assertV4Menu('bios-genfsimg', *self.v4_vm(
            source=samples.genfsimg_iso(self.tmp))[:3])

    def test_plain_iso9660_names(self):
        self.assertV4Menu('bios-8.3-names', *self.v4_vm(
            source=samples.plain_iso(self.tmp))[:3])

    def test_isohybrid_boots_as_a_hard_disk(self):
        # Nova's legacy rescue attaches the image as a disk, not a CD.
        menu, mac, vm, _ = self.v4_vm(as_disk=True)
        self.assertV4Menu('bios-as-disk', menu, mac, vm)
        self.assertIn('Booting from Hard Disk', vm.serial_text(clean=True))

    def test_static_ipv6_only(self):
        menu = self.one_lan(ipv6='2001:db8::1')
        mac = bootlab.unique_mac()
        data = samples.network_data_of(samples.nic_data(mac, 'tap-a', ipv6=(
            '2001:db8::10', 64, '2001:db8::1')), dns=['2001:db8::53'])
        iso, _ = self.build(data, boot_menu_url=menu.url_for('/menu.ipxe'))
        vm = self.boot(iso, [bootlab.Nic('tap0', mac)])
        seen, _ = self.assertMenuFlow(menu, vm, 'bios-ipv6-only',
                                      '2001:db8::10', mac, '2001:db8::10')
        self.assertEqual('2001:db8::10', seen['ip6'])
        self.assertEqual('2001:db8::53', seen['dns6'])
        self.assertEqual('', seen.get('ip', ''))
        self.assertNoDhcp()

    def test_second_nic_reaches_menu(self):
        # The first port sits on a network with nothing on it; only the
        # second one (default route) reaches the menu. iPXE must find it
        # by MAC and chain through it.
        self.lab.add_bridge('br-a', ipv4='198.51.100.1/24')
        self.lab.add_bridge('br-b', ipv4='192.0.2.1/24')
        self.lab.add_tap('tap-a', 'br-a')
        self.lab.add_tap('tap-b', 'br-b')
        self.start_dhcp_sentinel()
        menu = self.menu_server('192.0.2.1')
        mac_a, mac_b = bootlab.unique_macs(2)
        data = samples.network_data_of(
            samples.nic_data(mac_a, 'tap-a', ipv4=('198.51.100.10', 24, None)),
            samples.nic_data(mac_b, 'tap-b',
                             ipv4=('192.0.2.20', 24, '192.0.2.1')),
            dns=['192.0.2.53'])
        iso, _ = self.build(data, boot_menu_url=menu.url_for('/menu.ipxe'))
        self.assertEqual(mac_b, self.rendered.menu_nic.mac)
        vm = self.boot(iso, [bootlab.Nic('tap-a', mac_a),
                             bootlab.Nic('tap-b', mac_b)])
        seen, result = self.assertMenuFlow(menu, vm, 'bios-two-nics',
                                           '192.0.2.20', mac_b, '192.0.2.20')
        self.assertEqual('192.0.2.20', seen['ip'])  # the menu NIC's
        self.assertIn('nova-ipxe: %s configured on net0' % mac_a,
                      result.serial_clean)
        self.assertIn('nova-ipxe: %s configured on net1' % mac_b,
                      result.serial_clean)
        self.assertNoDhcp()

    def test_unreachable_menu_ends_in_fallback_never_dhcp(self):
        # Nothing listens on port 9 of the bridge: every try is refused.
        started = time.monotonic()
        _, _, vm, _ = self.v4_vm(
            menu=False, boot_menu_url=UNREACHABLE,
            on_chain_failure='reboot', chain_retries=2)
        result = vm.wait(BOOT_TIMEOUT)
        self.timing = {'case': 'bios-unreachable-menu',
                       'firmware': self.firmware,
                       'power_on_to_fallback_exit_s': round(
                           time.monotonic() - started, 2)}
        self.write_timing()
        self.assertEqual(0, result.returncode)  # guest reboot, -no-reboot
        serial = result.serial_clean
        self.assertIn('fetching the boot menu, try 2 of 2', serial)
        self.assertNotIn('try 3 of', serial)
        self.assertIn('no boot menu after 2 tries', serial)
        self.assertIn('nova-ipxe: rebooting', serial)
        self.assertNotIn('DHCP', serial)
        self.assertNoDhcp()

    def test_unreachable_menu_falls_back_to_the_local_disk(self):
        self.one_lan(ipv4='192.0.2.1', menu=False)
        mac = bootlab.unique_mac()
        data = samples.network_data_of(
            samples.nic_data(mac, 'tap-a', ipv4=VM_V4))
        iso, _ = self.build(data, boot_menu_url=UNREACHABLE,
                            on_chain_failure='disk', chain_retries=1)
        disk = os.path.join(self.tmp, 'disk.img')
        with open(disk, 'wb') as f:
            f.write(mbr_printing('LOCAL-DISK-BOOTED'))
        vm = bootlab.Vm(self.lab, cdrom=iso, nics=[bootlab.Nic('tap0', mac)],
                        extra_args=['-drive', 'file=%s,format=raw,if=ide,'
                                    'index=0' % disk])
        vm.start()
        vm.wait_serial('LOCAL-DISK-BOOTED', timeout=BOOT_TIMEOUT)
        vm.stop()
        serial = vm.serial_text(clean=True)
        self.assertIn('nova-ipxe: booting from the local disk', serial)
        # iPXE itself booted the disk (not the BIOS after iPXE gave up).
        self.assertIn('Booting from SAN device 0x80', serial)
        self.assertNotIn('Boot from SAN device 0x80 failed', serial)
        self.assertNoDhcp()


def mbr_printing(message):
    """A stand-in local disk: an MBR that prints ``message`` and halts.

    It prints with the BIOS teletype call, which SeaBIOS mirrors to the
    serial console.
    """
    code = bytes.fromhex(
        '31c0'      # xor ax, ax
        '8ed8'      # mov ds, ax
        '31db'      # xor bx, bx     (page 0)
        'be1700'    # mov si, 0x7c17 (patched below)
        'ac'        # lodsb
        '08c0'      # or al, al
        '7406'      # jz halt
        'b40e'      # mov ah, 0x0e
        'cd10'      # int 0x10
        'ebf5'      # jmp lodsb
        'f4'        # halt: hlt
        'ebfd')     # jmp halt
    code = bytearray(code)
    code[7:9] = (0x7c00 + len(code)).to_bytes(2, 'little')
    sector = bytes(code) + message.encode() + b'\r\n\0'
    return sector.ljust(510, b'\0') + b'\x55\xaa'


class UefiBootTestCase(BootTestCase):

    firmware = 'uefi'

    def test_trixie_ovmf(self):
        menu, mac, vm, result = self.v4_vm(source=samples.TRIXIE_ISO,
                                           uefi='require')
        self.assertTrue(result.uefi)
        seen, _ = self.assertV4Menu('uefi-trixie', menu, mac, vm)
        self.assertEqual('192.0.2.1', seen['gateway'])

    def test_isohybrid_boots_as_a_hard_disk(self):
        self.assertV4Menu('uefi-as-disk', *self.v4_vm(
            source=samples.TRIXIE_ISO, uefi='require', as_disk=True)[:3])

    def test_genfsimg_layout(self):
        # esp.img with the loader and a stock autoexec.ipxe at its root.
        self.assertV4Menu('uefi-genfsimg', *self.v4_vm(
            source=samples.genfsimg_iso(self.tmp), uefi='require')[:3])

    def test_query_encoding_survives_ipxe(self):
        # Operator URL with its own query: ours is appended after it.
        url = 'http://192.0.2.1:%d/menu.ipxe?site=lab%%20one&nic=$${net0/mac}'
        menu = self.one_lan(ipv4='192.0.2.1')
        mac = bootlab.unique_mac()
        data = samples.network_data_of(
            samples.nic_data(mac, 'tap-a', ipv4=VM_V4))
        iso, _ = self.build(data, source=samples.TRIXIE_ISO,
                            boot_menu_url=url % menu.port)
        vm = self.boot(iso, [bootlab.Nic('tap0', mac)])
        request = menu.wait_for('/menu.ipxe', timeout=BOOT_TIMEOUT, vm=vm)
        vm.stop()
        self.assertEqual('lab one', request['query']['site'])
        self.assertEqual(mac, urllib.parse.unquote(request['query']['nic']))
        self.assertEqual(UUID, request['query']['uuid'])
        self.assertEqual(mac, request['query']['mac'])
