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

"""ipxe.LibvirtDriver through the Nova API, with real ISO bytes."""

import copy
import os
import urllib.parse

from nova import objects
from nova.virt.libvirt import driver as libvirt_driver
from oslo_utils.fixture import uuidsentinel as uuids

from nova_ipxe import signature
from tests.nova import libvirt_base
from tests import samples

GiB = 1024 ** 3


def CONF_instances_path():
    return libvirt_base.CONF.instances_path


script_of = libvirt_base.script_of


class SpawnTestCase(libvirt_base.IpxeServersTestBase):

    def setUp(self):
        super().setUp()
        self.start_compute()
        self.flavor = self._create_flavor(disk=2, ephemeral=0,
                                          name='m1.ipxe')

    def boot(self, image_id, port=None, **kw):
        port = port or self.lab_port()
        return self._create_server(image_uuid=image_id,
                                   flavor_id=self.flavor,
                                   networks=[{'port': port['id']}], **kw)

    def assert_ipxe_layout(self, server, image_id, cd=True):
        inst = self.inst_dir(server)
        disks = self.disks(self.last_xml())
        first = disks[0]
        # The blank root comes first (snapshots take the first <disk>).
        self.assertEqual(('disk', 'vda', 'virtio'),
                         (first['device'], first['dev'], first['bus']))
        self.assertEqual(os.path.join(inst, 'disk'), first['source'])
        root = libvirt_base.qemu_img_info(first['source'])
        self.assertEqual(2 * GiB, root['virtual-size'])
        self.assertNotIn('backing-filename', root)
        self.assertIsNone(self.last_xml().find('./os/boot'))
        cds = [d for d in disks if d['device'] == 'cdrom']
        if not cd:
            self.assertEqual([], cds)
            self.assertFalse(os.path.exists(os.path.join(inst, 'ipxe.iso')))
            self.assertFalse(first['boot'])
            return None
        self.assertEqual('2', first['boot'])
        self.assertEqual(1, len(cds))
        self.assertEqual({'device': 'cdrom', 'dev': 'hda', 'bus': 'ide',
                          'source': os.path.join(inst, 'ipxe.iso'),
                          'format': 'raw', 'readonly': True, 'boot': '1'},
                         cds[0])
        # Nova's cached copy is the image's bytes, untouched.
        self.assertEqual(self.glance._imagedata[image_id],
                         libvirt_base.read(self.base_file(image_id)))
        return script_of(cds[0]['source'])

    def test_spawn_builds_the_iso_and_a_blank_root(self):
        image_id = self.add_ipxe_image()
        server = self.boot(image_id)
        script = self.assert_ipxe_layout(server, image_id)
        self.assertIn(libvirt_base.PORT_MAC, script)
        self.assertIn(libvirt_base.PORT_IP, script)
        self.assertIn(libvirt_base.GATEWAY, script)
        self.assertIn('192.0.2.53', script)
        self.assertIn(libvirt_base.MENU_URL, script)
        # Nothing else of ours in the instance directory.
        self.assertEqual({'disk', 'disk.info', 'ipxe.iso', 'console.log'},
                         set(os.listdir(self.inst_dir(server))) | {
                             'console.log'})

    def test_server_names_nova_makes_boot(self):
        # Nova keeps Latin-1 letters in host names ("Café 1"
        # becomes "café-1"); that used to fail the build.  Now the name is
        # in the script and the signed identity in Punycode, and a name
        # with no ASCII form is left out: the server boots either way.
        self.flags(menu_signing_key='k' * 32, group='ipxe')
        image_id = self.add_ipxe_image()
        for name, want in (('Caf\u00e9 1', 'xn--caf-1-dsa'),
                           ('\u00c5ngstr\u00f6m', 'xn--ngstrm-hua5l'),
                           ('\u00e9' * 60, None)):
            server = self.boot(image_id, name=name)
            self.assertEqual('ACTIVE', server['status'])
            script = script_of(os.path.join(self.inst_dir(server),
                                            'ipxe.iso'))
            url = [token for line in script.splitlines()
                   if line.startswith('imgfetch ')
                   for token in line.split() if token.startswith('http')][0]
            parts = urllib.parse.urlsplit(url)
            verified = signature.verify({'1': 'k' * 32}, parts.path,
                                        parts.query)
            self.assertEqual(want, verified.fields.get('hostname'), name)
            if want:
                self.assertIn('set hostname %s\n' % want, script)
            else:
                self.assertNotIn('set hostname', script)
            self._delete_server(server)

    def test_delete_removes_every_file(self):
        image_id = self.add_ipxe_image()
        server = self.boot(image_id)
        inst = self.inst_dir(server)
        self.assertTrue(os.path.exists(os.path.join(inst, 'ipxe.iso')))
        self._delete_server(server)
        self.assertFalse(os.path.exists(inst))
        self.assertTrue(os.path.exists(self.base_file(image_id)))

    def test_unflagged_images_get_the_stock_xml(self):
        # Same guest rendered by Nova's own class and by ours: identical.
        calls = []
        real = libvirt_driver.LibvirtDriver._get_guest_xml

        def spy(drv, *args, **kwargs):
            # Nova fills image_meta defaults in while rendering: keep the
            # inputs as they came.
            ctxt, inst, net, disk_info, meta = args
            calls.append((drv, (ctxt, inst.obj_clone(), net,
                                copy.deepcopy(disk_info), meta.obj_clone()),
                          kwargs))
            return real(drv, *args, **kwargs)
        self.useFixture(libvirt_base.fixtures.MonkeyPatch(
            'nova.virt.libvirt.driver.LibvirtDriver._get_guest_xml', spy))
        plain_iso = self.add_ipxe_image(image_id=uuids.plain_iso,
                                        hw_ipxe_boot='false')
        qcow2 = self.add_image(libvirt_base.blank_qcow2(self.tmp_dir()),
                               disk_format='qcow2', image_id=uuids.qcow2,
                               hw_ipxe_boot='true')
        for image_id in (plain_iso, qcow2):
            self.defined.clear()
            calls.clear()
            self.boot(image_id, port=self.lab_port(
                mac='fa:16:3e:00:2b:%02x' % len(self.defined),
                ip='192.0.2.%d' % (20 + (image_id == qcow2))))
            ours = self.defined[-1]
            drv, args, kwargs = calls[-1]
            stock = libvirt_driver.LibvirtDriver.__new__(
                libvirt_driver.LibvirtDriver)
            stock.__dict__ = drv.__dict__
            self.assertEqual(self.normalise(real(stock, *args, **kwargs)),
                             self.normalise(ours))
            self.assertNotIn('ipxe.iso', ours)


