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

from nova.virt.libvirt import driver as libvirt_driver
from oslo_utils.fixture import uuidsentinel as uuids

from tests import isofactory
from tests.nova import libvirt_base

GiB = 1024 ** 3


def script_of(iso_path):
    files = isofactory.iso_files(iso_path)
    scripts = [v.decode() for v in files.values()
               if v.startswith(b'#!ipxe')]
    assert scripts, sorted(files)
    return scripts[0]


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
