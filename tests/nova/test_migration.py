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

"""Moves between two computes through the Nova API, with real bytes.

For each move the ISO the destination guest is started on must have been
built by the destination compute's own driver, after the move started and
before the guest started there, from the port's settings and the
destination's configuration: ``[ipxe] boot_menu_url`` changes between the
boot and the move, so a file copied from the source (Nova copies every
file of the guest's XML on a cold migration, and creates missing ones as
zeros on a live migration's destination) would carry the old URL or no
script at all.
"""

import os

from tests.nova import libvirt_base

CONF = libvirt_base.CONF
MAC, IP = libvirt_base.PORT_MAC, libvirt_base.PORT_IP
URL_BOOT = libvirt_base.MENU_URL
URL_MOVE = 'http://192.0.2.1:8080/after-move'
URL_BACK = 'http://192.0.2.1:8080/after-revert'


class MoveTestBase(libvirt_base.IpxeMoveBase):

    def boot_on(self, host='compute1'):
        server = self.boot(host=host)
        self.assertEqual(host, server['OS-EXT-SRV-ATTR:host'])
        iso = self.iso(server)
        self.assert_real_iso(iso, MAC, IP, URL_BOOT)
        self.boot_sha = libvirt_base.sha256(iso)
        return server

    def guests(self, host):
        conn = self.computes[host].driver._host.get_connection()
        return [d.UUIDString() for d in conn._vms.values()]

    def assert_moved_iso(self, path, url=URL_MOVE):
        script = self.assert_real_iso(path, MAC, IP, url)
        self.assertNotIn(URL_BOOT, script)
        self.assertNotEqual(self.boot_sha, libvirt_base.sha256(path))
        return script


class ColdMigrationTestCase(MoveTestBase):
    """The harness's default: one instances_path for both computes."""

    own_storage_on_dest = False

    def setUp(self):
        super().setUp()
        if self.own_storage_on_dest:
            self.own_storage('compute2')

    def dest_iso(self, server):
        return self.path_on('compute2', self.iso(server))

    def migrate(self, server):
        self.flags(boot_menu_url=URL_MOVE, group='ipxe')
        since = self.mark('migrate')
        server = self._migrate_server(server, host='compute2')
        self.assertEqual('compute2', server['OS-EXT-SRV-ATTR:host'])
        path, build, start = self.assert_iso_built_there('compute2', since)
        self.assertEqual(self.dest_iso(server), path)
        self.assertEqual(self.root_of('compute2'), build['instances_path'])
        # Nova copied our ISO over and turned it into qcow2
        # (LibvirtDriver.finish_migration): the build came after.
        self.assertTrue(CONF.use_cow_images)
        converts = self.events_of('convert', since, path=path)
        self.assertTrue(converts, 'Nova no longer converts the ISO')
        self.assertLess(self.events.index(converts[-1]),
                        self.events.index(build))
        self.assert_moved_iso(path)
        # Only compute2 built an ISO during the move.
        self.assertEqual({'compute2'}, {
            e['host'] for e in self.events_of('build', since)})
        return server, since

    def test_cold_migrate_and_confirm(self):
        server = self.boot_on('compute1')
        server, since = self.migrate(server)
        built = libvirt_base.sha256(self.dest_iso(server))
        self._confirm_resize(server)
        self.assertFalse(os.path.exists(self.inst_dir(server) + '_resize'))
        # (Whether compute1 undefines its guest is not checked: Nova
        # compares instance.host with the process-wide CONF.host,
        # in LibvirtDriver._cleanup_resize.)
        self.assertIn(server['id'], self.guests('compute2'))
        self.assertEqual(built, libvirt_base.sha256(self.dest_iso(server)))
        if self.own_storage_on_dest:
            # Nothing of the server left on the source.
            self.assertFalse(os.path.exists(self.inst_dir(server)))
            # compute2 fetched its own _base copy (the ISO's bytes).
            with self.instances_path(self.root_of('compute2')):
                base = self.base_file(self.image_id)
            self.assertEqual(self.glance._imagedata[self.image_id],
                             libvirt_base.read(base))

    def test_cold_migrate_and_revert(self):
        server = self.boot_on('compute1')
        server, _ = self.migrate(server)
        self.flags(boot_menu_url=URL_BACK, group='ipxe')
        since = self.mark('revert')
        server = self._revert_resize(server)
        self.assertEqual('compute1', server['OS-EXT-SRV-ATTR:host'])
        # finish_revert_migration renamed <dir>_resize back (with the
        # boot-time ISO in it); compute1 built it again before starting.
        path, _, _ = self.assert_iso_built_there('compute1', since)
        self.assertEqual(self.iso(server), path)
        self.assert_moved_iso(path, URL_BACK)
        self.assertFalse(os.path.exists(self.inst_dir(server) + '_resize'))
        self.assertEqual([server['id']], self.guests('compute1'))
        if self.own_storage_on_dest:
            # Not shared: compute2's revert_resize destroyed its copy.
            self.assertFalse(os.path.exists(os.path.dirname(
                self.dest_iso(server))))