class FlatSpawnTestCase(SpawnTestCase):
    images_type = 'flat'

    def assert_ipxe_layout(self, server, image_id, cd=True):
        script = super().assert_ipxe_layout(server, image_id, cd)
        root = libvirt_base.qemu_img_info(
            os.path.join(self.inst_dir(server), 'disk'))
        self.assertEqual('raw', root['format'])
        return script


IpxeLifecycleBase = libvirt_base.IpxeLifecycleBase


class LifecycleTestCase(IpxeLifecycleBase):

    def test_hard_reboot_rebuilds_with_an_attached_interface(self):
        server = self.boot()
        first = script_of(self.iso(server))
        self.assertNotIn('fa:16:3e:00:2b:0b', first)
        port2 = self.lab_port(mac='fa:16:3e:00:2b:0b', ip='192.0.2.11')
        self._attach_interface(server, port2['id'])
        self.refresh_nw_cache(server)
        self._reboot_server(server, hard=True)
        script = script_of(self.iso(server))
        self.assertIn('fa:16:3e:00:2b:0b', script)
        self.assertIn('192.0.2.11', script)
        self.assertIn(libvirt_base.PORT_MAC, script)
        self.assertEqual(['1'], [d['boot'] for d in self.cds()])

    def test_leaving_the_menu_with_metadata_and_coming_back(self):
        server = self.boot()
        self.api.post_server_metadata(server['id'], {'ipxe_boot': 'false'})
        self._reboot_server(server, hard=True)
        disks = self.disks(self.last_xml())
        self.assertEqual([('vda', 'disk', False)],
                         [(d['dev'], d['device'], d['boot']) for d in disks])
        self.assertIsNone(self.last_xml().find('./os/boot'))
        self.assertFalse(os.path.exists(self.iso(server)))
        self.api.post_server_metadata(server['id'], {'ipxe_boot': 'true'})
        self._reboot_server(server, hard=True)
        self.assertEqual(1, len(self.cds()))
        self.assertTrue(os.path.exists(self.iso(server)))

    def test_hard_reboot_after_the_image_is_gone(self):
        # Golden images get rotated: the ISO is deleted from Glance and
        # the image cache ages its _base copy out.
        server = self.boot()
        self.glance.delete(self.ctxt, self.image_id)
        os.unlink(self.base_file(self.image_id))
        built = libvirt_base.read(self.iso(server))
        # The ISO in the instance directory is kept and boots.
        self._reboot_server(server, hard=True)
        self.assertEqual(built, libvirt_base.read(self.iso(server)))
        self.assertEqual([(self.iso(server), '1')],
                         [(d['source'], d['boot']) for d in self.cds()])
        # Without one (say, on a new host), the server boots its disk.
        os.unlink(self.iso(server))
        self._reboot_server(server, hard=True)
        self.assertEqual([], self.cds())
        self.assertEqual([('vda', 'disk')], [
            (d['dev'], d['device']) for d in self.disks(self.last_xml())])
        self.assertFalse(os.path.exists(self.iso(server)))

    def test_a_reboot_with_a_bad_override_keeps_the_server_bootable(self):
        # A failed hard reboot would leave the server in ERROR, where its
        # metadata can no longer be changed: keep what it had instead.
        server = self.boot()
        built = libvirt_base.read(self.iso(server))
        self.api.post_server_metadata(server['id'], {
            'ipxe_boot_menu_url': 'http://192.0.2.1/menu#fragment'})
        self._reboot_server(server, hard=True)
        self.assertEqual(built, libvirt_base.read(self.iso(server)))
        self.assertEqual(1, len(self.cds()))
        # The tenant can still fix it, and the next reboot takes it.
        self.api.post_server_metadata(server['id'], {
            'ipxe_boot_menu_url': 'http://192.0.2.1/fixed'})
        self._reboot_server(server, hard=True)
        self.assertIn('http://192.0.2.1/fixed',
                      script_of(self.iso(server)))
        # With no ISO built before, the disk boots.
        os.unlink(self.iso(server))
        self.api.post_server_metadata(server['id'], {
            'ipxe_boot_menu_url': 'ftp://192.0.2.1/menu'})
        self._reboot_server(server, hard=True)
        self.assertEqual([], self.cds())

    def test_menu_url_from_server_metadata_and_image(self):
        image = self.add_ipxe_image(
            image_id=uuids.menu_image,
            ipxe_boot_menu_url='http://192.0.2.1:8080/image-menu')
        server = self.boot(image_id=image)
        self.assertIn('http://192.0.2.1:8080/image-menu',
                      script_of(self.iso(server)))
        self.api.post_server_metadata(server['id'], {
            'ipxe_boot_menu_url': 'http://192.0.2.1:8080/mine'})
        self._reboot_server(server, hard=True)
        self.assertIn('http://192.0.2.1:8080/mine',
                      script_of(self.iso(server)))

    def test_menu_url_override_refused_when_the_operator_forbids_it(self):
        self.flags(allow_menu_url_override=False, group='ipxe')
        image = self.add_ipxe_image(
            image_id=uuids.menu_image,
            ipxe_boot_menu_url='http://192.0.2.1:8080/image-menu')
        server = self.boot(image_id=image)
        script = script_of(self.iso(server))
        self.assertNotIn('image-menu', script)
        self.assertIn(libvirt_base.MENU_URL, script)

    def test_stable_rescue_with_the_ipxe_image_then_unrescue(self):
        rescue = self.add_ipxe_image(image_id=uuids.rescue_image,
                                     hw_rescue_device='cdrom')
        normal = self.add_image(libvirt_base.blank_qcow2(self.tmp_dir()),
                                disk_format='qcow2', image_id=uuids.qcow2)
        server = self.boot(image_id=normal)
        self.api.post_server_action(server['id'], {
            'rescue': {'rescue_image_ref': rescue}})
        self._wait_for_state_change(server, 'RESCUE')
        disks = self.disks(self.last_xml())
        self.assertEqual(('disk', 'vda'), (disks[0]['device'],
                                           disks[0]['dev']))
        cds = self.cds()
        self.assertEqual(1, len(cds))
        self.assertEqual(
            (self.iso(server, 'ipxe.iso.rescue'), '1', 'raw'),
            (cds[0]['source'], cds[0]['boot'], cds[0]['format']))
        self.assertIn(libvirt_base.PORT_IP, script_of(cds[0]['source']))
        self.assertFalse(os.path.exists(
            os.path.join(self.inst_dir(server), 'disk.rescue')))
        self._unrescue_server(server)
        self.assertEqual(
            [], [n for n in os.listdir(self.inst_dir(server))
                 if 'rescue' in n])

    def test_legacy_rescue_of_an_ipxe_server(self):
        server = self.boot()
        self._rescue_server(server)  # no image: the server's own one
        disks = self.disks(self.last_xml())
        cds = [d for d in disks if d['device'] == 'cdrom']
        self.assertEqual([(self.iso(server, 'ipxe.iso.rescue'), '1')],
                         [(d['source'], d['boot']) for d in cds])
        own = [d for d in disks if d['source'] == os.path.join(
            self.inst_dir(server), 'disk')]
        self.assertEqual([('disk', '2')],
                         [(d['device'], d['boot']) for d in own])
        self.assertIsNone(self.last_xml().find('./os/boot'))
        self._unrescue_server(server)
        self.assertFalse(os.path.exists(self.iso(server,
                                                 'ipxe.iso.rescue')))
        self.assertTrue(os.path.exists(self.iso(server)))

    def rescue_with(self, server, image):
        self.api.post_server_action(server['id'], {
            'rescue': {'rescue_image_ref': image}})
        self._wait_for_state_change(server, 'RESCUE')
        return self.disks(self.last_xml())

    def test_stable_rescue_of_an_ipxe_server_with_a_normal_image(self):
        server = self.boot()
        normal = self.add_image(libvirt_base.blank_qcow2(self.tmp_dir()),
                                disk_format='qcow2', image_id=uuids.qcow2,
                                hw_rescue_device='disk')
        disks = self.rescue_with(server, normal)
        by_source = {os.path.basename(d['source']): d for d in disks}
        # Nova's rescue disk boots first; the server's own disk is there,
        # a disk; no iPXE CD during this rescue.
        self.assertEqual(('disk', '1'), (by_source['disk.rescue']['device'],
                                         by_source['disk.rescue']['boot']))
        self.assertEqual('disk', by_source['disk']['device'])
        self.assertEqual(('vda', 'vdb'), (by_source['disk']['dev'],
                                          by_source['disk.rescue']['dev']))
        self.assertNotIn('ipxe.iso.rescue', by_source)
        self.assertEqual([], self.cds())
        self.assertIsNone(self.last_xml().find('./os/boot'))
        self._unrescue_server(server)
        self.assertEqual(1, len(self.cds()))

    def test_legacy_rescue_of_an_ipxe_server_with_a_normal_image(self):
        server = self.boot()
        normal = self.add_image(libvirt_base.blank_qcow2(self.tmp_dir()),
                                disk_format='qcow2', image_id=uuids.qcow2)
        disks = self.rescue_with(server, normal)
        # Nova's legacy layout: the rescue disk first, then the server's.
        self.assertEqual(
            [('disk.rescue', 'disk'), ('disk', 'disk')],
            [(os.path.basename(d['source']), d['device'])
             for d in disks][:2])
        self.assertEqual([], self.cds())
        self._unrescue_server(server)
        self.assertEqual(1, len(self.cds()))

    def test_rebuild_to_a_normal_image_and_back(self):
        server = self.boot()
        normal = self.add_image(libvirt_base.blank_qcow2(self.tmp_dir()),
                                disk_format='qcow2', image_id=uuids.qcow2)
        self._rebuild_server(server, normal)
        self.assertEqual([], self.cds())
        self.assertFalse(os.path.exists(self.iso(server)))
        self._rebuild_server(server, self.image_id)
        self.assertEqual(1, len(self.cds()))
        root = libvirt_base.qemu_img_info(
            os.path.join(self.inst_dir(server), 'disk'))
        self.assertNotIn('backing-filename', root)

    def test_snapshot_then_boot_the_snapshot(self):
        server = self.boot()
        # "Install": write a marker onto the blank root.
        disk = os.path.join(self.inst_dir(server), 'disk')
        libvirt_base.write_marker(disk, b'installed-os')
        # Nova's own snapshot code on the driver (the API path races on
        # task_state in this harness): find_disk, extract, upload.
        image_id = self.glance.create(self.ctxt, {
            'name': 'golden', 'status': 'queued', 'disk_format': 'qcow2',
            'container_format': 'bare', 'properties': {}})['id']
        inst = objects.Instance.get_by_uuid(self.ctxt, server['id'])
        self.computes['compute1'].driver.snapshot(
            self.ctxt, inst, image_id, lambda **kw: None)
        image = self.glance.show(self.ctxt, image_id)
        data = self.glance._imagedata[image_id]
        self.assertTrue(b'installed-os' in libvirt_base.raw_bytes(
            data, self.tmp_dir()), 'the snapshot lacks the installed OS')
        self.assertNotEqual('iso', image['disk_format'])
        # Boot the snapshot's bytes as a golden image (it keeps the
        # instance's hw_ipxe_boot, as Nova's snapshots inherit it).
        golden = self.add_image(data, disk_format=image['disk_format'],
                                image_id=uuids.golden, hw_ipxe_boot='true')
        clone = self.boot(image_id=golden, port=self.lab_port(
            mac='fa:16:3e:00:2b:0c', ip='192.0.2.12'))
        self.assertEqual([], self.cds())
        self.assertEqual(('vda', 'disk'),
                         (self.disks(self.last_xml())[0]['dev'],
                          self.disks(self.last_xml())[0]['device']))
        self.assertFalse(os.path.exists(self.iso(clone)))
        self.assertTrue(b'installed-os' in libvirt_base.raw_head(
            os.path.join(self.inst_dir(clone), 'disk'), self.tmp_dir()),
            'the clone lacks the installed OS')

    def test_resize_and_revert(self):
        self.flags(allow_resize_to_same_host=True)
        server = self.boot()
        bigger = self._create_flavor(disk=3, ephemeral=0, name='m1.big')
        self._resize_server(server, bigger)
        disk = os.path.join(self.inst_dir(server), 'disk')
        self.assertEqual(3 * GiB, libvirt_base.qemu_img_info(disk)[
            'virtual-size'])
        self.assertEqual(1, len(self.cds()))
        self.assertIn(libvirt_base.PORT_IP, script_of(self.iso(server)))
        self._revert_resize(server)
        self.assertEqual(2 * GiB, libvirt_base.qemu_img_info(disk)[
            'virtual-size'])
        self.assertEqual(1, len(self.cds()))
        self.assertIn(libvirt_base.PORT_IP, script_of(self.iso(server)))

    def test_shelve_and_unshelve(self):
        server = self.boot()
        disk = os.path.join(self.inst_dir(server), 'disk')
        libvirt_base.write_marker(disk, b'installed-os')
        self.api.post_server_action(server['id'], {'shelve': {}})
        self._wait_for_server_parameter(server, {
            'status': 'SHELVED_OFFLOADED'})
        self.assertFalse(os.path.exists(self.inst_dir(server)))
        self._unshelve_server(server)
        # The OS disk came back from the snapshot, not rebased on the ISO.
        info = libvirt_base.qemu_img_info(disk)
        self.assertNotEqual(self.base_file(self.image_id),
                            info.get('full-backing-filename'))
        self.assertTrue(b'installed-os' in libvirt_base.raw_head(
            disk, self.tmp_dir()),
            'the unshelved disk lacks the installed OS')
        self.assertEqual('vda', self.disks(self.last_xml())[0]['dev'])
        # The next hard reboot brings the menu back.
        self._reboot_server(server, hard=True)
        self.assertEqual(1, len(self.cds()))


