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

"""Fetch from a real Glance (glance 33 under gunicorn, sqlite, file store),
verify, cache, build, and boot once; then every fault between us and
Glance, through a fault-injecting proxy in front of the real server.

After each case the cache must hold only verified entries and no temp
file.
"""

import hashlib
import os
import pty
import ssl
import subprocess
import sys
import uuid
import warnings

import fixtures

from nova_ipxe import builder
from nova_ipxe import cache
from nova_ipxe import exception
from nova_ipxe import glance
from tests import base
from tests import samples
from tools import bootlab
from tools import faultproxy
from tools import glancelab

FILE = r'/v2/images/[0-9a-f-]+/file$'
RECORD = r'/v2/images/[0-9a-f-]+$'


class GlanceTestCase(base.TestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.glance = glancelab.GlanceServer().start()
        # Class cleanups run also when the rest of setUpClass fails.
        cls.addClassCleanup(cls.glance.stop)
        cls.bookworm = cls.glance.create_image(
            'ipxe-boot', samples.bookworm_iso(),
            properties={'hw_ipxe_boot': 'true'})
        cls.trixie = cls.glance.create_image(
            'ipxe-trixie', samples.trixie_iso(),
            properties={'ipxe_boot': 'true'})  # the legacy name
        cls.unflagged = cls.glance.create_image('plain-iso',
                                                samples.bookworm_iso())

    def setUp(self):
        super().setUp()
        self.cache_dir = os.path.join(self.tmp, 'cache')
        self.flags(group='ipxe_glance', retry_delay=0.05, read_timeout=5,
                   connect_timeout=5)

    def client(self, endpoint=None, **kw):
        kw.setdefault('retries', 3)
        kw.setdefault('retry_delay', 0.05)
        kw.setdefault('read_timeout', 5)
        return glance.GlanceClient(endpoint or self.glance.url,
                                   token='secret-token', **kw)

    def cache(self, directory=None):
        return cache.BaseIsoCache(directory or self.cache_dir,
                                  max_size=256 * 2 ** 20)

    def proxy(self):
        return self.useFixture(_ProxyFixture(self.glance.url)).proxy

    def assertCacheClean(self, directory=None, entries=0):
        directory = directory or self.cache_dir
        names = [n for n in os.listdir(directory) if n != cache.LOCKS]
        self.assertEqual([], [n for n in names if not n.endswith('.iso')],
                         'temp files left behind')
        self.assertEqual(entries, len(names))
        for name in names:
            image_id = name[:36]
            record = self.glance.image(image_id)
            with open(os.path.join(directory, name), 'rb') as f:
                self.assertEqual(record['os_hash_value'],
                                 hashlib.sha512(f.read()).hexdigest())

    def fetch(self, image_id, client=None, directory=None):
        with self.cache(directory).get(client or self.client(), image_id,
                                       self.conf.ipxe.max_iso_size) as e:
            return e


class FetchTestCase(GlanceTestCase):

    def test_fetch_build_and_boot(self):
        bootlab.check_prerequisites(iso=True)
        lab = self.useFixture(bootlab.LabFixture()).lab
        lab.add_bridge('br0', ipv4='192.0.2.1/24')
        lab.add_tap('tap0', 'br0')
        dhcp = bootlab.DhcpSentinel(lab).start()
        menu = bootlab.MenuServer(lab, '192.0.2.1', 0).start()
        menu.set_routes({'/menu.ipxe': samples.BYE_MENU})
        self.flags(boot_menu_url=menu.url_for('/menu.ipxe'))
        mac = bootlab.unique_mac()
        data = samples.network_data_of(samples.nic_data(
            mac, 'tap-a', ipv4=('192.0.2.10', 24, '192.0.2.1')))
        out = os.path.join(self.tmp, 'vm.iso')
        before = self.glance.download_count(self.bookworm)
        result, rendered, entry = builder.build_iso_from_image(
            self.client(), self.cache(), self.bookworm, builder.Instance(
                network_data=data, uuid=str(uuid.uuid4()),
                hostname='vm-1'), out, self.conf)
        self.assertTrue(entry.downloaded)
        self.assertEqual(before + 1,
                         self.glance.download_count(self.bookworm))
        self.assertCacheClean(entries=1)

        vm = bootlab.Vm(lab, cdrom=out, nics=[bootlab.Nic('tap0', mac)])
        vm.start()
        request = menu.wait_for('/menu.ipxe', timeout=180, vm=vm)
        self.assertEqual('192.0.2.10', request['client'])
        self.assertEqual(0, vm.wait(180).returncode)
        dhcp.sync()
        self.assertEqual(0, dhcp.count())

        # A second instance: no second download.
        builder.build_iso_from_image(
            self.client(), self.cache(), self.bookworm, builder.Instance(
                network_data=data), os.path.join(self.tmp, 'vm2.iso'),
            self.conf)
        self.assertEqual(before + 1,
                         self.glance.download_count(self.bookworm))

    def test_image_menu_url_override(self):
        # An image property is tenant input: re-encoded, no iPXE settings.
        image = self.glance.create_image(
            'ipxe-custom', samples.bookworm_iso(), properties={
                'hw_ipxe_boot': 'true',
                'ipxe_boot_menu_url': 'http://tenant.example/m?x=${ip}'})
        out = os.path.join(self.tmp, 'vm.iso')
        _, rendered, _ = builder.build_iso_from_image(
            self.client(), self.cache(), image, builder.Instance(
                network_data=self.network_data()), out, self.conf)
        self.assertEqual('image', rendered.menu_url_source)
        self.assertIn(b' http://tenant.example/m?x=%24%7Bip%7D&mac=',
                      samples.iso_files(out)['/nipxe.ipx'])
        self.flags(allow_menu_url_override=False)
        _, rendered, _ = builder.build_iso_from_image(
            self.client(), self.cache(), image, builder.Instance(
                network_data=self.network_data()), out, self.conf)
        self.assertEqual('config', rendered.menu_url_source)

    def test_legacy_flag_and_uefi_image(self):
        entry = self.fetch(self.trixie)
        self.assertEqual(os.path.getsize(samples.trixie_iso()),
                         entry.info.size)
        self.assertEqual('sha512', entry.info.hash_algo)
        self.assertCacheClean(entries=1)

    def test_not_flagged(self):
        e = self.assertRaises(exception.ImageNotUsable, self.fetch,
                              self.unflagged)
        self.assertIn('hw_ipxe_boot=true', str(e))
        self.assertEqual(0, self.glance.download_count(self.unflagged))
        self.assertEqual([], os.listdir(os.path.join(self.cache_dir,
                                                     cache.LOCKS)))
        self.assertCacheClean()

    def test_unknown_image(self):
        self.assertRaises(exception.ImageNotFound, self.fetch,
                          str(uuid.uuid4()))
        self.assertRaises(exception.ImageNotFound, self.fetch, '../etc')
        self.assertCacheClean()

    def test_corrupted_entry_is_fetched_again(self):
        before = self.glance.download_count(self.bookworm)
        path = self.fetch(self.bookworm).path
        with open(path, 'r+b') as f:
            f.seek(100000)
            f.write(b'\xff\xfe')
        again = self.fetch(self.bookworm)
        self.assertTrue(again.downloaded)
        with open(path, 'r+b') as f:
            f.truncate(4096)
        self.assertTrue(self.fetch(self.bookworm).downloaded)
        self.assertFalse(self.fetch(self.bookworm).downloaded)
        self.assertEqual(before + 3,
                         self.glance.download_count(self.bookworm))
        self.assertCacheClean(entries=1)

    def test_token_sent_never_logged(self):
        proxy = self.proxy()
        logger = self.useFixture(fixtures.FakeLogger(level='DEBUG'))
        proxy.add_fault(FILE, 'status', times=1, status=503)
        self.fetch(self.bookworm, client=self.client(proxy.url))
        self.assertEqual({'secret-token'}, {
            r.headers.get('X-Auth-Token') for r in proxy.records})
        self.assertNotIn('secret-token', logger.output)
        self.assertIn('Retrying Glance', logger.output)

    def test_token_stays_on_the_endpoint_origin(self):
        # Glance (through the proxy) redirects the download: to its own
        # origin the token goes along, to another origin (the same Glance
        # behind a second proxy, another port) it does not.
        proxy = self.proxy()
        other = self.proxy()
        path = '/v2/images/%s/file' % self.bookworm
        proxy.add_fault(FILE, 'status', times=1, status=302,
                        headers={'Location': path})
        proxy.add_fault(FILE, 'status', times=1, status=307,
                        headers={'Location': other.url + path})
        entry = self.fetch(self.bookworm, client=self.client(proxy.url))
        self.assertTrue(entry.downloaded)
        self.assertEqual(['secret-token'] * 3, [
            r.headers.get('X-Auth-Token') for r in proxy.records])
        self.assertEqual([(path, None)], [
            (r.target, r.headers.get('X-Auth-Token'))
            for r in other.records])
        self.assertEqual(1, other.upstream_count('GET', FILE))
        self.assertCacheClean(entries=1)


class FaultTestCase(GlanceTestCase):

    def via(self, proxy, **kw):
        return self.client(proxy.url, **kw)

    def test_5xx_then_success(self):
        proxy = self.proxy()
        proxy.add_fault(FILE, 'status', times=2, status=500)
        proxy.add_fault(RECORD, 'status', times=1, status=503)
        entry = self.fetch(self.bookworm, client=self.via(proxy))
        self.assertTrue(entry.downloaded)
        self.assertEqual(3, proxy.count('GET', FILE))
        self.assertEqual(1, proxy.upstream_count('GET', FILE))
        self.assertCacheClean(entries=1)

    def test_5xx_forever(self):
        proxy = self.proxy()
        proxy.add_fault(FILE, 'status', times=None, status=502)
        e = self.assertRaises(exception.ImageDownloadFailed, self.fetch,
                              self.bookworm, client=self.via(proxy))
        self.assertIn('4 attempts failed, last: HTTP 502', str(e))
        self.assertCacheClean()

    def test_reset_mid_body_resumes(self):
        proxy = self.proxy()
        proxy.add_fault(FILE, 'reset_mid_body', times=1, after_bytes=700000)
        entry = self.fetch(self.bookworm, client=self.via(proxy))
        self.assertTrue(entry.downloaded)
        self.assertEqual(2, proxy.upstream_count('GET', FILE))
        self.assertCacheClean(entries=1)

    def test_truncated_body_resumes(self):
        proxy = self.proxy()
        proxy.add_fault(FILE, 'truncate', times=2, after_bytes=1000000)
        self.fetch(self.bookworm, client=self.via(proxy))
        self.assertEqual(3, proxy.count('GET', FILE))
        self.assertCacheClean(entries=1)

    def test_reset_every_time(self):
        proxy = self.proxy()
        proxy.add_fault(FILE, 'reset_mid_body', times=None,
                        after_bytes=4096)
        e = self.assertRaises(exception.ImageDownloadFailed, self.fetch,
                              self.bookworm, client=self.via(proxy))
        self.assertIn('4 attempts failed, last: ConnectionResetError', str(e))
        # One budget: four requests in all, not four per attempt.
        self.assertEqual(4, proxy.count('GET', FILE))
        self.assertCacheClean()

    def test_wrong_hash(self):
        proxy = self.proxy()
        proxy.add_fault(FILE, 'corrupt', times=1)
        e = self.assertRaises(exception.ImageChecksumMismatch, self.fetch,
                              self.bookworm, client=self.via(proxy))
        self.assertIn('does not match its sha512 hash', str(e))
        self.assertCacheClean()

    def test_record_too_big_refused_before_download(self):
        proxy = self.proxy()
        proxy.add_fault(RECORD, 'rewrite_json', times=1,
                        patch={'size': 10 ** 10})
        self.assertRaises(exception.ImageTooLarge, self.fetch,
                          self.bookworm, client=self.via(proxy))
        self.assertEqual(0, proxy.count('GET', FILE))
        self.assertCacheClean()

    def test_stream_grows_past_the_cap(self):
        proxy = self.proxy()
        # Without a length, and with a Content-Length that lies: reading
        # stops right past the size the record announced.
        for mode in ('chunked', 'length'):
            proxy.add_fault(FILE, 'grow', times=1, mode=mode,
                            extra_bytes=64 * 2 ** 20)
            e = self.assertRaises(exception.ImageDownloadFailed, self.fetch,
                                  self.bookworm, client=self.via(proxy))
            self.assertIn('longer than the %d bytes'
                          % os.path.getsize(samples.bookworm_iso()), str(e))
            self.assertCacheClean()

    def test_slower_than_read_timeout(self):
        proxy = self.proxy()
        proxy.add_fault(FILE, 'slow', times=1, delay=3, before='body')
        client = self.via(proxy, read_timeout=1)
        self.assertTrue(self.fetch(self.bookworm, client=client).downloaded)
        proxy.add_fault(FILE, 'slow', times=None, delay=3, before='headers')
        e = self.assertRaises(exception.ImageDownloadFailed, self.fetch,
                              self.trixie, client=client)
        self.assertIn('ReadTimeout', str(e))
        self.assertCacheClean(entries=1)

    def test_trickle_meets_the_deadline(self):
        # One byte every 0.2 s never trips the 1 s read timeout; the
        # deadline ends it, typed, and nothing is left behind.
        proxy = self.proxy()
        proxy.add_fault(FILE, 'drip', times=None, size=1, interval=0.2)
        client = self.via(proxy, read_timeout=1, download_timeout=2)
        e = self.assertRaises(exception.ImageDownloadTimeout, self.fetch,
                              self.bookworm, client=client)
        self.assertIn('download deadline', str(e))
        self.assertEqual(1, proxy.count('GET', FILE))
        self.assertCacheClean()
        # The lock is free again: the next fetch goes ahead.
        self.assertTrue(self.fetch(self.bookworm).downloaded)
        self.assertCacheClean(entries=1)

    def test_trickling_headers_meet_the_deadline(self):
        # A status line and a header that never end: no read ever times
        # out, http.client would wait for 100 headers of 64 KiB.
        proxy = self.proxy()
        proxy.add_fault(FILE, 'drip', times=None, size=1, interval=0.2,
                        before='headers')
        e = self.assertRaises(exception.ImageDownloadTimeout, self.fetch,
                              self.bookworm, client=self.via(
                                  proxy, read_timeout=1, download_timeout=2))
        self.assertIn('download deadline', str(e))
        self.assertEqual(1, proxy.count('GET', FILE))
        self.assertEqual(0, proxy.upstream_count('GET', FILE))
        self.assertCacheClean()

    def test_trickling_record_meets_the_deadline(self):
        proxy = self.proxy()
        proxy.add_fault(RECORD, 'drip', times=None, size=1, interval=0.2)
        e = self.assertRaises(exception.ImageDownloadTimeout, self.fetch,
                              self.bookworm, client=self.via(
                                  proxy, read_timeout=1, download_timeout=1))
        self.assertIn('reading the image record', str(e))
        self.assertEqual(0, proxy.count('GET', FILE))
        self.assertCacheClean()

    def test_not_an_iso_record(self):
        proxy = self.proxy()
        proxy.add_fault(RECORD, 'rewrite_json', times=1,
                        patch={'disk_format': 'qcow2'})
        e = self.assertRaises(exception.ImageNotUsable, self.fetch,
                              self.bookworm, client=self.via(proxy))
        self.assertIn("disk_format is 'qcow2'", str(e))
        self.assertEqual(0, proxy.count('GET', FILE))
        self.assertCacheClean()

    def test_no_space_left(self):
        small = os.path.join(self.tmp, 'small')
        os.mkdir(small)
        subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=1m', 'tmpfs',
                        small], check=True)
        self.addCleanup(subprocess.run, ['umount', small], check=True)
        e = self.assertRaises(exception.CacheError, self.fetch,
                              self.bookworm, directory=small)
        self.assertIn('No space left on device', str(e))
        self.assertCacheClean(directory=small)

    def test_read_only_cache_dir(self):
        ro = os.path.join(self.tmp, 'ro')
        os.makedirs(os.path.join(ro, cache.LOCKS))
        subprocess.run(['mount', '--bind', ro, ro], check=True)
        self.addCleanup(subprocess.run, ['umount', ro], check=True)
        subprocess.run(['mount', '-o', 'remount,ro,bind', ro], check=True)
        e = self.assertRaises(exception.CacheError, self.fetch,
                              self.bookworm, directory=ro)
        self.assertIn('Read-only file system', str(e))
        self.assertEqual([cache.LOCKS], os.listdir(ro))

    def test_cache_dir_is_a_file(self):
        path = os.path.join(self.tmp, 'file')
        open(path, 'w').close()
        self.assertRaises(exception.CacheError, cache.BaseIsoCache,
                          os.path.join(path, 'cache'), 1)


