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

import json
import os
import subprocess
import urllib.parse

import hypothesis
from hypothesis import strategies as st

from nova_ipxe import builder
from nova_ipxe import exception
from nova_ipxe import signature
from tests import base
from tests import samples
from tests.unit import ipxe_syntax

VECTORS = os.path.join(os.path.dirname(__file__), 'signature_vectors.json')
UUID = '8d0f7b6e-3c2a-4b1d-9e8f-7a6b5c4d3e2f'
KEY = 'operator-secret-key-0123456789'


def load_vectors():
    with open(VECTORS, encoding='utf-8') as f:
        return json.load(f)


class VectorTestCase(base.TestCase):

    def test_valid_vectors(self):
        for v in load_vectors()['valid']:
            self.assertEqual(v['canonical'], signature.canonical(
                v['kid'], v['ts'], v['path'], v['fields']), v['name'])
            self.assertEqual(v['sig'], signature.sign(
                v['key'], v['kid'], v['ts'], v['path'], v['fields']))
            verified = signature.verify(v['keys'], v['path'], v['query'],
                                        now=v['now'])
            self.assertEqual((v['kid'], v['ts'], v['fields']),
                             (verified.kid, verified.ts, verified.fields))

    def test_vectors_match_openssl(self):
        # An independent HMAC-SHA256 over the canonical text as written
        # in the file: what a menu server in another language computes.
        for v in load_vectors()['valid']:
            out = subprocess.run(
                ['openssl', 'dgst', '-sha256', '-hmac', v['key']],
                input=v['canonical'].encode('utf-8'), capture_output=True,
                check=True).stdout.decode()
            self.assertEqual(v['sig'], out.split()[-1], v['name'])

    def test_invalid_vectors_refused(self):
        for v in load_vectors()['invalid']:
            e = self.assertRaises(signature.InvalidSignature,
                                  signature.verify, v['keys'], v['path'],
                                  v['query'], now=v['now'],
                                  max_age=v.get('max_age'))
            self.assertEqual(v['reason'], str(e), v['name'])

    def test_rotation_and_age(self):
        v = load_vectors()['valid'][0]
        keys = {'old': 'x' * 16, v['kid']: v['key']}
        self.assertEqual(v['kid'], signature.verify(
            keys, v['path'], v['query'], now=v['now']).kid)
        signature.verify(keys, v['path'], v['query'], now=v['ts'] + 60,
                         max_age=60)
        e = self.assertRaises(signature.InvalidSignature, signature.verify,
                              keys, v['path'], v['query'],
                              now=v['ts'] + 61, max_age=60)
        self.assertIn('signed 61 seconds ago', str(e))
        # The right signature under another key id's key is refused.
        self.assertRaises(signature.InvalidSignature, signature.verify,
                          {v['kid']: 'y' * 16}, v['path'], v['query'],
                          now=v['now'])

    def test_future_ts_bounded_by_skew(self):
        v = load_vectors()['valid'][0]
        args = ({v['kid']: v['key']}, v['path'], v['query'])
        signature.verify(*args, now=v['ts'] - 300)
        e = self.assertRaises(signature.InvalidSignature, signature.verify,
                              *args, now=v['ts'] - 10 * 365 * 86400)
        self.assertIn('in the future', str(e))
        signature.verify(*args, now=v['ts'] - 3600, max_skew=3600)

    def test_vectors_are_v2(self):
        vectors = load_vectors()
        self.assertEqual('nova-ipxe-menu-v2', vectors['version'])
        for v in vectors['valid']:
            self.assertTrue(v['canonical'].startswith('nova-ipxe-menu-v2\n'))


def guide_verifier():
    """The reference verifier printed in the guide, as a function.

    "A menu server written from the guide alone verifies the vectors":
    this is that menu server, read from doc/source/admin/menus.rst.
    """
    with open(os.path.join(samples.REPO, 'doc', 'source', 'admin',
                           'menus.rst'), encoding='utf-8') as f:
        lines = f.read().splitlines()
    start = lines.index('    # nova-ipxe-menu-v2 reference verifier')
    code = []
    for line in lines[start:]:
        if line and not line.startswith('    '):
            break
        code.append(line[4:])
    namespace = {}
    exec(compile('\n'.join(code), 'menus.rst', 'exec'), namespace)
    return namespace['check']


