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

"""The ISO ipxe.LibvirtDriver left in the instance directory, booted.

A server is booted through the Nova API on a port of 192.0.2.0/24; the
ISO file the driver wrote is then booted as it is in QEMU (TCG) on a
network namespace with no DHCP (tools/bootlab/, run as a subprocess:
this process is eventlet-patched), whose menu server must see the
port's own address and MAC.
"""

import json
import os
import subprocess
import sys

from tests.nova import libvirt_base
from tests import samples


class BootTestCase(libvirt_base.IpxeLifecycleBase):

    def boot_in_qemu(self, iso, mac, firmware='bios'):
        proc = subprocess.run(
            [sys.executable, '-m', 'tools.bootlab', 'boot', '--cdrom', iso,
             '--mac', mac, '--port', '8080', '--path', '/menu',
             '--firmware', firmware, '--timeout', '240'],
            cwd=samples.REPO, capture_output=True, text=True,
            timeout=300)
        self.assertEqual(0, proc.returncode, proc.stderr[-3000:])
        return json.loads(proc.stdout)

    def test_the_instance_iso_reaches_the_menu_without_dhcp(self):
        self.flags(chain_timeout=10, chain_retry_delay=1, group='ipxe')
        server = self.boot()
        iso = os.path.join(self.inst_dir(server), 'ipxe.iso')
        self.assertEqual(iso, self.cds()[0]['source'])
        summary = self.boot_in_qemu(iso, libvirt_base.PORT_MAC)
        self.assertEqual(0, summary['dhcp_packets'])
        first = summary['requests'][0]
        self.assertEqual('/menu', first['path'])
        self.assertEqual(libvirt_base.PORT_IP, first['client'])
        self.assertEqual(libvirt_base.PORT_MAC, first['query']['mac'])
        self.assertEqual(server['id'], first['query']['uuid'])

    def test_the_uefi_instance_iso_reaches_the_menu_without_dhcp(self):
        # hw_firmware_type=uefi on q35: the ISO's UEFI entry carries the
        # script (trixie's EFI iPXE reads autoexec.ipxe).
        self.flags(chain_timeout=10, chain_retry_delay=1, group='ipxe')
        image = self.add_ipxe_image(libvirt_base.TRIXIE_ISO,
                                    image_id=libvirt_base.uuids.uefi_boot,
                                    hw_firmware_type='uefi',
                                    hw_machine_type='q35')
        server = self.boot(image_id=image)
        iso = os.path.join(self.inst_dir(server), 'ipxe.iso')
        self.assertEqual([(iso, 'sata')],
                         [(d['source'], d['bus']) for d in self.cds()])
        summary = self.boot_in_qemu(iso, libvirt_base.PORT_MAC,
                                    firmware='uefi')
        self.assertEqual(0, summary['dhcp_packets'])
        first = summary['requests'][0]
        self.assertEqual((libvirt_base.PORT_IP, server['id']),
                         (first['client'], first['query']['uuid']))
