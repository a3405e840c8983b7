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

import collections
import copy
import io
import ipaddress
import json
import sys

import fixtures
import hypothesis
from hypothesis import strategies as st
from testtools import content

from nova_ipxe import builder
from nova_ipxe import exception
from nova_ipxe import netdata
from nova_ipxe import script
from tests import base
from tests import samples
from tests.unit import ipxe_syntax


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


def many_links(count, networks_per_link=0, services_per_network=0):
    """Valid network data with ``count`` links (distinct MACs)."""
    data = {'links': [], 'networks': [], 'services': []}
    for i in range(count):
        link = 'tap%08x' % i
        data['links'].append({'id': link, 'type': 'phy',
                              'ethernet_mac_address': 'fa:16:3e:%02x:%02x:%02x'
                              % (i >> 16 & 255, i >> 8 & 255, i & 255)})
        for j in range(networks_per_link):
            data['networks'].append({
                'id': 'n%d-%d' % (i, j), 'type': 'ipv4_dhcp', 'link': link,
                'services': [{'type': 'dns', 'address': '10.%d.%d.%d' % (
                    i, j, k)} for k in range(services_per_network)]})
    return data


class BoundsTestCase(base.TestCase):
    """Every input bounded on what is read, typed."""

    def assertInvalid(self, fn, *args, text=None):
        e = self.assertRaises(exception.InvalidNetworkData, fn, *args)
        for message in (str(e), e.safe_message):
            self.assertNotIn('\n', message)
            self.assertLessEqual(len(message), exception.MAX_MESSAGE)
        if text:
            self.assertIn(text, str(e))
        return e

    def test_read_stops_at_limit_plus_one(self):
        class Endless(io.RawIOBase):
            """/dev/zero as a stream: counts what was read."""
            read_bytes = 0

            def read(self, n=-1):
                self.read_bytes += n
                return b'\0' * n

        stream = Endless()
        self.assertInvalid(netdata.read_json, stream, 'stdin',
                           text='larger than %d bytes' % netdata.MAX_BYTES)
        self.assertEqual(netdata.MAX_BYTES + 1, stream.read_bytes)
        blob = b' ' * netdata.MAX_BYTES + b'{}'
        self.assertInvalid(netdata.read_json, io.BytesIO(blob), 'f',
                           text='larger than')
        self.assertEqual({}, netdata.read_json(io.BytesIO(
            b' ' * (netdata.MAX_BYTES - 2) + b'{}')))

    def test_json_refusals_are_typed(self):
        for blob, text in (
                (b'[' * 200000, 'nested deeper'),
                (b'{"a":' * 100000 + b'1' + b'}' * 100000, 'nested deeper'),
                (b'{"links": [], "links": []}', 'appears twice'),
                (b'{"mtu": NaN}', 'NaN is not JSON'),
                (b'{"mtu": -Infinity}', 'is not JSON'),
                (b'{"x": 1' + b'0' * 5000 + b'}', 'not JSON'),
                (b'\xff\xfe{}', 'not UTF-8'),
                (b'', 'not JSON')):
            self.assertInvalid(netdata.read_json, io.BytesIO(blob), 'f',
                               text=text)

    def test_shape_bounds(self):
        deep = self.network_data()
        node = deep['links'][0]
        for _ in range(netdata.MAX_DEPTH):
            node['x'] = {}
            node = node['x']
        very_deep = []
        for _ in range(100000):  # deeper than the recursion limit
            very_deep = [very_deep]
        wide = self.network_data()
        wide['links'][0]['extra'] = [0] * netdata.MAX_NODES
        long_string = self.network_data()
        long_string['links'][0]['vif_id'] = 'x' * (netdata.MAX_STRING + 1)
        long_key = self.network_data()
        long_key['links'][0]['k' * 1000000] = 1
        int_key = self.network_data()
        int_key['links'][0][1] = 1
        odd_type = self.network_data()
        odd_type['links'][0]['mtu'] = object()
        for data, text in ((deep, 'nested deeper'),
                           ({'links': very_deep}, 'nested deeper'),
                           (wide, 'more than'),
                           (long_string, 'at links[0].vif_id: longer than'),
                           (long_key, 'at links[0]: a key is longer than'),
                           (int_key, 'key is a int'),
                           (odd_type, 'at links[0].mtu: a object is not')):
            self.assertInvalid(netdata.parse, data, text=text)

    def test_counts_bounded(self):
        netdata.parse(many_links(netdata.MAX_LINKS))
        self.assertInvalid(netdata.parse, many_links(netdata.MAX_LINKS + 1),
                           text='network_data.links: more than 64')
        self.assertInvalid(netdata.parse, many_links(100000),
                           text='at links: more than 100000 values')
        data = many_links(netdata.MAX_LINKS, 5)
        self.assertInvalid(netdata.parse, data,
                           text='network_data.networks: more than')
        data = many_links(1, 1, netdata.MAX_SERVICES + 1)
        self.assertInvalid(netdata.parse, data,
                           text='networks[0].services: more than')
        data = self.network_data()
        data['networks'][0]['routes'] *= netdata.MAX_ROUTES
        self.assertInvalid(netdata.parse, data,
                           text='networks[0].routes: more than')

    def test_dns_dedup_keeps_order_at_the_bounds(self):
        # 16,384 distinct servers: quadratic dedup would take minutes.
        data = many_links(netdata.MAX_LINKS, 4, netdata.MAX_SERVICES)
        data['services'] = [{'type': 'dns', 'address': '10.0.0.0'},
                            {'type': 'dns', 'address': '2001:db8::53'},
                            {'type': 'dns', 'address': '10.0.0.0'}]
        config = netdata.parse(data)
        self.assertEqual(netdata.MAX_LINKS * 4 * netdata.MAX_SERVICES,
                         len(config.dns4))
        self.assertEqual(len(config.dns4), len(set(config.dns4)))
        self.assertEqual('10.0.0.0', str(config.dns4[0]))
        self.assertEqual('10.63.3.63', str(config.dns4[-1]))
        self.assertEqual(['2001:db8::53'], [str(a) for a in config.dns6])

    def test_malformed_netmasks(self):
        for value in ('\u00b2', '\u0663', '2\u00b2', '5' * 5000, '024',
                      ' 24', '24\n', '+24', '-1', '1_0', 10 ** 5000,
                      -(2 ** 200), 2 ** 64, True, False, 24.0, float('inf'),
                      '255.255.255.0%eth0', '\uff12\uff14', {'a': 1},
                      [[[[]]]]):
            data = self.network_data()
            data['networks'][0]['netmask'] = value
            self.assertInvalid(netdata.parse, data,
                               text='at networks[0].netmask')
            data = self.network_data()
            data['networks'][0]['routes'][0]['netmask'] = value
            self.assertInvalid(netdata.parse, data,
                               text='at networks[0].routes[0].netmask')

    def test_malformed_values_where_ints_or_strings_are_expected(self):
        for key, value in (('mtu', True), ('mtu', 1500.0), ('mtu', 10 ** 5000),
                           ('mtu', '1500'), ('id', 5), ('id', True),
                           ('ethernet_mac_address', 10 ** 5000)):
            data = self.network_data()
            data['links'][0][key] = value
            e = self.assertInvalid(netdata.parse, data)
            self.assertIn('links[0].', str(e))


