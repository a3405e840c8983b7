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
import ipaddress
import logging
import sys
import urllib.parse
import uuid

import fixtures
import hypothesis
from hypothesis import strategies as st
from testtools import content

from nova_ipxe import builder
from nova_ipxe import exception
from nova_ipxe import identity
from nova_ipxe import netdata
from nova_ipxe import script
from tests import base
from tests import samples
from tests.unit import ipxe_syntax

UUID = '8d0f7b6e-3c2a-4b1d-9e8f-7a6b5c4d3e2f'


def two_static_nics():
    # samples.two_nics() with a static first NIC and no default route on
    # it, so the second NIC carries the menu.
    data = samples.two_nics()
    data['networks'][0] = {
        'id': 'network0', 'type': 'ipv4', 'link': 'tapaaaaaaaa-aa',
        'ip_address': '203.0.113.9', 'netmask': '255.255.255.0',
        'network_id': samples.NET_A}
    return data


class ScriptTestCase(base.TestCase):

    def render(self, data=None, **kw):
        kw.setdefault('uuid', UUID)
        kw.setdefault('hostname', 'demo-1')
        instance = builder.Instance(
            network_data=data or self.network_data(), **kw)
        return builder.render_script(instance, self.conf)

    def chain_url(self, text):
        fetches = ipxe_syntax.command_lines(text, 'imgfetch')
        self.assertEqual(1, len(fetches))
        self.assertEqual(('imgfetch', '--name', 'nipxe-menu', '--timeout',
                          '30000'), fetches[0][:5])
        self.assertEqual([], ipxe_syntax.command_lines(text, 'chain'))
        return fetches[0][5]

    def test_static_nic_found_by_mac_never_dhcp(self):
        text = self.render().text
        self.assertTrue(text.startswith('#!ipxe\n'))
        self.assertEqual([], ipxe_syntax.command_lines(text, 'dhcp'))
        self.assertEqual([], ipxe_syntax.command_lines(text, 'ifconf'))
        sets = ipxe_syntax.command_lines(text, 'set')
        for expected in [
                ('set', '${nipxe-nic0}/ip', '192.0.2.10'),
                ('set', '${nipxe-nic0}/netmask', '255.255.255.0'),
                ('set', '${nipxe-nic0}/gateway', '192.0.2.1'),
                ('set', '${nipxe-nic0}/ip6', '2001:db8::10'),
                ('set', '${nipxe-nic0}/len6', '64'),
                ('set', '${nipxe-nic0}/gateway6', '2001:db8::1'),
                ('set', '${nipxe-nic0}/mtu', '1450'),
                # standard settings for netboot.xyz-style menus
                ('set', 'ip', '192.0.2.10'),
                ('set', 'netmask', '255.255.255.0'),
                ('set', 'gateway', '192.0.2.1'),
                ('set', 'dns', '192.0.2.53'),
                ('set', 'dns6', '2001:db8::53'),
                ('set', 'hostname', 'demo-1')]:
            self.assertIn(expected, sets)
        self.assertIn(('iseq', '${net${nipxe-i}/mac}', 'fa:16:3e:12:34:56',
                       ), ipxe_syntax.command_lines(text, 'iseq'))
        self.assertEqual([('ifopen', '${nipxe-nic0}')],
                         ipxe_syntax.command_lines(text, 'ifopen'))

    def test_chain_url_carries_identity(self):
        url = self.chain_url(self.render().text)
        parts = urllib.parse.urlsplit(url)
        self.assertEqual('/menu.ipxe', parts.path)
        self.assertEqual([('uuid', UUID), ('hostname', 'demo-1'),
                          ('mac', 'fa:16:3e:12:34:56'),
                          ('ip', '192.0.2.10')],
                         urllib.parse.parse_qsl(parts.query))

    def test_identity_appended_to_operator_query(self):
        self.flags(boot_menu_url='http://boot/m.ipxe?site=a&m=${net0/mac}')
        url = self.chain_url(self.render().text)
        self.assertTrue(url.startswith(
            'http://boot/m.ipxe?site=a&m=${net0/mac}&uuid=%s&' % UUID))

    def test_identity_off(self):
        self.flags(menu_identity=False)
        self.assertEqual('http://192.0.2.1:8080/menu.ipxe',
                         self.chain_url(self.render().text))

    def test_dhcp_nic_identity_ip_expands_at_boot(self):
        data = samples.two_nics()
        data['networks'][1]['routes'] = []
        text = self.render(data).text
        self.assertEqual([('dhcp', '${nipxe-nic0}')],
                         [c[:2] for c in
                          ipxe_syntax.command_lines(text, 'dhcp')])
        self.assertTrue(self.chain_url(text).endswith('&ip=${ip}'))

    def test_two_nics_menu_nic_in_standard_settings(self):
        data = two_static_nics()
        text = self.render(data).text
        sets = ipxe_syntax.command_lines(text, 'set')
        self.assertIn(('set', '${nipxe-nic0}/ip', '203.0.113.9'), sets)
        self.assertIn(('set', '${nipxe-nic1}/ip', '198.51.100.7'), sets)
        self.assertIn(('set', 'ip', '198.51.100.7'), sets)
        self.assertNotIn(('set', 'ip', '203.0.113.9'), sets)
        self.assertIn('mac=fa%3A16%3A3e%3A00%3A00%3A0b', self.chain_url(text))

    def test_retries_and_fallbacks(self):
        for policy, tail in (('disk', ('sanboot', '--no-describe',
                                       '--drive', '0x80')),
                             ('shell', ('shell',)),
                             ('reboot', ('reboot',))):
            self.flags(on_chain_failure=policy, chain_retries=5)
            text = self.render().text
            self.assertIn(('iseq', '${nipxe-try}', '5'),
                          ipxe_syntax.command_lines(text, 'iseq'))
            items = ipxe_syntax.commands(text)
            fallback = items.index(('label', 'menu_fallback'))
            cmds = [i[1] for i in items[fallback:] if i[0] == 'cmd']
            self.assertIn(tail, cmds, policy)
            # Nothing after the fallback goes back to fetching the menu.
            self.assertNotIn(('goto', 'menu_fetch'), cmds)

    def test_tenant_override(self):
        text = self.render(server_metadata={
            'ipxe_boot_menu_url': 'http://tenant.example/m?a=${ip}'}).text
        url = self.chain_url(text)
        self.assertTrue(url.startswith('http://tenant.example/m?a=%24%7Bip%7D'
                                       '&uuid='), url)

    def test_bad_tenant_urls(self):
        for url in ('http://[', 'http://[::1/m', 'http://h:99999/m',
                    'http://h:port/m', 'https://user:pw@h/m', 'ftp://h/m',
                    'javascript:alert(1)', 'http://h/m#x', ' ', 42):
            self.assertRaises(exception.InvalidMenuUrl, self.render,
                              server_metadata={'ipxe_boot_menu_url': url})

    def test_override_disabled(self):
        self.flags(allow_menu_url_override=False)
        text = self.render(image_properties={
            'ipxe_boot_menu_url': 'http://tenant.example/m'}).text
        self.assertTrue(self.chain_url(text).startswith(
            'http://192.0.2.1:8080/menu.ipxe?'))

    def test_host_name_without_ascii_form_is_left_out(self):
        self.logger = self.useFixture(fixtures.FakeLogger(level=logging.INFO))
        # Never a failed boot for a name (Nova makes names this code
        # cannot carry, e.g. API 2.90's underscores): left out, logged.
        for hostname in ('-bad', 'a b', 'x' * 64, 'a..b', '#x', 'ok\\',
                         'my_host', 'caf\u00e9\u2028', '\u00e9' * 63):
            rendered = self.render(hostname=hostname)
            self.assertNotIn('set hostname', rendered.text, hostname)
            self.assertNotIn('hostname=', rendered.menu_url, hostname)
            self.assertIn('Leaving the host name',
                          self.logger.output)
        self.assertRaises(exception.InvalidScriptValue, self.render,
                          uuid='not-a-uuid')

    def test_missing_menu_url(self):
        self.flags(boot_menu_url=None)
        self.assertRaises(exception.ConfigError, self.render)

    def test_operator_url_checked(self):
        for url in ('ftp://x/m', 'http:///m', 'http://x/m#frag',
                    'http://x/m a', 'http://x/m\nshell', 'http://x/${a'):
            self.flags(boot_menu_url=url)
            self.assertRaises(exception.InvalidMenuUrl, self.render)


