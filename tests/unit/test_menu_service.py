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

"""The menu service against a fake Nova at the HTTP boundary.

Nova is requests-mock behind a real keystoneauth adapter, so the
service's requests are the ones it sends to a real Nova (the Nova
harness test is tests/nova/test_menu_service.py).  Each refusal ends in
an iPXE script that says why and ends with ``exit 1``.
"""

import io
import os
import re
import subprocess
import sys
import time
import urllib.parse
import urllib.request
import wsgiref.util

import fixtures
from keystoneauth1 import adapter as ks_adapter
from keystoneauth1 import session as ks_session
from oslo_config import cfg
from oslo_config import generator
from requests_mock.contrib import fixture as rm_fixture

from nova_ipxe import exception
from nova_ipxe.menuservice import app
from nova_ipxe.menuservice import conf as menu_conf
from nova_ipxe.menuservice import nova
from nova_ipxe.menuservice import profiles
from nova_ipxe.menuservice import wsgi
from nova_ipxe import signature
from tests import base
from tests import samples

NOVA = 'http://nova.test/v2.1'
UUID = '8f9d3c52-0f5e-4d9a-9c1e-3b8f8c7d6e5f'
MAC = '52:54:00:12:34:56'
IP = '192.0.2.10'
KEY = 'menu-service-key-0123456789'
NOW = 1_800_000_000
PUBKEY = ('ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHv7Zk2w3xq1b2N0ZcJ6mV'
          'x2bQ0kE9hOe7m2l3yF5r4c tenant@example')
GENERATOR_CONF = os.path.join(samples.REPO, 'etc', 'nova-ipxe',
                              'menu-service-config-generator.conf')
SAMPLE = os.path.join(samples.REPO, 'etc', 'nova-ipxe',
                      'menu-service.conf.sample')


def server_body(metadata=None, network='lab-net', mac=MAC, ip=IP,
                key_name='tenant-key'):
    return {'server': {
        'id': UUID, 'name': 'vm 1', 'user_id': 'u-1', 'key_name': key_name,
        'OS-EXT-SRV-ATTR:hostname': 'vm-1',
        'metadata': metadata or {},
        'addresses': {network: [{'addr': ip, 'version': 4,
                                 'OS-EXT-IPS-MAC:mac_addr': mac,
                                 'OS-EXT-IPS:type': 'fixed'}]}}}


def chain_query(fields=None, key=KEY, kid='k1', ts=NOW, path='/menu.ipxe'):
    fields = fields or {'uuid': UUID, 'hostname': 'vm-1', 'mac': MAC,
                        'ip': IP}
    pairs = list(fields.items()) + signature.query_params(
        key, kid, path, fields, ts=ts)
    return urllib.parse.urlencode(pairs)