class TlsTestCase(GlanceTestCase):
    """Glance behind TLS, with a certificate made for the test."""

    def setUp(self):
        super().setUp()
        self.cert, key = samples.self_signed_cert(self.tmp, 'glance')
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert, key)
        self.tls = self.useFixture(_ProxyFixture(
            self.glance.url, ssl_context=context)).proxy

    def test_ca_file(self):
        entry = self.fetch(self.bookworm, client=self.client(
            self.tls.url, ca_file=self.cert))
        self.assertTrue(entry.downloaded)
        self.assertCacheClean(entries=1)

    def test_untrusted_certificate(self):
        e = self.assertRaises(exception.GlanceError, self.fetch,
                              self.bookworm, client=self.client(self.tls.url))
        self.assertIn('TLS', str(e))
        self.assertIn('CERTIFICATE_VERIFY_FAILED', str(e))
        self.assertCacheClean()

    def test_insecure(self):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter('always')
            entry = self.fetch(self.bookworm, client=self.client(
                self.tls.url, insecure=True))
        self.assertTrue(entry.downloaded)
        self.assertIn('Unverified HTTPS request',
                      ' '.join(str(w.message) for w in caught))

    def test_options_reach_the_client(self):
        self.flags(group='ipxe_glance', url=self.tls.url,
                   ca_file=self.cert)
        client = glance.client_from_conf(self.conf, token='t')
        self.assertTrue(self.fetch(self.bookworm, client=client).downloaded)