class LiveMigrationTestCase(IpxeLifecycleBase):

    def test_pre_live_migration_builds_the_iso_on_a_new_host(self):
        server = self.boot()
        drv = self.computes['compute1'].driver
        inst = objects.Instance.get_by_uuid(
            self.ctxt, server['id'], expected_attrs=['system_metadata',
                                                     'flavor', 'metadata'])
        disk_info = drv.get_instance_disk_info(inst)
        # The destination: the same path, empty (the source moved away).
        os.rename(self.inst_dir(server), self.inst_dir(server) + '.src')
        migrate_data = objects.LibvirtLiveMigrateData(
            is_shared_block_storage=False, is_shared_instance_path=False,
            block_migration=True, instance_relative_path=server['id'],
            graphics_listen_addr_vnc='127.0.0.1',
            graphics_listen_addr_spice='127.0.0.1',
            serial_listen_addr='127.0.0.1')
        network_info = inst.get_network_info()
        drv.pre_live_migration(self.ctxt, inst, None, network_info,
                               disk_info, migrate_data)
        script = script_of(self.iso(server))
        self.assertIn(libvirt_base.PORT_MAC, script)
        self.assertIn(libvirt_base.PORT_IP, script)


class FailureTestCase(IpxeLifecycleBase):

    def assert_fault(self, server, *needles):
        fault = server['fault']['message']
        for needle in needles:
            self.assertIn(needle, fault)
        self.assertNotIn(CONF_instances_path(), fault)
        self.assertNotIn('Traceback', fault)
        inst = self.inst_dir(server)
        if os.path.exists(inst):
            self.assertEqual([], [n for n in os.listdir(inst)
                                  if 'ipxe' in n or n.endswith('.tmp')])
        return fault

    def test_not_an_ipxe_iso_fails_with_a_tenant_fault(self):
        tmp = self.tmp_dir()
        path = os.path.join(tmp, 'plain.iso')
        samples.write_iso(path, {('/README.TXT;1', '/readme.txt'):
                                 b'hello'})
        image = self.add_image(libvirt_base.read(path),
                               image_id=uuids.plain, hw_ipxe_boot='true')
        server = self.boot(image_id=image, expected_state='ERROR')
        self.assert_fault(server, 'not a usable iPXE ISO')

    def test_stock_policy_boots_the_unmodified_iso(self):
        self.flags(on_build_failure='stock', group='ipxe')
        self.flags(boot_menu_url=None, group='ipxe')
        server = self.boot()
        self.assertEqual(self.glance._imagedata[self.image_id],
                         libvirt_base.read(self.iso(server)))

    def test_missing_menu_url_is_an_operator_fault(self):
        self.flags(boot_menu_url=None, group='ipxe')
        server = self.boot(expected_state='ERROR')
        self.assert_fault(server, 'contact the cloud operator')

    def test_menu_the_iso_cannot_fetch_is_an_operator_fault(self):
        # Bookworm's iPXE has no HTTPS: the core's capability check runs
        # on the driver's path too.
        self.flags(boot_menu_url='https://boot.example/menu', group='ipxe')
        server = self.boot(expected_state='ERROR')
        fault = self.assert_fault(server, 'lacks a feature the boot menu '
                                          'needs')
        self.assertNotIn('boot.example', fault)

    def test_uefi_with_a_pre_2021_ipxe_is_a_fault(self):
        image = self.add_ipxe_image(image_id=uuids.uefi,
                                    hw_firmware_type='uefi')
        server = self.boot(image_id=image, expected_state='ERROR')
        self.assert_fault(server, 'cannot boot UEFI')

    def test_secure_boot_with_an_unsigned_loader_is_a_fault(self):
        image = self.add_ipxe_image(
            libvirt_base.TRIXIE_ISO, image_id=uuids.sb,
            hw_firmware_type='uefi', os_secure_boot='required',
            hw_machine_type='q35')
        server = self.boot(image_id=image, expected_state='ERROR')
        self.assert_fault(server, 'not signed')

    def test_unsupported_image_backend_is_refused(self):
        self.flags(images_type='lvm', group='libvirt')
        self.flags(images_volume_group='nova', group='libvirt')
        server = self.boot(expected_state='ERROR')
        self.assert_fault(server, 'file-based image backend')

    def test_rbd_image_backend_is_refused(self):
        self.flags(images_type='rbd', group='libvirt')
        server = self.boot(expected_state='ERROR')
        self.assert_fault(server, 'file-based image backend', 'not rbd')


