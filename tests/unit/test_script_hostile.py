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

"""Property tests: no value from outside the template can add, end or
comment out an iPXE command.

Each test renders a script with one hostile value in place of a benign
one.  The value must either be refused with a typed error, or the script
must have exactly the command structure of the benign rendering (same
commands, argument counts, operators, labels and setting expansions).
"""

import hypothesis
from hypothesis import strategies as st

from nova_ipxe import builder
from nova_ipxe import exception
from tests import base
from tests.unit import ipxe_syntax

NASTY = ['\n', '\r', '\t', ' ', '#', ':', '\\', '${', '}', '||', '&&',
         ';', '${ip}', '$', '%', '%0a', '\x00', '\x7f', '\u2028', '\u00a0',
         'shell', 'goto menu_done', ':menu_done', 'é', '"', "'", '?', '&']

hostile_text = st.one_of(
    st.text(max_size=40),
    # URL-shaped noise: brackets, ports, escapes, settings, comments.
    st.text(alphabet='htps:/[]@%#?&=${}.0129 \n\\', max_size=30),
    st.just('http://').flatmap(lambda p: st.text(
        alphabet='[]:@%$.{}#0129az', max_size=20).map(lambda t: p + t)),
    st.lists(st.sampled_from(NASTY) | st.text(
        alphabet='abc019.:-/', max_size=6), max_size=8).map(''.join))
hostile_json = st.one_of(hostile_text, st.integers(), st.none(),
                         st.booleans(), st.lists(st.integers(), max_size=2),
                         st.floats(allow_nan=False))

SETTINGS = hypothesis.settings(max_examples=150, deadline=None,
                               suppress_health_check=list(
                                   hypothesis.HealthCheck))


class HostileValueTestCase(base.TestCase):

    def render(self, network_data=None, **kw):
        kw.setdefault('uuid', '8d0f7b6e-3c2a-4b1d-9e8f-7a6b5c4d3e2f')
        kw.setdefault('hostname', 'demo-1')
        return builder.render_script(builder.Instance(
            network_data=network_data or self.network_data(), **kw),
            self.conf).text

    def assertSameShape(self, benign, **kw):
        try:
            text = self.render(**kw)
        except exception.NovaIpxeError:
            return  # refused with a typed error: fine
        self.assertEqual(ipxe_syntax.skeleton(benign),
                         ipxe_syntax.skeleton(text))
        self.assertFalse([c for c in text if ord(c) < 0x20 and c != '\n'])
        self.assertTrue(text.isascii())

    @hypothesis.given(value=hostile_text)
    @SETTINGS
    def test_hostname(self, value):
        self.assertSameShape(self.render(), hostname=value)

    @hypothesis.given(value=hostile_text)
    @SETTINGS
    def test_instance_uuid(self, value):
        self.assertSameShape(self.render(), uuid=value)

    @hypothesis.given(value=hostile_text)
    @SETTINGS
    def test_tenant_menu_url(self, value):
        benign = self.render(server_metadata={
            'ipxe_boot_menu_url': 'http://tenant.example/menu'})
        for url in (value, 'http://tenant.example/' + value,
                    'https://tenant.example/m?q=' + value):
            self.assertSameShape(
                benign, server_metadata={'ipxe_boot_menu_url': url})
            self.assertSameShape(
                benign, image_properties={'ipxe_boot_menu_url': url})

    @hypothesis.given(value=hostile_text)
    @SETTINGS
    def test_operator_menu_url(self, value):
        # Examples share one test instance: reset before each one.
        self.flags(boot_menu_url='http://boot.example/menu')
        benign = ipxe_syntax.skeleton(self.render())
        self.flags(boot_menu_url='http://boot.example/' + value)
        try:
            text = self.render()
        except exception.NovaIpxeError:
            return
        # An operator may use ${...} in the URL: compare all but those.
        strip = [s[:4] for s in ipxe_syntax.skeleton(text)]
        self.assertEqual([s[:4] for s in benign], strip)

    @hypothesis.given(
        field=st.sampled_from([
            ('links', 0, 'ethernet_mac_address'),
            ('links', 0, 'id'),
            ('links', 0, 'type'),
            ('networks', 0, 'ip_address'),
            ('networks', 0, 'network_id'),
            ('networks', 0, 'id'),
            ('networks', 1, 'ip_address'),
            ('services', 0, 'address'),
            ('services', 1, 'address')]),
        value=hostile_json)
    @SETTINGS
    def test_network_data_values(self, field, value):
        data = self.network_data()
        section, index, key = field
        data[section][index][key] = value
        if key == 'id' and section == 'links':
            data['networks'][0]['link'] = value
            data['networks'][1]['link'] = value
        if key == 'type' and value in ('vlan', 'bond'):
            return  # a skipped link legitimately changes the script
        self.assertSameShape(self.render(), network_data=data)

    @hypothesis.given(value=hostile_json)
    @SETTINGS
    def test_route_gateway(self, value):
        data = self.network_data()
        data['networks'][0]['routes'][0]['gateway'] = value
        self.assertSameShape(self.render(), network_data=data)

    @hypothesis.given(value=st.integers() | hostile_text)
    @SETTINGS
    def test_mtu(self, value):
        data = self.network_data()
        data['links'][0]['mtu'] = value
        self.assertSameShape(self.render(), network_data=data)
