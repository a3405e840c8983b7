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

"""The XenAPI attach library against the XAPI stand-in, through the real
``XenAPI`` client library: XML-RPC calls and the HTTP upload for real,
live objects counted after every fault."""

import os
import warnings

from nova_ipxe import exception
from nova_ipxe.virt import xenapi
from tests import base
from tests import samples
from tests import xapi_fixture

UUID = '6f1b4a3e-5a8e-4b52-9a55-0d3c2a1e4f10'


class StandinTestCase(base.TestCase):
    """The stand-in, a session on it and the ISO; no tests of its own."""

    def standin_fixture(self):
        return xapi_fixture.StandinFixture()

    def setUp(self):
        super().setUp()
        self.standin = self.useFixture(self.standin_fixture())
        self.vm = self.standin.info['vm']
        self.session = xenapi.connect(self.standin.url, 'root',
                                      self.standin.info['password'])
        self.xapi = xenapi.Xapi.from_conf(self.session, self.conf,
                                          url=self.standin.url)
        self.before = self.standin.counts()
        with open(samples.BOOKWORM_ISO, 'rb') as f:
            self.iso = f.read()

    def assertCounts(self, vdis, vbds):
        counts = self.standin.counts()
        self.assertEqual((self.before['VDI'] + vdis,
                          self.before['VBD'] + vbds, self.before['task']),
                         (counts['VDI'], counts['VBD'], counts['task']))

    def assertNothingLeft(self):
        self.assertCounts(0, 0)
        self.assertEqual([], os.listdir(self.standin.sr_dir))

    def attach(self, data=None):
        return xenapi.attach_iso(self.xapi, self.vm, data or self.iso, UUID)