class ErrorMappingTestCase(libvirt_base.IpxeMoveBase):
    """What Nova does with a failed build, with two computes to go to.

    nova_ipxe.virt.errors: the tenant's (or the configuration's) error
    aborts the build where it failed; this host's failure sends it to the
    other host.
    """

    # A regular file whose read fails in the kernel (EIO at offset 0).
    FAILING_READ = '/proc/self/mem'

    def setUp(self):
        super().setUp()
        # Base paths whose next build, on whichever host, fails to read.
        self.failing_reads = []
        for name in self.computes:
            self.record_attempts(name)

    def record_attempts(self, hostname):
        """Record each ISO build a compute tries, with what Nova got."""
        drv = self.computes[hostname].driver
        real = drv._try_build

        def try_build(*args):
            event = {'op': 'attempt', 'host': hostname, 'outcome': 'built'}
            self.events.append(event)
            try:
                if self.failing_reads:
                    return self.with_failing_read(
                        self.failing_reads.pop(), real, *args)
                return real(*args)
            except Exception as e:
                event['outcome'] = type(e).__name__
                raise
        drv._try_build = try_build

    def attempts(self):
        return [(e['host'], e['outcome']) for e in self.events
                if e['op'] == 'attempt']

    def with_failing_read(self, base, build, *args):
        """Run ``build`` with ``base`` failing to read, then restore it.

        Nova's shared ``_base`` stands for this host's disk: the file is
        back as soon as this host's build is over.
        """
        aside = base + '.aside'
        os.rename(base, aside)
        os.symlink(self.FAILING_READ, base)
        try:
            return build(*args)
        finally:
            os.unlink(base)
            os.rename(aside, base)

    def test_the_tenants_error_aborts_the_build(self):
        path = os.path.join(self.tmp_dir(), 'plain.iso')
        samples.write_iso(path, {('/README.TXT;1', '/readme.txt'):
                                 b'hello'})
        image = self.add_image(libvirt_base.read(path),
                               image_id=uuids.plain, hw_ipxe_boot='true')
        server = self.boot(image_id=image, expected_state='ERROR')
        fault = server['fault']['message']
        self.assertIn('aborted', fault)
        self.assertIn('not a usable iPXE ISO', fault)
        # Not tried on the other host.
        (attempt,) = self.attempts()
        self.assertEqual('IpxeBootFailed', attempt[1])

    def test_the_operators_error_aborts_the_build(self):
        self.flags(boot_menu_url=None, group='ipxe')
        server = self.boot(expected_state='ERROR')
        self.assertIn('contact the cloud operator',
                      server['fault']['message'])
        (attempt,) = self.attempts()
        self.assertEqual('IpxeBootFailed', attempt[1])

    def test_a_failing_read_of_the_base_reschedules(self):
        # The first host to try cannot read its copy of the ISO: the
        # other host builds it.
        base = self.base_file(self.image_id)
        self.failing_reads.append(base)
        server = self.boot()
        (failed, outcome), (built, last) = self.attempts()
        self.assertEqual(('IpxeHostFailure', 'built'), (outcome, last))
        self.assertNotEqual(failed, built)
        self.assertEqual(built, server['OS-EXT-SRV-ATTR:host'])
        self.assertTrue(os.path.isfile(base))
        self.assertFalse(os.path.islink(base))
        self.assertIn(libvirt_base.PORT_IP, script_of(self.iso(server)))


