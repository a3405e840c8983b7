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

"""network_info -> network_data.json, on the dicts Nova's model serialises
to (tests/nova/test_netinfo.py compares with Nova's own converter on the
real model objects)."""

from nova_ipxe import builder
from nova_ipxe import exception
from nova_ipxe import netdata
from nova_ipxe.virt import netinfo
from tests import base

MAC = 'fa:16:3e:00:00:0a'
NET_ID = '5a1f0a4e-9c1b-4bb4-8e49-2f7c2f3d7e11'


def ip(address, **extra):
    return dict({'address': address, 'type': 'fixed', 'version': 4
                 if ':' not in address else 6, 'meta': {}}, **extra)


def subnet4(dhcp=False, dhcp_server=None, routes=(), dns=('192.0.2.53',)):
    meta = {'enable_dhcp': dhcp}
    if dhcp_server:
        meta['dhcp_server'] = dhcp_server
    return {'cidr': '192.0.2.0/24', 'version': 4, 'gateway': ip('192.0.2.1'),
            'ips': [ip('192.0.2.10')], 'dns': [ip(d) for d in dns],
            'routes': [{'cidr': c, 'gateway': ip(g), 'interface': None,
                        'meta': {}} for c, g in routes],
            'meta': meta}


def subnet6(mode=None):
    meta = {'ipv6_address_mode': mode} if mode else {}
    return {'cidr': '2001:db8::/64', 'version': 6,
            'gateway': ip('2001:db8::1'), 'ips': [ip('2001:db8::10')],
            'dns': [], 'routes': [], 'meta': meta}


def vif(subnets, mac=MAC, devname='tap0a', mtu=1450, label='private',
        net_id=NET_ID):
    return {'id': 'port-' + mac[-2:], 'address': mac, 'devname': devname,
            'type': 'ovs', 'network': {'id': net_id, 'label': label,
                                       'subnets': subnets,
                                       'meta': {'mtu': mtu}}}


class NetworkDataTestCase(base.TestCase):

    def test_static_subnets_as_nova_writes_them(self):
        data, names = netinfo.network_data([vif([
            subnet4(routes=[('198.51.100.0/24', '192.0.2.254')]),
            subnet6('slaac')])])
        self.assertEqual([{'id': 'tap0a', 'vif_id': 'port-0a', 'type': 'phy',
                           'mtu': 1450, 'ethernet_mac_address': MAC}],
                         data['links'])
        v4, v6 = data['networks']
        self.assertEqual({
            'id': 'network0', 'type': 'ipv4', 'link': 'tap0a',
            'network_id': NET_ID, 'ip_address': '192.0.2.10',
            'netmask': '255.255.255.0',
            'routes': [{'network': '0.0.0.0', 'netmask': '0.0.0.0',
                        'gateway': '192.0.2.1'},
                       {'network': '198.51.100.0',
                        'netmask': '255.255.255.0',
                        'gateway': '192.0.2.254'}],
            'services': [{'type': 'dns', 'address': '192.0.2.53'}]}, v4)
        self.assertEqual('ipv6_slaac', v6['type'])
        self.assertEqual('ffff:ffff:ffff:ffff::', v6['netmask'])
        self.assertEqual([{'network': '::', 'netmask': '::',
                           'gateway': '2001:db8::1'}], v6['routes'])
        self.assertEqual({NET_ID: 'private'}, names)

    def test_dhcp_subnet_gets_static_settings_by_default(self):
        data, _ = netinfo.network_data([vif([subnet4(
            dhcp=True, dhcp_server='192.0.2.2')])])
        net = data['networks'][0]
        self.assertEqual('ipv4', net['type'])
        self.assertEqual('192.0.2.10', net['ip_address'])
        # Nova drops the MTU when a DHCP server is set; iPXE needs it.
        self.assertEqual(1450, data['links'][0]['mtu'])
        nic = netdata.parse(data).nics[0]
        self.assertFalse(nic.dhcp4)
        self.assertEqual('192.0.2.10/24', str(nic.ipv4))

    def test_dhcp_option_leaves_ipv4_to_dhcp_but_not_ipv6(self):
        data, _ = netinfo.network_data([vif([subnet4(dhcp=True),
                                             subnet6()])], dhcp='dhcp')
        v4, v6 = data['networks']
        self.assertEqual({'id': 'network0', 'type': 'ipv4_dhcp',
                          'link': 'tap0a', 'network_id': NET_ID}, v4)
        self.assertEqual('ipv6', v6['type'])
        self.assertEqual('2001:db8::10', v6['ip_address'])
        nic = netdata.parse(data).nics[0]
        self.assertTrue(nic.dhcp4)
        self.assertEqual('2001:db8::10/64', str(nic.ipv6))

    def test_dhcp_option_keeps_static_subnets_static(self):
        data, _ = netinfo.network_data([vif([subnet4(dhcp=False)])],
                                       dhcp='dhcp')
        self.assertEqual('ipv4', data['networks'][0]['type'])

    def test_ports_without_subnets_are_no_links(self):
        data, _ = netinfo.network_data([
            vif([], mac='fa:16:3e:00:00:01', devname=None),
            vif([subnet4()], mac='fa:16:3e:00:00:02', devname=None),
            {'id': 'x', 'address': 'fa:16:3e:00:00:03', 'network': None}])
        self.assertEqual([('interface0', 'fa:16:3e:00:00:02')],
                         [(link['id'], link['ethernet_mac_address'])
                          for link in data['links']])
        self.assertEqual('interface0', data['networks'][0]['link'])

    def test_dns_listed_once_across_ports(self):
        data, _ = netinfo.network_data([
            vif([subnet4(dns=('192.0.2.53', '192.0.2.54'))],
                mac='fa:16:3e:00:00:01', devname='tap1'),
            vif([subnet4(dns=('192.0.2.54',))], mac='fa:16:3e:00:00:02',
                devname='tap2')])
        self.assertEqual(['192.0.2.53', '192.0.2.54'],
                         [s['address'] for s in data['services']])

    def test_script_carries_the_ports_addresses(self):
        data, names = netinfo.network_data([vif([subnet4(dhcp=True),
                                                 subnet6()])])
        rendered = builder.render_script(builder.Instance(
            network_data=data, network_names=names), self.conf)
        for value in (MAC, '192.0.2.10', '255.255.255.0', '192.0.2.1',
                      '2001:db8::10', '192.0.2.53'):
            self.assertIn(value, rendered.text)
        self.assertNotIn('\ndhcp ', rendered.text)

    def test_menu_network_by_name(self):
        other = '0e6c6f5a-1b7e-4c7e-9b1e-5d0b7c1f2a33'
        data, names = netinfo.network_data([
            vif([subnet4()], mac='fa:16:3e:00:00:01', devname='tap1'),
            vif([subnet6()], mac='fa:16:3e:00:00:02', devname='tap2',
                label='boot', net_id=other)])
        self.flags(menu_network='boot')
        rendered = builder.render_script(builder.Instance(
            network_data=data, network_names=names), self.conf)
        self.assertEqual('fa:16:3e:00:00:02', rendered.menu_nic.mac)


