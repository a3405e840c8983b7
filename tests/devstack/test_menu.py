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

"""devstack/files/menu.ipxe, the demo menu the plugin serves, booted for
real: a per-instance ISO chains it in QEMU on a namespace with no DHCP,
the menu shows the instance's static settings, and its first item, chosen
with the keyboard, shows the addresses iPXE is using."""

import os
import uuid

from nova_ipxe import builder
from tests import base
from tests import samples
from tools import bootlab

MENU = os.path.join(samples.REPO, 'devstack', 'files', 'menu.ipxe')
BOOT_TIMEOUT = 180


class TestDemoMenu(base.TestCase):

    def test_menu_shows_the_static_settings(self):
        bootlab.check_prerequisites(iso=True)
        lab = self.useFixture(bootlab.LabFixture()).lab
        lab.add_bridge('br0', ipv4='192.0.2.1/24')
        lab.add_tap('tap0', 'br0')
        dhcp = bootlab.DhcpSentinel(lab).start()
        menu = bootlab.MenuServer(lab, '192.0.2.1', 0).start()
        with open(MENU) as f:
            menu.set_routes({'/nova-ipxe/menu.ipxe': f.read()})
        mac = bootlab.unique_mac()
        data = samples.network_data()
        data['links'][0]['ethernet_mac_address'] = mac
        self.flags(boot_menu_url=menu.url_for('/nova-ipxe/menu.ipxe'))
        iso = os.path.join(self.tmp, 'instance.iso')
        builder.build_iso(samples.bookworm_iso(), builder.Instance(
            network_data=data, uuid=str(uuid.uuid4()), hostname='vm-1'),
            iso, self.conf)

        vm = bootlab.Vm(lab, cdrom=iso, nics=[bootlab.Nic('tap0', mac)])
        vm.start()
        self.addCleanup(vm.stop)
        request = menu.wait_for('/nova-ipxe/menu.ipxe', timeout=BOOT_TIMEOUT,
                                vm=vm)
        self.assertEqual('192.0.2.10', request['client'])
        # The title and the installer line carry the settings the
        # instance's script set.
        vm.wait_serial(r'nova-ipxe on devstack: vm-1 is '
                       r'192\.0\.2\.10/255\.255\.255\.0 via 192\.0\.2\.1',
                       timeout=BOOT_TIMEOUT)
        vm.wait_serial(r'ip=192\.0\.2\.10::192\.0\.2\.1:255\.255\.255\.0:'
                       r'vm-1::none nameserver=192\.0\.2\.53', timeout=60)
        # Enter picks the first item, "info": iPXE's route lists the
        # static address and gateway.
        vm.qmp('send-key', keys=[{'type': 'qcode', 'data': 'ret'}])
        vm.wait_serial(r'net0: 192\.0\.2\.10/255\.255\.255\.0 gw '
                       r'192\.0\.2\.1', timeout=60)
        vm.wait_serial(r'Press any key to return to the menu', timeout=60)
        dhcp.sync()
        self.assertEqual([], dhcp.packets())
