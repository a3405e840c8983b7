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

"""Nova's ``network_info`` -> the core's input (network_data.json).

Nova's own ``nova.virt.netutils.get_network_metadata()`` writes
network_data.json, but it hides what a DHCP-less boot needs: on a subnet
with DHCP enabled it emits ``ipv4_dhcp`` with no address, and it drops
the MTU when a DHCP server is set.  Nova knows the port's addresses in
``network_info`` itself, so this module converts from there, in the same
format, and by default gives DHCP subnets their static settings too
(``[ipxe] dhcp_subnets = static``); ``dhcp`` keeps Nova's behaviour for
IPv4 and lets iPXE ask the subnet's DHCP server.

``network_info`` is a list of VIFs (``nova.network.model.VIF``, a dict
subclass) or the plain dicts they serialise to; both the libvirt driver
(Nova 34) and the XenAPI driver (Nova 21) hand over that shape, so this
module reads it by key and imports nothing from Nova.  Values are only
moved here; :mod:`nova_ipxe.netdata` validates every one of them.
"""

import ipaddress
import typing

from nova_ipxe import exception

DHCP_STATIC = 'static'
DHCP_ASK = 'dhcp'
DHCP_CHOICES = (DHCP_STATIC, DHCP_ASK)
# More would be an attack or a bug: Nova allows far fewer ports per server.
MAX_VIFS = 64
MAX_SUBNETS = 16
MAX_IPS = 64
MAX_ROUTES = 64
MAX_DNS = 16


def _fail(field, reason):
    raise exception.InvalidNetworkData(field=field, reason=reason)


def _dict(value, field, required=True):
    if value is None and not required:
        return {}
    if not isinstance(value, dict):
        _fail(field, 'expected an object, got %s' % type(value).__name__)
    return value


def _list(value, field, limit):
    if value is None:
        return []
    if not isinstance(value, (list, tuple)):
        _fail(field, 'expected a list, got %s' % type(value).__name__)
    if len(value) > limit:
        _fail(field, '%d entries, at most %d are accepted'
              % (len(value), limit))
    return value


def _address(ip, field, required=False):
    """The ``address`` of a Nova IP object (None for an absent one)."""
    if ip is None and not required:
        return None
    return _dict(ip, field).get('address')


def _first_subnet(subnets, version, field):
    """(field, subnet) of the first subnet of ``version`` with an IP."""
    for s, subnet in enumerate(subnets):
        sfield = '%s.network.subnets[%d]' % (field, s)
        subnet = _dict(subnet, sfield)
        if subnet.get('version') != version:
            continue
        if _list(subnet.get('ips'), sfield + '.ips', MAX_IPS):
            return sfield, subnet
        return None  # Nova too looks no further than the first
    return None


def _netmask(cidr, version, field):
    """A netmask in address form, as get_network_metadata writes it."""
    try:
        network = ipaddress.ip_network(cidr, strict=False)
    except (ValueError, TypeError):
        _fail(field + '.cidr', 'not a network: %r' % (cidr,))
    if network.version != version:
        _fail(field + '.cidr', 'IPv%d subnet %s for an IPv%d address'
              % (network.version, network, version))
    return str(network.netmask)


def _routes(subnet, version, field):
    routes = []
    gateway = _address(subnet.get('gateway'), field + '.gateway')
    if gateway:
        default = '0.0.0.0' if version == 4 else '::'
        routes.append({'network': default, 'netmask': default,
                       'gateway': gateway})
    for i, route in enumerate(_list(subnet.get('routes'), field + '.routes',
                                    MAX_ROUTES)):
        rfield = '%s.routes[%d]' % (field, i)
        route = _dict(route, rfield)
        try:
            network = ipaddress.ip_network(route.get('cidr'), strict=False)
        except (ValueError, TypeError):
            _fail(rfield + '.cidr', 'not a network: %r'
                  % (route.get('cidr'),))
        routes.append({'network': str(network.network_address),
                       'netmask': str(network.netmask),
                       'gateway': _address(route.get('gateway'),
                                           rfield + '.gateway')})
    return routes