class MenuServiceTestCase(base.TestCase):

    def setUp(self):
        super().setUp()
        self.menu_conf = cfg.ConfigOpts()
        menu_conf.register_opts(self.menu_conf)
        self.menu_conf([], default_config_files=[])
        self.menu_conf.set_override('signing_keys', {'k0': 'an-old-key-01234',
                                                     'k1': KEY},
                                    'menu_service')
        self.menu_conf.set_override('debian_netboot_url',
                                    'http://192.0.2.1:8081/d-i/',
                                    'menu_service')
        self.mock = self.useFixture(rm_fixture.Fixture())
        self.body = server_body({'ipxe_profile': 'debian-12'})
        self.mock.get(NOVA + '/servers/' + UUID, json=lambda r, c: self.body)
        self.mock.get(NOVA + '/os-keypairs/tenant-key',
                      json={'keypair': {'public_key': PUBKEY}})
        self.metadata_posts = []

        def post_metadata(request, context):
            self.metadata_posts.append(request.json())
            self.body['server']['metadata'].update(
                request.json()['metadata'])
            return {'metadata': self.body['server']['metadata']}
        self.mock.post(NOVA + '/servers/%s/metadata' % UUID,
                       json=post_metadata)
        self.now = NOW + 5
        self.service = self.make_service()

    def make_service(self):
        adapter = ks_adapter.Adapter(ks_session.Session(),
                                     endpoint_override=NOVA)
        return app.MenuService(self.menu_conf, nova.Nova(adapter, ttl=10),
                               clock=lambda: self.now)

    def get(self, path, query='', source=IP, method='GET'):
        environ = {'REQUEST_METHOD': method, 'PATH_INFO': path,
                   'QUERY_STRING': query, 'REMOTE_ADDR': source,
                   'HTTP_HOST': '192.0.2.1:8090', 'wsgi.input': io.BytesIO()}
        wsgiref.util.setup_testing_defaults(environ)
        seen = {}

        def start_response(status, headers):
            seen['status'] = int(status.split()[0])
        body = b''.join(self.service(environ, start_response))
        return seen['status'], body.decode('utf-8')

    def menu(self, query=None, source=IP):
        return self.get('/menu.ipxe', chain_query() if query is None
                        else query, source)

    def assertRefused(self, answer, why):
        status, text = answer
        self.assertEqual(200, status)   # so that iPXE runs the refusal
        self.assertTrue(text.startswith('#!ipxe\necho nova-ipxe-menu: '
                                        'refused: '), text)
        self.assertIn(why, text)
        self.assertTrue(text.endswith('exit 1\n'), text)
        self.assertNotIn('${', text)
        self.assertEqual(4, len(text.splitlines()))

    def urls(self, script):
        return {k: v for k, v in (
            w.split('=', 1) for w in script.split() if '=' in w)}

    # -- the unattended install, end to end --------------------------------
    def test_debian_profile_preseed_key_done_then_local_disk(self):
        status, script = self.menu()
        self.assertEqual(200, status)
        self.assertIn('kernel --name linux http://192.0.2.1:8081/d-i/linux',
                      script)
        args = self.urls(script)
        self.assertEqual(IP, args['netcfg/get_ipaddress'])
        self.assertEqual('${netmask}', args['netcfg/get_netmask'])
        self.assertEqual('true', args['netcfg/disable_autoconfig'])
        self.assertEqual('vm-1', args['hostname'])
        self.assertEqual('localdomain', args['domain'])
        preseed_url = args['url']
        self.assertTrue(preseed_url.startswith(
            'http://192.0.2.1:8090/preseed/%s/k1/%d/' % (UUID, NOW + 5)))
        path = urllib.parse.urlsplit(preseed_url).path
        status, preseed = self.get(path)
        self.assertEqual(200, status)
        self.assertIn('d-i netcfg/get_hostname string vm-1\n', preseed)
        self.assertIn('d-i netcfg/get_ipaddress string %s\n' % IP, preseed)
        late = [line for line in preseed.splitlines()
                if line.startswith('d-i preseed/late_command')][0]
        key_path = '/key/' + path.split('/', 2)[2]
        done_path = '/done/' + path.split('/', 2)[2]
        self.assertIn('http://192.0.2.1:8090' + key_path, late)
        self.assertTrue(late.endswith('http://192.0.2.1:8090' + done_path))
        self.assertNotIn(PUBKEY.split()[1], preseed)
        self.assertEqual((200, PUBKEY + '\n'), self.get(key_path))
        self.assertEqual(200, self.get(done_path)[0])
        self.assertEqual([{'metadata': {'ipxe_boot': 'false'}}],
                         self.metadata_posts)
        status, script = self.menu()
        self.assertIn('booting the local disk', script)
        self.assertIn('sanboot --no-describe --drive 0x80 || exit 1', script)

    def test_mounted_under_a_prefix(self):
        # Apache's ProxyPass /nova-ipxe-menu to uwsgi: the whole path
        # reaches the application; the signed path is the whole path.
        self.menu_conf.set_override('public_url',
                                    'http://192.0.2.1/nova-ipxe-menu',
                                    'menu_service')
        path = '/nova-ipxe-menu/menu.ipxe'
        status, script = self.get(path, chain_query(path=path))
        url = self.urls(script)['url']
        self.assertTrue(url.startswith(
            'http://192.0.2.1/nova-ipxe-menu/preseed/' + UUID), url)
        status, preseed = self.get(urllib.parse.urlsplit(url).path)
        self.assertEqual(200, status)
        self.assertEqual((200, 'OK\n'),
                         self.get('/nova-ipxe-menu/healthcheck'))
        # The path is signed: the same query on another path is refused.
        self.assertRefused(self.get('/menu.ipxe', chain_query(path=path)),
                           'signature mismatch')

    def test_nova_is_asked_once_within_the_ttl(self):
        self.menu()
        self.menu()
        self.assertEqual(1, self.mock.call_count)
        self.now += 11
        self.service.nova.clock = lambda: self.now
        self.menu()

    def test_rotation_old_key_still_accepted(self):
        status, script = self.menu(chain_query(key='an-old-key-01234',
                                               kid='k0'))
        self.assertIn('installing Debian 12', script)

    def test_no_profile_chains_the_default_menu(self):
        self.body = server_body()
        self.menu_conf.set_override(
            'default_menu_url', 'http://boot.example.org/menu.ipxe?'
            'mac=${net0/mac}', 'menu_service')
        status, script = self.menu()
        self.assertIn('chain --autofree http://boot.example.org/menu.ipxe?'
                      'mac=${net0/mac} || exit 1', script)

    def test_no_profile_no_default_menu_boots_the_disk(self):
        self.body = server_body()
        self.assertIn('sanboot --no-describe', self.menu()[1])

    # -- refusals ------------------------------------------------------------
    def test_unsigned(self):
        self.assertRefused(self.menu('uuid=%s&mac=%s&ip=%s' % (UUID, MAC, IP)),
                           'invalid signature: no sig parameter')
        self.assertEqual(0, self.mock.call_count)

    def test_expired(self):
        self.now = NOW + 86400 + 1
        self.assertRefused(self.menu(), 'signed 86401 seconds ago')

    def test_from_the_future(self):
        self.now = NOW - 301
        self.assertRefused(self.menu(), 'in the future')

    def test_forged(self):
        self.assertRefused(self.menu(chain_query(key='not-the-key-0123456')),
                           'signature mismatch')
        query = chain_query().replace('vm-1', 'vm-2')
        self.assertRefused(self.menu(query), 'signature mismatch')
        self.assertRefused(self.menu(chain_query(kid='k9')),
                           'unknown key id')

    def test_replayed_from_another_address(self):
        self.assertRefused(self.menu(source='192.0.2.99'),
                           'signed for 192.0.2.10, asked from 192.0.2.99')
        self.assertEqual(0, self.mock.call_count)

    def test_address_not_a_port_of_the_server(self):
        # A DHCP NIC: ip is not signed; Nova's ports decide.
        query = chain_query({'uuid': UUID, 'mac': MAC}) + '&ip=192.0.2.99'
        self.assertRefused(self.menu(query, source='192.0.2.99'),
                           '192.0.2.99 with MAC %s is not a port of server'
                           % MAC)
        # The right address, another server's MAC.
        query = chain_query({'uuid': UUID, 'mac': '52:54:00:00:00:01',
                             'ip': IP})
        self.assertRefused(self.menu(query), 'is not a port of server')
        query = chain_query({'uuid': UUID, 'mac': MAC}) + '&ip=' + IP
        self.assertIn('installing Debian 12', self.menu(query)[1])

    def test_unknown_server(self):
        self.mock.get(NOVA + '/servers/' + UUID, status_code=404,
                      json={'itemNotFound': {'code': 404}})
        self.assertRefused(self.menu(), 'Nova has no server %s' % UUID)

    def test_nova_down(self):
        self.mock.get(NOVA + '/servers/' + UUID, status_code=503)
        self.assertRefused(self.menu(), 'Nova cannot be asked now')

    def test_no_uuid(self):
        self.assertRefused(self.menu(chain_query({'mac': MAC, 'ip': IP})),
                           'names no server')

    def test_hostile_profile_names(self):
        for name in ('../../../etc/passwd', 'debian-12\nshell', '${x}',
                     'A' * 65, 'debian-12 ', 'nonexistent'):
            self.body = server_body({'ipxe_profile': name})
            self.service = self.make_service()
            self.assertRefused(self.menu(), 'refused')

    def test_hostile_network_name_in_an_operator_template(self):
        tpl = os.path.join(self.tmp, 'profiles')
        os.mkdir(tpl)
        with open(os.path.join(tpl, 'net.ipxe.j2'), 'w') as f:
            f.write('#!ipxe\necho on {{ network }}\n')
        with open(os.path.join(tpl, 'net.preseed.j2'), 'w') as f:
            f.write('d-i x string {{ network }}\n')
        self.menu_conf.set_override('profiles_dir', tpl, 'menu_service')
        for network in ('net ${root-path}', 'net\nshell', '#net',
                        '||', 'n\u202eet'):
            self.body = server_body({'ipxe_profile': 'net'}, network=network)
            self.service = self.make_service()
            self.assertRefused(self.menu(), 'template value')
        self.body = server_body({'ipxe_profile': 'net'}, network='lab-net')
        self.service = self.make_service()
        self.assertEqual('#!ipxe\necho on lab-net\n', self.menu()[1])
        for network in ('a;reboot', 'a`id`', 'a$(id)', 'a\nd-i x'):
            self.body = server_body({'ipxe_profile': 'net'}, network=network)
            self.service = self.make_service()
            self.service.nova.ttl = 0
            # The preseed URL of a debian-12 answer, fetched once the
            # server's profile is "net".
            self.body['server']['metadata']['ipxe_profile'] = 'debian-12'
            url = self.urls(self.menu()[1])['url']
            self.body['server']['metadata']['ipxe_profile'] = 'net'
            self.assertEqual(
                403, self.get(urllib.parse.urlsplit(url).path)[0])
        self.body = server_body({'ipxe_profile': 'net'}, network='lab-net')
        self.assertEqual((200, 'd-i x string lab-net\n'),
                         self.get(urllib.parse.urlsplit(url).path))
        # The key is a preseed value; with a shell character it refuses.
        with open(os.path.join(tpl, 'net.preseed.j2'), 'w') as f:
            f.write('d-i x string {{ ssh_key }}\n')
        self.service = self.make_service()
        self.assertEqual((200, 'd-i x string %s\n' % PUBKEY),
                         self.get(urllib.parse.urlsplit(url).path))
        self.mock.get(NOVA + '/os-keypairs/tenant-key',
                      json={'keypair': {'public_key': PUBKEY + ';reboot'}})
        self.assertEqual(403, self.get(urllib.parse.urlsplit(url).path)[0])

    def test_sandbox(self):
        tpl = os.path.join(self.tmp, 'profiles')
        os.mkdir(tpl)
        with open(os.path.join(tpl, 'evil.ipxe.j2'), 'w') as f:
            f.write('#!ipxe\n{{ uuid.__class__.__mro__[1].__subclasses__() '
                    '}}\n')
        self.menu_conf.set_override('profiles_dir', tpl, 'menu_service')
        self.body = server_body({'ipxe_profile': 'evil'})
        self.service = self.make_service()
        self.assertRefused(self.menu(), 'SecurityError')

    def test_hostile_public_key_is_not_served(self):
        status, script = self.menu()
        path = urllib.parse.urlsplit(self.urls(script)['url']).path
        key_path = '/key/' + path.split('/', 2)[2]
        for key in (PUBKEY + '\nssh-rsa AAAA other', 'command="x" ' + PUBKEY,
                    PUBKEY + '\x1b[2J'):
            self.mock.get(NOVA + '/os-keypairs/tenant-key',
                          json={'keypair': {'public_key': key}})
            self.assertEqual(404, self.get(key_path)[0])

    def test_tokens(self):
        script = self.menu()[1]
        path = urllib.parse.urlsplit(self.urls(script)['url']).path
        self.assertEqual(200, self.get(path)[0])
        # Another address, a changed byte, an expired token.
        self.assertEqual(403, self.get(path, source='192.0.2.99')[0])
        self.assertEqual(403, self.get(path[:-1] + (
            '0' if path[-1] != '0' else '1'))[0])
        self.assertEqual(403, self.get('/preseed/x')[0])
        self.assertEqual(403, self.get('/done/' + path.split('/', 2)[2],
                                       source='192.0.2.98')[0])
        self.assertEqual([], self.metadata_posts)
        self.now += 6 * 3600 + 1
        self.assertEqual(403, self.get(path)[0])

    def test_refusal_script_shows_no_ipxe_syntax(self):
        text = app.refusal_script('x ${root-path} #c || shell\nexit 0')
        self.assertEqual('#!ipxe\necho nova-ipxe-menu: refused: x ??root-'
                         'path? ?c ?? shell?exit 0\necho nova-ipxe-menu: '
                         'falling back\nexit 1\n', text)

    def test_methods_and_healthcheck(self):
        self.assertEqual((200, 'OK\n'), self.get('/healthcheck'))
        self.assertEqual(405, self.get('/menu.ipxe', method='POST')[0])

    def test_no_signing_keys_is_a_config_error(self):
        self.menu_conf.set_override('signing_keys', {}, 'menu_service')
        self.assertRaises(exception.ConfigError, self.make_service)

    def test_profile_names(self):
        p = profiles.Profiles()
        for name in profiles.BUILTIN:
            self.assertTrue(p.has(name))
        self.assertTrue(p.has('debian-12', 'preseed'))
        self.assertFalse(p.has('local', 'preseed'))

    def test_sample_is_current(self):
        out = os.path.join(self.tmp, 'sample')
        generator.main(['--config-file', GENERATOR_CONF,
                        '--output-file', out])
        with open(SAMPLE) as f, open(out) as g:
            want, got = f.read(), g.read()
        # [menu_service] is ours: exactly as generated.  [DEFAULT] and
        # [nova] hold oslo.log's and keystoneauth's options, which differ
        # between their releases (Python 3.10 gets an older keystoneauth):
        # there the sample must name the same groups.
        self.assertEqual(_section(want, 'menu_service'),
                         _section(got, 'menu_service'),
                         'etc/nova-ipxe/menu-service.conf.sample is '
                         'stale: run tox -e genconfig')
        self.assertEqual(re.findall(r'(?m)^\[\w+\]$', want),
                         re.findall(r'(?m)^\[\w+\]$', got))


