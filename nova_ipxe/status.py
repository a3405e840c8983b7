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

"""``nova-ipxe-status upgrade check``: is this compute host ready?

OpenStack's ``*-status`` command (oslo.upgradecheck), run on each compute
host after its packages were upgraded and before nova-compute restarts,
as the user nova-compute runs as::

    nova-ipxe-status --config-file /etc/nova/nova.conf upgrade check

Exit status as every ``*-status upgrade check``: 0 all checks passed, 1
a warning (read it; the upgrade may go on), 2 a failure (fix it first),
255 the command itself failed.  ``--json`` prints the results as JSON.

It reads the configuration files (``[ipxe]``, and the few Nova options
it needs, read raw from the files: Nova is never imported) and the
installed Nova's version from its package metadata.
"""

import os
import sys

from oslo_config import cfg
from oslo_upgradecheck import upgradecheck

from nova_ipxe import builder
from nova_ipxe import conf as ipxe_conf
from nova_ipxe import exception
from nova_ipxe.virt import release

CONF = ipxe_conf.CONF
Code = upgradecheck.Code
Result = upgradecheck.Result
# Shorter keys pass the build's own check but are weak for HMAC-SHA256.
RECOMMENDED_SIGNING_KEY = 32
# [libvirt] images_type values the iPXE layout works on (file backends).
FILE_BACKENDS = ('default', 'qcow2', 'flat', 'raw')


def file_values(conf):
    """{(section, name): value} as the configuration files set them.

    The last file wins, as in oslo.config.  For options nova-ipxe does
    not register (Nova's) and to tell a deprecated name in use.
    """
    paths = list(conf.config_file or [])
    for directory in conf.config_dir and [conf.config_dir] or []:
        paths += sorted(os.path.join(directory, n)
                        for n in os.listdir(directory)
                        if n.endswith('.conf'))
    values = {}
    for path in paths:
        sections = {}
        cfg.ConfigParser(path, sections).parse()
        for section, opts in sections.items():
            for name, value in opts.items():
                values[(section, name)] = value[-1]
    return values