class MenuNicLastTestCase(base.TestCase):
    """netX is the NIC iPXE opened last: it must be the menu NIC."""

    def render(self, data):
        return builder.render_script(builder.Instance(network_data=data),
                                     self.conf)

    def opens(self, text):
        """(command, NIC) of every command that opens or closes one."""
        return [item[1][:2] for item in ipxe_syntax.commands(text)
                if item[0] == 'cmd' and item[1]
                and item[1][0] in ('ifopen', 'ifclose', 'dhcp')]

    def test_menu_nic_listed_first_is_opened_last(self):
        data = samples.two_nics()
        # The static NIC (the menu NIC: default route) first in the JSON.
        data['links'].reverse()
        rendered = self.render(data)
        self.assertEqual('fa:16:3e:00:00:0b', rendered.menu_nic.mac)
        # nipxe-nic1 is the DHCP NIC, nipxe-nic0 the menu NIC: opened
        # after it, closed first in case it was already open.
        self.assertEqual([('dhcp', '${nipxe-nic1}'),
                          ('ifclose', '${nipxe-nic0}'),
                          ('ifopen', '${nipxe-nic0}')],
                         self.opens(rendered.text))

    def test_menu_nic_listed_second_is_opened_last(self):
        data = two_static_nics()
        text = self.render(data).text
        self.assertEqual([('ifopen', '${nipxe-nic0}'),
                          ('ifclose', '${nipxe-nic1}'),
                          ('ifopen', '${nipxe-nic1}')], self.opens(text))
        # The menu NIC's lookup comes after the other NIC is configured.
        items = ipxe_syntax.commands(text)
        self.assertLess(items.index(('label', 'nic0_end')),
                        items.index(('label', 'nic1_find')))

    def test_dhcp_menu_nic_re_opened_by_dhcp(self):
        data = samples.two_nics()
        data['networks'][1]['routes'] = []
        self.assertEqual([('ifopen', '${nipxe-nic1}'),
                          ('ifclose', '${nipxe-nic0}'),
                          ('dhcp', '${nipxe-nic0}')],
                         self.opens(self.render(data).text))

    def test_per_nic_dns(self):
        data = samples.two_nics()
        sets = ipxe_syntax.command_lines(self.render(data).text, 'set')
        self.assertIn(('set', '${nipxe-nic1}/dns', '198.51.100.53'), sets)
        self.assertIn(('set', 'dns', '198.51.100.53'), sets)
        # The DHCP NIC keeps what its DHCP server says.
        self.assertNotIn(('set', '${nipxe-nic0}/dns', '198.51.100.53'), sets)


