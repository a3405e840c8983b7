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

"""``compute_driver = ipxe.XenAPIDriver`` on Nova 21.2.4's own XAPI fake.

The setup is Nova 21's own ``XenAPIVMTestCase`` (its fake session, fake
DB and fake Glance); its tests are not re-run here.  The ISO data is the
real Debian iPXE ISO served by Nova's fake image service, and the driver
is loaded by Nova's ``load_compute_driver`` through the shim.  Nova's
fake has no HTTP side, so only the ``/import_raw_vdi`` PUT and its task
are replaced (by a function that stores the bytes against the fake VDI);
that path runs for real against the XAPI stand-in in
tests/functional/test_xenapi_boot.py.
"""

import ast
import hashlib
import inspect
import io
import os

import fixtures

from nova.compute import manager
from nova import exception as nova_exception
from nova import objects
from nova.tests.unit import fake_network
from nova.tests.unit.image import fake as fake_image
from nova.tests.unit.virt.xenapi import test_xenapi
from nova.virt import driver as virt_driver
from nova.virt import fake
from nova.virt.xenapi import fake as xenapi_fake
from nova.virt.xenapi import vm_utils
import pycdlib

from nova_ipxe import builder
from nova_ipxe import cache
from nova_ipxe import conf as ipxe_conf
from nova_ipxe import exception
from nova_ipxe import iso
from nova_ipxe.virt import errors
from nova_ipxe.virt import xenapi
from tests import samples

REAL_DOWNLOAD = fake_image._FakeImageService.download
IPXE_IMAGE = 'a0b1c2d3-e4f5-4a6b-8c7d-9e0f1a2b3c4d'
MENU = 'http://192.0.2.1:8080/menu.ipxe'
# A regular file whose read fails in the kernel (EIO at offset 0): a
# disk that fails under the cached ISO, without a broken disk.
FAILING_READ = '/proc/self/mem'


def glance_hashes(data):
    """The hashes Glance records for an image."""
    return {'checksum': hashlib.md5(data).hexdigest(),
            'os_hash_algo': 'sha512',
            'os_hash_value': hashlib.sha512(data).hexdigest()}


def _script_of(iso_bytes):
    iso = pycdlib.PyCdlib()
    iso.open_fp(io.BytesIO(iso_bytes))
    try:
        out = io.BytesIO()
        iso.get_file_from_iso_fp(out, iso_path='/NIPXE.IPX;1')
        return out.getvalue().decode()
    finally:
        iso.close()


def _vbd_insert(self, _session, vbd_ref, vdi_ref):
    vbd = xenapi_fake.get_record('VBD', vbd_ref)
    xenapi_fake.get_record('VDI', vdi_ref)['VBDs'].append(vbd_ref)
    vbd.update(empty=False, VDI=vdi_ref)


def _refuse_to_start(self, instance, vm_ref, *args, **kwargs):
    raise RuntimeError('the rescue VM did not start')


