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

"""The ``[ipxe]`` options, and ``[ipxe_glance]`` for the command.

The 2013 XenAPI feature used ``[xenserver] ipxe_boot_menu_url``,
``ipxe_network_name`` and ``ipxe_mkisofs_cmd``; the first two are accepted
as deprecated aliases, the last is accepted, ignored and reported.  The
command's Glance options were ``[ipxe] glance_*`` before they moved to
``[ipxe_glance]``; the old names still work, deprecated.
"""

import typing

from oslo_config import cfg
from oslo_log import log as logging

LOG = logging.getLogger(__name__)

GROUP = cfg.OptGroup(
    'ipxe', title='iPXE boot ISO options',
    help='Options for booting instances from an iPXE ISO with an injected, '
         'instance-specific static network script (nova-ipxe).')

MiB = 1024 * 1024

ipxe_opts = [
    cfg.StrOpt('boot_menu_url',
               deprecated_opts=[cfg.DeprecatedOpt('ipxe_boot_menu_url',
                                                  group='xenserver')],
               help='URL of the boot menu (an iPXE script) that every '
                    'instance chains once its network is up, for example '
                    'http://boot.example.org/menu.ipxe. May use iPXE '
                    'settings, written $${name} in this file because '
                    'oslo.config substitutes ${name} (for example '
                    '?mac=$${net0/mac}). Required to build a per-instance '
                    'ISO.'),
    cfg.StrOpt('menu_network',
               deprecated_opts=[cfg.DeprecatedOpt('ipxe_network_name',
                                                  group='xenserver')],
               help='Neutron network name or UUID whose NIC chains the '
                    'boot menu. Default: the NIC holding the IPv4 default '
                    'route, else the one holding the IPv6 default route.'),
    cfg.IntOpt('chain_retries', default=3, min=1, max=100,
               help='How many times to try fetching the boot menu before '
                    'running on_chain_failure.'),
    cfg.IntOpt('chain_timeout', default=30, min=1, max=3600,
               help='Seconds to wait for each attempt to fetch the boot '
                    'menu.'),
    cfg.IntOpt('chain_retry_delay', default=2, min=0, max=300,
               help='Seconds to wait between two attempts to fetch the boot '
                    'menu.'),
    cfg.StrOpt('on_chain_failure', default='disk',
               choices=[('disk', 'boot the first local disk (BIOS) or '
                                 'return to the firmware (UEFI)'),
                        ('shell', 'drop to the iPXE shell on the console'),
                        ('reboot', 'reboot the instance')],
               help='What the instance does when the boot menu cannot be '
                    'fetched.'),
    cfg.StrOpt('uefi', default='auto',
               choices=[('auto', 'inject the script for UEFI when the ISO\'s '
                                 'EFI iPXE can run it, else drop the UEFI '
                                 'boot entry with a warning'),
                        ('off', 'always drop the UEFI boot entry'),
                        ('require', 'fail when the ISO cannot boot UEFI '
                                    'with the script')],
               help='UEFI handling of the regenerated ISO. Never leaves a '
                    'stock, script-less UEFI iPXE in the ISO.'),
    cfg.IntOpt('max_iso_size', default=64 * MiB, min=MiB,
               help='Largest source iPXE ISO, in bytes, that nova-ipxe '
                    'accepts.'),
    cfg.IntOpt('parsed_iso_memory', default=256 * MiB, min=0,
               help='Bytes of parsed source ISOs (their bytes and build '
                    'templates) a compute service keeps in memory between '
                    'builds, so that the next spawn from the same image '
                    'skips the parse; least recently used ones go beyond '
                    'it. The same ISO uploaded as several images is kept '
                    'once. 0 keeps none.'),
    cfg.BoolOpt('menu_identity', default=True,
                help='Append the instance identity (uuid, hostname, mac, '
                     'ip) as query parameters to the boot menu URL so a '
                     'menu server can tell instances apart.'),
    cfg.StrOpt('menu_signing_key', secret=True,
               help='Key shared with the menu server (at least 16 '
                    'characters). When set, the chain URL carries ts, kid '
                    'and sig query parameters: an HMAC-SHA256 over the '
                    'menu URL path and the identity (uuid, hostname, mac, '
                    'ip) that the menu server can verify with '
                    'nova_ipxe.signature.verify. The key never goes into '
                    'the ISO. Needs menu_identity.'),
    cfg.StrOpt('menu_signing_key_id', default='1',
               regex=r'^[A-Za-z0-9._-]{1,64}$',
               help='Key id sent as kid with the signature, so that a menu '
                    'server can accept an old and a new key during '
                    'rotation.'),
    cfg.BoolOpt('allow_menu_url_override', default=True,
                help='Honour a per-image property or per-server metadata '
                     'key ipxe_boot_menu_url. Such URLs are tenant input: '
                     'they must be plain http(s) URLs and may not use iPXE '
                     'settings.'),
    cfg.StrOpt('dhcp_subnets', default='static',
               choices=[('static', 'configure the port\'s fixed IPs '
                                   'statically even on subnets that run '
                                   'DHCP (Nova knows the addresses)'),
                        ('dhcp', 'let iPXE ask DHCP on IPv4 subnets that '
                                 'have DHCP enabled, as the metadata '
                                 'service\'s network_data.json says')],
               help='How the Nova drivers configure a NIC whose IPv4 '
                    'subnet has DHCP enabled. IPv6 addresses are always '
                    'set statically.'),
    cfg.StrOpt('on_build_failure', default='fail',
               choices=[('fail', 'fail the boot with the error'),
                        ('stock', 'log the error and boot the unmodified '
                                  'ISO (the VM will then need DHCP or '
                                  'console typing)')],
               help='What to do when the per-instance ISO cannot be built '
                    'for a new server (boot, rebuild, rescue). On a reboot '
                    'or a move of an existing server the Nova drivers keep '
                    'the ISO built before (or boot the server\'s disk when '
                    'there is none) and log the error, since a failed reboot '
                    'leaves the server in ERROR, where its tenant can no '
                    'longer change the metadata at fault.'),
    cfg.BoolOpt('allow_untested_nova', default=False,
                help='Start ipxe.LibvirtDriver on a Nova major release it '
                     'was not tested with (it logs a warning). By default '
                     'nova-compute refuses to start there, naming the '
                     'supported releases (nova-ipxe-status upgrade check '
                     'reports it before an upgrade).'),
]