class NonSharedColdMigrationTestCase(ColdMigrationTestCase):
    """compute2 has its own instance directory, reached "over ssh"."""

    own_storage_on_dest = True

    def test_cold_migrate_after_the_image_left_glance(self):
        # finish_migration passes fallback_from_host=the source
        # (LibvirtDriver.finish_migration): compute2 copies the ISO's
        # _base from there.
        server = self.boot_on('compute1')
        self.glance.delete(self.ctxt, self.image_id)
        self.migrate(server)
        with self.instances_path(self.root_of('compute2')):
            base = self.base_file(self.image_id)
        self.assertEqual(self.glance._imagedata[self.image_id],
                         libvirt_base.read(base))


class FlatColdMigrationTestCase(NonSharedColdMigrationTestCase):
    # Nova converts raw files to qcow2 on the destination of a cold
    # migration when use_cow_images is set (its default), flat backend
    # or not (LibvirtDriver.finish_migration): the ISO must come out
    # raw all the same.
    images_type = 'flat'


class LiveMigrationTestCase(MoveTestBase):

    def live_migrate(self, server):
        self.flags(boot_menu_url=URL_MOVE, group='ipxe')
        since = self.mark('live-migrate')
        server = self._live_migrate(server, host='compute2')
        self.assertEqual('compute2', server['OS-EXT-SRV-ATTR:host'])
        path, build, start = self.assert_iso_built_there(
            'compute2', since, op='migrate')
        self.assert_moved_iso(path)
        return server, since, path

    def test_live_migration_shared_instance_path(self):
        server = self.boot_on('compute1')
        # The source's QEMU has the ISO open while compute2 rebuilds it on
        # the shared path: a new file replaces it, the open one is never
        # rewritten under the running guest.
        held = open(self.iso(server), 'rb')
        self.addCleanup(held.close)
        server, since, path = self.live_migrate(server)
        self.assertEqual(self.iso(server), path)
        self.assertEqual(
            self.boot_sha,
            libvirt_base.hashlib.sha256(held.read()).hexdigest())
        # Shared: the source's cleanup left the directory alone.
        self.assertTrue(os.path.exists(path))
        self.assertEqual([server['id']], self.guests('compute2'))

    def test_live_migration_shared_path_same_settings_same_files(self):
        # Nothing changed: the destination's build holds the very files
        # the guest booted from.  (Not the same bytes: each build stamps
        # its own dates and MBR disk signature.)
        server = self.boot_on('compute1')
        before = libvirt_base.samples.iso_files(self.iso(server))
        since = self.mark('live-migrate')
        server = self._live_migrate(server, host='compute2')
        path, _, _ = self.assert_iso_built_there('compute2', since,
                                                 op='migrate')
        self.assertEqual(before, libvirt_base.samples.iso_files(path))

    def test_block_migration_to_a_host_with_its_own_storage(self):
        server = self.boot_on('compute1')
        src_dir = self.inst_dir(server)
        booted = self.defined[-1]
        own = self.own_storage('compute2')
        server, since, path = self.live_migrate(server)
        self.assertEqual(os.path.join(own, server['id'], 'ipxe.iso'), path)
        # Nova created the missing ISO as zeros first
        # (LibvirtDriver._create_images_and_backing) and does not copy
        # read-only disks (_live_migration_copy_disk_paths): what
        # the guest got is the build that replaced those zeros.
        zeros = self.events_of('create_image', since, path=path)
        self.assertEqual(1, len(zeros))
        self.assertLess(self.events.index(zeros[0]),
                        self.events.index(self.events_of(
                            'build', since, path=path)[-1]))
        # Nova leaves the CD out of the block copy because we define it
        # read-only (fake libvirt's XMLDesc drops <readonly/>, so here
        # Nova's list does include hda: nova.tests.fixtures.libvirt).
        self.assertEqual([True], [d['readonly'] for d in self.disks(
            libvirt_base.ET.fromstring(booted)) if d['device'] == 'cdrom'])
        self.assertIn('vda', self.migrate_params[-1]['migrate_disks'])
        # The destination fetched its own _base copy from Glance.
        build = self.events_of('build', since, path=path)[-1]
        self.assertEqual(own, build['instances_path'])
        with self.instances_path(own):
            base = self.base_file(self.image_id)
        self.assertEqual(self.glance._imagedata[self.image_id],
                         libvirt_base.read(base))
        # The source removed its own copy (block migration cleanup).
        self.assertFalse(os.path.exists(src_dir))
        self.assertEqual([server['id']], self.guests('compute2'))

    def test_block_migration_after_the_image_left_glance(self):
        # Nova's own disks come from the source then
        # (_create_images_and_backing, fallback_from_host=instance.host):
        # so must the destination's _base copy of the ISO.
        server = self.boot_on('compute1')
        own = self.own_storage('compute2')
        self.glance.delete(self.ctxt, self.image_id)
        server, since, path = self.live_migrate(server)
        with self.instances_path(own):
            base = self.base_file(self.image_id)
        self.assertEqual(self.glance._imagedata[self.image_id],
                         libvirt_base.read(base))

    def test_failed_block_migration_leaves_nothing_on_the_destination(self):
        server = self.boot_on('compute1')
        own = self.own_storage('compute2')
        self.flags(boot_menu_url=URL_MOVE, group='ipxe')
        self.fail_migration = True
        since = self.mark('live-migrate')
        server = self._live_migrate(server, 'failed', host='compute2')
        self.assertEqual('compute1', server['OS-EXT-SRV-ATTR:host'])
        # compute2 had built its ISO; its rollback removed the directory.
        dest = os.path.join(own, server['id'])
        self.assertTrue(self.events_of('build', since, host='compute2',
                                       path=os.path.join(dest, 'ipxe.iso')))
        self.assertFalse(os.path.exists(dest))
        # The source's ISO is the one its guest booted.
        self.assertEqual(self.boot_sha, libvirt_base.sha256(self.iso(server)))


