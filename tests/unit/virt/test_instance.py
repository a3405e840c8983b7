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

"""The instance description both drivers give the core, rendered for real
(the Nova suites drive it through each driver)."""

import types

from nova_ipxe import builder
from nova_ipxe import exception
from nova_ipxe.virt import instance
from tests import base

UUID = '0e0c4f5a-4bb4-4c1b-8e49-2f7c2f3d7e11'
MAC = 'fa:16:3e:00:00:0a'
# One VIF as Nova's network model serialises it.
VIF = {'id': 'port-0a', 'address': MAC, 'devname': 'tap0a', 'type': 'ovs',
       'network': {'id': '5a1f0a4e-9c1b-4bb4-8e49-2f7c2f3d7e11',
                   'label': 'private', 'meta': {'mtu': 1450},
                   'subnets': [{
                       'cidr': '192.0.2.0/24', 'version': 4,
                       'gateway': {'address': '192.0.2.1', 'version': 4},
                       'ips': [{'address': '192.0.2.10', 'version': 4,
                                'type': 'fixed', 'meta': {}}],
                       'dns': [], 'routes': [],
                       'meta': {'enable_dhcp': True}}]}}


def nova_instance(system_metadata=None, metadata=None):
    # The attributes the drivers' Instance objects carry.
    return types.SimpleNamespace(
        uuid=UUID, hostname='vm1', system_metadata=system_metadata,
        metadata=metadata)


class SpecTestCase(base.TestCase):

    def render(self, inst, **kw):
        spec = instance.spec(inst, [VIF], 'static', **kw)
        return builder.render_script(spec, self.conf)

    def test_image_menu_url_comes_from_system_metadata(self):
        rendered = self.render(nova_instance(system_metadata={
            'image_ipxe_boot_menu_url': 'http://192.0.2.1/image'}))
        self.assertEqual('image', rendered.menu_url_source)
        self.assertIn('http://192.0.2.1/image', rendered.text)
        self.assertIn(MAC, rendered.text)
        # DHCP subnet, static settings (dhcp_subnets = static).
        self.assertIn('192.0.2.10', rendered.text)

    def test_server_metadata_wins_and_rescue_props_replace_the_image(self):
        inst = nova_instance(
            system_metadata={'image_ipxe_boot_menu_url': 'http://h/image'},
            metadata={'ipxe_boot_menu_url': 'http://192.0.2.1/mine'})
        self.assertIn('http://192.0.2.1/mine', self.render(inst).text)
        inst.metadata = None
        rendered = self.render(inst, image_props={
            'ipxe_boot_menu_url': 'http://192.0.2.1/rescue'})
        self.assertIn('http://192.0.2.1/rescue', rendered.text)
        self.assertNotIn('http://h/image', rendered.text)

    def test_hostile_server_metadata_is_refused(self):
        inst = nova_instance(metadata={
            'ipxe_boot_menu_url': 'http://h/m#frag'})
        self.assertRaises(exception.InvalidMenuUrl, self.render, inst)