class MenuRunsOnceTestCase(base.TestCase):
    """Only a failed download is retried; a menu that ran is not."""

    def test_flow(self):
        self.flags(chain_retries=4, on_chain_failure='reboot')
        text = builder.render_script(builder.Instance(
            network_data=self.network_data()), self.conf).text
        items = ipxe_syntax.commands(text)

        def block(label):
            start = items.index(('label', label)) + 1
            end = next((i for i in range(start, len(items))
                        if items[i][0] == 'label'), len(items))
            return [(i[1], i[2]) for i in items[start:end]]

        fetch = block('menu_fetch')
        self.assertEqual(('imgfetch', '--name', 'nipxe-menu'),
                         fetch[2][0][:3])
        # Success goes to running it; failure retries up to the limit.
        self.assertEqual(('goto', 'menu_run'), fetch[3][0])
        self.assertEqual((('iseq', '${nipxe-try}', '4'), '&&'), fetch[4])
        self.assertEqual(('goto', 'menu_failed'), fetch[5][0])
        self.assertEqual(('goto', 'menu_fetch'), fetch[-1][0])
        run = block('menu_run')
        # Whatever the menu returns (exit 0 or exit 1), the fallback next.
        self.assertEqual(('imgexec', '--autofree', 'nipxe-menu'), run[1][0])
        self.assertEqual('||', run[1][1])
        self.assertEqual(('goto', 'menu_fallback'), run[-1][0])
        self.assertNotIn(('goto', 'menu_fetch'), [c for c, _ in run])
        self.assertEqual(('reboot',), block('menu_fallback')[-2][0])