GLANCE_GROUP = cfg.OptGroup(
    'ipxe_glance', title='Glance access of the nova-ipxe command',
    help='How the nova-ipxe command reaches Glance. The Nova drivers use '
         'Nova\'s own [glance] endpoint, TLS settings and the request\'s '
         'token instead; these options do not belong in nova.conf.')


def _was_ipxe(name):
    # Documented as [ipxe] glance_<name> until the group existed.
    return [cfg.DeprecatedOpt('glance_' + name, group=GROUP.name)]


glance_opts = [
    cfg.URIOpt('url', schemes=['http', 'https'],
               deprecated_opts=_was_ipxe('url'),
               help='Glance endpoint, for example http://glance:9292.'),
    cfg.StrOpt('ca_file', deprecated_opts=_was_ipxe('ca_file'),
               help='CA bundle to verify Glance\'s TLS certificate.'),
    cfg.BoolOpt('insecure', default=False,
                deprecated_opts=_was_ipxe('insecure'),
                help='Do not verify Glance\'s TLS certificate (testing '
                     'only).'),
    cfg.IntOpt('connect_timeout', default=10, min=1,
               deprecated_opts=_was_ipxe('connect_timeout'),
               help='Seconds to wait for a connection to Glance.'),
    cfg.IntOpt('read_timeout', default=60, min=1,
               deprecated_opts=_was_ipxe('read_timeout'),
               help='Seconds to wait for data from Glance before the '
                    'attempt counts as failed.'),
    cfg.IntOpt('retries', default=3, min=0, max=20,
               deprecated_opts=_was_ipxe('retries'),
               help='Retries after a connection error, a timeout, an HTTP '
                    '5xx or a broken download, all counted together: a '
                    'request makes at most retries + 1 attempts (downloads '
                    'resume where they broke).'),
    cfg.FloatOpt('retry_delay', default=1.0, min=0,
                 deprecated_opts=_was_ipxe('retry_delay'),
                 help='Seconds before the first retry; doubled each time, '
                      'at most 30.'),
    cfg.IntOpt('download_timeout', default=300, min=1,
               help='Seconds one download (or one image record) may take '
                    'in all, retries included, however slowly the bytes '
                    'arrive: at the deadline its connection is shut '
                    'down.'),
]