class IpxeXenAPIDriverTestCase(test_xenapi.XenAPIVMTestCase):

    def setUp(self):
        super().setUp()
        self.flags(boot_menu_url=MENU, group='ipxe')
        # Real bytes from Nova's fake Glance (the base class stubs the
        # download out).
        self.downloads = []

        def download(service, context, image_id, *args, **kwargs):
            self.downloads.append(image_id)
            return REAL_DOWNLOAD(service, context, image_id, *args,
                                 **kwargs)
        self.stub_out('nova.tests.unit.image.fake._FakeImageService.'
                      'download', download)
        self.cache_dir = self.useFixture(fixtures.TempDir()).path
        self.flags(cache_dir=self.cache_dir, group='ipxe')
        # This test's own parsed bases: none from another test.
        self.stub_out('nova_ipxe.builder.PARSED_BASES',
                      builder.ParsedBases())
        with open(samples.BOOKWORM_ISO, 'rb') as f:
            self.iso = f.read()
        self.add_image(IPXE_IMAGE, self.iso, {'hw_ipxe_boot': 'true'})
        # Nova's fake VBD.insert forgets the VDI's back reference (XAPI
        # keeps it), which breaks destroying any ISO-booted VM in the fake.
        self.stub_out('nova.virt.xenapi.fake.SessionBase.VBD_insert',
                      _vbd_insert)
        self.uploads = {}
        self.stub_out('nova_ipxe.virt.xenapi.Xapi.upload', self.fake_upload)
        self.conn = virt_driver.load_compute_driver(fake.FakeVirtAPI(),
                                                    'ipxe.XenAPIDriver')
        self.conn._session.is_local_connection = False

    def add_image(self, image_id, data, properties):
        fake_image.FakeImageService().create(None, dict(
            glance_hashes(data), id=image_id, name='ipxe-boot',
            disk_format='iso', container_format='bare', size=len(data),
            properties=properties), data=io.BytesIO(data))
        test_xenapi.IMAGE_FIXTURES[image_id] = {'image_meta': {
            'id': image_id, 'name': 'ipxe-boot', 'disk_format': 'iso',
            'container_format': 'bare', 'size': len(data),
            'properties': properties}}
        self.addCleanup(test_xenapi.IMAGE_FIXTURES.pop, image_id)

    def fake_upload(self, xapi, vdi_ref, data):
        rec = xenapi_fake.get_record('VDI', vdi_ref)
        data = data.read()  # the driver streams a file
        assert len(data) <= int(rec['virtual_size'])
        self.uploads[rec['uuid']] = data

    def our_vdis(self):
        return {ref: rec for ref, rec in
                xenapi_fake.get_all_records('VDI').items()
                if xenapi.OWNER_KEY in (rec.get('other_config') or {})}

    def spawn(self, image=IPXE_IMAGE):
        self._test_spawn(image, None, None)
        vm = [rec for rec in xenapi_fake.get_all_records('VM').values()
              if not rec['is_control_domain']][0]
        return vm, objects.Instance.get_by_id(self.context, 1)

    def test_driver_loads_through_the_shim(self):
        self.assertEqual('nova_ipxe.virt.xenapi_driver',
                         type(self.conn).__module__)

    def test_spawn_attaches_the_per_instance_iso(self):
        vm, instance = self.spawn()
        ours = self.our_vdis()
        self.assertEqual(1, len(ours))
        (vdi_ref, vdi), = ours.items()
        self.assertEqual(instance.uuid,
                         vdi['other_config'][xenapi.OWNER_KEY])
        cds = [xenapi_fake.get_record('VBD', ref) for ref in vm['VBDs']
               if xenapi_fake.get_record('VBD', ref)['type'] == 'cd']
        self.assertEqual([('1', vdi_ref, 'RO', True)],
                         [(c['userdevice'], c['VDI'], c['mode'],
                           c['bootable']) for c in cds])
        self.assertEqual('dc', vm['HVM_boot_params']['order'])
        script = _script_of(self.uploads[vdi['uuid']])
        # fake_network's first VIF: its static address and gateway.
        self.assertIn('set ${nipxe-nic0}/ip 192.168.1.100\n', script)
        self.assertIn('set ${nipxe-nic0}/gateway 192.168.1.1\n', script)
        self.assertIn(MENU, script)
        self.assertIn('uuid=%s' % instance.uuid, script)
        # Nova did not copy the stock ISO into a VDI of its own.
        self.assertEqual(
            [], [r for r in xenapi_fake.get_all_records('VDI').values()
                 if r['name_label'].endswith('iso')])

    def test_destroy_removes_the_iso_vdi(self):
        _, instance = self.spawn()
        self.assertEqual(1, len(self.our_vdis()))
        self.conn.destroy(self.context, instance, [])
        self.assertEqual({}, self.our_vdis())

    def test_not_an_ipxe_image_takes_the_stock_path(self):
        self.spawn(test_xenapi.IMAGE_ISO)
        self.assertEqual({}, self.uploads)
        self.assertEqual({}, self.our_vdis())

    # -- what Nova sees (nova_ipxe.virt.errors) ----------------------------

    def assert_aborts(self, e, cause):
        """A build Nova aborts, with the tenant-safe message."""
        self.assertIsInstance(e, errors.IpxeBootFailed)
        self.assertTrue(aborts_build(e))
        self.assertIsInstance(e.__cause__, cause)
        self.assertIn(e.__cause__.safe_message, e.format_message())
        self.assertNotIn(self.cache_dir, e.format_message())
        return e.__cause__

    def assert_reschedules(self, e, cause):
        """A build Nova reschedules, saying the host failed."""
        self.assertIsInstance(e, errors.IpxeHostFailure)
        self.assertFalse(aborts_build(e))
        self.assertIsInstance(e.__cause__, cause)
        self.assertIn('could not be made on this host', e.format_message())
        self.assertNotIn(self.cache_dir, e.format_message())
        return e.__cause__

    def test_build_failure_fails_the_spawn_leaving_nothing(self):
        bad = 'b1c2d3e4-f5a6-4b7c-8d9e-0f1a2b3c4d5e'
        self.add_image(bad, b'\0' * 65536, {'hw_ipxe_boot': 'true'})
        e = self.assertRaises(errors.IpxeBootFailed, self.spawn, bad)
        self.assert_aborts(e, exception.InvalidIso)
        self.assertIn('not a readable ISO 9660 image', e.format_message())
        self.assertEqual({}, self.our_vdis())
        self.assertEqual([], self.conn.list_instances())

    def test_menu_the_iso_cannot_fetch_fails_the_spawn(self):
        # Bookworm's iPXE has no HTTPS: refused before any VDI exists.
        self.flags(boot_menu_url='https://boot.example/menu', group='ipxe')
        e = self.assertRaises(errors.IpxeBootFailed, self.spawn)
        cause = self.assert_aborts(e, exception.IpxeCapabilityMissing)
        self.assertIn('no HTTPS', str(cause))
        self.assertNotIn('boot.example', e.format_message())
        self.assertEqual({}, self.our_vdis())
        self.assertEqual({}, self.uploads)

    def test_unreadable_cached_iso_is_the_hosts_fault(self):
        # The cached copy fails to read on this host's disk: not the
        # tenant's image, so another host may build it.
        real = iso.read_iso_file
        self.stub_out('nova_ipxe.iso.read_iso_file',
                      lambda path, max_size, name=None: real(
                          FAILING_READ, max_size, name))
        e = self.assertRaises(errors.IpxeHostFailure, self.spawn)
        self.assert_reschedules(e, exception.InvalidIso)
        self.assertIn('try again later', e.format_message())
        self.assertNotIn('Input/output error', e.format_message())
        self.assertEqual({}, self.our_vdis())

    def test_glance_bytes_not_matching_the_hash_reschedule(self):
        with open(samples.trixie_iso(), 'rb') as f:
            other = f.read()
        # Glance serves other bytes than its record's hash: nothing is
        # cached, and the build may work from another host.
        fake_image.FakeImageService()._imagedata[IPXE_IMAGE] = other[
            :len(self.iso)]
        e = self.assertRaises(errors.IpxeHostFailure, self.spawn)
        self.assert_reschedules(e, exception.ImageChecksumMismatch)
        self.assertEqual([], self.cache_entries())
        self.assertEqual({}, self.our_vdis())

    def test_glance_stream_longer_than_its_record_reschedules(self):
        fake_image.FakeImageService()._imagedata[IPXE_IMAGE] = (
            self.iso + b'\0' * 2048)
        e = self.assertRaises(errors.IpxeHostFailure, self.spawn)
        cause = self.assert_reschedules(e, exception.ImageDownloadFailed)
        self.assertIn('longer than the %d bytes' % len(self.iso),
                      str(cause))
        self.assertEqual([], self.cache_entries())

    def test_unwritable_cache_dir_reschedules(self):
        blocker = os.path.join(self.cache_dir, 'file')
        with open(blocker, 'w'):
            pass
        self.flags(cache_dir=os.path.join(blocker, 'cache'), group='ipxe')
        e = self.assertRaises(errors.IpxeHostFailure, self.spawn)
        cause = self.assert_reschedules(e, exception.CacheError)
        self.assertIn(blocker, str(cause))
        self.assertNotIn(blocker, e.format_message())

    def test_upload_failure_leaves_no_vdi(self):
        def refused(xapi, vdi_ref, data):
            raise exception.XapiUploadFailed(
                vdi=vdi_ref, call='PUT /import_raw_vdi', code='HTTP 500',
                details='')
        self.stub_out('nova_ipxe.virt.xenapi.Xapi.upload', refused)
        e = self.assertRaises(errors.IpxeHostFailure, self.spawn)
        cause = self.assert_reschedules(e, exception.XapiUploadFailed)
        self.assertEqual('HTTP 500', cause.code)
        self.assertEqual({}, self.our_vdis())

    # -- the base-ISO cache ----------------------------------------------

    def cache_entries(self):
        return sorted(n for n in os.listdir(self.cache_dir)
                      if cache.ENTRY_RE.match(n))

    def test_spawn_and_rescue_share_one_verified_download(self):
        _, instance = self.spawn()
        (entry,) = self.cache_entries()
        self.assertIn(IPXE_IMAGE, entry)
        with open(os.path.join(self.cache_dir, entry), 'rb') as f:
            self.assertEqual(self.iso, f.read())
        self.rescue(instance)
        self.assertEqual([IPXE_IMAGE], self.downloads)
        # No build files left beside the cache.
        self.assertEqual([cache.LOCKS, entry],
                         sorted(os.listdir(self.cache_dir)))

    def test_cache_is_bounded(self):
        self.flags(cache_max_size=len(self.iso) + 1, group='ipxe')
        _, instance = self.spawn()
        with open(samples.trixie_iso(), 'rb') as f:
            other = f.read()
        other_id = 'd3e4f5a6-b7c8-4d9e-8f0a-1b2c3d4e5f6a'
        self.add_image(other_id, other, {'hw_ipxe_boot': 'true'})
        self.rescue(instance, image=other_id)
        # The first image's entry went to make room for the second.
        (entry,) = self.cache_entries()
        self.assertIn(other_id, entry)

    def test_build_failure_boots_the_stock_iso_when_configured(self):
        self.flags(on_build_failure='stock', group='ipxe')
        bad = 'c2d3e4f5-a6b7-4c8d-9e0f-1a2b3c4d5e6f'
        self.add_image(bad, b'\0' * 65536, {'hw_ipxe_boot': 'true'})
        calls = []
        real = vm_utils.create_image

        def create_image(*args, **kwargs):
            calls.append(args[4])
            return real(*args, **kwargs)
        self.stub_out('nova.virt.xenapi.vm_utils.create_image',
                      create_image)
        vm, _ = self.spawn(bad)
        self.assertEqual([bad], calls)
        self.assertEqual({}, self.our_vdis())
        self.assertEqual({}, self.uploads)

    # -- rescue ------------------------------------------------------------

    def rescue(self, instance, image=IPXE_IMAGE, disk_format='iso'):
        image_meta = objects.ImageMeta.from_dict(
            {'id': image, 'disk_format': disk_format,
             'properties': {'hw_ipxe_boot': True}})
        self.conn.rescue(self.context, instance,
                         fake_network.fake_get_instance_nw_info(self),
                         image_meta, '', None)

    def devices(self, vm_name):
        """{userdevice: (type, VDI)} of the VM.

        Two devices on one userdevice fail the test: XAPI refuses them,
        Nova's fake does not.
        """
        vm_ref = vm_utils.lookup(self.conn._session, vm_name)
        devices = {}
        for ref in xenapi_fake.get_record('VM', vm_ref)['VBDs']:
            vbd = xenapi_fake.get_record('VBD', ref)
            assert vbd['userdevice'] not in devices, (
                'two devices on userdevice %s' % vbd['userdevice'])
            devices[vbd['userdevice']] = (vbd['type'], vbd['VDI'])
        return devices

    def test_rescue_with_the_ipxe_image(self):
        _, instance = self.spawn()
        own = self.devices(instance.name)
        self.rescue(instance)
        rescue = self.devices(instance.name + '-rescue')
        # The CD in the root's place, the server's own root on 1.
        self.assertEqual({'0', '1'}, set(rescue))
        self.assertEqual('cd', rescue['0'][0])
        self.assertEqual(('disk', own['0'][1]), rescue['1'])
        vm_ref = vm_utils.lookup(self.conn._session, instance.name +
                                 '-rescue')
        self.assertEqual('dc', xenapi_fake.get_record(
            'VM', vm_ref)['HVM_boot_params']['order'])
        cd = xenapi_fake.get_record('VDI', rescue['0'][1])
        self.assertIn(rescue['0'][1], self.our_vdis())
        script = _script_of(self.uploads[cd['uuid']])
        self.assertIn('set ${nipxe-nic0}/ip 192.168.1.100\n', script)
        self.assertIn('uuid=%s' % instance.uuid, script)
        # The server keeps its own CD.
        self.assertEqual(own, self.devices(instance.name))
        self.assertEqual(2, len(self.our_vdis()))

    def test_unrescue_leaves_only_the_servers_cd(self):
        _, instance = self.spawn()
        own = self.devices(instance.name)
        self.rescue(instance)
        self.conn.unrescue(instance, None)
        self.assertIsNone(vm_utils.lookup(self.conn._session,
                                          instance.name + '-rescue'))
        self.assertEqual([own['1'][1]], list(self.our_vdis()))
        self.assertEqual(own, self.devices(instance.name))

    def test_a_rescue_from_the_same_bytes_reuses_the_parse(self):
        parses = []
        real = iso.BaseIso.__init__

        def counting(base, data, *args, **kwargs):
            parses.append(len(data))
            return real(base, data, *args, **kwargs)
        self.stub_out('nova_ipxe.iso.BaseIso.__init__', counting)
        _, instance = self.spawn()
        self.rescue(instance)
        self.assertEqual([len(self.iso)], parses)
        # Other bytes under the same image ID (and so another hash in
        # Glance) are fetched and parsed afresh.
        self.conn.unrescue(instance, None)
        with open(samples.trixie_iso(), 'rb') as f:
            changed = f.read()
        service = fake_image.FakeImageService()
        # (The fake's update() keeps the old data.)
        service._imagedata[IPXE_IMAGE] = changed
        service.images[IPXE_IMAGE].update(glance_hashes(changed),
                                          size=len(changed))
        self.rescue(instance)
        self.assertEqual([len(self.iso), len(changed)], parses)
        self.assertEqual([IPXE_IMAGE, IPXE_IMAGE], self.downloads)

    def test_hard_reboot_keeps_the_cd(self):
        _, instance = self.spawn()
        own = self.devices(instance.name)
        self.conn.reboot(self.context, instance,
                         fake_network.fake_get_instance_nw_info(self),
                         'HARD')
        self.assertEqual(own, self.devices(instance.name))
        self.assertEqual([own['1'][1]], list(self.our_vdis()))

    def test_failed_rescue_keeps_the_servers_cd(self):
        # Nova's undo destroys the rescue VM through _destroy, which also
        # removes this instance's leftover VDIs: not the server's own CD.
        _, instance = self.spawn()
        own = self.devices(instance.name)
        self.stub_out('nova.virt.xenapi.vmops.VMOps._start',
                      _refuse_to_start)
        self.assertRaises(RuntimeError, self.rescue, instance)
        self.assertIsNone(vm_utils.lookup(self.conn._session,
                                          instance.name + '-rescue'))
        self.assertEqual([own['1'][1]], list(self.our_vdis()))
        self.assertEqual(own, self.devices(instance.name))

    def test_obsolete_option_registered_by_nova_is_shared(self):
        # Nova 21 registers [xenserver] ipxe_mkisofs_cmd itself; ours
        # must not collide with it.
        ipxe_conf.register_opts(ipxe_conf.CONF)
        self.flags(ipxe_mkisofs_cmd='/usr/bin/mkisofs', group='xenserver')
        self.assertEqual(['xenserver.ipxe_mkisofs_cmd'],
                         ipxe_conf.report_obsolete(ipxe_conf.CONF))