class EvacuateTestCase(MoveTestBase):

    def force_down(self, host, down):
        # Microversion 2.53+: services by id.
        service, = self.api.get_services(binary='nova-compute', host=host)
        self.api.put_service_force_down(service['id'], down)

    def evacuate(self, server):
        self.flags(boot_menu_url=URL_MOVE, group='ipxe')
        self.computes['compute1'].stop()
        self.force_down('compute1', True)
        since = self.mark('evacuate')
        server = self._evacuate_server(
            server, {'host': 'compute2'}, expected_host='compute2')
        path, build, _ = self.assert_iso_built_there('compute2', since)
        self.assert_moved_iso(path)
        return server, since, path, build

    def source_back(self):
        self.restart_compute_service('compute1')
        self.force_down('compute1', False)

    def test_evacuate_shared_instance_path(self):
        server = self.boot_on('compute1')
        disk = os.path.join(self.inst_dir(server), 'disk')
        libvirt_base.write_marker(disk, b'installed-os')
        server, since, path, _ = self.evacuate(server)
        self.assertEqual(self.iso(server), path)
        # On shared storage the installed disk is kept.
        self.assertTrue(b'installed-os' in libvirt_base.raw_head(
            disk, self.tmp_dir()))
        self.source_back()
        # Shared storage: the source's cleanup keeps compute2's files.
        self.assertTrue(os.path.exists(path))
        self.assertEqual([], self.guests('compute1'))

    def test_evacuate_to_a_host_with_its_own_empty_storage(self):
        server = self.boot_on('compute1')
        src_dir = self.inst_dir(server)
        own = self.own_storage('compute2')
        with self.instances_path(own):
            base = self.base_file(self.image_id)
            self.assertFalse(os.path.exists(base))
            # compute1 is down: only compute2 works during the evacuation.
            server, since, path, build = self.evacuate(server)
        self.assertEqual(os.path.join(own, server['id'], 'ipxe.iso'), path)
        self.assertEqual(own, build['instances_path'])
        # Built from a base compute2 fetched from Glance itself.
        self.assertEqual(self.glance._imagedata[self.image_id],
                         libvirt_base.read(base))
        self.assertTrue(os.path.exists(os.path.join(src_dir, 'ipxe.iso')))
        self.source_back()
        # Not shared: Nova's ComputeManager._destroy_evacuated_instances
        # destroyed the source's copy, our ISO with the directory.
        self.assertFalse(os.path.exists(src_dir))
        self.assertEqual([], self.guests('compute1'))
        self.assertTrue(os.path.exists(path))
