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

import ipaddress

import fixtures

from nova_ipxe import exception
from nova_ipxe import netdata
from tests import base
from tests import samples


class ParseTestCase(base.TestCase):

    def test_demo_data(self):
        config = netdata.parse(self.network_data())
        self.assertEqual(1, len(config.nics))
        nic = config.nics[0]
        self.assertEqual('fa:16:3e:12:34:56', nic.mac)
        self.assertEqual(1450, nic.mtu)
        self.assertEqual(ipaddress.ip_interface('192.0.2.10/24'), nic.ipv4)
        self.assertEqual(ipaddress.ip_address('192.0.2.1'), nic.gateway4)
        self.assertEqual(ipaddress.ip_interface('2001:db8::10/64'),
                         nic.ipv6)
        self.assertEqual(ipaddress.ip_address('2001:db8::1'), nic.gateway6)
        self.assertEqual((ipaddress.ip_address('192.0.2.53'),
                          ipaddress.ip_address('2001:db8::53')), config.dns)
        self.assertFalse(nic.dhcp4)

    def test_dhcp_network_has_no_address(self):
        config = netdata.parse(samples.two_nics())
        dhcp, static = config.nics
        self.assertTrue(dhcp.dhcp4)
        self.assertIsNone(dhcp.ipv4)
        self.assertIsNone(dhcp.mtu)
        self.assertEqual('fa:16:3e:00:00:0a', dhcp.mac)  # lower-cased
        self.assertFalse(static.dhcp4)
        self.assertEqual('198.51.100.7', str(static.ipv4.ip))

    def test_every_ipv6_type_is_static(self):
        for net_type in netdata.IPV6_TYPES:
            data = self.network_data()
            data['networks'][1]['type'] = net_type
            data['networks'][1]['netmask'] = 'ffff:ffff:ffff:ff00::'
            nic = netdata.parse(data).nics[0]
            self.assertEqual(56, nic.ipv6.network.prefixlen, net_type)

    def test_extra_routes_are_logged_and_skipped(self):
        logger = self.useFixture(fixtures.FakeLogger(level='INFO'))
        nic = netdata.parse(self.network_data()).nics[0]
        self.assertEqual('192.0.2.1', str(nic.gateway4))
        self.assertIn('198.51.100.0/24 via 192.0.2.254 cannot be set in '
                      'iPXE', logger.output)

    def test_extra_dns_servers_are_logged(self):
        data = self.network_data()
        data['services'].append({'type': 'dns', 'address': '192.0.2.54'})
        logger = self.useFixture(fixtures.FakeLogger(level='INFO'))
        config = netdata.parse(data)
        self.assertEqual('192.0.2.53', str(config.dns[0]))
        self.assertIn('ignoring 192.0.2.54', logger.output)

    def test_static_wins_over_dhcp_on_one_link(self):
        data = self.network_data()
        data['networks'].append({'id': 'network2', 'type': 'ipv4_dhcp',
                                 'link': 'tap1a2b3c4d-5e'})
        nic = netdata.parse(data).nics[0]
        self.assertFalse(nic.dhcp4)
        self.assertIsNotNone(nic.ipv4)

    def test_vlan_link_skipped(self):
        data = self.network_data()
        data['links'].append({'id': 'vlan0', 'type': 'vlan',
                              'vlan_link': 'tap1a2b3c4d-5e', 'vlan_id': 5,
                              'vlan_mac_address': 'fa:16:3e:12:34:56'})
        data['networks'].append({'id': 'network2', 'type': 'ipv4',
                                 'link': 'vlan0',
                                 'ip_address': '203.0.113.5',
                                 'netmask': '255.255.255.0'})
        config = netdata.parse(data)
        self.assertEqual(['tap1a2b3c4d-5e'],
                         [n.link_id for n in config.nics])