class Md5FallbackTestCase(GlanceTestCase):

    def test_checksum_when_no_multihash(self):
        proxy = self.proxy()
        no_multihash = {'os_hash_algo': faultproxy.DELETE,
                        'os_hash_value': faultproxy.DELETE}
        proxy.add_fault(RECORD, 'rewrite_json', times=2,
                        patch=no_multihash)
        entry = self.fetch(self.bookworm, client=self.client(proxy.url))
        self.assertEqual('md5', entry.info.hash_algo)
        proxy.add_fault(RECORD, 'rewrite_json', times=1,
                        patch=no_multihash)
        proxy.add_fault(FILE, 'corrupt', times=1)
        e = self.assertRaises(exception.ImageChecksumMismatch, self.fetch,
                              self.trixie, client=self.client(proxy.url))
        self.assertIn('its md5 hash', str(e))


class EvictionTestCase(GlanceTestCase):

    def test_bounded_and_never_in_use(self):
        small = cache.BaseIsoCache(self.cache_dir, max_size=10 * 2 ** 20)
        client = self.client()
        with small.get(client, self.bookworm, 2 ** 26) as first:
            with small.get(client, self.trixie, 2 ** 26) as second:
                # Over the bound, but both are in use: nothing goes.
                self.assertEqual([], small.evict())
                self.assertTrue(os.path.exists(first.path))
                self.assertTrue(os.path.exists(second.path))
            # trixie is free now, bookworm still in use.
            self.assertEqual([second.path], small.evict())
            self.assertTrue(os.path.exists(first.path))
        # Now the bookworm entry is not in use: using trixie evicts it.
        with small.get(client, self.trixie, 2 ** 26) as second:
            self.assertFalse(os.path.exists(first.path))
        self.assertCacheClean(entries=1)

    def test_age_limit(self):
        aged = cache.BaseIsoCache(self.cache_dir, max_size=2 ** 30,
                                  max_age=60)
        path = self.fetch(self.bookworm).path
        os.utime(path, (1, 1))
        self.assertEqual([path], aged.evict())
        self.assertCacheClean()


