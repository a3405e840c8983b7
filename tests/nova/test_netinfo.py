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

"""Our network_info conversion against Nova's own, on Nova's real model.

Where Nova's get_network_metadata() keeps the addresses (subnets without
DHCP), both must agree field for field (the link type aside); where it
hides them (DHCP subnets), ours must still carry the port's address, and
with ``dhcp='dhcp'`` fall back to exactly what Nova writes.
"""

from nova.network import model
from nova.tests.unit import fake_network_cache_model as fake_model
from nova.virt import netutils

from nova_ipxe import netdata
from nova_ipxe.virt import netinfo
from tests import base


def _network_info(enable_dhcp, dhcp_server=None):
    v4 = fake_model.new_subnet({
        'routes': [fake_model.new_route({
            'cidr': '198.51.100.0/24',
            'gateway': fake_model.new_ip({'address': '10.10.0.254'})})]})
    v4['meta']['enable_dhcp'] = enable_dhcp
    if dhcp_server:
        v4['meta']['dhcp_server'] = dhcp_server
    v6 = fake_model.new_subnet({
        'cidr': 'fd00::/64', 'version': 6,
        'gateway': fake_model.new_ip({'address': 'fd00::1'}),
        'ips': [fake_model.new_fixed_ip({'address': 'fd00::5'})],
        'dns': [fake_model.new_ip({'address': 'fd00::53'})],
        'routes': []})
    v6['meta']['ipv6_address_mode'] = 'dhcpv6-stateful'
    network = fake_model.new_network({'subnets': [v4, v6], 'id': 'net-a',
                                      'label': 'boot'})
    network['meta']['mtu'] = 1400
    vif = fake_model.new_vif({'network': network,
                              'address': 'fa:16:3e:12:34:56',
                              'devname': 'tap0123'})
    return model.NetworkInfo([vif])


def _without_type(data):
    return dict(data, links=[dict(link, type=None)
                             for link in data['links']])


class NovaModelTestCase(base.TestCase):

    def test_static_subnets_match_nova(self):
        network_info = _network_info(enable_dhcp=False)
        ours, names = netinfo.network_data(network_info)
        nova = netutils.get_network_metadata(network_info)
        self.assertEqual(_without_type(nova), _without_type(ours))
        self.assertEqual({'net-a': 'boot'}, names)
        nic = netdata.parse(ours).nics[0]
        self.assertEqual('fd00::5/64', str(nic.ipv6))

    def test_dhcp_subnet_keeps_the_port_address(self):
        network_info = _network_info(enable_dhcp=True,
                                     dhcp_server='10.10.0.2')
        nova = netutils.get_network_metadata(network_info)
        self.assertEqual('ipv4_dhcp', nova['networks'][0]['type'])
        self.assertNotIn('ip_address', nova['networks'][0])
        ours, _ = netinfo.network_data(network_info)
        fixed = network_info[0]['network']['subnets'][0]['ips'][0]
        self.assertEqual('ipv4', ours['networks'][0]['type'])
        self.assertEqual(fixed['address'], ours['networks'][0]['ip_address'])
        self.assertIsNone(nova['links'][0]['mtu'])
        self.assertEqual(1400, ours['links'][0]['mtu'])
        nic = netdata.parse(ours).nics[0]
        self.assertFalse(nic.dhcp4)

    def test_dhcp_option_matches_nova_for_ipv4(self):
        network_info = _network_info(enable_dhcp=True)
        nova = netutils.get_network_metadata(network_info)
        ours, _ = netinfo.network_data(network_info, dhcp='dhcp')
        self.assertEqual(nova['networks'][0], ours['networks'][0])
        self.assertEqual(nova['networks'][1], ours['networks'][1])
