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

"""The Glance client: record checks, and the client's logic (one retry
budget, resume, redirects and the token, bounded records) against
requests-mock at the HTTP boundary.  The same faults against a real Glance
are in tests/functional/test_glance.py."""

import hashlib
import io
import json

import fixtures
import requests
from requests_mock.contrib import fixture as requests_mock

from nova_ipxe import conf as ipxe_conf
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


ENDPOINT = 'http://glance.example:9292'
RECORD_URL = '%s/v2/images/%s' % (ENDPOINT, IMAGE)
FILE_URL = RECORD_URL + '/file'
ISO = bytes(range(256)) * 4096  # 1 MiB


def iso_record():
    return record(size=len(ISO), checksum=hashlib.md5(ISO).hexdigest(),
                  os_hash_value=hashlib.sha512(ISO).hexdigest())


class _Body(io.BytesIO):
    """A response body that breaks after ``cut`` bytes, and counts."""

    def __init__(self, data, cut=None, error=ConnectionResetError):
        super().__init__(data)
        self.cut = cut
        self.error = error
        self.served = 0

    def read1(self, size=-1):
        if self.cut is not None and self.served >= self.cut:
            raise self.error(104, 'Connection reset by peer')
        if self.cut is not None:
            size = min(size if size >= 0 else self.cut, self.cut -
                       self.served)
        data = super().read1(size)
        self.served += len(data)
        return data

    read = read1


class HttpTestCase(base.TestCase):
    """The client against requests-mock: every request is counted."""

    def setUp(self):
        super().setUp()
        self.http = self.useFixture(requests_mock.Fixture())
        self.http.get(RECORD_URL, json=iso_record())
        self.mark = 0
        self.sleeps = []
        self.useFixture(fixtures.MonkeyPatch(
            'tenacity.nap.time.sleep', self.sleeps.append))

    def client(self, **kw):
        kw.setdefault('retries', 3)
        return glance.GlanceClient(ENDPOINT, token='secret-token', **kw)

    def download(self, client=None):
        client = client or self.client()
        out = io.BytesIO()
        info = client.get_image(IMAGE, 2 ** 26)
        client.download(info, out)
        return out.getvalue()

    def restart(self):
        """Count requests from here on."""
        self.mark = len(self.http.request_history)

    def history(self):
        return self.http.request_history[self.mark:]

    def files(self):
        return [r for r in self.history() if r.path.endswith('/file')]

    def serve(self, *answers):
        """The file URL answers these in turn: status, or (cut, ...)."""
        answers = list(answers)

        def respond(request, context):
            answer = answers.pop(0) if answers else 200
            cut = None
            if isinstance(answer, tuple):
                answer, cut = answer
            context.status_code = answer
            if answer >= 300:
                return _Body(b'')
            start = 0
            if answer == 206:
                start = int(request.headers['Range'][6:-1])
                context.headers['Content-Range'] = 'bytes %d-%d/%d' % (
                    start, len(ISO) - 1, len(ISO))
            context.headers['Content-Length'] = str(len(ISO) - start)
            return _Body(ISO[start:], cut=cut)
        self.http.get(FILE_URL, body=respond)