class Checks(upgradecheck.UpgradeCommands):
    """The checks, in the order they are printed."""

    def __init__(self, conf=CONF, nova_version=None):
        self.conf = conf
        self._nova_version = nova_version

    def _values(self):
        return file_values(self.conf)

    def _compute_driver(self):
        return self._values().get(('DEFAULT', 'compute_driver'))

    def _check_nova_release(self):
        version = self._nova_version or release.nova_version()
        if version is None:
            return Result(Code.WARNING, 'Nova is not installed in this '
                          'Python environment: run nova-ipxe-status where '
                          'nova-compute runs.')
        if release.major(version) == release.XENAPI_RELEASE:
            return Result(Code.SUCCESS, '%s: ipxe.XenAPIDriver only '
                          '(ipxe.LibvirtDriver supports %s).'
                          % (release.describe(version), release.supported()))
        try:
            tested, message = release.check(
                version, self.conf.ipxe.allow_untested_nova)
        except release.UntestedNova as e:
            return Result(Code.FAILURE, '%s; nova-compute will refuse to '
                          'start.' % e)
        return Result(Code.SUCCESS if tested else Code.WARNING,
                      message + '.')

    def _check_options(self):
        """Deprecated option names and obsolete options set in the files."""
        values = self._values()
        found = []
        for group, opts in ipxe_conf.list_opts():
            group = getattr(group, 'name', group)
            for opt in opts:
                for old in opt.deprecated_opts:
                    key = (old.group or group, old.name or opt.name)
                    if key in values:
                        found.append('[%s] %s is deprecated: use [%s] %s'
                                     % (key + (group, opt.name)))
                if opt.deprecated_for_removal and (group, opt.name) in values:
                    found.append('[%s] %s is obsolete and ignored: remove '
                                 'it' % (group, opt.name))
        if not found:
            return Result(Code.SUCCESS, 'No deprecated or obsolete nova-ipxe '
                          'option is set.')
        return Result(Code.WARNING, '; '.join(found) + '.')

    def _check_menu(self):
        try:
            url = builder.configured_menu_url(self.conf)
        except exception.NovaIpxeError as e:
            return Result(Code.FAILURE, str(e))
        if url:
            return Result(Code.SUCCESS, '[ipxe] boot_menu_url is set.')
        if self.conf.ipxe.allow_menu_url_override:
            return Result(Code.WARNING, '[ipxe] boot_menu_url is not set: '
                          'only images or servers with an '
                          'ipxe_boot_menu_url of their own can boot.')
        return Result(Code.FAILURE, '[ipxe] boot_menu_url is not set and '
                      'overrides are not allowed: every iPXE boot fails.')

    def _check_signing_key(self):
        opts = self.conf.ipxe
        key = opts.menu_signing_key
        if not key:
            return Result(Code.SUCCESS, 'No [ipxe] menu_signing_key: menu '
                          'URLs are not signed.')
        if not opts.menu_identity:
            return Result(Code.FAILURE, '[ipxe] menu_signing_key signs the '
                          'identity: it needs menu_identity = true, or '
                          'every iPXE boot fails.')
        if len(key) < builder.MIN_SIGNING_KEY:
            return Result(Code.FAILURE, '[ipxe] menu_signing_key has %d '
                          'characters; at least %d are required, or every '
                          'iPXE boot fails.' % (len(key),
                                                builder.MIN_SIGNING_KEY))
        if len(key) < RECOMMENDED_SIGNING_KEY:
            return Result(Code.WARNING, '[ipxe] menu_signing_key has %d '
                          'characters; use at least %d random ones for '
                          'HMAC-SHA256.' % (len(key),
                                            RECOMMENDED_SIGNING_KEY))
        return Result(Code.SUCCESS, '[ipxe] menu_signing_key has %d '
                      'characters (key id %s).'
                      % (len(key), opts.menu_signing_key_id))

    def _cache_dir(self):
        if self.conf.ipxe.cache_dir:
            return self.conf.ipxe.cache_dir
        state_path = self._values().get(('DEFAULT', 'state_path'),
                                        '/var/lib/nova')
        return os.path.join(state_path, 'ipxe', 'base')

    def _check_cache_dir(self):
        path = self._cache_dir()
        who = 'user %d' % os.geteuid()
        if os.path.lexists(path):
            if not os.path.isdir(path):
                return Result(Code.FAILURE, 'The base-ISO cache %s ([ipxe] '
                              'cache_dir) is not a directory.' % path)
            if not os.access(path, os.W_OK | os.X_OK):
                return Result(Code.FAILURE, 'The base-ISO cache %s ([ipxe] '
                              'cache_dir) is not writable by %s.'
                              % (path, who))
            return Result(Code.SUCCESS, 'The base-ISO cache %s is writable '
                          'by %s.' % (path, who))
        parent = os.path.dirname(os.path.abspath(path))
        while not os.path.lexists(parent):
            parent = os.path.dirname(parent)
        if os.path.isdir(parent) and os.access(parent, os.W_OK | os.X_OK):
            return Result(Code.SUCCESS, 'The base-ISO cache %s does not '
                          'exist yet; %s can create it.' % (path, who))
        return Result(Code.FAILURE, 'The base-ISO cache %s ([ipxe] '
                      'cache_dir) does not exist and %s cannot create it '
                      'in %s.' % (path, who, parent))

    def _check_image_backend(self):
        driver = self._compute_driver()
        if driver != 'ipxe.LibvirtDriver':
            return Result(Code.SUCCESS, 'compute_driver is %s: no libvirt '
                          'image backend check.' % driver)
        images_type = self._values().get(('libvirt', 'images_type'),
                                         'default')
        if images_type not in FILE_BACKENDS:
            return Result(Code.FAILURE, '[libvirt] images_type = %s: iPXE '
                          'ISO boot needs a file-based image backend (%s); '
                          'every iPXE boot fails.'
                          % (images_type, ', '.join(FILE_BACKENDS)))
        return Result(Code.SUCCESS, '[libvirt] images_type = %s.'
                      % images_type)

    def _check_compute_driver(self):
        driver = self._compute_driver()
        if driver in ('ipxe.LibvirtDriver', 'ipxe.XenAPIDriver'):
            return Result(Code.SUCCESS, 'compute_driver = %s.' % driver)
        return Result(Code.WARNING, 'compute_driver is %s, not an ipxe '
                      'driver: nova-ipxe is installed but not in use (or '
                      'this is not the compute host\'s configuration).'
                      % driver)

    _upgrade_checks = (
        ('Nova release', _check_nova_release),
        ('Compute driver', _check_compute_driver),
        ('Deprecated and obsolete options', _check_options),
        ('Boot menu URL', _check_menu),
        ('Menu signing key', _check_signing_key),
        ('Base-ISO cache directory', _check_cache_dir),
        ('Image backend', _check_image_backend),
    )


def main(argv=None, conf=CONF):
    # nova.conf is where a compute host keeps the [ipxe] options.
    return upgradecheck.main(
        conf, project='nova-ipxe', upgrade_command=Checks(conf),
        argv=sys.argv[1:] if argv is None else argv,
        default_config_files=cfg.find_config_files(project='nova'))


if __name__ == '__main__':
    sys.exit(main())
