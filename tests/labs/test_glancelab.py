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

"""Functional tests of the Glance lab (tools/glancelab.py): a real Glance.

Needs ``.venv-glance`` (``tools/install-glance.sh``) and Debian's ``ipxe``;
a missing one is an error, not a skip.  Start-up times are attached to each
test as the ``timings`` detail.

Run: ``python -m testtools.run tests.labs.test_glancelab``.
"""

import hashlib
import json
import os
import time

import fixtures
import requests
from testtools import content

from tests import base
from tests import samples
from tools import glancelab


class GlanceLabTest(base.TestCase):

    def setUp(self):
        super().setUp()
        self.useFixture(fixtures.Timeout(300, gentle=True))
        glancelab.check_prerequisites()
        self.timings = {}
        self.addDetail('timings', content.Content(
            content.UTF8_TEXT, lambda: [json.dumps(self.timings).encode()]))

    def start(self):
        begin = time.monotonic()
        glance = glancelab.GlanceServer()
        self.addCleanup(glance.stop)
        glance.start()
        self.timings['start_total_s'] = round(time.monotonic() - begin, 3)
        self.timings['gunicorn_to_200_s'] = round(glance.start_seconds, 3)
        return glance

    def test_upload_record_download(self):
        iso = samples.bookworm_iso()
        glance = self.start()
        with open(iso, 'rb') as f:
            data = f.read()
        image_id = glance.create_image(
            'ipxe-boot', iso, properties={'hw_ipxe_boot': 'true'})

        record = glance.image(image_id)
        self.assertEqual('active', record['status'])
        self.assertEqual('iso', record['disk_format'])
        self.assertEqual('bare', record['container_format'])
        self.assertEqual('true', record['hw_ipxe_boot'])
        self.assertEqual(len(data), record['size'])
        self.assertEqual(hashlib.md5(data).hexdigest(), record['checksum'])
        self.assertEqual('sha512', record['os_hash_algo'])
        self.assertEqual(hashlib.sha512(data).hexdigest(),
                         record['os_hash_value'])
        self.assertEqual(0, glance.download_count(image_id))

        r = requests.get('%s/v2/images/%s/file' % (glance.url, image_id),
                         stream=True, timeout=30)
        self.assertEqual(200, r.status_code)
        digest = hashlib.sha512()
        for chunk in r.iter_content(1 << 20):
            digest.update(chunk)
        self.assertEqual(record['os_hash_value'], digest.hexdigest())
        self.assertEqual(record['checksum'], r.headers['Content-MD5'])
        self.assertEqual(1, glance.download_count(image_id))

    def test_upload_bytes(self):
        iso = samples.bookworm_iso()
        glance = self.start()
        with open(iso, 'rb') as f:
            data = f.read()
        image_id = glance.create_image('from-bytes', data)
        self.assertEqual(hashlib.sha512(data).hexdigest(),
                         glance.image(image_id)['os_hash_value'])

    def test_non_iso_bytes_are_rejected_clearly(self):
        glance = self.start()
        e = self.assertRaises(glancelab.ImageRejected, glance.create_image,
                              'not-an-iso', b'\0' * 65536)
        self.assertEqual(415, e.status)
        self.assertIn('disk_format', str(e))
        # The queued leftover is gone, so it cannot trap a later test.
        images = requests.get(glance.url + '/v2/images',
                              timeout=30).json()['images']
        self.assertEqual([], images)

    def test_stop_removes_everything(self):
        glance = self.start()
        tmpdir, url, proc = glance.tmpdir, glance.url, glance.proc
        glance.stop()
        self.assertFalse(os.path.exists(tmpdir))
        self.assertIsNotNone(proc.poll())
        self.assertRaises(requests.ConnectionError, requests.get,
                          url + '/v2/images', timeout=5)
        glance.stop()  # idempotent

    def test_missing_install_is_an_error_that_says_what_to_do(self):
        e = self.assertRaises(
            glancelab.PrerequisiteError, glancelab.GlanceServer(
                venv=os.path.join(self.useFixture(
                    fixtures.TempDir()).path, 'nothing')).start)
        self.assertIn('tools/install-glance.sh', str(e))