class ClientTestCase(HttpTestCase):

    def test_download_verified(self):
        self.serve(200)
        self.assertEqual(ISO, self.download())
        self.assertEqual(1, len(self.files()))
        self.assertEqual('secret-token',
                         self.files()[0].headers['X-Auth-Token'])
        self.assertEqual('identity',
                         self.files()[0].headers['Accept-Encoding'])

    def test_one_budget_across_5xx_resets_and_resumes(self):
        # 503, a reset mid-body, 502, then the rest with Range: four
        # attempts, all within retries=3, and the bytes are whole.
        self.serve(503, (200, 300000), 502, 206)
        self.assertEqual(ISO, self.download())
        self.assertEqual(4, len(self.files()))
        self.assertEqual('bytes=300000-', self.files()[3].headers['Range'])
        # Exponential backoff between the attempts.
        self.assertEqual([1.0, 2.0, 4.0], self.sleeps)

    def test_worst_case_is_bounded_by_retries_plus_one(self):
        # What used to make (retries + 1) ** 2 requests: every attempt
        # gets retries 5xx then a body that breaks.  Each failure, of any
        # kind, now spends the same budget.
        for retries in (0, 1, 3, 5):
            self.restart()
            cycle = [503] * retries + [(200, 1000)]
            self.serve(*(cycle * (retries + 1) ** 2))
            e = self.assertRaises(exception.ImageDownloadFailed,
                                  self.download, self.client(
                                      retries=retries, retry_delay=0))
            self.assertEqual(retries + 1, len(self.files()))
            self.assertIn('%d attempts failed' % (retries + 1), str(e))

    def test_broken_every_time(self):
        self.serve(*[(200, 4096)] * 10)
        e = self.assertRaises(exception.ImageDownloadFailed, self.download)
        self.assertIn('4 attempts failed, last: ConnectionResetError', str(e))
        self.assertEqual(4, len(self.files()))

    def test_range_ignored_starts_over(self):
        self.serve((200, 300000), 200)
        self.assertEqual(ISO, self.download())
        self.assertEqual(2, len(self.files()))

    def test_clean_close_short_resumes(self):
        self.serve((200, 1000), 206)

        def short(request, context):
            context.headers['Content-Length'] = '1000'
            return _Body(ISO[:1000])
        self.http.get(FILE_URL, [{'body': short}, {'body': lambda r, c: (
            c.headers.update({'Content-Range': 'bytes 1000-%d/%d' % (
                len(ISO) - 1, len(ISO))}) or _Body(ISO[1000:])),
            'status_code': 206}])
        self.assertEqual(ISO, self.download())
        self.assertEqual('bytes=1000-', self.files()[1].headers['Range'])

    def test_not_retried(self):
        for status, error in ((404, exception.ImageNotFound),
                              (403, exception.ImageNotAuthorized),
                              (400, exception.GlanceError)):
            self.restart()
            self.serve(status)
            self.assertRaises(error, self.download)
            self.assertEqual(1, len(self.files()))

    def test_connection_errors_share_the_budget(self):
        self.http.get(FILE_URL, exc=requests.exceptions.ConnectionError(
            'refused'))
        e = self.assertRaises(exception.ImageDownloadFailed, self.download)
        self.assertIn('4 attempts failed, last: ConnectionError', str(e))
        self.assertEqual(4, len(self.files()))

    def test_tls_error_not_retried(self):
        self.http.get(RECORD_URL, exc=requests.exceptions.SSLError('bad'))
        e = self.assertRaises(exception.GlanceError, self.download)
        self.assertIn('TLS: bad', str(e))
        self.assertEqual(1, len(self.history()))

    def test_compressed_answer_refused(self):
        self.http.get(FILE_URL, content=b'x', headers={
            'Content-Encoding': 'gzip'})
        e = self.assertRaises(exception.GlanceError, self.download)
        self.assertIn('compressed (gzip)', str(e))

    def test_deadline_before_the_budget(self):
        # A deadline in the past: the first read gives up, typed.
        self.serve(200)
        e = self.assertRaises(exception.ImageDownloadTimeout, self.download,
                              self.client(download_timeout=-1))
        self.assertIn('download deadline', str(e))
        self.assertEqual(0, len(self.files()))

    def test_backoff_past_the_deadline_stops_early(self):
        # The next wait (10 s) would end past the deadline (5 s): no
        # pointless sleep, one attempt, a timeout rather than "failed".
        self.serve(*[503] * 10)
        e = self.assertRaises(exception.ImageDownloadTimeout, self.download,
                              self.client(retry_delay=10,
                                          download_timeout=5))
        self.assertIn('the deadline came after 1 attempts, last: HTTP 503',
                      str(e))
        self.assertEqual(1, len(self.files()))
        self.assertEqual([], self.sleeps)


class RedirectTestCase(HttpTestCase):
    """The token goes to the endpoint's origin and nowhere else."""

    def redirect(self, target, status=302):
        self.http.get(FILE_URL, status_code=status,
                      headers={'Location': target})
        self.http.get(target.split('?')[0], body=lambda r, c: _Body(ISO))

    def tokens(self):
        return [(r.url.split('?')[0], r.headers.get('X-Auth-Token'))
                for r in self.history()]

    def test_same_origin_keeps_the_token(self):
        for target in ('/elsewhere/data', ENDPOINT + '/other',
                       'http://GLANCE.example:9292/x'):
            self.restart()
            self.redirect(target if '://' in target else ENDPOINT + target)
            self.assertEqual(ISO, self.download())
            self.assertEqual('secret-token', self.tokens()[-1][1])

    def test_other_origin_gets_no_token(self):
        for target in ('http://store.example:9292/data?sig=1',  # host
                       'http://glance.example:8080/data',  # port
                       'https://glance.example:9292/data',  # scheme
                       'http://glance.example/data'):  # default port
            self.restart()
            self.redirect(target)
            self.assertEqual(ISO, self.download())
            self.assertEqual([RECORD_URL, FILE_URL, target.split('?')[0]],
                             [u for u, _ in self.tokens()])
            self.assertEqual(['secret-token', 'secret-token', None],
                             [t for _, t in self.tokens()])

    def test_never_back_once_elsewhere_is_fine_but_bounded(self):
        self.http.get(FILE_URL, status_code=307,
                      headers={'Location': FILE_URL})
        e = self.assertRaises(exception.GlanceError, self.download)
        self.assertIn('more than 3 redirects', str(e))
        self.assertEqual(4, len(self.files()))

    def test_not_http(self):
        self.http.get(FILE_URL, status_code=302,
                      headers={'Location': 'file:///etc/shadow'})
        e = self.assertRaises(exception.GlanceError, self.download)
        self.assertIn('not http(s)', str(e))