class ConcurrencyTestCase(GlanceTestCase):

    def test_two_processes_32_threads_one_download(self):
        before = self.glance.download_count(self.trixie)
        outdir = os.path.join(self.tmp, 'out')
        os.mkdir(outdir)
        gate = os.path.join(self.tmp, 'go')
        procs = [subprocess.Popen(
            [sys.executable, '-m', 'tests.functional.concurrent_build',
             '--glance-url', self.glance.url, '--image', self.trixie,
             '--cache-dir', self.cache_dir, '--out', outdir,
             '--process', str(n), '--threads', '32', '--gate', gate],
            cwd=samples.REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True) for n in range(2)]
        open(gate, 'w').close()
        for proc in procs:
            out, err = proc.communicate(timeout=600)
            self.assertEqual(0, proc.returncode, err[-3000:])
        self.assertEqual(before + 1, self.glance.download_count(self.trixie))
        isos = sorted(os.listdir(outdir))
        self.assertEqual(64, len(isos))
        for name in isos:
            # Each ISO carries its own instance's address, in the BIOS
            # script and in the EFI image.
            n = int(name.split('.')[0])
            files = samples.iso_files(os.path.join(outdir, name))
            script = files['/nipxe.ipx'].decode()
            self.assertIn('set ip 198.51.100.%d\n' % (n + 1), script)
            self.assertIn(files['/nipxe.ipx'], files['/efi.img'])
        self.assertCacheClean(entries=1)


