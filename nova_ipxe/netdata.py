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

"""network_data.json (OpenStack metadata format) -> per-NIC iPXE configs.

The input is what ``nova.virt.netutils.get_network_metadata()`` emits:
``links`` (one per port, keyed by MAC), ``networks`` (one per subnet of a
port, typed ``ipv4``, ``ipv4_dhcp``, ``ipv6``, ``ipv6_<address mode>``) and
``services`` (DNS servers).  Everything here is tenant-influenced data, so
each value is parsed into a typed object (``ipaddress``, a normalised MAC,
an int) and anything else is an :class:`InvalidNetworkData` naming the
field.  iPXE holds one address per family per NIC and no extra routes:
what it cannot express is logged and skipped, never fatal.
"""

import dataclasses
import ipaddress
import re

from oslo_log import log as logging

from nova_ipxe import exception

LOG = logging.getLogger(__name__)

MAC_RE = re.compile(r'^[0-9a-f]{2}(:[0-9a-f]{2}){5}$')

IPV6_TYPES = ('ipv6', 'ipv6_slaac', 'ipv6_dhcpv6-stateful',
              'ipv6_dhcpv6-stateless')
NETWORK_TYPES = ('ipv4', 'ipv4_dhcp') + IPV6_TYPES
# Link types iPXE cannot bring up by MAC on its own.
UNSUPPORTED_LINK_TYPES = ('vlan', 'bond')


@dataclasses.dataclass
class Nic:
    """What iPXE needs to configure one NIC, found by its MAC."""

    link_id: str
    mac: str
    mtu: int = None
    network_ids: list = dataclasses.field(default_factory=list)
    network_names: list = dataclasses.field(default_factory=list)
    ipv4: ipaddress.IPv4Interface = None
    gateway4: ipaddress.IPv4Address = None
    dhcp4: bool = False
    ipv6: ipaddress.IPv6Interface = None
    gateway6: ipaddress.IPv6Address = None

    @property
    def configured(self):
        return bool(self.ipv4 or self.ipv6 or self.dhcp4)

    def matches_network(self, name_or_id):
        return (name_or_id in self.network_ids
                or name_or_id in self.network_names)


@dataclasses.dataclass
class NetworkConfig:
    nics: list
    dns4: list = dataclasses.field(default_factory=list)
    dns6: list = dataclasses.field(default_factory=list)

    @property
    def dns(self):
        """The DNS servers iPXE can use: one per family."""
        return (self.dns4[0] if self.dns4 else None,
                self.dns6[0] if self.dns6 else None)


def _fail(field, reason):
    raise exception.InvalidNetworkData(field=field, reason=reason)


def _get(obj, key, field, types, required=True):
    value = obj.get(key)
    if value is None:
        if required:
            _fail('%s.%s' % (field, key), 'missing')
        return None
    if not isinstance(value, types):
        _fail('%s.%s' % (field, key), 'expected %s, got %s' % (
            '/'.join(t.__name__ for t in (
                types if isinstance(types, tuple) else (types,))),
            type(value).__name__))
    return value


def parse_mac(value, field):
    if not isinstance(value, str) or not MAC_RE.match(value.lower()):
        _fail(field, 'not a MAC address (want xx:xx:xx:xx:xx:xx): %r'
              % (value,))
    mac = value.lower()
    if int(mac[:2], 16) & 1:
        _fail(field, 'a multicast MAC cannot be a NIC address: %s' % mac)
    return mac


def _parse_ip(value, version, field):
    if not isinstance(value, str):
        _fail(field, 'expected an IPv%d address string, got %s'
              % (version, type(value).__name__))
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        _fail(field, 'not an IP address: %r' % value)
    if address.version != version:
        _fail(field, 'expected an IPv%d address, got %s' % (version, value))
    return address


def _parse_prefix(netmask, version, field):
    """A netmask in address form, or a prefix length, -> prefix length."""
    if isinstance(netmask, int) and not isinstance(netmask, bool):
        prefix = netmask
    elif isinstance(netmask, str) and netmask.isdigit():
        prefix = int(netmask)
    elif isinstance(netmask, str):
        # ipaddress parses address-form masks for IPv4 only.
        try:
            mask = ipaddress.ip_address(netmask)
        except ValueError:
            mask = None
        bits = 32 if version == 4 else 128
        value = int(mask) if mask and mask.version == version else -1
        inverted = ~value & ((1 << bits) - 1)
        if value < 0 or inverted & (inverted + 1):
            _fail(field, 'not a valid IPv%d netmask: %r' % (version,
                                                            netmask))
        prefix = bits - inverted.bit_length()
    else:
        _fail(field, 'expected a netmask, got %r' % (netmask,))
    if not 0 <= prefix <= (32 if version == 4 else 128):
        _fail(field, 'prefix length %d out of range' % prefix)
    return prefix