class RecordBoundsTestCase(HttpTestCase):

    def test_too_large_announced(self):
        body = _Body(b' ' * (glance.MAX_RECORD + 1))
        self.http.get(RECORD_URL, body=body, headers={
            'Content-Length': str(glance.MAX_RECORD + 1)})
        e = self.assertRaises(exception.InvalidImageRecord,
                              self.client().get_image, IMAGE, 2 ** 26)
        self.assertIn('more than %d' % glance.MAX_RECORD, str(e))
        self.assertEqual(0, body.served)

    def test_too_large_read_stops_at_the_cap(self):
        # No length (as chunked): what is read stops right past the cap,
        # not at the 64 MiB the server would send.
        doc = json.dumps(dict(iso_record(), pad='x' * 64 * 2 ** 20))
        body = _Body(doc.encode())
        self.http.get(RECORD_URL, body=body)
        e = self.assertRaises(exception.InvalidImageRecord,
                              self.client().get_image, IMAGE, 2 ** 26)
        self.assertIn('longer than %d bytes' % glance.MAX_RECORD, str(e))
        self.assertLessEqual(body.served, glance.MAX_RECORD + glance.CHUNK)

    def test_deep_nesting(self):
        for doc in ('[' * 100000, '{"a":' * 50000 + '1' + '}' * 50000,
                    json.dumps(dict(iso_record(), x=[[[[[[[[[[[[[[[[[[[[[[[[
                        [[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]))):
            self.http.get(RECORD_URL, text=doc)
            e = self.assertRaises(exception.InvalidImageRecord,
                                  self.client().get_image, IMAGE, 2 ** 26)
            self.assertIn('deeper than %d' % glance.MAX_RECORD_DEPTH,
                          str(e))

    def test_depth_ignores_brackets_in_strings(self):
        self.assertEqual(1, glance.json_depth('{"a": "[[[[\\"[[{{"}'))
        self.assertEqual(3, glance.json_depth('[{"a": [1]}]'))
        rec = dict(iso_record(), name='[' * 10000)
        self.http.get(RECORD_URL, json=rec)
        self.assertEqual('[' * 10000,
                         self.client().get_image(IMAGE, 2 ** 26).name)

    def test_garbled(self):
        for content, text in ((b'\xff\xfe', 'not UTF-8'),
                              (b'{"id": ', 'not JSON'),
                              (b'[1]', 'another image'),
                              (json.dumps(record(id='x')).encode(),
                               'another image')):
            self.http.get(RECORD_URL, content=content)
            e = self.assertRaises(exception.InvalidImageRecord,
                                  self.client().get_image, IMAGE, 2 ** 26)
            self.assertIn(text, str(e))

    def test_record_5xx_retried_within_budget(self):
        self.http.get(RECORD_URL, [{'status_code': 503}] * 2 +
                      [{'json': iso_record()}])
        self.assertEqual(len(ISO), self.client().get_image(
            IMAGE, 2 ** 26).size)
        self.assertEqual(3, len(self.history()))


class ClientFromConfTestCase(base.TestCase):

    def test_own_group(self):
        client = glance.client_from_conf(self.load_conf(
            '[ipxe_glance]\nurl = http://g:9292\nretries = 5\n'
            'download_timeout = 42\n'), token='t')
        self.assertEqual(('http://g:9292', 5, 42, 't'), (
            client.endpoint, client.retries, client.download_timeout,
            client.token))

    def test_former_ipxe_names_still_work(self):
        conf = self.load_conf('[ipxe]\nglance_url = http://old:9292\n'
                              'glance_ca_file = /etc/ca.pem\n'
                              'glance_retries = 1\nglance_read_timeout = 7\n')
        client = glance.client_from_conf(conf)
        self.assertEqual(('http://old:9292', '/etc/ca.pem', 1, 7), (
            client.endpoint, client.verify, client.retries,
            client.read_timeout))

    def test_not_in_the_ipxe_group(self):
        # nova.conf's [ipxe] carries only what the drivers use.
        names = {opt.name for opt in ipxe_conf.ipxe_opts +
                 ipxe_conf.cache_opts}
        self.assertEqual(set(), {n for n in names if 'glance' in n})
        groups = [g.name if hasattr(g, 'name') else g
                  for g, _ in ipxe_conf.list_opts()]
        self.assertEqual(['ipxe', 'ipxe_glance', 'xenserver'], groups)