class XenapiTestCase(StandinTestCase):

    def test_attach(self):
        self.xapi.call('VM.set_HVM_boot_params', self.vm,
                       {'order': 'cn', 'firmware': 'bios'})
        vbd, vdi = self.attach()
        self.assertCounts(1, 1)
        rec = self.xapi.call('VBD.get_record', vbd)
        self.assertEqual(
            {'VM': self.vm, 'VDI': vdi, 'userdevice': '1', 'type': 'CD',
             'mode': 'RO', 'bootable': True, 'empty': False},
            {k: rec[k] for k in ('VM', 'VDI', 'userdevice', 'type', 'mode',
                                 'bootable', 'empty')})
        self.assertEqual({'order': 'dcn', 'firmware': 'bios'},
                         self.xapi.call('VM.get_HVM_boot_params', self.vm))
        self.assertEqual(self.iso, self.standin.vdi_bytes(vdi))
        vdi_rec = self.xapi.call('VDI.get_record', vdi)
        self.assertEqual(UUID, vdi_rec['other_config'][xenapi.OWNER_KEY])
        self.assertEqual(self.standin.info['sr'], vdi_rec['SR'])
        self.assertEqual(0, len(self.iso) - int(vdi_rec['virtual_size']))

    def test_import_streams_a_file(self):
        # The driver uploads the ISO it built into a file, from disk.
        with open(samples.BOOKWORM_ISO, 'rb') as f:
            vdi = xenapi.import_iso(self.xapi, f, UUID)
            self.assertEqual(len(self.iso), f.tell())
        self.assertEqual(self.iso, self.standin.vdi_bytes(vdi))
        self.assertEqual(str(len(self.iso)), self.xapi.call(
            'VDI.get_record', vdi)['virtual_size'])

    def test_reattach_replaces_the_cd(self):
        old_vbd, old_vdi = self.attach()
        new_vbd, new_vdi = self.attach(self.iso[:-2048])
        self.assertCounts(1, 1)
        self.assertNotEqual(old_vdi, new_vdi)
        self.assertEqual([new_vbd], self.xapi.call('VM.get_VBDs', self.vm))
        self.assertEqual(self.iso[:-2048], self.standin.vdi_bytes(new_vdi))

    def test_detach(self):
        self.attach()
        self.assertEqual(1, xenapi.detach_iso(self.xapi, self.vm))
        self.assertNothingLeft()
        self.assertEqual(0, xenapi.detach_iso(self.xapi, self.vm))

    def test_vm_destruction_leaves_the_vdi_until_cleaned_up(self):
        self.attach()
        self.xapi.call('VM.destroy', self.vm)
        self.assertEqual(1, self.standin.counts()['VDI'])
        self.assertEqual(1, xenapi.destroy_instance_isos(self.xapi, UUID))
        self.assertEqual(0, self.standin.counts()['VDI'])
        self.assertEqual([], os.listdir(self.standin.sr_dir))

    def test_cleanup_touches_only_this_instance(self):
        other = xenapi.import_iso(self.xapi, self.iso, 'other-instance')
        self.attach()
        self.xapi.call('VM.destroy', self.vm)
        xenapi.destroy_instance_isos(self.xapi, UUID)
        self.assertEqual([other], self.xapi.call(
            'SR.get_VDIs', self.standin.info['sr']))

    def test_cleanup_keeps_a_cd_another_vm_still_uses(self):
        # A rescue VM's destruction must not take the server's own CD.
        _, in_use = self.attach()
        leftover = xenapi.import_iso(self.xapi, self.iso, UUID)
        self.assertEqual(1, xenapi.destroy_instance_isos(self.xapi, UUID))
        self.assertEqual([in_use], self.xapi.call(
            'SR.get_VDIs', self.standin.info['sr']))
        self.assertNotEqual(leftover, in_use)

    def test_sr_by_name_and_uuid(self):
        sr = self.standin.info['sr']
        self.assertEqual(sr, self.xapi.find_sr('Local storage'))
        uuid = self.xapi.call('SR.get_uuid', sr)
        self.assertEqual(sr, self.xapi.find_sr(uuid))
        e = self.assertRaises(exception.XapiError, self.xapi.find_sr,
                              'no-such-sr')
        self.assertEqual(('SR.get_by_name_label', 'SR_NOT_FOUND'),
                         (e.call, e.code))

    def test_foreign_device_in_the_cd_slot_is_left_alone(self):
        foreign = self.standin.ctl('add_vbd', {
            'VM': self.vm, 'VDI': 'OpaqueRef:NULL', 'userdevice': '1',
            'type': 'CD', 'mode': 'RO', 'bootable': False, 'empty': True,
            'other_config': {}})
        e = self.assertRaises(exception.XapiDeviceBusy, self.attach)
        self.assertEqual(exception.OPERATOR, e.category)
        self.assertCounts(0, 1)
        self.assertEqual([foreign], self.xapi.call('VM.get_VBDs', self.vm))

    # -- faults: a clear error, nothing left behind ----------------------

    def assertFails(self, cls, call, code):
        e = self.assertRaises(cls, self.attach)
        self.assertEqual((call, code), (e.call, e.code))
        self.assertIn(call, str(e))
        self.assertIn(code, str(e))
        self.assertNotIn(self.standin.url, e.safe_message)
        self.assertNotIn('OpaqueRef', e.safe_message)
        self.assertNothingLeft()
        return e

    def test_login_failure(self):
        e = self.assertRaises(exception.XapiLoginFailed, xenapi.connect,
                              self.standin.url, 'root', 'wrong')
        self.assertEqual(('session.login_with_password',
                          'SESSION_AUTHENTICATION_FAILED'),
                         (e.call, e.code))
        self.assertEqual(exception.OPERATOR, e.category)
        self.assertNotIn('wrong', str(e))

    def test_login_unreachable(self):
        e = self.assertRaises(exception.XapiLoginFailed, xenapi.connect,
                              'http://127.0.0.1:9', 'root', 'x')
        self.assertEqual('ConnectionRefusedError', e.code)

    def test_sr_full(self):
        self.standin.ctl('set_sr_size', len(self.iso) - 1)
        e = self.assertFails(exception.XapiError, 'VDI.create', 'SR_FULL')
        self.assertEqual(exception.INFRASTRUCTURE, e.category)

    def test_upload_cut_midway(self):
        self.standin.fault('upload_cut', [len(self.iso) // 2])
        self.assertFails(exception.XapiUploadFailed, 'PUT /import_raw_vdi',
                         'ConnectionError')

    def test_upload_refused(self):
        self.standin.fault('upload_refuse', [500, 'internal error'])
        self.assertFails(exception.XapiUploadFailed, 'PUT /import_raw_vdi',
                         'HTTP 500')

    def test_task_fails(self):
        self.standin.fault('task_fail', ['VDI_IO_ERROR', 'Device I/O'])
        self.assertFails(exception.XapiUploadFailed, 'import_raw_vdi task',
                         'VDI_IO_ERROR')

    def test_vbd_create_fails(self):
        self.standin.fault('VBD.create', ['VM_BAD_POWER_STATE', self.vm,
                                          'halted', 'running'])
        self.assertFails(exception.XapiError, 'VBD.create',
                         'VM_BAD_POWER_STATE')

    def test_boot_order_fails(self):
        self.xapi.call('VM.set_HVM_boot_params', self.vm, {'order': 'c'})
        self.standin.fault('VM.set_HVM_boot_params', ['HANDLE_INVALID'])
        self.assertFails(exception.XapiError, 'VM.set_HVM_boot_params',
                         'HANDLE_INVALID')

    def test_failed_reattach_keeps_the_old_cd(self):
        vbd, vdi = self.attach()
        self.standin.fault('upload_refuse', [503, 'busy'])
        self.assertRaises(exception.XapiUploadFailed, self.attach,
                          self.iso[:-2048])
        self.assertCounts(1, 1)
        self.assertEqual([vbd], self.xapi.call('VM.get_VBDs', self.vm))
        self.assertEqual(self.iso, self.standin.vdi_bytes(vdi))


class TlsUploadTestCase(StandinTestCase):
    """The upload over HTTPS, with a certificate made for the test.

    XML-RPC stays on the stand-in's plain listener; the upload URL is its
    TLS listener, so only the PUT to /import_raw_vdi meets the certificate.
    """

    def standin_fixture(self):
        self.cert, key = samples.self_signed_cert(self.tmp, 'xapi')
        return xapi_fixture.StandinFixture(tls=(self.cert, key))

    def setUp(self):
        super().setUp()
        self.assertTrue(self.standin.tls_url.startswith('https://'))

    def over_tls(self, **kw):
        self.xapi = xenapi.Xapi(self.session, url=self.standin.tls_url, **kw)

    def assertAttached(self, vbd, vdi):
        self.assertCounts(1, 1)
        self.assertEqual([vbd], self.xapi.call('VM.get_VBDs', self.vm))
        self.assertEqual(self.iso, self.standin.vdi_bytes(vdi))

    def test_ca_file(self):
        self.flags(group='ipxe', xenapi_ca_file=self.cert)
        self.xapi = xenapi.Xapi.from_conf(self.session, self.conf,
                                          url=self.standin.tls_url)
        self.assertEqual(self.cert, self.xapi.verify)
        self.assertAttached(*self.attach())

    def test_untrusted_certificate(self):
        self.over_tls()
        e = self.assertRaises(exception.XapiUploadFailed, self.attach)
        self.assertEqual(('PUT /import_raw_vdi', 'SSLError'),
                         (e.call, e.code))
        self.assertIn('CERTIFICATE_VERIFY_FAILED', str(e))
        self.assertIn('/import_raw_vdi?session_id=***', str(e))
        self.assertNotIn(self.xapi.session_id(), str(e))
        self.assertEqual(exception.INFRASTRUCTURE, e.category)
        self.assertNotIn(self.standin.tls_url, e.safe_message)
        self.assertNothingLeft()

    def test_insecure(self):
        self.flags(group='ipxe', xenapi_insecure=True)
        self.xapi = xenapi.Xapi.from_conf(self.session, self.conf,
                                          url=self.standin.tls_url)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter('always')
            vbd, vdi = self.attach()
        self.assertAttached(vbd, vdi)
        self.assertIn('Unverified HTTPS request',
                      ' '.join(str(w.message) for w in caught))
