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

"""NIC configs + menu URL -> a validated, instance-specific iPXE script.

iPXE has no quoting: a line splits on whitespace, a token starting with
``#`` starts a comment, the whole tokens ``||``, ``&&`` and ``;`` are
operators, ``${...}`` expands, a trailing backslash continues the line and
a line starting with ``:`` is a label.  So every value placed into the
template goes through :func:`check_token`: one token, no control
characters, no leading ``#`` or ``:``, no trailing backslash, and no
``${`` unless it is operator configuration.  Values are typed before they
get here (``ipaddress`` objects, normalised MACs, ints, UUIDs).
"""

import dataclasses
import ipaddress
import re
import uuid as uuid_mod

from nova_ipxe import exception

HOSTNAME_LABEL_RE = re.compile(r'[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?')
UUID_RE = re.compile(r'[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-'
                     r'[0-9a-f]{12}')
# What iPXE's inet_aton() and inet6_aton() read: no zone id, no dotted
# IPv4 tail in an IPv6 address.
ADDRESS_RE = {4: re.compile(r'[0-9]{1,3}(\.[0-9]{1,3}){3}'),
              6: re.compile(r'[0-9a-f:]{2,39}')}
OPERATORS = ('||', '&&', ';')
# The name the fetched boot menu gets in iPXE's image list.
MENU_IMAGE = 'nipxe-menu'
# A script is a few hundred bytes per NIC; netdata.MAX_LINKS fully
# configured NICs stay well inside this.
MAX_SCRIPT_BYTES = 128 * 1024


@dataclasses.dataclass(frozen=True)
class Setting:
    """A value that iPXE expands at run time, written by the template."""

    expression: str


@dataclasses.dataclass(frozen=True)
class ChainPolicy:
    retries: int = 3
    timeout: int = 30
    retry_delay: int = 2
    on_failure: str = 'disk'


def check_token(value, what, allow_settings=False):
    """Return ``value`` if it is safe as one iPXE token, else raise."""
    def bad(reason):
        raise exception.InvalidScriptValue(
            what=what, value=exception.show(value, exception.MAX_MESSAGE),
            reason=reason)
    if not isinstance(value, str) or not value:
        bad('empty or not a string')
    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7f
           for ch in value):
        bad('contains whitespace or control characters')
    if value[0] in '#:':
        bad('starts with "%s"' % value[0])
    if value.endswith('\\'):
        bad('ends with a backslash')
    if value in OPERATORS:
        bad('is an iPXE operator')
    if not value.isascii():
        bad('contains non-ASCII characters')
    if '${' in value and not allow_settings:
        bad('contains an iPXE setting expansion "${"')
    if allow_settings and value.count('${') != value.count('}'):
        bad('has an unbalanced "${...}"')
    return value


def check_hostname(hostname):
    """RFC 1123 host name, ASCII only; ``None`` stays ``None``.

    ASCII upper case is lower-cased (host names are case-insensitive);
    nothing else is normalised: a non-ASCII letter is refused, never
    folded (``str.lower()`` maps the Kelvin sign to ``k``), and a
    trailing dot is refused.
    """
    if hostname is None:
        return None
    if (not isinstance(hostname, str) or not hostname.isascii()
            or not hostname or len(hostname) > 253
            or not all(HOSTNAME_LABEL_RE.fullmatch(label)
                       for label in hostname.lower().split('.'))):
        raise exception.InvalidScriptValue(
            what='hostname', value=exception.show(hostname, 80),
            reason='not an RFC 1123 host name (ASCII letters, digits, '
                   'hyphens, dot-separated labels of at most 63 '
                   'characters)')
    return check_token(hostname.lower(), 'hostname')


def check_uuid(value):
    """The canonical hyphenated form only; ASCII upper case is folded.

    ``uuid.UUID()`` also takes braces, ``urn:uuid:``, missing hyphens and
    (through ``int()``) a sign or underscores, turning garbage into some
    other instance's UUID: all refused.
    """
    if value is None:
        return None
    text = str(value) if isinstance(value, uuid_mod.UUID) else value
    if not isinstance(text, str) or not text.isascii() or (
            not UUID_RE.fullmatch(text.lower())):
        raise exception.InvalidScriptValue(
            what='instance UUID', value=exception.show(value, 80),
            reason='not a UUID in canonical form '
                   '(xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)')
    return text.lower()