def _section(text, name):
    """The lines of one [section] of a generated sample."""
    start = text.index('\n[%s]\n' % name)
    end = text.find('\n[', start + 1)
    return text[start:end if end > 0 else len(text)]


class EntryPointsTestCase(base.TestCase):
    """nova-ipxe-menu (the console script) and the WSGI entry point."""

    def write_conf(self):
        path = os.path.join(self.tmp, 'menu-service.conf')
        with open(path, 'w') as f:
            f.write('[DEFAULT]\nuse_stderr = true\n'
                    '[menu_service]\nsigning_keys = k1:%s\n'
                    'bind_host = 127.0.0.1\nbind_port = 0\n'
                    '[nova]\nauth_type = none\n'
                    'endpoint_override = http://127.0.0.1:9/v2.1\n' % KEY)
        return path

    def test_console_script_serves_and_logs(self):
        script = os.path.join(os.path.dirname(sys.executable),
                              'nova-ipxe-menu')
        proc = subprocess.Popen([script, '--config-file', self.write_conf()],
                                stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        self.addCleanup(proc.wait)
        self.addCleanup(proc.kill)
        ready = proc.stdout.readline().split()
        self.assertEqual(['READY', '127.0.0.1'], ready[:2], proc.stderr)
        base_url = 'http://127.0.0.1:%s' % ready[2]
        with urllib.request.urlopen(base_url + '/healthcheck') as r:
            self.assertEqual(b'OK\n', r.read())
        # Signed, but Nova (port 9) cannot be asked: refused, and said.
        query = chain_query({'uuid': UUID, 'ip': '127.0.0.1'},
                            ts=int(time.time()))
        with urllib.request.urlopen(base_url + '/menu.ipxe?' + query) as r:
            text = r.read().decode()
        self.assertIn('refused: Nova cannot be asked now', text)
        proc.kill()
        err = proc.stderr.read()
        self.assertIn("GET '/menu.ipxe' from 127.0.0.1: 200 refused: Nova "
                      "cannot be asked now", err)

    def test_wsgi_entry_point_reads_its_config(self):
        self.useFixture(fixtures.EnvironmentVariable(
            'NOVA_IPXE_MENU_CONFIG', self.write_conf()))
        application = wsgi.init_application()
        self.assertEqual({'k1': KEY}, application.keys)
        self.assertEqual('http://127.0.0.1:9/v2.1',
                         application.nova.adapter.endpoint_override)