class CanonicalIdentityTestCase(base.TestCase):
    """Only canonical UUIDs and host names, never folded."""

    def test_uuid_canonical_only(self):
        for value in ('+d4f8e1c2a3b4c5d6e7f8a9b0c1d2e3f',
                      '{%s}' % UUID, 'urn:uuid:' + UUID,
                      UUID.replace('-', ''), UUID[:-1] + '_',
                      UUID + '\n', ' ' + UUID, UUID.replace('8', '\uff18'),
                      '8d0f7b6e_3c2a_4b1d_9e8f_7a6b5c4d3e2f', 42, ''):
            e = self.assertRaises(exception.InvalidScriptValue,
                                  script.check_uuid, value)
            self.assertNotIn('\n', str(e))
        self.assertEqual(UUID, script.check_uuid(UUID.upper()))
        self.assertEqual(UUID, script.check_uuid(uuid.UUID(UUID)))

    def test_hostname_ascii_only_never_folded(self):
        for value in ('demo-\u212a', 'd\u0131', '\uff44emo', 'demo.',
                      'demo\n', 'caf\u00e9', 'a' * 254, 'demo..x', 5):
            self.assertRaises(exception.InvalidScriptValue,
                              script.check_hostname, value)
        self.assertEqual('demo-1.example', script.check_hostname(
            'Demo-1.EXAMPLE'))
        self.assertEqual('xn--caf-dma', script.check_hostname('xn--caf-dma'))

    def test_addresses_written_only_in_forms_ipxe_parses(self):
        for value in ('fe80::1%eth0', '2001:db8::1%x'):
            self.assertRaises(exception.InvalidScriptValue,
                              script._check_address,
                              ipaddress.ip_address(value))
        self.assertEqual('2001:db8::1', script._check_address(
            ipaddress.ip_address('2001:0DB8:0::1')))

    def test_script_size_is_capped(self):
        nics = [netdata.Nic(link_id=str(i), mac='fa:16:3e:00:%02x:%02x'
                            % (i >> 8, i & 255),
                            ipv4=ipaddress.ip_interface('10.0.%d.%d/16' % (
                                i >> 8, i & 255)))
                for i in range(1000)]
        e = self.assertRaises(
            exception.InvalidScriptValue, script.render,
            netdata.NetworkConfig(nics=nics), 'http://b/m', nics[0])
        self.assertIn('longer than %d bytes' % script.MAX_SCRIPT_BYTES,
                      str(e))


# --------------------------------------------------------------------------
# Property tests: no value from outside the template can add, end or
# comment out an iPXE command.
#
# Each test renders a script with one hostile value in place of a benign
# one.  The value must either be refused with a typed error, or the script
# must have exactly the command structure of the benign rendering (same
# commands, argument counts, operators, labels and setting expansions).
#
# A property that mostly hits early validation proves little about the
# template, so each test counts how many examples were rendered and how
# many refused, attaches the counts (and writes them to standard error),
# and requires a share of them to reach rendering: the strategies mix
# near-valid values (which render) with hostile ones.

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