def _interface(network, version, field):
    address = _parse_ip(network.get('ip_address'), version,
                        field + '.ip_address')
    if 'netmask' in network:
        prefix = _parse_prefix(network['netmask'], version,
                               field + '.netmask')
    elif version == 6:
        prefix = 64
    else:
        _fail(field + '.netmask', 'missing')
    iface = ipaddress.ip_interface('%s/%d' % (address, prefix))
    if address.is_multicast or address.is_unspecified or (
            address.is_loopback):
        _fail(field + '.ip_address', '%s cannot be a host address'
              % address)
    return iface


def _default_gateway(network, iface, field):
    """Return the default route's gateway; log and skip other routes."""
    routes = network.get('routes') or []
    if not isinstance(routes, list):
        _fail(field + '.routes', 'expected a list')
    gateway = None
    for i, route in enumerate(routes):
        rfield = '%s.routes[%d]' % (field, i)
        if not isinstance(route, dict):
            _fail(rfield, 'expected an object')
        gw = _parse_ip(route.get('gateway'), iface.version,
                       rfield + '.gateway')
        dest = _parse_ip(route.get('network'), iface.version,
                         rfield + '.network')
        prefix = _parse_prefix(route.get('netmask'), iface.version,
                               rfield + '.netmask')
        if prefix == 0 and dest.packed == bytes(len(dest.packed)):
            if gateway is None:
                gateway = gw
            elif gw != gateway:
                LOG.warning('%s: second default route via %s ignored; '
                            'iPXE uses %s', rfield, gw, gateway)
        else:
            # iPXE has one gateway per NIC and no static routes.
            LOG.info('%s: route %s/%d via %s cannot be set in iPXE; '
                     'skipped', rfield, dest, prefix, gw)
    if gateway is not None and gateway not in iface.network:
        LOG.warning('%s: gateway %s is outside %s; iPXE will still try '
                    'to reach it on-link', field, gateway, iface.network)
    return gateway


def _dns_from(services, field, dns4, dns6):
    if services is None:
        return
    if not isinstance(services, list):
        _fail(field, 'expected a list')
    for i, service in enumerate(services):
        sfield = '%s[%d]' % (field, i)
        if not isinstance(service, dict):
            _fail(sfield, 'expected an object')
        if service.get('type') != 'dns':
            continue
        value = service.get('address')
        try:
            address = ipaddress.ip_address(value)
        except (ValueError, TypeError):
            _fail(sfield + '.address', 'not an IP address: %r' % (value,))
        target = dns4 if address.version == 4 else dns6
        if address not in target:
            target.append(address)