class FirmwareTestCase(IpxeLifecycleBase):

    def test_uefi_q35_with_trixie_ipxe(self):
        image = self.add_ipxe_image(libvirt_base.TRIXIE_ISO,
                                    image_id=uuids.uefi,
                                    hw_firmware_type='uefi',
                                    hw_machine_type='q35')
        server = self.boot(image_id=image)
        cds = self.cds()
        self.assertEqual([('sda', 'sata', '1')],
                         [(d['dev'], d['bus'], d['boot']) for d in cds])
        files = samples.iso_files(self.iso(server))
        self.assertTrue(any(n.lower().endswith('.img') for n in files))
        self.assertEqual('vda', self.disks(self.last_xml())[0]['dev'])


class DiskBusTestCase(IpxeLifecycleBase):
    """Root disk buses whose names share the CD's prefix ("sd" on q35)."""

    def check(self, **props):
        image = self.add_ipxe_image(image_id=uuids.bus, **props)
        server = self.boot(image_id=image)
        disks = self.disks(self.last_xml())
        devs = [d['dev'] for d in disks]
        self.assertEqual(len(devs), len(set(devs)), disks)
        self.assertEqual(('disk', os.path.join(self.inst_dir(server),
                                               'disk'), '2'),
                         (disks[0]['device'], disks[0]['source'],
                          disks[0]['boot']))
        self.assertEqual([(self.iso(server), '1')],
                         [(d['source'], d['boot']) for d in self.cds()])
        self._reboot_server(server, hard=True)
        self.assertEqual(devs, [d['dev'] for d in
                                self.disks(self.last_xml())])
        return disks

    def test_sata_root_on_q35(self):
        disks = self.check(hw_machine_type='q35', hw_disk_bus='sata')
        self.assertEqual([('sda', 'sata'), ('sdb', 'sata')],
                         [(d['dev'], d['bus']) for d in disks])

    def test_sata_root_ephemeral_and_a_volume_on_q35(self):
        self.useFixture(libvirt_base.nova_fixtures.CinderFixture(self))
        self.flavor = self._create_flavor(disk=2, ephemeral=1,
                                          name='m1.eph')
        image = self.add_ipxe_image(image_id=uuids.bus,
                                    hw_machine_type='q35',
                                    hw_disk_bus='sata')
        server = self.boot(image_id=image)
        vol = libvirt_base.nova_fixtures.CinderFixture.IMAGE_BACKED_VOL
        self.api.post_server_volume(server['id'], {
            'volumeAttachment': {'volumeId': vol}})
        self._wait_for_volume_attach(server['id'], vol)
        self.refresh_nw_cache(server)
        self._reboot_server(server, hard=True)
        disks = self.disks(self.last_xml())
        devs = [d['dev'] for d in disks]
        self.assertEqual(len(devs), len(set(devs)), disks)
        # root sda, ephemeral sdb, our CD sdc: the volume takes sdd.
        self.assertEqual('/dev/sdd', self.api.get_server_volumes(
            server['id'])[0]['device'])
        self.assertEqual([('sdc', '1')],
                         [(d['dev'], d['boot']) for d in self.cds()])

    def test_scsi_root_on_q35(self):
        disks = self.check(hw_machine_type='q35', hw_disk_bus='scsi',
                           hw_scsi_model='virtio-scsi')
        self.assertEqual([('sda', 'scsi'), ('sdb', 'sata')],
                         [(d['dev'], d['bus']) for d in disks])