def _abort_classes():
    """The exceptions Nova 21's compute manager aborts a build on.

    Read from ``_build_and_run_instance`` itself: the ``except`` clause
    that lists ImageUnacceptable turns what it catches into a
    BuildAbortException; anything else is rescheduled.
    """
    tree = ast.parse(inspect.getsource(
        manager.ComputeManager._build_and_run_instance).lstrip())
    for node in ast.walk(tree):
        if isinstance(node, ast.ExceptHandler) and isinstance(
                node.type, ast.Tuple):
            names = [n.attr for n in node.type.elts
                     if isinstance(n, ast.Attribute)
                     and isinstance(n.value, ast.Name)
                     and n.value.id == 'exception']
            if 'ImageUnacceptable' in names:
                return tuple(getattr(nova_exception, n) for n in names)
    raise AssertionError('no ImageUnacceptable clause in Nova\'s '
                         '_build_and_run_instance')


def aborts_build(error):
    return isinstance(error, _abort_classes())


# Only the tests above: Nova's own XenAPIVMTestCase tests are Nova's.
for _name in dir(test_xenapi.XenAPIVMTestCase):
    if _name.startswith('test_') and _name not in vars(
            IpxeXenAPIDriverTestCase):
        setattr(IpxeXenAPIDriverTestCase, _name, None)