def _check_address(value):
    """An ``ipaddress`` value as text iPXE parses, else refuse."""
    text = str(value)
    if not ADDRESS_RE[value.version].fullmatch(text):
        raise exception.InvalidScriptValue(
            what='IP address', value=exception.show(text, 80),
            reason='not in a form iPXE can parse')
    return text


class _Writer:
    """Collects lines; every interpolated value passes check_token."""

    def __init__(self):
        self.lines = ['#!ipxe']

    def add(self, template, *values):
        self.lines.append(template % tuple(
            check_token(_check_address(v) if isinstance(
                v, (ipaddress.IPv4Address, ipaddress.IPv6Address))
                else str(v), 'value') for v in values))

    def raw(self, line):
        self.lines.append(line)

    def text(self):
        text = '\n'.join(self.lines) + '\n'
        if len(text) > MAX_SCRIPT_BYTES:
            raise exception.InvalidScriptValue(
                what='the iPXE script',
                value=exception.show('%d bytes' % len(text)),
                reason='longer than %d bytes; the network data has too '
                       'many NICs' % MAX_SCRIPT_BYTES)
        return text


def _configure_nic(w, n, nic, dns, menu=False):
    """Find the NIC with ``nic.mac`` and configure it as ``${nipxe-nicN}``.

    iPXE numbers netdevs in bus order, which need not match the order of
    Nova's ports, so each NIC is looked up by MAC.  ``dns`` (one address
    per family) is also set on each static NIC, so that per-NIC views such
    as ``${netX/dns}`` show it.  The menu NIC is configured last and
    re-opened (``ifopen`` does nothing to an open NIC): ``netX`` names the
    NIC iPXE opened last, and menus read ``${netX/ip}``, ``${netX/mac}``.
    """
    mac = check_token(nic.mac, 'MAC address')
    var = 'nipxe-nic%d' % n
    w.raw('')
    w.add('echo nova-ipxe: looking for NIC %s', mac)
    w.raw('set nipxe-i:int32 0')
    w.raw(':nic%d_find' % n)
    w.raw('isset ${net${nipxe-i}/mac} || goto nic%d_missing' % n)
    w.add('iseq ${net${nipxe-i}/mac} %s && goto nic%s_found ||', mac, n)
    w.raw('inc nipxe-i')
    w.raw('goto nic%d_find' % n)
    w.raw(':nic%d_missing' % n)
    w.add('echo nova-ipxe: no NIC has MAC %s, skipping it', mac)
    w.raw('goto nic%d_end' % n)
    w.raw(':nic%d_found' % n)
    w.raw('set %s net${nipxe-i}' % var)
    ref = '${%s}' % var
    if nic.mtu:
        w.add('set ' + ref + '/mtu %s', int(nic.mtu))
    if nic.ipv4:
        w.add('set ' + ref + '/ip %s', nic.ipv4.ip)
        w.add('set ' + ref + '/netmask %s', nic.ipv4.netmask)
        if nic.gateway4:
            w.add('set ' + ref + '/gateway %s', nic.gateway4)
    if nic.ipv6:
        w.add('set ' + ref + '/ip6 %s', nic.ipv6.ip)
        w.add('set ' + ref + '/len6 %s', int(nic.ipv6.network.prefixlen))
        if nic.gateway6:
            w.add('set ' + ref + '/gateway6 %s', nic.gateway6)
    dns4, dns6 = dns
    if dns4 and nic.ipv4:  # a DHCP NIC gets its own from DHCP
        w.add('set ' + ref + '/dns %s', dns4)
    if dns6 and nic.ipv6:
        w.add('set ' + ref + '/dns6 %s', dns6)
    if menu:
        w.raw('ifclose %s ||' % ref)
    if nic.dhcp4:
        # Only NICs whose subnet has DHCP ever ask for it.
        w.raw('dhcp %s || echo nova-ipxe: DHCP failed on %s' % (ref, ref))
    else:
        w.raw('ifopen %s || echo nova-ipxe: could not open %s' % (ref, ref))
    w.add('echo nova-ipxe: %s configured on ' + ref, mac)
    w.raw(':nic%d_end' % n)


