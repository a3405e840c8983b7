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

"""Image record checks (the download itself is tested against a real
Glance in tests/functional/test_glance.py)."""

import hashlib

from nova_ipxe import exception
from nova_ipxe import glance
from tests import base

IMAGE = '0b9c2d4e-6f8a-4b1c-9d2e-3f4a5b6c7d8e'
DATA = b'iso bytes'


def record(**kw):
    rec = {'id': IMAGE, 'name': 'ipxe-boot', 'status': 'active',
           'disk_format': 'iso', 'container_format': 'bare',
           'size': len(DATA), 'hw_ipxe_boot': 'true',
           'checksum': hashlib.md5(DATA).hexdigest(),
           'os_hash_algo': 'sha512',
           'os_hash_value': hashlib.sha512(DATA).hexdigest()}
    rec.update(kw)
    return rec


class ImageInfoTestCase(base.TestCase):

    def test_good_record(self):
        info = glance.image_info(record(), 100)
        self.assertEqual(('sha512', hashlib.sha512(DATA).hexdigest()),
                         (info.hash_algo, info.hash_value))
        self.assertTrue(info.cache_key.startswith(IMAGE + '-sha512-'))

    def test_md5_fallback(self):
        info = glance.image_info(record(os_hash_algo=None,
                                        os_hash_value=None), 100)
        self.assertEqual('md5', info.hash_algo)

    def test_legacy_flag(self):
        rec = record(ipxe_boot='True')
        del rec['hw_ipxe_boot']
        self.assertEqual(IMAGE, glance.image_info(rec, 100).id)

    def test_refused(self):
        for kw, text in [
                ({'status': 'queued'}, "status is 'queued'"),
                ({'disk_format': 'qcow2'}, "disk_format is 'qcow2'"),
                ({'hw_ipxe_boot': 'false'}, 'hw_ipxe_boot=true'),
                ({'size': None}, 'no usable size'),
                ({'size': True}, 'no usable size'),
                ({'os_hash_algo': 'sha1', 'checksum': None},
                 'no hash to verify'),
                ({'os_hash_value': 'zz' * 64, 'checksum': 'short'},
                 'no hash to verify'),
                ({'os_hash_value': '../../etc', 'checksum': None},
                 'no hash to verify')]:
            e = self.assertRaises(exception.ImageNotUsable,
                                  glance.image_info, record(**kw), 100)
            self.assertIn(text, str(e))

    def test_too_large_before_download(self):
        e = self.assertRaises(exception.ImageTooLarge, glance.image_info,
                              record(size=10 ** 9), 64 * 2 ** 20)
        self.assertIn('1000000000 bytes', str(e))

    def test_image_id_must_be_uuid(self):
        for bad in ('../x', 'abc', '', None):
            self.assertRaises(exception.ImageNotFound,
                              glance.check_image_id, bad)
        self.assertEqual(IMAGE, glance.check_image_id(IMAGE.upper()))

    def test_endpoint_checked(self):
        for bad in (None, '', 'glance:9292', 'ftp://x'):
            self.assertRaises(exception.ConfigError, glance.GlanceClient,
                              bad)
        self.assertEqual('http://g:9292', glance.GlanceClient(
            'http://g:9292/v2/').endpoint)