class _ProxyFixture(fixtures.Fixture):

    def __init__(self, upstream, **kw):
        self.upstream = upstream
        self.kw = kw

    def _setUp(self):
        self.proxy = faultproxy.FaultProxy(self.upstream, **self.kw).start()
        self.addCleanup(self.proxy.stop)


class CliTestCase(GlanceTestCase):
    """nova-ipxe fetch / build-iso --image against the real Glance."""

    def run_cli(self, *args, token='secret-token'):
        env = dict(os.environ, OS_AUTH_TOKEN=token)
        return subprocess.run(
            [sys.executable, '-m', 'nova_ipxe.cli'] + list(args),
            capture_output=True, text=True, cwd=samples.REPO, env=env)

    def test_fetch_then_build_by_image_id(self):
        proxy = self.proxy()
        common = ['--glance-url', proxy.url, '--cache-dir', self.cache_dir]
        result = self.run_cli('fetch', self.trixie, *common)
        self.assertEqual(0, result.returncode, result.stderr)
        self.assertIn('sha512 verified, downloaded', result.stdout)
        again = self.run_cli('fetch', self.trixie, *common)
        self.assertIn('already cached', again.stdout)
        out = os.path.join(self.tmp, 'vm.iso')
        built = self.run_cli(
            'build-iso', '--image', self.trixie, *common, '--network-data',
            samples.NETWORK_DATA, '--menu-url', 'http://192.0.2.1/m',
            '--output', out)
        self.assertEqual(0, built.returncode, built.stderr)
        self.assertIn('BIOS yes, UEFI yes', built.stdout)
        self.assertIn(b'set ip 192.0.2.10\n',
                      samples.iso_files(out)['/nipxe.ipx'])
        # One download; every use checked the record with Glance, with
        # the token from the environment.
        self.assertEqual(1, proxy.count('GET', FILE))
        self.assertEqual(3, proxy.count('GET', RECORD))
        self.assertEqual({'secret-token'}, {
            r.headers.get('X-Auth-Token') for r in proxy.records})
        self.assertCacheClean(entries=1)

    def test_errors(self):
        result = self.run_cli('fetch', self.unflagged, '--glance-url',
                              self.glance.url, '--cache-dir', self.cache_dir)
        self.assertEqual(1, result.returncode)
        self.assertIn('nova-ipxe: error: Image %s cannot be used for iPXE '
                      'boot' % self.unflagged, result.stderr)
        self.assertNotIn('Traceback', result.stderr)
        result = self.run_cli('fetch', self.trixie, '--cache-dir',
                              self.cache_dir)
        self.assertEqual(1, result.returncode)
        self.assertIn('no Glance endpoint', result.stderr)
        result = self.run_cli('fetch', self.trixie, '--glance-url',
                              'http://127.0.0.1:9', '--cache-dir',
                              self.cache_dir)
        self.assertEqual(1, result.returncode)
        self.assertIn('ConnectionError', result.stderr)
        self.assertNotIn('Traceback', result.stderr)

    def test_progress_on_a_terminal(self):
        # A download that takes long shows progress when stderr is a
        # terminal (and only then: the other tests capture stderr).
        proxy = self.proxy()
        proxy.add_fault(FILE, 'slow', times=1, delay=1.5, before='body')
        master, slave = pty.openpty()
        self.addCleanup(os.close, master)
        proc = subprocess.Popen(
            [sys.executable, '-m', 'nova_ipxe.cli', 'fetch', self.bookworm,
             '--glance-url', proxy.url, '--cache-dir', self.cache_dir],
            cwd=samples.REPO, stdout=subprocess.PIPE, stderr=slave)
        os.close(slave)
        out, _ = proc.communicate(timeout=60)
        self.assertEqual(0, proc.returncode)
        shown = b''
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO once the child side is closed
                break
            if not chunk:
                break
            shown += chunk
        self.assertIn(b'downloading: 100% (2.0 of 2.0 MiB)', shown)
        self.assertIn(b'downloaded', out)