def _asks_dhcp(subnet):
    meta = subnet.get('meta') or {}
    return bool(meta.get('enable_dhcp') or meta.get('dhcp_server'))


def network_data(network_info: typing.Any, dhcp: str = DHCP_STATIC
                 ) -> typing.Tuple[typing.Dict[str, typing.Any],
                                   typing.Dict[str, str]]:
    """Convert ``network_info`` into ``(network_data, network_names)``.

    :param dhcp: ``static`` (default): every fixed IP is configured
        statically, DHCP subnets included; ``dhcp``: IPv4 subnets with
        DHCP enabled are left to DHCP (``ipv4_dhcp``), as Nova's
        get_network_metadata() does.  IPv6 addresses are always static:
        iPXE has no DHCPv6 for addresses.
    :returns: the network_data.json dict and ``{network UUID: name}`` for
        ``[ipxe] menu_network``.
    """
    if dhcp not in DHCP_CHOICES:
        raise exception.ConfigError(reason='dhcp_subnets must be one of %s, '
                                           'not %r' % (', '.join(
                                               DHCP_CHOICES), dhcp))
    links: typing.List[typing.Dict[str, typing.Any]] = []
    networks: typing.List[typing.Dict[str, typing.Any]] = []
    services: typing.List[typing.Dict[str, typing.Any]] = []
    names: typing.Dict[str, str] = {}
    dns_seen = set()
    for n, vif in enumerate(_list(network_info, 'network_info', MAX_VIFS)):
        vfield = 'network_info[%d]' % n
        vif = _dict(vif, vfield)
        network = _dict(vif.get('network'), vfield + '.network',
                        required=False)
        subnets = _list(network.get('subnets'), vfield + '.network.subnets',
                        MAX_SUBNETS)
        if not subnets:
            continue  # as Nova: a port without subnets is no link
        # Named and numbered as get_network_metadata() does; the type is
        # always 'phy' (iPXE sees a plain NIC whatever backs it).
        link_id = vif.get('devname') or 'interface%d' % len(links)
        links.append({'id': link_id, 'vif_id': vif.get('id'),
                      'type': 'phy',
                      'mtu': (network.get('meta') or {}).get('mtu'),
                      'ethernet_mac_address': vif.get('address')})
        if network.get('id') and network.get('label'):
            names[network['id']] = network['label']
        for version in (4, 6):
            # As Nova: the first subnet of each family, its first address
            # (iPXE holds one address per family and NIC anyway).
            found = _first_subnet(subnets, version, vfield)
            if found is None:
                continue
            sfield, subnet = found
            dns = []
            for d, dns_ip in enumerate(_list(subnet.get('dns'),
                                             sfield + '.dns', MAX_DNS)):
                address = _address(dns_ip, '%s.dns[%d]' % (sfield, d))
                dns.append({'type': 'dns', 'address': address})
                if address not in dns_seen:
                    dns_seen.add(address)
                    services.append({'type': 'dns', 'address': address})
            address = _address(subnet['ips'][0], sfield + '.ips[0]',
                               required=True)
            entry = {'id': 'network%d' % len(networks), 'link': link_id,
                     'network_id': network.get('id')}
            if version == 4 and dhcp == DHCP_ASK and _asks_dhcp(subnet):
                entry['type'] = 'ipv4_dhcp'
                networks.append(entry)
                continue
            mode = (subnet.get('meta') or {}).get('ipv6_address_mode')
            entry.update({
                'type': 'ipv%d' % version + ('_%s' % mode if mode else ''),
                'ip_address': address,
                'netmask': _netmask(subnet.get('cidr'), version, sfield),
                'routes': _routes(subnet, version, sfield),
                'services': dns,
            })
            networks.append(entry)
    return ({'links': links, 'networks': networks, 'services': services},
            names)