class GuideVerifierTestCase(base.TestCase):

    def test_guide_verifier_agrees_with_the_vectors(self):
        check = guide_verifier()
        vectors = load_vectors()
        for v in vectors['valid']:
            self.assertEqual(v['fields'], check(v['keys'], v['path'],
                                                v['query'], now=v['now']),
                             v['name'])
        for v in vectors['invalid']:
            self.assertRaises(ValueError, check, v['keys'], v['path'],
                              v['query'], now=v['now'],
                              max_age=v.get('max_age'))


class HostileVerifyTestCase(base.TestCase):
    """verify() raises InvalidSignature and nothing else, whatever comes."""

    @hypothesis.settings(max_examples=400, deadline=None,
                         suppress_health_check=list(hypothesis.HealthCheck))
    @hypothesis.given(path=st.one_of(st.text(max_size=40), st.binary(
        max_size=8), st.none(), st.integers()),
        query=st.one_of(st.text(max_size=300), st.none(), st.binary(
            max_size=8)),
        keys=st.one_of(st.dictionaries(st.text(max_size=4), st.one_of(
            st.text(max_size=20), st.binary(max_size=20), st.none())),
            st.none()))
    def test_anything_is_refused_typed(self, path, query, keys):
        try:
            signature.verify(keys, path, query, now=0)
        except signature.InvalidSignature:
            pass

    @hypothesis.settings(max_examples=300, deadline=None,
                         suppress_health_check=list(hypothesis.HealthCheck))
    @hypothesis.given(st.data())
    def test_mutated_valid_queries_refused_typed(self, data):
        v = data.draw(st.sampled_from(load_vectors()['valid']))
        query = v['query']
        at = data.draw(st.integers(0, len(query)))
        insert = data.draw(st.text(max_size=6))
        mutated = query[:at] + urllib.parse.quote(insert) + query[at:]
        try:
            got = signature.verify(v['keys'], v['path'], mutated,
                                   now=v['now'])
        except signature.InvalidSignature:
            return
        # Accepted: then the signed identity is the one that was signed.
        self.assertEqual(v['fields'], got.fields)

    def test_non_ascii_sig_is_refused_not_type_error(self):
        v = load_vectors()['valid'][0]
        query = v['query'].replace(v['sig'], v['sig'][:-1] + '\u0663')
        e = self.assertRaises(signature.InvalidSignature, signature.verify,
                              v['keys'], v['path'], query, now=v['now'])
        self.assertEqual('sig is not 64 lowercase hex digits', str(e))

    def test_signing_refuses_what_verify_would(self):
        for path, fields in (
                ('/m%0Auuid=x', {}),
                ('/m%E2%80%AE', {}),
                ('/m%FF', {}),
                ('relative', {}),
                ('/m', {'hostname': 'caf\u00e9'}),
                ('/m', {'hostname': 'a\nuuid=' + UUID}),
                ('/m', {'ip': '2001:DB8::1'}),
                ('/m', {'uuid': UUID.upper()}),
                ('/m', {'color': 'red'})):
            self.assertRaises(signature.UnsignableValue, signature.sign,
                              KEY, '1', 1, path, fields)
        self.assertRaises(signature.UnsignableValue, signature.sign,
                          KEY, 'bad id', 1, '/m', {})
        self.assertRaises(signature.UnsignableValue, signature.sign,
                          KEY, '1', -1, '/m', {})