def _case_variants(values):
    """Values as given and with ASCII upper case (which is accepted)."""
    return values.flatmap(lambda v: st.sampled_from([v, v.upper()]))


def _inject(values):
    """A valid value with one hostile piece spliced in."""
    return st.tuples(values, st.sampled_from(NASTY), st.integers(0, 40)).map(
        lambda t: str(t[0])[:t[2]] + t[1] + str(t[0])[t[2]:])


hostnames = _case_variants(st.from_regex(
    r'\A[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,8}'
    r'[a-z0-9])?){0,3}\Z'))
uuids = _case_variants(st.uuids().map(str))
macs = _case_variants(st.binary(min_size=6, max_size=6).map(
    lambda b: ':'.join('%02x' % c for c in bytes([b[0] & 0xfe]) + b[1:])))
ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).map(str)


def near_valid(values, hostile=hostile_text):
    """Six tenths valid values, two with a hostile piece, two hostile.

    Weighted explicitly: st.one_of() flattens nested one_of()s, which
    would let the many hostile branches crowd the valid ones out.
    """
    return st.integers(0, 9).flatmap(
        lambda n: values if n < 6 else _inject(values) if n < 8
        else hostile)


SETTINGS = hypothesis.settings(max_examples=150, deadline=None,
                               suppress_health_check=list(
                                   hypothesis.HealthCheck))
# At least this share of examples must be rendered, not refused early.
MIN_RENDERED = 0.25