class HostileNetworkInfoTestCase(base.TestCase):

    def assertRefused(self, network_info, field, **kw):
        e = self.assertRaises(exception.InvalidNetworkData,
                              netinfo.network_data, network_info, **kw)
        self.assertEqual(field, e.kwargs['field'])
        self.assertEqual(exception.TENANT, e.category)
        return e

    def test_wrong_shapes_name_the_field(self):
        self.assertRefused({'a': 1}, 'network_info')
        self.assertRefused(['x'], 'network_info[0]')
        self.assertRefused([{'network': []}], 'network_info[0].network')
        self.assertRefused([vif('x')], 'network_info[0].network.subnets')
        self.assertRefused([vif([7])], 'network_info[0].network.subnets[0]')
        bad = subnet4()
        bad['ips'] = 'nope'
        self.assertRefused([vif([bad])],
                           'network_info[0].network.subnets[0].ips')
        bad = subnet4()
        bad['ips'] = [None]
        self.assertRefused([vif([bad])],
                           'network_info[0].network.subnets[0].ips[0]')

    def test_bad_values(self):
        bad = subnet4()
        bad['cidr'] = '192.0.2.0/33'
        self.assertRefused([vif([bad])],
                           'network_info[0].network.subnets[0].cidr')
        bad = subnet4()
        bad['ips'] = ['192.0.2.10']
        self.assertRefused([vif([bad])],
                           'network_info[0].network.subnets[0].ips[0]')
        bad = subnet4(routes=[('nowhere', '192.0.2.1')])
        self.assertRefused([vif([bad])], 'network_info[0].network.'
                           'subnets[0].routes[0].cidr')
        bad = subnet4()
        bad['cidr'] = '2001:db8::/64'
        self.assertRefused([vif([bad])],
                           'network_info[0].network.subnets[0].cidr')

    def test_counts_are_bounded(self):
        self.assertRefused([vif([subnet4()])] * (netinfo.MAX_VIFS + 1),
                           'network_info')
        bad = subnet4(dns=['192.0.2.%d' % i for i in range(100)])
        self.assertRefused([vif([bad])],
                           'network_info[0].network.subnets[0].dns')

    def test_values_reach_validation_not_the_script(self):
        # The conversion only moves values; the core refuses them.
        bad = subnet4()
        bad['gateway'] = ip('192.0.2.1 || shell')
        data, _ = netinfo.network_data([vif([bad])])
        self.assertRaises(exception.InvalidNetworkData, netdata.parse, data)
        data, _ = netinfo.network_data([vif([subnet4()], mac='fa:16:3e\n')])
        self.assertRaises(exception.InvalidNetworkData, netdata.parse, data)
        bad = subnet4()
        bad['ips'] = [ip('not-an-ip\nset x')]
        data, _ = netinfo.network_data([vif([bad])])
        e = self.assertRaises(exception.InvalidNetworkData, netdata.parse,
                              data)
        self.assertNotIn('\n', str(e))

    def test_subnets_of_no_known_family_are_ignored(self):
        odd = subnet4()
        odd['version'] = None
        data, _ = netinfo.network_data([vif([odd, subnet6()])])
        self.assertEqual(['ipv6'], [n['type'] for n in data['networks']])

    def test_unknown_dhcp_policy(self):
        e = self.assertRaises(exception.ConfigError, netinfo.network_data,
                              [], dhcp='maybe')
        self.assertEqual(exception.OPERATOR, e.category)