class SignedScriptTestCase(base.TestCase):

    def render(self, data=None):
        return builder.render_script(builder.Instance(
            network_data=data or self.network_data(), uuid=UUID,
            hostname='demo-1'), self.conf)

    def url(self, text):
        return ipxe_syntax.command_lines(text, 'imgfetch')[0][5]

    def test_signed_chain_url_verifies(self):
        self.flags(menu_signing_key=KEY, menu_signing_key_id='2026-12')
        text = self.render().text
        parts = urllib.parse.urlsplit(self.url(text))
        self.assertEqual(['uuid', 'hostname', 'mac', 'ip', 'ts', 'kid',
                          'sig'],
                         [k for k, _ in urllib.parse.parse_qsl(parts.query)])
        verified = signature.verify({'2026-12': KEY}, parts.path,
                                    parts.query)
        self.assertEqual({'uuid': UUID, 'hostname': 'demo-1',
                          'mac': 'fa:16:3e:12:34:56', 'ip': '192.0.2.10'},
                         verified.fields)
        self.assertNotIn(KEY, text)  # only the signature is in the ISO
        tampered = parts.query.replace('192.0.2.10', '192.0.2.11')
        self.assertRaises(signature.InvalidSignature, signature.verify,
                          {'2026-12': KEY}, parts.path, tampered)

    def test_dhcp_ip_is_after_sig_and_unsigned(self):
        self.flags(menu_signing_key=KEY)
        data = samples.two_nics()
        data['networks'][1]['routes'] = []
        url = self.url(self.render(data).text)
        self.assertTrue(url.endswith('&ip=${ip}'), url)
        parts = urllib.parse.urlsplit(url.replace('${ip}', '203.0.113.5'))
        verified = signature.verify({'1': KEY}, parts.path, parts.query)
        self.assertNotIn('ip', verified.fields)

    def test_operator_query_kept_path_signed(self):
        self.flags(menu_signing_key=KEY,
                   boot_menu_url='http://b/m.ipxe?site=a&n=$${net0/mac}')
        parts = urllib.parse.urlsplit(self.url(self.render().text))
        self.assertTrue(parts.query.startswith('site=a&n=${net0/mac}&'))
        signature.verify({'1': KEY}, '/m.ipxe', parts.query)
        self.assertRaises(signature.InvalidSignature, signature.verify,
                          {'1': KEY}, '/other.ipxe', parts.query)

    def test_bad_signing_configuration(self):
        self.flags(menu_signing_key='short')
        self.assertRaises(exception.ConfigError, self.render)
        self.flags(menu_signing_key=KEY, menu_identity=False)
        self.assertRaises(exception.ConfigError, self.render)
        self.flags(menu_identity=True,
                   boot_menu_url='http://b/$${hostname}/m.ipxe')
        e = self.assertRaises(exception.SigningError, self.render)
        self.assertEqual(exception.OPERATOR, e.category)
        self.assertRaises(ValueError, self.flags,
                          menu_signing_key_id='bad id')

    def test_tenant_path_with_line_break_cannot_get_a_signature(self):
        # The v1 forgery: a tenant override whose path decodes to extra
        # identity lines.  Refused as the tenant's bad URL, never signed.
        self.flags(menu_signing_key=KEY)
        for path in ('/menu.ipxe%0Auuid=' + UUID + '%0Ahostname=x',
                     '/menu.ipxe%0D%0Auuid=' + UUID,
                     '/menu%E2%80%A8.ipxe', '/menu%C2%85.ipxe',
                     '/menu%E2%80%AE.ipxe', '/menu%FF.ipxe'):
            data = self.network_data()
            e = self.assertRaises(
                exception.InvalidMenuUrl, builder.render_script,
                builder.Instance(network_data=data, uuid=UUID,
                                 server_metadata={
                                     'ipxe_boot_menu_url':
                                         'http://evil.example' + path}),
                self.conf)
            self.assertEqual(exception.TENANT, e.category, path)

    def test_operator_path_that_cannot_be_signed(self):
        self.flags(menu_signing_key=KEY,
                   boot_menu_url='http://b/m%0A.ipxe')
        e = self.assertRaises(exception.SigningError, self.render)
        self.assertIn('U+000A', str(e))

    def test_latin1_host_name_is_signed_in_punycode(self):
        self.flags(menu_signing_key=KEY)
        text = builder.render_script(builder.Instance(
            network_data=self.network_data(), uuid=UUID,
            hostname='caf\u00e9-1'), self.conf).text
        parts = urllib.parse.urlsplit(self.url(text))
        verified = signature.verify({'1': KEY}, parts.path, parts.query)
        self.assertEqual('xn--caf-1-dsa', verified.fields['hostname'])
        self.assertIn('set hostname xn--caf-1-dsa', text)
