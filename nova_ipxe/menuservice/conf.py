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

"""The menu service's options: ``[menu_service]`` and ``[nova]``.

They live in the service's own file (``menu-service.conf``), apart from
nova.conf: the service runs beside Nova, not inside it.
"""

from keystoneauth1 import loading as ks_loading
from oslo_config import cfg

GROUP = cfg.OptGroup(
    'menu_service', title='nova-ipxe menu service',
    help='The service that answers the boot menu request of each '
         'nova-ipxe server with its own profile.')
NOVA_GROUP = cfg.OptGroup(
    'nova', title='Nova API access',
    help='How the menu service reaches the Nova API: a keystoneauth '
         'session with a service user that may read servers and '
         'key pairs and set server metadata (admin, or a role the '
         'policy grants).')

DEBIAN_NETBOOT = ('http://deb.debian.org/debian/dists/bookworm/main/'
                  'installer-amd64/current/images/netboot/'
                  'debian-installer/amd64/')

opts = [
    cfg.DictOpt('signing_keys', default={}, secret=True,
                help='Key id -> key of every signature the service '
                     'accepts ([ipxe] menu_signing_key_id and '
                     'menu_signing_key of the computes). Keep the old key '
                     'here while computes move to a new one. Required.'),
    cfg.IntOpt('max_age', default=86400, min=60,
               help='Seconds a signed identity stays valid after the '
                    'ISO was built (create, rebuild, hard reboot). An '
                    'older one is refused: hard reboot to re-sign.'),
    cfg.IntOpt('max_skew', default=300, min=0, max=3600,
               help='Seconds a signature may be dated ahead of this '
                    'service\'s clock.'),
    cfg.IntOpt('cache_ttl', default=10, min=0, max=3600,
               help='Seconds a server read from Nova is reused (0: ask '
                    'Nova on every request).'),
    cfg.StrOpt('default_menu_url',
               help='The menu chained for a server with no ipxe_profile '
                    '(the "default" profile), for example '
                    'http://boot.example.org/menu.ipxe. Without it the '
                    'default profile boots the local disk.'),
    cfg.StrOpt('public_url',
               help='This service\'s URL as servers reach it, for the '
                    'preseed, key and done URLs (for example '
                    'http://192.0.2.1:8090). Default: the scheme and host '
                    'of each request.'),
    cfg.StrOpt('profiles_dir',
               help='Directory of the operator\'s profiles: NAME.ipxe.j2 '
                    '(the boot script) and optionally NAME.preseed.j2. '
                    'They are added to the built-in ones (default, local, '
                    'debian-12) and replace a built-in one of the same '
                    'name.'),
    cfg.IntOpt('token_ttl', default=6 * 3600, min=60,
               help='Seconds the preseed, key and done URLs handed to an '
                    'installer stay valid (the whole install).'),
    cfg.StrOpt('debian_netboot_url', default=DEBIAN_NETBOOT,
               help='Where the debian-12 profile loads the installer '
                    'from: the directory holding linux and initrd.gz.'),
    cfg.StrOpt('debian_mirror', default='deb.debian.org',
               help='Debian mirror host the installer installs from.'),
    cfg.StrOpt('debian_mirror_directory', default='/debian',
               help='Directory of the Debian archive on the mirror.'),
    cfg.StrOpt('domain', default='localdomain',
               help='Domain name the installed servers get.'),
    cfg.HostAddressOpt('bind_host', default='0.0.0.0',
                       help='Address nova-ipxe-menu listens on (the '
                            'console script; under Apache or uwsgi '
                            'they decide).'),
    cfg.PortOpt('bind_port', default=8090,
                help='Port nova-ipxe-menu listens on.'),
]

METADATA_PROFILE = 'ipxe_profile'
METADATA_BOOT = 'ipxe_boot'


def _fresh(group):
    # ConfigOpts keeps a shallow copy of a registered OptGroup, whose
    # option table would then be shared by every ConfigOpts (overrides
    # included): each registration gets its own group.
    return cfg.OptGroup(group.name, title=group.title, help=group.help)


def register_opts(conf):
    conf.register_group(_fresh(GROUP))
    conf.register_opts(opts, group=GROUP.name)
    conf.register_group(_fresh(NOVA_GROUP))
    ks_loading.register_session_conf_options(conf, NOVA_GROUP.name)
    ks_loading.register_auth_conf_options(conf, NOVA_GROUP.name)
    ks_loading.register_adapter_conf_options(conf, NOVA_GROUP.name)
    conf.set_default('service_type', 'compute', group=NOVA_GROUP.name)
    conf.set_default('valid_interfaces', ['internal', 'public'],
                     group=NOVA_GROUP.name)


def _nova_opts():
    options = (ks_loading.get_session_conf_options() +
               ks_loading.get_adapter_conf_options(include_deprecated=False))
    # The password plugin's options, so that the sample shows them.
    options += ks_loading.get_auth_plugin_conf_options('password')
    options.insert(0, ks_loading.get_auth_common_conf_options()[0])
    seen = set()
    unique = []
    for opt in options:
        if opt.dest not in seen:
            seen.add(opt.dest)
            unique.append(opt)
    return unique


def list_opts():
    return [(GROUP, opts), (NOVA_GROUP, _nova_opts())]