class CanonicalTestCase(base.TestCase):
    """Unparsable or non-canonical values are refused.

    Refused, never rewritten into something else.
    """

    def assertInvalid(self, data, field):
        e = self.assertRaises(exception.InvalidNetworkData, netdata.parse,
                              data)
        self.assertIn('at %s:' % field, str(e))
        self.assertNotIn('\n', str(e))
        return e

    def test_zone_ids_refused_everywhere(self):
        for zone in ('%eth0', '%1', '%eth0\nnova-ipxe: error: forged',
                     '%\u2028x'):
            for path, base_value in (
                    (('networks', 1, 'ip_address'), '2001:db8::10'),
                    (('services', 1, 'address'), '2001:db8::53')):
                data = self.network_data()
                section, i, key = path
                data[section][i][key] = base_value + zone
                e = self.assertInvalid(data, '%s[%d].%s' % path)
                self.assertIn('zone ids', str(e))
            data = self.network_data()
            data['networks'][1]['routes'][0]['gateway'] = 'fe80::1' + zone
            self.assertInvalid(data, 'networks[1].routes[0].gateway')
            data = self.network_data()
            data['networks'][1]['netmask'] = 'ffff:ffff:ffff:ffff::' + zone
            self.assertInvalid(data, 'networks[1].netmask')

    def test_ipv4_mapped_and_non_ascii_addresses_refused(self):
        for value in ('::ffff:192.0.2.10', '::ffff:c000:20a',
                      '2001:db8::\uff11', '\u0661\u0669\u0662.0.2.10'):
            data = self.network_data()
            data['networks'][1]['ip_address'] = value
            self.assertInvalid(data, 'networks[1].ip_address')

    def test_mac_canonical(self):
        for mac in ('fa:16:3e:12:34:56\n', 'fa:16:3e:12:34:5\u212a',
                    'fa:16:3e:12:34:\uff15\uff16', 'fa16.3e12.3456'):
            data = self.network_data()
            data['links'][0]['ethernet_mac_address'] = mac
            self.assertInvalid(data, 'links[0].ethernet_mac_address')

    def test_logged_values_cannot_forge_a_line(self):
        data = self.network_data()
        data['links'].append({'id': 'v\nnova-ipxe: error: forged\u2028',
                              'type': 'vlan'})
        logger = self.useFixture(fixtures.FakeLogger(level='INFO'))
        netdata.parse(data)
        self.assertIn('vlan link', logger.output)
        for line in logger.output.splitlines():
            self.assertFalse(line.startswith('nova-ipxe'), line)
        self.assertNotIn('\u2028', logger.output)