class InvalidTestCase(base.TestCase):

    def assertInvalid(self, data, field):
        e = self.assertRaises(exception.InvalidNetworkData, netdata.parse,
                              data)
        self.assertIn('at %s:' % field, str(e))
        return e

    def test_not_an_object(self):
        self.assertInvalid([], 'network_data')

    def test_no_links(self):
        self.assertInvalid({'networks': []}, 'network_data.links')

    def test_bad_mac(self):
        for mac in ('fa:16:3e:00:00', 'zz:16:3e:00:00:01',
                    'fa-16-3e-00-00-01', 'fa:16:3e:00:00:01 ', 42, None,
                    'fa:16:3e:00:00:01\n#'):
            data = self.network_data()
            data['links'][0]['ethernet_mac_address'] = mac
            self.assertInvalid(data, 'links[0].ethernet_mac_address')

    def test_multicast_mac(self):
        data = self.network_data()
        data['links'][0]['ethernet_mac_address'] = '01:00:5e:00:00:01'
        self.assertInvalid(data, 'links[0].ethernet_mac_address')

    def test_duplicate_mac(self):
        data = samples.two_nics()
        data['links'][1]['ethernet_mac_address'] = 'fa:16:3e:00:00:0a'
        self.assertInvalid(data, 'links[1].ethernet_mac_address')

    def test_duplicate_link_id(self):
        data = samples.two_nics()
        data['links'][1]['id'] = data['links'][0]['id']
        self.assertInvalid(data, 'links[1].id')

    def test_bad_mtu(self):
        for mtu in (0, 67, 70000, '1500', True, 1500.5):
            data = self.network_data()
            data['links'][0]['mtu'] = mtu
            self.assertInvalid(data, 'links[0].mtu')

    def test_unknown_link(self):
        data = self.network_data()
        data['networks'][0]['link'] = 'tap-missing'
        self.assertInvalid(data, 'networks[0].link')

    def test_unknown_type(self):
        data = self.network_data()
        data['networks'][0]['type'] = 'ipv5'
        self.assertInvalid(data, 'networks[0].type')

    def test_wrong_family(self):
        data = self.network_data()
        data['networks'][0]['ip_address'] = '2001:db8::5'
        e = self.assertInvalid(data, 'networks[0].ip_address')
        self.assertIn('expected an IPv4 address', str(e))

    def test_bad_addresses(self):
        for value in ('192.0.2.256', '192.0.2.1 ; reboot', '', None, 7,
                      '0.0.0.0', '224.0.0.1', '127.0.0.1', '${ip}'):
            data = self.network_data()
            data['networks'][0]['ip_address'] = value
            self.assertInvalid(data, 'networks[0].ip_address')

    def test_bad_netmask(self):
        for value in ('255.0.255.0', 'ffff::', '33', None, [], '1.2.3'):
            data = self.network_data()
            data['networks'][0]['netmask'] = value
            self.assertInvalid(data, 'networks[0].netmask')

    def test_bad_route(self):
        data = self.network_data()
        data['networks'][0]['routes'][0]['gateway'] = 'gw'
        self.assertInvalid(data, 'networks[0].routes[0].gateway')
        data = self.network_data()
        data['networks'][0]['routes'] = {'x': 1}
        self.assertInvalid(data, 'networks[0].routes')

    def test_bad_dns(self):
        data = self.network_data()
        data['services'][0]['address'] = 'dns.example.org'
        self.assertInvalid(data, 'services[0].address')

    def test_link_local_ipv6(self):
        data = self.network_data()
        data['networks'][1]['ip_address'] = 'fe80::1'
        self.assertInvalid(data, 'networks[1].ip_address')


class MenuNicTestCase(base.TestCase):

    def test_default_route_wins_over_order(self):
        config = netdata.parse(samples.two_nics())
        self.assertEqual('fa:16:3e:00:00:0b',
                         netdata.select_menu_nic(config).mac)

    def test_ipv6_default_route_when_no_ipv4_one(self):
        data = samples.two_nics()
        data['networks'][1]['routes'] = []
        data['networks'].append({
            'id': 'network2', 'type': 'ipv6_slaac', 'link': 'tapbbbbbbbb-bb',
            'ip_address': '2001:db8:1::7', 'netmask': 'ffff:ffff:ffff:ffff::',
            'routes': [{'network': '::', 'netmask': '::',
                        'gateway': '2001:db8:1::1'}]})
        self.assertEqual('fa:16:3e:00:00:0b',
                         netdata.select_menu_nic(netdata.parse(data)).mac)

    def test_dhcp_nic_when_nothing_else_routes(self):
        data = samples.two_nics()
        data['networks'][1]['routes'] = []
        self.assertEqual('fa:16:3e:00:00:0a',
                         netdata.select_menu_nic(netdata.parse(data)).mac)

    def test_menu_network_by_uuid_and_name(self):
        config = netdata.parse(samples.two_nics(),
                               network_names={samples.NET_A: 'boot'})
        self.assertEqual('fa:16:3e:00:00:0a',
                         netdata.select_menu_nic(config, samples.NET_A).mac)
        self.assertEqual('fa:16:3e:00:00:0a',
                         netdata.select_menu_nic(config, 'boot').mac)

    def test_menu_network_missing(self):
        config = netdata.parse(samples.two_nics())
        e = self.assertRaises(exception.MenuNetworkNotFound,
                              netdata.select_menu_nic, config, 'provision')
        self.assertIn("'provision'", str(e))
        self.assertIn(samples.NET_A, str(e))

    def test_no_usable_nic(self):
        data = samples.two_nics()
        data['networks'] = []
        self.assertRaises(exception.NoUsableNic, netdata.select_menu_nic,
                          netdata.parse(data))
