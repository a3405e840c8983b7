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

Hostile input is bounded before it is looked at: :func:`read_json` reads
at most :data:`MAX_BYTES` (+1, to tell "too large" apart) and checks the
nesting depth before decoding; :func:`parse` walks the structure once
(depth, node count, string lengths, list lengths) before using it.  Only
canonical forms are accepted: a MAC is six ASCII hex pairs (ASCII case is
folded), an address is what :mod:`ipaddress` reads without a zone id, a
prefix length is plain ASCII digits.  Values that reach an error message
or a log line go through :func:`nova_ipxe.exception.show` (bounded,
escaped).
"""

import dataclasses
import ipaddress
import json
import re

from oslo_log import log as logging

from nova_ipxe import exception

LOG = logging.getLogger(__name__)

MAC_RE = re.compile(r'[0-9a-f]{2}(:[0-9a-f]{2}){5}')
PREFIX_RE = re.compile(r'0|[1-9][0-9]{0,2}')

# Bounds on what a tenant's network data may cost.  Nova writes a few
# hundred bytes per port; these leave room for any real instance.
MAX_BYTES = 1024 * 1024      # network_data.json as read
MAX_DEPTH = 16               # Nova's format nests 5 deep
MAX_NODES = 100000           # every list, object, key and value
MAX_STRING = 255             # any key or string value, in characters
MAX_LINKS = 64
MAX_NETWORKS = 256
MAX_ROUTES = 64              # per network
MAX_SERVICES = 64            # per services list

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


class _Refused(ValueError):
    pass


def _pairs(pairs):
    """json object hook: a key given twice is ambiguous, so refused."""
    obj = {}
    for key, value in pairs:
        if key in obj:
            raise _Refused('the key %s appears twice in one object'
                           % exception.show(key))
        obj[key] = value
    return obj


def _constant(name):
    raise _Refused('%s is not JSON' % name)


def read_json(stream, source='network_data', limit=MAX_BYTES):
    """Read and decode network_data.json from a binary ``stream``.

    Reads at most ``limit`` + 1 bytes whatever the stream is (a pipe or a
    device has no size to check up front).
    """
    chunks, size = [], 0
    try:
        while size <= limit:
            chunk = stream.read(min(65536, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as e:
        _fail(source, 'cannot read it: %s' % (e.strerror or e))
    if size > limit:
        _fail(source, 'larger than %d bytes' % limit)
    try:
        text = b''.join(chunks).decode('utf-8')
    except UnicodeDecodeError as e:
        _fail(source, 'not UTF-8 (byte %d)' % e.start)
    try:
        # The C decoder counts its recursion: deep nesting is a
        # RecursionError, caught here; check_shape() then applies
        # MAX_DEPTH to what was decoded.
        return json.loads(text, object_pairs_hook=_pairs,
                          parse_constant=_constant)
    except _Refused as e:
        _fail(source, 'not JSON: %s' % e)
    except RecursionError:
        _fail(source, 'not JSON: nested deeper than %d' % MAX_DEPTH)
    except ValueError as e:
        _fail(source, 'not JSON: %s' % e)


_KEY_RE = re.compile(r'[A-Za-z0-9_-]{1,64}')


def _path(entry):
    """The field name (``networks[0].routes``) of a check_shape entry."""
    parts = []
    while entry[2] is not None:
        key = entry[3]
        if isinstance(key, int):
            parts.append('[%d]' % key)
        else:
            parts.append('.' + (key if _KEY_RE.fullmatch(key)
                                else '[%s]' % exception.show(key)))
        entry = entry[2]
    return ''.join(reversed(parts)).lstrip('.') or 'network_data'


def check_shape(data):
    """Bound the whole structure in one iterative walk, before use.

    Network data from Nova arrives as a dict, not as text, so the same
    bounds apply here whatever read it.  Each entry is (value, depth,
    parent entry, key): the field name is only built for an error.
    """
    stack = [(data, 1, None, None)]
    nodes = 0
    while stack:
        entry = stack.pop()
        value, depth = entry[0], entry[1]
        nodes += 1
        if depth > MAX_DEPTH:
            _fail(_path(entry), 'nested deeper than %d' % MAX_DEPTH)
        if isinstance(value, (dict, list, tuple)) and (
                nodes + len(stack) + len(value) > MAX_NODES):
            _fail(_path(entry), 'more than %d values in the network data'
                  % MAX_NODES)
        if isinstance(value, dict):
            for key, item in value.items():
                if not isinstance(key, str):
                    _fail(_path(entry), 'an object key is a %s, not a '
                          'string' % type(key).__name__)
                if len(key) > MAX_STRING:
                    _fail(_path(entry), 'a key is longer than %d '
                          'characters: %s' % (MAX_STRING, exception.show(key)))
                stack.append((item, depth + 1, entry, key))
        elif isinstance(value, (list, tuple)):
            stack.extend((item, depth + 1, entry, i)
                         for i, item in enumerate(value))
        elif isinstance(value, str):
            if len(value) > MAX_STRING:
                _fail(_path(entry), 'longer than %d characters: %s'
                      % (MAX_STRING, exception.show(value)))
        elif not (value is None or isinstance(value, (bool, int, float))):
            _fail(_path(entry), 'a %s is not a JSON value'
                  % type(value).__name__)


def _list(value, field, limit):
    if not isinstance(value, list):
        _fail(field, 'expected a list, got %s' % exception.show(value))
    if len(value) > limit:
        _fail(field, 'more than %d entries (%d)' % (limit, len(value)))
    return value


def _get(obj, key, field, types, required=True):
    value = obj.get(key)
    if value is None:
        if required:
            _fail('%s.%s' % (field, key), 'missing')
        return None
    if not isinstance(value, types) or (
            isinstance(value, bool) and bool not in (
                types if isinstance(types, tuple) else (types,))):
        _fail('%s.%s' % (field, key), 'expected %s, got %s' % (
            '/'.join(t.__name__ for t in (
                types if isinstance(types, tuple) else (types,))),
            type(value).__name__))
    return value


def parse_mac(value, field):
    """Six ASCII hex pairs; ASCII upper case is folded, nothing else."""
    if (not isinstance(value, str) or not value.isascii()
            or not MAC_RE.fullmatch(value.lower())):
        _fail(field, 'not a MAC address (want xx:xx:xx:xx:xx:xx): %s'
              % exception.show(value))
    mac = value.lower()
    if int(mac[:2], 16) & 1:
        _fail(field, 'a multicast MAC cannot be a NIC address: %s' % mac)
    return mac


def _parse_ip(value, version, field):
    """An address iPXE can parse; ``version`` None takes either family.

    :mod:`ipaddress` also accepts IPv6 zone ids (``fe80::1%eth0``, any
    text after the ``%``) and IPv4-mapped addresses; iPXE's ``set``
    parses neither, so both are refused.
    """
    family = 'IPv%d address' % version if version else 'IP address'
    if not isinstance(value, str):
        _fail(field, 'expected an %s string, got %s'
              % (family, type(value).__name__))
    if not value.isascii() or '%' in value:
        _fail(field, 'not an %s iPXE can use (zone ids and non-ASCII '
              'characters are refused): %s' % (family, exception.show(value)))
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        _fail(field, 'not an IP address: %s' % exception.show(value))
    if version and address.version != version:
        _fail(field, 'expected an IPv%d address, got %s'
              % (version, exception.show(value)))
    if address.version == 6 and address.ipv4_mapped:
        _fail(field, 'an IPv4-mapped address cannot be set in iPXE: %s'
              % exception.show(value))
    return address


def _parse_prefix(netmask, version, field):
    """A netmask in address form, or a prefix length, -> prefix length."""
    bits = 32 if version == 4 else 128
    if isinstance(netmask, int) and not isinstance(netmask, bool):
        if not 0 <= netmask <= bits:
            _fail(field, 'prefix length %s out of range'
                  % exception.show(netmask))
        prefix = netmask
    elif isinstance(netmask, str) and PREFIX_RE.fullmatch(netmask):
        # ASCII digits only: str.isdigit() is also true for "²".
        prefix = int(netmask)
    elif (isinstance(netmask, str) and netmask.isascii()
          and len(netmask) <= 39 and '%' not in netmask):
        # ipaddress parses address-form masks for IPv4 only.
        try:
            mask = ipaddress.ip_address(netmask)
        except ValueError:
            mask = None
        value = int(mask) if mask and mask.version == version else -1
        inverted = ~value & ((1 << bits) - 1)
        if value < 0 or inverted & (inverted + 1):
            _fail(field, 'not a valid IPv%d netmask: %s'
                  % (version, exception.show(netmask)))
        prefix = bits - inverted.bit_length()
    else:
        _fail(field, 'expected a netmask, got %s' % exception.show(netmask))
    if not 0 <= prefix <= bits:
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
    routes = network.get('routes')
    routes = [] if routes is None else _list(routes, field + '.routes',
                                             MAX_ROUTES)
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


def _dns_from(services, field, dns4, dns6, seen):
    """Append new DNS servers; ``seen`` makes the duplicate check O(1)."""
    if services is None:
        return
    for i, service in enumerate(_list(services, field, MAX_SERVICES)):
        sfield = '%s[%d]' % (field, i)
        if not isinstance(service, dict):
            _fail(sfield, 'expected an object')
        if service.get('type') != 'dns':
            continue
        address = _parse_ip(service.get('address'), None,
                            sfield + '.address')
        if address not in seen:
            seen.add(address)
            (dns4 if address.version == 4 else dns6).append(address)


def parse(data, network_names=None):
    """Parse network_data.json (a dict) into a :class:`NetworkConfig`.

    :param network_names: optional {Neutron network UUID: name} so that
        ``[ipxe] menu_network`` can name a network (the JSON has no names).
    """
    if not isinstance(data, dict):
        _fail('network_data', 'expected a JSON object')
    check_shape(data)
    network_names = network_names or {}
    links = _list(_get(data, 'links', 'network_data', list),
                  'network_data.links', MAX_LINKS)
    networks = _list(_get(data, 'networks', 'network_data', list,
                          required=False) or [],
                     'network_data.networks', MAX_NETWORKS)

    nics = {}
    macs = set()
    skipped_links = set()
    for i, link in enumerate(links):
        field = 'links[%d]' % i
        if not isinstance(link, dict):
            _fail(field, 'expected an object')
        link_id = _get(link, 'id', field, str)
        if link_id in nics or link_id in skipped_links:
            _fail(field + '.id',
                  'duplicate link id %s' % exception.show(link_id))
        link_type = link.get('type', 'phy')
        if link_type in UNSUPPORTED_LINK_TYPES:
            LOG.warning('%s: %s link %s cannot be configured by iPXE; '
                        'skipped', field, link_type, exception.show(link_id))
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
                      '%s' % exception.show(mtu))
        nics[link_id] = Nic(link_id=link_id, mac=mac, mtu=mtu)

    dns4, dns6, seen_dns = [], [], set()
    for i, network in enumerate(networks):
        field = 'networks[%d]' % i
        if not isinstance(network, dict):
            _fail(field, 'expected an object')
        link_id = _get(network, 'link', field, str)
        if link_id in skipped_links:
            continue
        nic = nics.get(link_id)
        if nic is None:
            _fail(field + '.link',
                  'no link with id %s' % exception.show(link_id))
        net_type = _get(network, 'type', field, str)
        if net_type not in NETWORK_TYPES:
            _fail(field + '.type', 'unknown network type %s (known: %s)'
                  % (exception.show(net_type), ', '.join(NETWORK_TYPES)))
        network_id = _get(network, 'network_id', field, str,
                          required=False)
        if network_id:
            nic.network_ids.append(network_id)
            if network_id in network_names:
                nic.network_names.append(network_names[network_id])
        _dns_from(network.get('services'), field + '.services', dns4, dns6,
                  seen_dns)

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

    _dns_from(data.get('services'), 'services', dns4, dns6, seen_dns)
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
            network=menu_network,
            present=', '.join(map(exception.show, present)) or 'none')
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
