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

"""Servers from an iPXE ISO through Nova's API on a real libvirtd.

The menu server is the judge: every "menu" below is a request for the
menu from the port's address with the port's MAC and the server's uuid
in the query, and no DHCP on the host's network.  A disk that boots is
seen on the console Nova keeps (os-getConsoleOutput): the stand-in OS
disk prints a marker there.  One guest per scenario, every lifecycle
step on it in turn.
"""

import os
import subprocess
import time

from tests.realhost import base

GiB = 1024 ** 3


def user_agent(request):
    return request['headers'].get('User-Agent', '')


class LifecycleTestCase(base.RealHostTestBase):

    def test_bios_spawn_reboots_stop_start_rescue_beside_a_stock_server(self):
        trixie = self.add_ipxe_image(base.TRIXIE_ISO, name='trixie')
        ipxe2 = self.add_ipxe_image(base.IPXE2_ISO, name='ipxe2')
        stock = self.add_disk_image('STOCK-QCOW2-OS')

        # A stock qcow2 server beside: its disk boots, no CD.
        plain = self.boot(stock, n=2)
        self.wait_for_console(plain, 'STOCK-QCOW2-OS')
        plain_id = self.host.virsh('domid', self.domain_name(plain)).stdout
        self.assertEqual(['disk'], [d['device'] for d in self.disks(plain)])

        since = self.mark()
        server = self.boot(trixie)
        first = self.wait_for_menu(server, since)
        self.assertIn('iPXE/1.21.1', user_agent(first))
        disks = self.disks(server)
        self.assertEqual([('disk', 'vda', '2'), ('cdrom', 'hda', '1')],
                         [(d['device'], d['dev'], d['boot'])
                          for d in disks])
        self.assertEqual(os.path.join(self.inst_dir(server), 'ipxe.iso'),
                         disks[1]['source'])

        # Soft reboot (iPXE ignores ACPI: Nova falls back to a hard one
        # after [libvirt] wait_soft_reboot_seconds), hard reboot.
        for hard in (False, True):
            since = self.mark()
            self._reboot_server(server, hard=hard)
            self.wait_for_menu(server, since)

        since = self.mark()
        self._stop_server(server)
        self._start_server(server)
        self.wait_for_menu(server, since)

        # Rescue with iPXE 2.0's ISO: its menu, then the server's own.
        since = self.mark()
        self.api.post_server_action(server['id'], {
            'rescue': {'rescue_image_ref': ipxe2}})
        self._wait_for_state_change(server, 'RESCUE')
        self.assertIn('iPXE/2.0', user_agent(self.wait_for_menu(
            server, since)))
        self.assertIn(os.path.join(self.inst_dir(server),
                                   'ipxe.iso.rescue'),
                      [d['source'] for d in self.disks(server)])
        since = self.mark()
        self._unrescue_server(server)
        self.assertIn('iPXE/1.21.1', user_agent(self.wait_for_menu(
            server, since)))
        self.assertFalse(os.path.exists(os.path.join(
            self.inst_dir(server), 'ipxe.iso.rescue')))

        self.delete_and_check(server)
        # The stock server was left alone: same domain, still running,
        # never a CD, no ISO of ours, never at the menu.
        self.assertEqual(plain_id, self.host.virsh(
            'domid', self.domain_name(plain)).stdout)
        self.assertEqual(['disk'], [d['device'] for d in self.disks(plain)])
        self.assertEqual([], [f for f in os.listdir(self.inst_dir(plain))
                              if 'ipxe' in f])
        self.assertEqual([], self.menu_requests(plain))
        self.delete_and_check(plain)

    def test_uefi_q35_and_bios_with_ipxe2(self):
        # trixie's and iPXE 2.0's ISO under UEFI (q35, OVMF chosen by
        # libvirt's firmware auto-selection), iPXE 2.0's under BIOS.
        uefi = {'hw_firmware_type': 'uefi', 'hw_machine_type': 'q35'}
        images = [
            self.add_ipxe_image(base.TRIXIE_ISO, name='trixie-uefi', **uefi),
            self.add_ipxe_image(base.IPXE2_ISO, name='ipxe2-uefi', **uefi),
            self.add_ipxe_image(base.IPXE2_ISO, name='ipxe2')]
        since = self.mark()
        servers = [self.boot(image, n=n + 1)
                   for n, image in enumerate(images)]
        agents = [user_agent(self.wait_for_menu(s, since)) for s in servers]
        self.assertIn('iPXE/1.21.1', agents[0])
        self.assertIn('iPXE/2.0', agents[1])
        self.assertIn('iPXE/2.0', agents[2])
        for server in servers[:2]:
            # The running domain shows the firmware libvirt picked.
            root = self.domain_xml(server)
            self.assertIn('OVMF', root.find('./os/loader').text)
            self.assertIn('q35', root.find('./os/type').get('machine'))
            self.assertEqual([('disk', 'vda', '2'), ('cdrom', 'sda', '1')],
                             [(d['device'], d['dev'], d['boot'])
                              for d in self.disks(server)])
        for server in servers:
            self.delete_and_check(server)

    def test_rebuild_ipxe_to_qcow2_to_ipxe(self):
        trixie = self.add_ipxe_image(base.TRIXIE_ISO, name='trixie')
        ipxe2 = self.add_ipxe_image(base.IPXE2_ISO, name='ipxe2')
        disk = self.add_disk_image('REBUILT-QCOW2-OS')
        since = self.mark()
        server = self.boot(trixie)
        self.wait_for_menu(server, since)

        since = self.mark()
        self._rebuild_server(server, disk)
        self.wait_for_console(server, 'REBUILT-QCOW2-OS')
        self.assertEqual(['disk'], [d['device'] for d in self.disks(server)])
        self.assertFalse(os.path.exists(os.path.join(self.inst_dir(server),
                                                     'ipxe.iso')))

        since = self.mark()
        self._rebuild_server(server, ipxe2)
        self.assertIn('iPXE/2.0', user_agent(self.wait_for_menu(
            server, since)))
        self.assertEqual(['disk', 'cdrom'],
                         [d['device'] for d in self.disks(server)])
        self.delete_and_check(server)

    def test_resize_on_the_same_host_and_revert(self):
        trixie = self.add_ipxe_image(base.TRIXIE_ISO, name='trixie')
        since = self.mark()
        server = self.boot(trixie)
        self.wait_for_menu(server, since)
        disk = os.path.join(self.inst_dir(server), 'disk')

        since = self.mark()
        self._resize_server(server, self.flavor(disk=2, name='m1.bigger'))
        self.wait_for_menu(server, since)
        self.assertEqual(2 * GiB, base.qemu_img_info(disk)['virtual-size'])

        since = self.mark()
        self._revert_resize(server)
        self.wait_for_menu(server, since)
        self.assertEqual(1 * GiB, base.qemu_img_info(disk)['virtual-size'])
        self.delete_and_check(server)

    def test_snapshot_of_the_installed_disk_boots_without_cd(self):
        trixie = self.add_ipxe_image(base.TRIXIE_ISO, name='trixie')
        since = self.mark()
        server = self.boot(trixie)
        self.wait_for_menu(server, since)
        # "Install" an OS onto the blank disk while the server is off.
        self._stop_server(server)
        disk = os.path.join(self.inst_dir(server), 'disk')
        self.write_disk(disk, 'SNAPSHOT-INSTALLED-OS')
        snapshot = self.api.post_server_action(server['id'], {
            'createImage': {'name': 'installed'}})['image_id']
        self._wait_for_image(snapshot)

        copy = self.boot(snapshot, n=2)
        self.wait_for_console(copy, 'SNAPSHOT-INSTALLED-OS')
        self.assertEqual(['disk'], [d['device'] for d in self.disks(copy)])
        self.assertEqual([], self.menu_requests(copy))
        self.delete_and_check(copy)
        self.delete_and_check(server)

    def test_shelve_and_unshelve(self):
        trixie = self.add_ipxe_image(base.TRIXIE_ISO, name='trixie')
        since = self.mark()
        server = self.boot(trixie)
        self.wait_for_menu(server, since)
        self._stop_server(server)
        self.write_disk(os.path.join(self.inst_dir(server), 'disk'),
                        'SHELVED-INSTALLED-OS')
        self._start_server(server)
        name = self.domain_name(server)
        tap = ('tap' + server['port']['id'])[:14]

        self._shelve_server(server)
        self.assertNotIn(name, self.host.domains())
        self.assertNotIn(tap, self.host.links())
        self.assertFalse(os.path.exists(self.inst_dir(server)))

        since = self.mark()
        self._unshelve_server(server)
        self.refresh_nw_cache(server)
        # The installed OS came back; the next hard reboot brings the
        # menu back.
        self.wait_for_console(server, 'SHELVED-INSTALLED-OS')
        since = self.mark()
        self._reboot_server(server, hard=True)
        self.wait_for_menu(server, since)
        self.delete_and_check(server)

    # -- helpers ------------------------------------------------------------

    def write_disk(self, path, text):
        """Write the stand-in OS (marker_disk) onto a qcow2 image file."""
        raw = base.marker_disk(path + '.raw', text)
        try:
            subprocess.run(['qemu-io', '-f', 'qcow2', '-c',
                            'write -q -s %s 0 1M' % raw, path],
                           check=True, capture_output=True)
        finally:
            os.unlink(raw)

    def _wait_for_image(self, image_id):
        deadline = time.monotonic() + base.BOOT_TIMEOUT
        while self.glance.show(self.ctxt, image_id)['status'] != 'active':
            if time.monotonic() > deadline:
                self.fail('image %s never became active' % image_id)
            time.sleep(1)