def _paths(value, prefix=()):
    """Every path into ``value`` (the root included)."""
    yield prefix
    items = (value.items() if isinstance(value, dict) else
             enumerate(value) if isinstance(value, list) else ())
    for key, item in items:
        yield from _paths(item, prefix + (key,))


def _nested(depth):
    value = []
    for _ in range(depth):
        value = [value]
    return value


DEMO_PATHS = list(_paths(samples.network_data()))[1:]
fuzz_values = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(),
    st.integers(min_value=10 ** 30), st.text(max_size=30),
    st.text(alphabet='0123456789abcdef:.%/\u00b2\u0663 \n\u212a',
            max_size=40),
    st.sampled_from(['2001:db8::1%eth0', '::ffff:192.0.2.1', '255.255.0.0',
                     '24', '64', '\u00b2', 'fa:16:3e:00:00:01', 'vlan', 'phy',
                     'ipv4_dhcp', 'ipv6_slaac', '0.0.0.0', '::', 'dns',
                     '198.51.100.9', '2001:db8:1::9', 'FA:16:3E:AB:CD:EF']),
    st.recursive(st.none() | st.integers() | st.text(max_size=5),
                 lambda c: st.lists(c, max_size=3) | st.dictionaries(
                     st.text(max_size=5), c, max_size=3), max_leaves=10),
    st.integers(10, 400).map(_nested))  # json.dumps itself recurses
mutations = st.lists(st.tuples(
    st.sampled_from(DEMO_PATHS), st.sampled_from(['set', 'delete', 'copy']),
    fuzz_values), max_size=3)
# Three cases in ten get one corrupted byte (so most reach the parser).
byte_edits = st.integers(0, 9).flatmap(lambda n: st.none() if n < 7 else (
    st.tuples(st.integers(0, 1500), st.sampled_from(['truncate', 'insert']),
              st.sampled_from(list('[]{}",:\\\n\x00')
                              + ['\ufeff', '\udc80', '\xff']))))


