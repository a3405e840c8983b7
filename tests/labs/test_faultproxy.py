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

"""Functional tests of FaultProxy in front of a real Glance, with requests.

One Glance (tools/glancelab.py) serves the whole class; every test gets its
own proxy.  Needs ``.venv-glance`` (``tools/install-glance.sh``) and
Debian's ``ipxe``; a missing one is an error, not a skip.

Run: ``python -m testtools.run tests.labs.test_faultproxy``.
"""

import hashlib
import threading
import time

import fixtures
import requests

from tests import base
from tests import samples
from tools import faultproxy
from tools import glancelab

TIMEOUT = (5, 30)  # (connect, read) for every request here


class FaultProxyTest(base.TestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        glancelab.check_prerequisites()
        with open(samples.bookworm_iso(), 'rb') as f:
            cls.data = f.read()
        cls.glance = glancelab.GlanceServer().start()
        # Class cleanups run also when the rest of setUpClass fails.
        cls.addClassCleanup(cls.glance.stop)
        cls.image_id = cls.glance.create_image(
            'ipxe', cls.data, properties={'hw_ipxe_boot': 'true'})
        cls.record_path = '/v2/images/%s' % cls.image_id
        cls.file_path = cls.record_path + '/file'

    def setUp(self):
        super().setUp()
        self.useFixture(fixtures.Timeout(120, gentle=True))
        self.proxy = faultproxy.FaultProxy(self.glance.url, timeout=10)
        self.proxy.start()
        self.addCleanup(self.proxy.stop)
        self.file_url = self.proxy.url + self.file_path
        self.downloads_before = self.glance.download_count(self.image_id)

    def glance_downloads(self):
        return (self.glance.download_count(self.image_id) -
                self.downloads_before)

    def get(self, url=None, **kw):
        kw.setdefault('timeout', TIMEOUT)
        return requests.get(url or self.file_url, **kw)

    def test_passes_through(self):
        r = self.get()
        self.assertEqual(200, r.status_code)
        self.assertEqual(self.data, r.content)
        self.assertEqual(str(len(self.data)), r.headers['Content-Length'])
        self.assertEqual(hashlib.md5(self.data).hexdigest(),
                         r.headers['Content-MD5'])
        record = self.get(self.proxy.url + self.record_path).json()
        self.assertEqual('true', record['hw_ipxe_boot'])
        self.assertEqual(hashlib.sha512(self.data).hexdigest(),
                         record['os_hash_value'])
        self.assertEqual(1, self.proxy.count('GET', r'/file$'))
        self.assertEqual(1, self.proxy.upstream_count('GET', r'/file$'))
        self.assertEqual(2, self.proxy.count())
        self.assertEqual(0, self.proxy.count('PUT'))
        self.assertEqual({('GET', self.file_path): 1,
                          ('GET', self.record_path): 1},
                         dict(self.proxy.counts()))
        self.assertEqual(1, self.glance_downloads())

    def test_keep_alive_session_and_head(self):
        with requests.Session() as s:
            for _ in range(3):
                self.assertEqual(self.data, s.get(self.file_url,
                                                  timeout=TIMEOUT).content)
            # Glance has no HEAD (405): the answer comes back as it is,
            # and the connection stays usable.
            head = s.head(self.file_url, timeout=TIMEOUT)
            self.assertEqual(405, head.status_code)
            self.assertEqual('GET, PUT', head.headers['Allow'])
            part = s.get(self.file_url, headers={'Range': 'bytes=100-199'},
                         timeout=TIMEOUT)
            self.assertEqual(206, part.status_code)
            self.assertEqual(self.data[100:200], part.content)
        self.assertEqual(4, self.proxy.upstream_count('GET', r'/file$'))
        self.assertEqual(1, self.proxy.count('HEAD'))

    def test_status_then_pass_through(self):
        fault = self.proxy.add_fault(r'/file$', 'status', times=2,
                                     status=503, headers={'Retry-After': '1'})
        first = self.get()
        self.assertEqual(503, first.status_code)
        self.assertEqual('1', first.headers['Retry-After'])
        self.assertEqual(503, self.get().status_code)
        ok = self.get()
        self.assertEqual(200, ok.status_code)
        self.assertEqual(self.data, ok.content)
        self.assertEqual(2, fault.used)
        self.assertEqual([], self.proxy.faults)
        self.assertEqual(3, self.proxy.count('GET', r'/file$'))
        self.assertEqual(1, self.proxy.upstream_count('GET', r'/file$'))
        self.assertEqual(1, self.glance_downloads())

    def test_reset_mid_body(self):
        after = 300000
        self.proxy.add_fault(r'/file$', 'reset_mid_body', after_bytes=after)
        r = self.get(stream=True)
        self.assertEqual(200, r.status_code)
        self.assertEqual(str(len(self.data)), r.headers['Content-Length'])
        # Every byte before the cut arrives, then the reset.
        self.assertEqual(self.data[:after], r.raw.read(after))
        e = self.assertRaises(requests.exceptions.ChunkedEncodingError,
                              lambda: list(r.iter_content(65536)))
        self.assertIn('ConnectionResetError', str(e))
        self.assertEqual(1, self.proxy.upstream_count('GET', r'/file$'))
        # A retry passes through.
        self.assertEqual(self.data, self.get().content)

    def test_reset_in_a_plain_get(self):
        self.proxy.add_fault(r'/file$', 'reset_mid_body', after_bytes=1000)
        # Not a requests.ConnectionError: the headers had arrived.
        e = self.assertRaises(requests.exceptions.ChunkedEncodingError,
                              self.get)
        self.assertIn('Connection reset by peer', str(e))

    def test_truncate(self):
        after = 500000
        self.proxy.add_fault(r'/file$', 'truncate', after_bytes=after)
        r = self.get(stream=True)
        self.assertEqual(str(len(self.data)), r.headers['Content-Length'])
        got = bytearray()
        e = self.assertRaises(requests.exceptions.ChunkedEncodingError,
                              lambda: [got.extend(c)
                                       for c in r.iter_content(1000)])
        self.assertIn('IncompleteRead', str(e))
        self.assertEqual(self.data[:after], bytes(got))
        self.assertLess(len(got), int(r.headers['Content-Length']))

    def test_corrupt(self):
        self.proxy.add_fault(r'/file$', 'corrupt', offset=1000, length=3)
        r = self.get()
        self.assertEqual(200, r.status_code)
        self.assertEqual(len(self.data), len(r.content))
        diff = [i for i in range(len(self.data))
                if r.content[i] != self.data[i]]
        self.assertEqual([1000, 1001, 1002], diff)
        # Upstream's Content-MD5 now betrays the damage.
        self.assertNotEqual(hashlib.md5(r.content).hexdigest(),
                            r.headers['Content-MD5'])
        self.assertEqual(self.data, self.get().content)

    def test_slow_before_headers_is_a_read_timeout(self):
        # Held for an hour: only the client's read timeout can end it.
        self.proxy.add_fault(r'/file$', 'slow', delay=3600)
        self.assertRaises(requests.exceptions.ReadTimeout, self.get,
                          timeout=(5, 0.5))
        (held,) = self.proxy.records
        self.assertEqual('slow', held.fault)
        self.assertFalse(held.upstream)     # still holding the headers
        self.assertEqual(self.data, self.get().content)

    def test_slow_before_body(self):
        self.proxy.add_fault(r'/file$', 'slow', delay=2, before='body')
        r = self.get(stream=True, timeout=(5, 0.5))
        self.assertEqual(200, r.status_code)
        # requests reports a read timeout inside the body as a
        # ConnectionError (ReadTimeout is only for the headers).
        self.assertRaises(requests.ConnectionError,
                          lambda: list(r.iter_content(65536)))
        # With patience the delayed body is complete.
        self.proxy.add_fault(r'/file$', 'slow', delay=1, before='body')
        self.assertEqual(self.data, self.get().content)
        delayed = self.proxy.records[-1]
        # Held after the upstream answered, and then relayed in full.
        self.assertEqual(('slow', True), (delayed.fault, delayed.upstream))
        self.assertEqual([], self.proxy.faults)     # the fault was used

    def test_grow_chunked(self):
        self.proxy.add_fault(r'/file$', 'grow', extra_bytes=12345)
        r = self.get()
        self.assertNotIn('Content-Length', r.headers)
        self.assertEqual('chunked', r.headers['Transfer-Encoding'])
        self.assertEqual(self.data + b'\0' * 12345, r.content)

    def test_grow_until_eof(self):
        self.proxy.add_fault(r'/file$', 'grow', extra_bytes=4096,
                             mode='eof', fill=b'ab')
        r = self.get()
        self.assertNotIn('Content-Length', r.headers)
        self.assertNotIn('Transfer-Encoding', r.headers)
        self.assertEqual(self.data + b'ab' * 2048, r.content)

    def test_grow_with_lying_length(self):
        self.proxy.add_fault(r'/file$', 'grow', extra_bytes=1000,
                             mode='length')
        r = self.get()
        self.assertEqual(str(len(self.data) + 1000),
                         r.headers['Content-Length'])
        self.assertEqual(len(self.data) + 1000, len(r.content))

    def test_grow_overrun(self):
        self.proxy.add_fault(r'/file$', 'grow', extra_bytes=1000,
                             mode='overrun')
        r = self.get(stream=True)
        self.assertEqual(str(len(self.data)), r.headers['Content-Length'])
        self.assertEqual('close', r.headers['Connection'])
        # A Content-Length-bound reader stops in time and never sees them.
        self.assertEqual(self.data, r.content)

    def test_rewrite_json_patch(self):
        self.proxy.add_fault(r'/v2/images/[^/]+$', 'rewrite_json',
                             method='GET', patch={
                                 'size': 10 ** 15, 'disk_format': 'qcow2',
                                 'hw_ipxe_boot': faultproxy.DELETE})
        record = self.get(self.proxy.url + self.record_path).json()
        self.assertEqual(10 ** 15, record['size'])
        self.assertEqual('qcow2', record['disk_format'])
        self.assertNotIn('hw_ipxe_boot', record)
        self.assertEqual(self.image_id, record['id'])
        # Only the proxy's answer changed.
        real = self.glance.image(self.image_id)
        self.assertEqual(len(self.data), real['size'])
        self.assertEqual(real, self.get(
            self.proxy.url + self.record_path).json())

    def test_rewrite_json_func(self):
        def damage(doc):
            doc['os_hash_value'] = '0' * 128

        self.proxy.add_fault(r'/v2/images/[^/]+$', 'rewrite_json',
                             func=damage)
        self.proxy.add_fault(r'/v2/images/[^/]+$', 'rewrite_json',
                             func=lambda doc: {'replaced': True})
        self.assertEqual('0' * 128, self.get(
            self.proxy.url + self.record_path).json()['os_hash_value'])
        self.assertEqual({'replaced': True}, self.get(
            self.proxy.url + self.record_path).json())

    def test_faults_are_used_in_order_and_by_method(self):
        self.proxy.add_fault(r'/file$', 'status', status=500)
        self.proxy.add_fault(r'/file$', 'corrupt', offset=0)
        self.proxy.add_fault(r'/file$', 'status', method='HEAD', status=404)
        self.assertEqual(500, self.get().status_code)
        self.assertNotEqual(self.data, self.get().content)
        self.assertEqual(self.data, self.get().content)
        self.assertEqual(404, requests.head(self.file_url,
                                            timeout=TIMEOUT).status_code)
        self.assertEqual(4, self.proxy.count(path_regex=r'/file$'))
        self.assertEqual(2, self.proxy.upstream_count('GET', r'/file$'))
        self.assertEqual(0, self.proxy.upstream_count('HEAD'))
        self.assertEqual(['status', 'corrupt', None, 'status'],
                         [rec.fault for rec in self.proxy.records])

    def test_unlimited_fault(self):
        self.proxy.add_fault(r'/file$', 'status', times=None, status=500)
        for _ in range(5):
            self.assertEqual(500, self.get().status_code)
        self.proxy.clear_faults()
        self.assertEqual(200, self.get().status_code)

    def test_upload_through_the_proxy(self):
        # Request bodies go upstream too, also chunked ones.
        r = requests.post(self.proxy.url + '/v2/images', json={
            'name': 'via-proxy', 'disk_format': 'iso',
            'container_format': 'bare'}, timeout=TIMEOUT)
        self.assertEqual(201, r.status_code)
        image_id = r.json()['id']
        self.addCleanup(self.glance.delete_image, image_id)

        def chunks():
            for i in range(0, len(self.data), 100000):
                yield self.data[i:i + 100000]

        r = requests.put('%s/v2/images/%s/file' % (self.proxy.url, image_id),
                         data=chunks(), timeout=TIMEOUT, headers={
                             'Content-Type': 'application/octet-stream'})
        self.assertEqual(204, r.status_code, r.text)
        self.assertEqual(hashlib.sha512(self.data).hexdigest(),
                         self.glance.image(image_id)['os_hash_value'])

    def test_upstream_down_is_502(self):
        with faultproxy.FaultProxy('http://127.0.0.1:9', timeout=5) as p:
            r = requests.get(p.url + '/v2/images', timeout=TIMEOUT)
        self.assertEqual(502, r.status_code)

    def test_stop_does_not_wait_for_slow_faults(self):
        # Held for an hour, a client patient for an hour: only stop()
        # waking the fault can end the request.
        self.proxy.add_fault(r'/file$', 'slow', delay=3600)
        errors = []

        def client():
            try:
                self.get(timeout=(5, 3600))
            except requests.RequestException as e:
                errors.append(e)

        thread = threading.Thread(target=client, daemon=True)
        thread.start()
        # Until the proxy holds the request (a bound for a test gone
        # wrong, not a timing).
        deadline = time.monotonic() + 60
        while not self.proxy.count():
            self.assertLess(time.monotonic(), deadline,
                            'the request never reached the proxy')
            time.sleep(0.05)
        self.proxy.stop()
        # Bounds for a test gone wrong; nothing here depends on speed.
        thread.join(60)
        self.assertFalse(thread.is_alive())
        self.assertEqual(1, len(errors))
        self.assertRaises(requests.ConnectionError, self.get)

    def test_bad_fault_is_refused(self):
        self.assertRaises(ValueError, self.proxy.add_fault, '/', 'explode')
        self.assertRaises(ValueError, self.proxy.add_fault, '/', 'status',
                          after_bytes=3)
        self.assertRaises(ValueError, self.proxy.add_fault, '/', 'grow',
                          mode='sideways')
        self.assertRaises(ValueError, self.proxy.add_fault, '/',
                          'rewrite_json')
        self.assertRaises(ValueError, self.proxy.add_fault, '/', 'status',
                          times=0)