# The cache lives on the compute host: the XenAPI driver uses these too.
cache_opts = [
    cfg.StrOpt('cache_dir',
               help='Directory of the verified base-ISO cache: one copy '
                    'per image and hash, shared by every instance on the '
                    'host. Default: $state_path/ipxe/base inside Nova, '
                    '/var/cache/nova-ipxe for the nova-ipxe command. Only '
                    'files the cache made are ever evicted from it.'),
    cfg.IntOpt('cache_max_size', default=1024 * MiB, min=0,
               help='Bytes the base-ISO cache may hold; least recently '
                    'used entries not in use are evicted beyond it.'),
    cfg.IntOpt('cache_max_age', default=7 * 24 * 3600, min=0,
               help='Seconds an unused cache entry is kept (0: no age '
                    'limit).'),
    cfg.IntOpt('cache_lock_timeout', default=600, min=1,
               help='Seconds a build waits while another one fetches the '
                    'same image into the cache before it fails. Keep it '
                    'above the time a download may take.'),
]

xenapi_opts = [
    cfg.StrOpt('xenapi_sr',
               help='XenServer/XCP-ng storage repository (name label or '
                    'UUID) that holds the per-instance ISO VDIs. Default: '
                    'the pool\'s default SR.'),
    cfg.StrOpt('xenapi_ca_file',
               help='CA bundle to verify XAPI\'s TLS certificate when the '
                    'ISO is uploaded over https (import_raw_vdi).'),
    cfg.BoolOpt('xenapi_insecure', default=False,
                help='Do not verify XAPI\'s TLS certificate for the ISO '
                     'upload (testing only).'),
    cfg.IntOpt('xenapi_upload_timeout', default=120, min=1, max=3600,
               help='Seconds to wait for XAPI during the ISO upload and '
                    'for its import task to finish.'),
]

xenserver_legacy_opts = [
    cfg.StrOpt('ipxe_mkisofs_cmd',
               deprecated_for_removal=True,
               deprecated_reason='nova-ipxe builds ISOs in-process and '
                                 'never runs mkisofs; this option is '
                                 'ignored.',
               help='Obsolete. Accepted for compatibility with 2013 '
                    'configurations and ignored.'),
]


def register_opts(conf: cfg.ConfigOpts) -> None:
    # A fresh OptGroup per ConfigOpts: oslo.config keeps overrides in the
    # group object, which must not be shared between configurations.
    conf.register_group(cfg.OptGroup(GROUP.name, title=GROUP.title,
                                     help=GROUP.help))
    conf.register_opts(ipxe_opts + cache_opts + xenapi_opts,
                       group=GROUP.name)
    conf.register_group(cfg.OptGroup(GLANCE_GROUP.name,
                                     title=GLANCE_GROUP.title,
                                     help=GLANCE_GROUP.help))
    conf.register_opts(glance_opts, group=GLANCE_GROUP.name)
    # Nova 21 registers its own [xenserver] ipxe_mkisofs_cmd; in that
    # process the option already exists and is read from there.
    for opt in xenserver_legacy_opts:
        try:
            conf.register_opt(opt, group='xenserver')
        except cfg.DuplicateOptError:
            LOG.debug('[xenserver] %s is registered by Nova', opt.name)


def report_obsolete(conf: cfg.ConfigOpts) -> typing.List[str]:
    """Log options that are accepted but have no effect any more."""
    if conf.xenserver.ipxe_mkisofs_cmd:
        LOG.warning('[xenserver] ipxe_mkisofs_cmd = %s is obsolete and '
                    'ignored: nova-ipxe builds ISOs in-process. Remove it '
                    'from the configuration.',
                    conf.xenserver.ipxe_mkisofs_cmd)
        return ['xenserver.ipxe_mkisofs_cmd']
    return []


def list_opts() -> typing.List[
        typing.Tuple[typing.Union[cfg.OptGroup, str], typing.List[cfg.Opt]]]:
    return [(GROUP, ipxe_opts + cache_opts + xenapi_opts),
            (GLANCE_GROUP, glance_opts),
            ('xenserver', xenserver_legacy_opts)]


CONF = cfg.CONF
register_opts(CONF)