def _fallback(w, on_failure):
    if on_failure == 'shell':
        w.raw('echo nova-ipxe: dropping to the iPXE shell')
        w.raw('shell')
    elif on_failure == 'reboot':
        w.raw('echo nova-ipxe: rebooting')
        w.raw('sleep 1')  # let the console show the message
        w.raw('reboot')
    else:
        w.raw('echo nova-ipxe: booting from the local disk')
        # UEFI: return to the firmware, which tries the next boot entry.
        w.raw('iseq ${platform} efi && exit ||')
        w.raw('sanboot --no-describe --drive 0x80 || exit')
    w.raw('exit')


def render(config, menu_url, menu_nic, instance_uuid=None, hostname=None,
           policy=ChainPolicy()):
    """Render the script.

    :param config: a :class:`nova_ipxe.netdata.NetworkConfig`.
    :param menu_url: the validated URL to chain, identity query included
        (see :mod:`nova_ipxe.menuurl`).
    :param menu_nic: the :class:`~nova_ipxe.netdata.Nic` that chains it.
    """
    instance_uuid = check_uuid(instance_uuid)
    hostname = check_hostname(hostname)
    if policy.on_failure not in ('disk', 'shell', 'reboot'):
        raise exception.ConfigError(reason='on_chain_failure must be disk, '
                                           'shell or reboot')
    w = _Writer()
    w.raw('# Generated by nova-ipxe%s: configure the NICs statically '
          '(never DHCP on' % (
              ' for instance ' + instance_uuid if instance_uuid else ''))
    w.raw('# a static NIC), then chain the boot menu.')
    w.raw('echo nova-ipxe: configuring the network')
    # The menu NIC last, so that netX names it when the menu runs.
    order = [(n, nic) for n, nic in enumerate(config.nics)
             if nic.configured and nic is not menu_nic]
    order += [(n, nic) for n, nic in enumerate(config.nics)
              if nic is menu_nic and nic.configured]
    for n, nic in order:
        _configure_nic(w, n, nic, config.dns, menu=nic is menu_nic)

    w.raw('')
    # The standard settings name the menu NIC, so that a netboot.xyz-style
    # menu hands them to an installer's kernel command line.
    if menu_nic.ipv4:
        w.add('set ip %s', menu_nic.ipv4.ip)
        w.add('set netmask %s', menu_nic.ipv4.netmask)
        if menu_nic.gateway4:
            w.add('set gateway %s', menu_nic.gateway4)
    if menu_nic.ipv6:
        w.add('set ip6 %s', menu_nic.ipv6.ip)
        w.add('set len6 %s', int(menu_nic.ipv6.network.prefixlen))
        if menu_nic.gateway6:
            w.add('set gateway6 %s', menu_nic.gateway6)
    dns4, dns6 = config.dns
    if dns4:
        w.add('set dns %s', dns4)
    if dns6:
        w.add('set dns6 %s', dns6)
    if hostname:
        w.add('set hostname %s', hostname)

    url = check_token(menu_url, 'boot menu URL', allow_settings=True)

    # Only a failed download is retried: imgfetch fails when the menu
    # cannot be fetched, imgexec returns when the menu ran and ended
    # (``exit 0``, or ``exit 1`` for netboot.xyz's "boot from local
    # disk").  A menu that ran is never fetched again; the fallback runs
    # once either way.
    retries = int(policy.retries)
    w.raw('')
    w.raw('set nipxe-try:int32 0')
    w.raw(':menu_fetch')
    w.raw('inc nipxe-try')
    w.add('echo nova-ipxe: fetching the boot menu, try ${nipxe-try} of %s',
          retries)
    w.raw('imgfetch --name %s --timeout %d %s && goto menu_run ||'
          % (MENU_IMAGE, int(policy.timeout) * 1000, url))
    w.add('iseq ${nipxe-try} %s && goto menu_failed ||', retries)
    if policy.retry_delay:
        w.add('sleep %s', int(policy.retry_delay))
    w.raw('goto menu_fetch')
    w.raw(':menu_run')
    w.raw('echo nova-ipxe: running the boot menu')
    w.raw('imgexec --autofree %s || echo nova-ipxe: the boot menu ended '
          'with an error' % MENU_IMAGE)
    w.raw('echo nova-ipxe: the boot menu returned')
    w.raw('goto menu_fallback')
    w.raw(':menu_failed')
    w.add('echo nova-ipxe: no boot menu after %s tries', retries)
    w.raw(':menu_fallback')
    _fallback(w, policy.on_failure)
    return w.text()