def _mutate(data, path, op, value):
    parent = data
    for key in path[:-1]:
        try:
            parent = parent[key]
        except (KeyError, IndexError, TypeError):
            return  # an earlier mutation moved it
    key = path[-1]
    if not (isinstance(parent, dict) and key in parent
            or isinstance(parent, list) and isinstance(key, int)
            and key < len(parent)):
        return  # an earlier mutation moved it
    if op == 'set':
        parent[key] = value
    elif op == 'delete':
        del parent[key]
    elif isinstance(parent, list):
        parent.append(copy.deepcopy(parent[key]))
    else:
        parent[key + '_copy'] = copy.deepcopy(parent[key])


class ParserFuzzTestCase(base.TestCase):
    """The network-data parser under structured fuzzing.

    The demo data is mutated (values replaced by hostile JSON, keys
    deleted, entries copied), serialised, optionally corrupted as bytes,
    then taken through every stage.  Each stage ends in a typed one-line
    error or a bounded success; the counts of how far cases got are
    attached and printed, and every stage must be reached.
    """

    STAGES = ('read refused', 'read', 'parse refused', 'parsed',
              'NIC selection refused', 'NIC configs built',
              'render refused', 'rendered')

    def refused(self, stage, error):
        self.counts[stage] += 1
        for message in (str(error), error.safe_message):
            self.assertNotIn('\n', message)
            self.assertLessEqual(len(message), exception.MAX_MESSAGE)

    @hypothesis.given(mutations=mutations, edit=byte_edits,
                      ascii_only=st.booleans())
    @hypothesis.settings(max_examples=300, deadline=None,
                         suppress_health_check=list(hypothesis.HealthCheck))
    def _fuzz(self, mutations, edit, ascii_only):
        data = self.network_data()
        for path, op, value in mutations:
            _mutate(data, path, op, value)
        blob = json.dumps(data, ensure_ascii=ascii_only).encode(
            'utf-8', 'surrogatepass')
        if edit:
            pos, op, char = edit
            char = char.encode('utf-8', 'surrogatepass')
            blob = blob[:pos] if op == 'truncate' else (
                blob[:pos] + char + blob[pos:])
        try:
            data = netdata.read_json(io.BytesIO(blob), 'fuzz')
        except exception.InvalidNetworkData as e:
            return self.refused('read refused', e)
        self.counts['read'] += 1
        try:
            config = netdata.parse(data)
        except exception.InvalidNetworkData as e:
            return self.refused('parse refused', e)
        self.counts['parsed'] += 1
        try:
            netdata.select_menu_nic(config)
        except exception.NovaIpxeError as e:
            return self.refused('NIC selection refused', e)
        self.counts['NIC configs built'] += 1
        try:
            text = builder.render_script(builder.Instance(
                network_data=data), self.conf).text
        except exception.NovaIpxeError as e:
            return self.refused('render refused', e)
        self.counts['rendered'] += 1
        self.assertTrue(text.startswith('#!ipxe\n'))
        self.assertTrue(text.isascii())
        self.assertLessEqual(len(text), script.MAX_SCRIPT_BYTES)
        self.assertFalse([c for c in text if ord(c) < 0x20 and c != '\n'])
        self.assertEqual(1, len(ipxe_syntax.command_lines(text, 'imgfetch')))

    def test_fuzz_network_data(self):
        self.counts = collections.Counter()
        self._fuzz()
        summary = 'network-data fuzz: ' + ', '.join(
            '%s %d' % (stage, self.counts[stage]) for stage in self.STAGES)
        self.addDetail('fuzz-counts', content.text_content(summary))
        sys.stderr.write(summary + '\n')
        total = self.counts['read refused'] + self.counts['read']
        for stage in ('read refused', 'parse refused', 'parsed',
                      'NIC configs built', 'rendered'):
            self.assertGreater(self.counts[stage], 0, summary)
        self.assertGreaterEqual(self.counts['rendered'] / total, 0.2,
                                summary)