def parse(data, network_names=None):
    """Parse network_data.json (a dict) into a :class:`NetworkConfig`.

    :param network_names: optional {Neutron network UUID: name} so that
        ``[ipxe] menu_network`` can name a network (the JSON has no names).
    """
    if not isinstance(data, dict):
        _fail('network_data', 'expected a JSON object')
    network_names = network_names or {}
    links = _get(data, 'links', 'network_data', list)
    networks = _get(data, 'networks', 'network_data', list,
                    required=False) or []

    nics = {}
    macs = set()
    skipped_links = set()
    for i, link in enumerate(links):
        field = 'links[%d]' % i
        if not isinstance(link, dict):
            _fail(field, 'expected an object')
        link_id = _get(link, 'id', field, str)
        if link_id in nics or link_id in skipped_links:
            _fail(field + '.id', 'duplicate link id %r' % link_id)
        link_type = link.get('type', 'phy')
        if link_type in UNSUPPORTED_LINK_TYPES:
            LOG.warning('%s: %s link %r cannot be configured by iPXE; '
                        'skipped', field, link_type, link_id)
            skipped_links.add(link_id)
            continue
        mac = parse_mac(link.get('ethernet_mac_address'),
                        field + '.ethernet_mac_address')
        if mac in macs:
            _fail(field + '.ethernet_mac_address',
                  'MAC %s appears on two links' % mac)
        macs.add(mac)
        mtu = link.get('mtu')
        if mtu is not None:
            if (not isinstance(mtu, int) or isinstance(mtu, bool)
                    or not 68 <= mtu <= 65535):
                _fail(field + '.mtu', 'expected an integer 68..65535, got '
                      '%r' % (mtu,))
        nics[link_id] = Nic(link_id=link_id, mac=mac, mtu=mtu)

    dns4, dns6 = [], []
    for i, network in enumerate(networks):
        field = 'networks[%d]' % i
        if not isinstance(network, dict):
            _fail(field, 'expected an object')
        link_id = _get(network, 'link', field, str)
        if link_id in skipped_links:
            continue
        nic = nics.get(link_id)
        if nic is None:
            _fail(field + '.link', 'no link with id %r' % link_id)
        net_type = _get(network, 'type', field, str)
        if net_type not in NETWORK_TYPES:
            _fail(field + '.type', 'unknown network type %r (known: %s)'
                  % (net_type, ', '.join(NETWORK_TYPES)))
        network_id = _get(network, 'network_id', field, str,
                          required=False)
        if network_id:
            nic.network_ids.append(network_id)
            if network_id in network_names:
                nic.network_names.append(network_names[network_id])
        _dns_from(network.get('services'), field + '.services', dns4, dns6)

        if net_type == 'ipv4_dhcp':
            nic.dhcp4 = True
        elif net_type == 'ipv4':
            iface = _interface(network, 4, field)
            gateway = _default_gateway(network, iface, field)
            if nic.ipv4 is not None:
                LOG.info('%s: second IPv4 address %s on %s ignored; iPXE '
                         'uses %s', field, iface, nic.mac, nic.ipv4)
                continue
            nic.ipv4, nic.gateway4 = iface, gateway
        else:
            iface = _interface(network, 6, field)
            gateway = _default_gateway(network, iface, field)
            if iface.ip.is_link_local:
                _fail(field + '.ip_address', 'link-local %s cannot be set '
                      'statically' % iface.ip)
            if nic.ipv6 is not None:
                LOG.info('%s: second IPv6 address %s on %s ignored; iPXE '
                         'uses %s', field, iface, nic.mac, nic.ipv6)
                continue
            nic.ipv6, nic.gateway6 = iface, gateway
    for nic in nics.values():
        if nic.ipv4 and nic.dhcp4:
            # Static wins: DHCP never runs on a statically configured NIC.
            LOG.info('%s has a static IPv4 address and a DHCP subnet; '
                     'using the static address', nic.mac)
            nic.dhcp4 = False

    _dns_from(data.get('services'), 'services', dns4, dns6)
    if len(dns4) > 1 or len(dns6) > 1:
        used = dns4[:1] + dns6[:1]
        ignored = dns4[1:] + dns6[1:]
        LOG.info('iPXE uses one DNS server per family; using %s and '
                 'ignoring %s', ', '.join(map(str, used)),
                 ', '.join(map(str, ignored)))
    return NetworkConfig(nics=list(nics.values()), dns4=dns4, dns6=dns6)


def select_menu_nic(config, menu_network=None):
    """Choose the NIC that chains the menu.

    ``menu_network`` (a Neutron network name or UUID) wins; otherwise the
    NIC holding the IPv4 default route, else the IPv6 one, else the first
    DHCP NIC.
    """
    nics = [nic for nic in config.nics if nic.configured]
    if menu_network:
        for nic in nics:
            if nic.matches_network(menu_network):
                return nic
        present = sorted({n for nic in config.nics
                          for n in nic.network_ids + nic.network_names})
        raise exception.MenuNetworkNotFound(
            network=menu_network, present=', '.join(present) or 'none')
    for test in (lambda n: n.ipv4 and n.gateway4,
                 lambda n: n.ipv6 and n.gateway6,
                 lambda n: n.dhcp4,
                 lambda n: n.ipv4 or n.ipv6):
        for nic in nics:
            if test(nic):
                return nic
    raise exception.NoUsableNic(
        reason='no NIC has an address, a default route or a DHCP subnet '
               '(%d link(s) in the network data)' % len(config.nics))