class DeviceNamesTestCase(IpxeLifecycleBase):
    def setUp(self):
        super().setUp()
        self.useFixture(libvirt_base.nova_fixtures.CinderFixture(self))

    def test_root_keeps_vda_with_ephemeral_swap_and_a_volume(self):
        flavor = self._create_flavor(disk=2, ephemeral=1, swap=512,
                                     name='m1.eph')
        server = self._create_server(
            image_uuid=self.image_id, flavor_id=flavor,
            networks=[{'port': self.lab_port()['id']}])
        devs = {(d['dev'], d['device']) for d in
                self.disks(self.last_xml())}
        self.assertEqual({('vda', 'disk'), ('vdb', 'disk'),
                          ('vdc', 'disk'), ('hda', 'cdrom')}, devs)
        self.assertEqual('vda', self.disks(self.last_xml())[0]['dev'])
        vol = libvirt_base.nova_fixtures.CinderFixture.IMAGE_BACKED_VOL
        self.api.post_server_volume(server['id'], {
            'volumeAttachment': {'volumeId': vol}})
        self._wait_for_volume_attach(server['id'], vol)
        attachment = self.api.get_server_volumes(server['id'])[0]
        self.assertEqual('/dev/vdd', attachment['device'])


class ConfigDriveTestCase(IpxeLifecycleBase):

    def test_config_drive_beside_the_ipxe_cd(self):
        # Nova's config drive is a second CD (disk.config, genisoimage):
        # it must neither take our CD's slot nor get a boot order.
        self.flags(force_config_drive=True)
        server = self.boot()
        disks = self.disks(self.last_xml())
        by_source = {os.path.basename(d['source']): d for d in disks}
        self.assertEqual(('vda', 'disk', '2'), (
            by_source['disk']['dev'], by_source['disk']['device'],
            by_source['disk']['boot']))
        self.assertEqual(('cdrom', '1'), (by_source['ipxe.iso']['device'],
                                          by_source['ipxe.iso']['boot']))
        self.assertEqual(('cdrom', False), (
            by_source['disk.config']['device'],
            by_source['disk.config']['boot']))
        devs = [d['dev'] for d in disks]
        self.assertEqual(len(devs), len(set(devs)))
        self.assertEqual('disk', disks[0]['source'].rsplit('/', 1)[1])
        self.assertTrue(os.path.getsize(os.path.join(
            self.inst_dir(server), 'disk.config')) > 0)
        self._reboot_server(server, hard=True)
        self.assertEqual(sorted(devs), sorted(
            d['dev'] for d in self.disks(self.last_xml())))