class HostileValueTestCase(base.TestCase):

    def render(self, network_data=None, **kw):
        kw.setdefault('uuid', '8d0f7b6e-3c2a-4b1d-9e8f-7a6b5c4d3e2f')
        kw.setdefault('hostname', 'demo-1')
        return builder.render_script(builder.Instance(
            network_data=network_data or self.network_data(), **kw),
            self.conf).text

    def setUp(self):
        super().setUp()
        self.counts = collections.Counter()

    def run_property(self, prop, min_rendered=MIN_RENDERED):
        """Run a @given property, then check how far its examples got."""
        prop()
        total = self.counts['rendered'] + self.counts['refused']
        summary = '%s: %d examples rendered, %d refused with a typed error' % (
            self.id().rsplit('.', 1)[-1], self.counts['rendered'],
            self.counts['refused'])
        self.addDetail('property-counts', content.text_content(summary))
        sys.stderr.write(summary + '\n')
        self.assertGreater(total, 0)
        self.assertGreaterEqual(self.counts['rendered'] / total,
                                min_rendered, summary)

    def assertSameShape(self, benign, **kw):
        try:
            text = self.render(**kw)
        except exception.NovaIpxeError as e:
            self.counts['refused'] += 1
            self.assertNotIn('\n', str(e))
            self.assertNotIn('\n', e.safe_message)
            return  # refused with a typed error: fine
        self.counts['rendered'] += 1
        self.assertEqual(ipxe_syntax.skeleton(benign),
                         ipxe_syntax.skeleton(text))
        self.assertFalse([c for c in text if ord(c) < 0x20 and c != '\n'])
        self.assertTrue(text.isascii())

    @hypothesis.given(value=st.one_of(near_valid(hostnames), st.text()))
    @SETTINGS
    def _hostname(self, value):
        # Every name boots: carried in its ASCII form or left out, never
        # refused (issue 16: Nova makes names with Latin-1 letters).
        text = self.render(hostname=value)
        self.assertTrue(text.isascii())
        carried, _ = identity.canonical_hostname(value)
        lines = [line for line in text.splitlines()
                 if line.startswith('set hostname ')]
        if carried:
            self.counts['rendered'] += 1
            self.assertEqual(['set hostname ' + carried], lines)
            self.assertEqual(ipxe_syntax.skeleton(self.render()),
                             ipxe_syntax.skeleton(text))
        else:
            self.counts['refused'] += 1
            self.assertEqual([], lines)

    def test_hostname(self):
        self.run_property(self._hostname)

    @hypothesis.given(value=near_valid(uuids))
    @SETTINGS
    def _instance_uuid(self, value):
        self.assertSameShape(self.render(), uuid=value)

    def test_instance_uuid(self):
        self.run_property(self._instance_uuid)

    @hypothesis.given(value=hostile_text)
    @SETTINGS
    def _tenant_menu_url(self, value):
        benign = self.render(server_metadata={
            'ipxe_boot_menu_url': 'http://tenant.example/menu'})
        for url in (value, 'http://tenant.example/' + value,
                    'https://tenant.example/m?q=' + value):
            self.assertSameShape(
                benign, server_metadata={'ipxe_boot_menu_url': url})
            self.assertSameShape(
                benign, image_properties={'ipxe_boot_menu_url': url})

    def test_tenant_menu_url(self):
        self.run_property(self._tenant_menu_url)

    @hypothesis.given(value=near_valid(st.from_regex(
        r'\A[a-z0-9/._~-]{0,20}(\?[a-z0-9=&]{0,10})?\Z')))
    @SETTINGS
    def _operator_menu_url(self, value):
        # Examples share one test instance: reset before each one.
        self.flags(boot_menu_url='http://boot.example/menu')
        benign = ipxe_syntax.skeleton(self.render())
        self.flags(boot_menu_url='http://boot.example/' + value)
        try:
            text = self.render()
        except exception.NovaIpxeError:
            self.counts['refused'] += 1
            return
        self.counts['rendered'] += 1
        # An operator may use ${...} in the URL: compare all but those.
        strip = [s[:4] for s in ipxe_syntax.skeleton(text)]
        self.assertEqual([s[:4] for s in benign], strip)

    def test_operator_menu_url(self):
        self.run_property(self._operator_menu_url)

    # Per field: near-valid values of its kind, and hostile JSON.
    FIELDS = {
        ('links', 0, 'ethernet_mac_address'): macs,
        ('links', 0, 'id'): st.text(max_size=20),
        ('links', 0, 'type'): st.sampled_from(
            ['phy', 'ovs', 'bridge', 'tap', 'vhostuser', 'hw_veb']),
        ('networks', 0, 'ip_address'): ipv4,
        ('networks', 0, 'network_id'): st.text(max_size=40),
        ('networks', 0, 'id'): st.text(max_size=40),
        ('networks', 1, 'ip_address'): ipv6,
        ('services', 0, 'address'): ipv4 | ipv6,
        ('services', 1, 'address'): ipv4 | ipv6,
    }

    @hypothesis.given(
        field_value=st.sampled_from(sorted(FIELDS)).flatmap(
            lambda f: st.tuples(st.just(f), near_valid(
                HostileValueTestCase.FIELDS[f], hostile_json))))
    @SETTINGS
    def _network_data_values(self, field_value):
        field, value = field_value
        data = self.network_data()
        section, index, key = field
        data[section][index][key] = value
        if key == 'id' and section == 'links':
            data['networks'][0]['link'] = value
            data['networks'][1]['link'] = value
        if key == 'type' and value in ('vlan', 'bond'):
            return  # a skipped link legitimately changes the script
        self.assertSameShape(self.render(), network_data=data)

    def test_network_data_values(self):
        self.run_property(self._network_data_values)

    @hypothesis.given(value=near_valid(ipv4, hostile_json))
    @SETTINGS
    def _route_gateway(self, value):
        data = self.network_data()
        data['networks'][0]['routes'][0]['gateway'] = value
        self.assertSameShape(self.render(), network_data=data)

    def test_route_gateway(self):
        self.run_property(self._route_gateway)

    @hypothesis.given(value=near_valid(st.integers(68, 65535),
                                       st.integers() | hostile_text))
    @SETTINGS
    def _mtu(self, value):
        data = self.network_data()
        data['links'][0]['mtu'] = value
        self.assertSameShape(self.render(), network_data=data)

    def test_mtu(self):
        self.run_property(self._mtu)
