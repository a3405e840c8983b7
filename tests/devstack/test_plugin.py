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

"""devstack/plugin.sh run phase by phase under bash, as devstack runs it.

devstack's functions are stand-ins (tests/devstack/fakes.sh) that record
their calls and keep nova.conf and the cloud's images, networks and
routers in files; what each phase leaves there is checked with the real
parts where they run here: nova.conf is read by oslo.config with nova-ipxe's
options, the image properties go through the core's iPXE-image rule, the
uploaded file is parsed as an iPXE ISO, and the shim is imported through
the link the plugin makes in a Nova source tree.
"""

import glob
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys

from oslo_config import cfg

from nova_ipxe import builder
from nova_ipxe import conf as ipxe_conf
from nova_ipxe import image
from nova_ipxe import menuurl
from nova_ipxe.virt import release
from tests import base
from tests import samples
from tests.unit import ipxe_syntax

HERE = os.path.dirname(os.path.abspath(__file__))
RUN_PHASE = os.path.join(HERE, 'run-phase.sh')
PLUGIN_FILES = [os.path.join(samples.REPO, 'devstack', 'plugin.sh'),
                os.path.join(samples.REPO, 'devstack', 'settings')]
MENU = os.path.join(samples.REPO, 'devstack', 'files', 'menu.ipxe')

# nova.conf as devstack's configure_nova leaves it before post-config.
NOVA_CONF = '''[DEFAULT]
compute_driver = libvirt.LibvirtDriver
my_ip = 192.0.2.10
state_path = /opt/stack/data/nova

[libvirt]
virt_type = qemu
'''


class PluginTestCase(base.TestCase):

    def setUp(self):
        super().setUp()
        root = self.tmp
        self.dest = os.path.join(root, 'opt', 'stack')
        self.data_dir = os.path.join(self.dest, 'data')
        os.makedirs(self.data_dir)
        # enable_plugin clones this repository to $DEST/nova-ipxe.
        os.symlink(samples.REPO, os.path.join(self.dest, 'nova-ipxe'))
        # devstack's Nova checkout: nova is a regular package.
        self.nova_src = os.path.join(self.dest, 'nova')
        self.nova_virt = os.path.join(self.nova_src, 'nova', 'virt')
        os.makedirs(self.nova_virt)
        for d in ('nova', 'nova/virt'):
            open(os.path.join(self.nova_src, d, '__init__.py'), 'w').close()
        # ...with its metadata, as its editable install leaves it.
        self.nova_release('34.0.0')
        etc = os.path.join(root, 'etc', 'nova')
        os.makedirs(etc)
        self.nova_conf = os.path.join(etc, 'nova.conf')
        self.nova_cpu_conf = os.path.join(etc, 'nova-cpu.conf')
        with open(self.nova_conf, 'w') as f:
            f.write(NOVA_CONF)
        self.fake_root = os.path.join(root, 'fake')
        os.makedirs(os.path.join(self.fake_root, 'apache',
                                 'sites-available'))
        self.calls_file = os.path.join(root, 'calls')
        self.cloud_file = os.path.join(root, 'cloud.json')
        self.save_cloud({'images': [], 'networks': [], 'subnets': [],
                         'routers': [{'id': 'r-1', 'name': 'router1',
                                      'subnets': []}]})
        self.env = {
            'PATH': os.environ['PATH'],
            'HOME': root,
            'PYTHONDONTWRITEBYTECODE': '1',
            'NIPXE_FAKES_PYTHON': sys.executable,
            'NIPXE_CALLS': self.calls_file,
            'NIPXE_FAKE_CLOUD': self.cloud_file,
            'NIPXE_FAKE_ROOT': self.fake_root,
            # Nova's tree on the interpreter's path, as devstack's venv has
            # it through its editable install.
            'PYTHONPATH': self.nova_src,
            'DEST': self.dest,
            'DATA_DIR': self.data_dir,
            'NOVA_CONF': self.nova_conf,
            'NOVA_CPU_CONF': self.nova_cpu_conf,
            'PYTHON': sys.executable,
            'SERVICE_HOST': '192.0.2.10',
            'REGION_NAME': 'RegionOne',
            'VIRT_DRIVER': 'libvirt',
            'ENABLED_SERVICES': 'key,n-api,n-cpu,g-api,q-svc,q-l3',
            'DISABLED_SERVICES': '',
        }

    # -- helpers ----------------------------------------------------------

    def nova_release(self, version):
        for old in glob.glob(os.path.join(self.nova_src, 'nova-*.dist-info')):
            shutil.rmtree(old)
        info = os.path.join(self.nova_src, 'nova-%s.dist-info' % version)
        os.mkdir(info)
        with open(os.path.join(info, 'METADATA'), 'w') as f:
            f.write('Metadata-Version: 2.1\nName: nova\nVersion: %s\n'
                    % version)

    def save_cloud(self, state):
        with open(self.cloud_file, 'w') as f:
            json.dump(state, f)

    def cloud(self):
        with open(self.cloud_file) as f:
            return json.load(f)

    def run_phase(self, mode, check=True, **localrc):
        env = dict(self.env, **localrc)
        proc = subprocess.run(['bash', RUN_PHASE, mode], env=env,
                              capture_output=True, text=True, timeout=120)
        if check and proc.returncode:
            self.fail('%s failed (%d):\n%s\n%s' % (
                mode, proc.returncode, proc.stdout, proc.stderr[-4000:]))
        return proc

    def calls(self, name=None):
        if not os.path.exists(self.calls_file):
            return []
        with open(self.calls_file) as f:
            calls = [shlex.split(line) for line in f if line.strip()]
        return [c for c in calls if name is None or c[0] == name]

    def reset_calls(self):
        if os.path.exists(self.calls_file):
            os.unlink(self.calls_file)

    def read_nova_conf(self, path):
        """``path`` read by oslo.config with nova-ipxe's options."""
        conf = cfg.ConfigOpts()
        ipxe_conf.register_opts(conf)
        conf.register_opt(cfg.StrOpt('compute_driver'))
        conf(['--config-file', path], default_config_files=[])
        return conf

    def start_nova_compute(self):
        # devstack's start_nova_compute: nova-cpu.conf starts as a copy.
        shutil.copy(self.nova_conf, self.nova_cpu_conf)

    def assert_undone(self):
        cloud = self.cloud()
        self.assertEqual([], cloud['images'])
        self.assertEqual([], cloud['networks'])
        self.assertEqual([], cloud['subnets'])
        self.assertEqual([], cloud['routers'][0]['subnets'])
        for path in (self.nova_conf, self.nova_cpu_conf):
            conf = self.read_nova_conf(path)
            self.assertEqual('libvirt.LibvirtDriver', conf.compute_driver)
            self.assertIsNone(conf.ipxe.boot_menu_url)
            with open(path) as f:
                self.assertNotIn('ipxe.', f.read())
        self.assertEqual([], glob.glob(os.path.join(self.fake_root, 'apache',
                                                    '*', '*')))


class TestStack(PluginTestCase):

    def test_nova_conf(self):
        self.run_phase('stack')
        conf = self.read_nova_conf(self.nova_conf)
        self.assertEqual('ipxe.LibvirtDriver', conf.compute_driver)
        url = builder.configured_menu_url(conf)
        self.assertEqual('http://192.0.2.10/nova-ipxe/menu.ipxe', url)
        menuurl.operator_url(url)   # the core accepts it
        # Only boot_menu_url is written by default: the rest keep
        # nova-ipxe's defaults.
        self.assertEqual(['boot_menu_url'],
                         [c[3] for c in self.calls('iniset')
                          if c[2] == 'ipxe'])
        self.assertEqual('disk', conf.ipxe.on_chain_failure)
        # devstack's other settings are kept.
        with open(self.nova_conf) as f:
            text = f.read()
        self.assertIn('virt_type = qemu', text)
        self.assertIn('my_ip = 192.0.2.10', text)

    def test_installs_into_devstack_python_and_nova_tree(self):
        self.run_phase('stack')
        self.assertEqual([['setup_develop',
                           os.path.join(self.dest, 'nova-ipxe')]],
                         self.calls('setup_develop'))
        self.assertEqual([['install_package', 'ipxe']],
                         self.calls('install_package'))
        # The shim is importable from Nova's own package, as nova-compute
        # imports it, and exposes both drivers.
        link = os.path.join(self.nova_virt, 'ipxe')
        self.assertTrue(os.path.islink(link))
        out = subprocess.run(
            [sys.executable, '-c',
             'import nova.virt.ipxe as m; print(m.__file__); print(dir(m))'],
            env=dict(os.environ, PYTHONPATH=self.nova_src),
            capture_output=True, text=True, check=True).stdout.split('\n')
        self.assertEqual(
            os.path.join(samples.REPO, 'nova', 'virt', 'ipxe', '__init__.py'),
            os.path.realpath(out[0]))
        self.assertEqual("['LibvirtDriver', 'XenAPIDriver']", out[1])

    def test_every_supported_nova_release(self):
        # devstack's stable branches install these; nothing in the plugin
        # depends on which.
        for major, (series, version) in sorted(release.RELEASES.items()):
            self.nova_release(version)
            proc = self.run_phase('stack')
            self.assertIn('ipxe.LibvirtDriver on Nova %s (%s)'
                          % (version, series), proc.stdout)

    def test_refuses_an_untested_nova_naming_the_supported_ones(self):
        self.nova_release('35.0.0')
        proc = self.run_phase('stack', check=False)
        self.assertEqual(1, proc.returncode)
        self.assertIn('not tested with Nova 35.0.0', proc.stderr)
        self.assertIn(release.supported(), proc.stderr)
        with open(self.nova_conf) as f:
            self.assertEqual(NOVA_CONF, f.read())

    def test_untested_nova_allowed(self):
        self.nova_release('35.0.0')
        self.run_phase('stack', NOVA_IPXE_ALLOW_UNTESTED_NOVA='True')
        conf = self.read_nova_conf(self.nova_conf)
        self.assertTrue(conf.ipxe.allow_untested_nova)

    def test_refuses_to_replace_a_foreign_nova_virt_ipxe(self):
        os.mkdir(os.path.join(self.nova_virt, 'ipxe'))
        proc = self.run_phase('stack', check=False)
        self.assertEqual(1, proc.returncode)
        self.assertIn('is not our link', proc.stderr)
        self.assertFalse(os.path.islink(os.path.join(self.nova_virt, 'ipxe')))

    def test_no_nova(self):
        proc = self.run_phase('stack', check=False,
                              PYTHONPATH=os.path.join(self.tmp, 'empty'))
        self.assertEqual(1, proc.returncode)
        self.assertIn('cannot import nova.virt with %s' % sys.executable,
                      proc.stderr)
        with open(self.nova_conf) as f:
            self.assertEqual(NOVA_CONF, f.read())

    def test_image_uploaded(self):
        self.run_phase('stack')
        [img] = self.cloud()['images']
        self.assertEqual('ipxe-boot', img['name'])
        self.assertEqual('devstack-admin', img['cloud'])
        self.assertEqual('iso', img['disk_format'])
        self.assertEqual('bare', img['container_format'])
        self.assertEqual('public', img['visibility'])
        self.assertEqual({'hw_ipxe_boot': 'true'}, img['properties'])
        self.assertTrue(image.is_ipxe_image(img['disk_format'],
                                            img['properties']))
        # The distribution's ISO, whole, and one the core can parse.
        self.assertEqual(samples.bookworm_iso(), img['file'])
        with open(samples.bookworm_iso(), 'rb') as f:
            self.assertEqual(hashlib.sha256(f.read()).hexdigest(),
                             img['sha256'])
        builder.load_base(img['file'], self.conf)

    def test_dhcp_less_network(self):
        self.run_phase('stack')
        cloud = self.cloud()
        [net] = cloud['networks']
        [subnet] = cloud['subnets']
        self.assertEqual(('ipxe-static', 'devstack'),
                         (net['name'], net['cloud']))
        self.assertEqual({
            'name': 'ipxe-static-subnet', 'cloud': 'devstack',
            'network': net['id'], 'ip_version': '4', 'cidr': '10.4.56.0/24',
            'gateway': '10.4.56.1', 'enable_dhcp': False,
            'dns_nameservers': []},
            {k: v for k, v in subnet.items() if k != 'id'})
        # On devstack's router, so the guests reach the menu on Apache.
        self.assertEqual([subnet['id']], cloud['routers'][0]['subnets'])

    def test_demo_menu_served(self):
        self.run_phase('stack')
        site = os.path.join(self.fake_root, 'apache', 'sites-available',
                            'nova-ipxe.conf')
        www = os.path.join(self.data_dir, 'nova-ipxe', 'www')
        with open(site) as f:
            text = f.read()
        self.assertIn('Alias /nova-ipxe %s\n' % www, text)
        self.assertIn('<Directory %s>' % www, text)
        self.assertTrue(os.path.islink(os.path.join(
            self.fake_root, 'apache', 'sites-enabled', 'nova-ipxe.conf')))
        with open(MENU) as a, open(os.path.join(www, 'menu.ipxe')) as b:
            self.assertEqual(a.read(), b.read())
        # Readable by Apache's user, whoever that is.
        self.assertEqual(0o644, os.stat(os.path.join(www, 'menu.ipxe'))
                         .st_mode & 0o777)
        for d in (www, os.path.dirname(www)):
            self.assertEqual(0o755, os.stat(d).st_mode & 0o777)
        names = [c[0] for c in self.calls()]
        self.assertLess(names.index('enable_apache_site'),
                        names.index('restart_apache_server'))

    def test_settings_reach_nova_conf(self):
        self.run_phase('stack', NOVA_IPXE_DEMO_MENU='False',
                       NOVA_IPXE_BOOT_MENU_URL='https://boot.example.org/m'
                                               '?mac=$${net0/mac}',
                       NOVA_IPXE_ON_CHAIN_FAILURE='shell',
                       NOVA_IPXE_ON_BUILD_FAILURE='stock',
                       NOVA_IPXE_UEFI='require',
                       NOVA_IPXE_MENU_NETWORK='ipxe-static',
                       NOVA_IPXE_ALLOW_MENU_URL_OVERRIDE='False',
                       NOVA_IPXE_DHCP_SUBNETS='dhcp',
                       NOVA_IPXE_MENU_SIGNING_KEY='k' * 32,
                       NOVA_IPXE_MENU_SIGNING_KEY_ID='2026-12',
                       NOVA_IPXE_IMAGE_NAME='my-ipxe',
                       NOVA_IPXE_DNS_SERVER='192.0.2.53',
                       NOVA_IPXE_SUBNET_RANGE='198.51.100.0/24',
                       NOVA_IPXE_SUBNET_GATEWAY='198.51.100.1')
        conf = self.read_nova_conf(self.nova_conf)
        # $$ survives: oslo.config hands iPXE its ${net0/mac}.
        self.assertEqual('https://boot.example.org/m?mac=${net0/mac}',
                         conf.ipxe.boot_menu_url)
        self.assertEqual(('shell', 'stock', 'require', 'ipxe-static', False,
                          'dhcp'),
                         (conf.ipxe.on_chain_failure,
                          conf.ipxe.on_build_failure, conf.ipxe.uefi,
                          conf.ipxe.menu_network,
                          conf.ipxe.allow_menu_url_override,
                          conf.ipxe.dhcp_subnets))
        self.assertEqual(('k' * 32, '2026-12'),
                         (conf.ipxe.menu_signing_key,
                          conf.ipxe.menu_signing_key_id))
        cloud = self.cloud()
        self.assertEqual(['my-ipxe'], [i['name'] for i in cloud['images']])
        [subnet] = cloud['subnets']
        self.assertEqual(('198.51.100.0/24', '198.51.100.1', ['192.0.2.53']),
                         (subnet['cidr'], subnet['gateway'],
                          subnet['dns_nameservers']))
        # No demo menu without NOVA_IPXE_DEMO_MENU.
        self.assertEqual([], self.calls('enable_apache_site'))

    def test_ipv6_service_host_bracketed(self):
        self.run_phase('stack', SERVICE_HOST='2001:db8::10')
        conf = self.read_nova_conf(self.nova_conf)
        self.assertEqual('http://[2001:db8::10]/nova-ipxe/menu.ipxe',
                         conf.ipxe.boot_menu_url)
        menuurl.operator_url(conf.ipxe.boot_menu_url)

    def test_choices_can_be_turned_off(self):
        self.run_phase('stack', NOVA_IPXE_UPLOAD_IMAGE='False',
                       NOVA_IPXE_CREATE_NETWORK='no')
        cloud = self.cloud()
        self.assertEqual(([], []), (cloud['images'], cloud['networks']))
        self.assertEqual([], self.calls('openstack'))
        self.assertEqual([], self.calls('install_package'))

    def test_stack_twice_creates_nothing_twice(self):
        self.run_phase('stack')
        self.run_phase('stack')
        cloud = self.cloud()
        self.assertEqual(1, len(cloud['images']))
        self.assertEqual(1, len(cloud['networks']))
        self.assertEqual(1, len(cloud['subnets']))

    def test_no_router(self):
        state = self.cloud()
        state['routers'] = []
        self.save_cloud(state)
        self.run_phase('stack')
        self.assertEqual(1, len(self.cloud()['subnets']))
        [warning] = self.calls('warn')
        self.assertIn('no router router1', warning[1])

    def test_wrong_virt_driver(self):
        proc = self.run_phase('stack', check=False, VIRT_DRIVER='ironic')
        self.assertEqual(1, proc.returncode)
        self.assertIn('nova-ipxe needs VIRT_DRIVER=libvirt '
                      '(VIRT_DRIVER=ironic)', proc.stderr)
        with open(self.nova_conf) as f:
            self.assertEqual(NOVA_CONF, f.read())
        self.assertEqual([], self.cloud()['images'])

    def test_no_menu_url(self):
        proc = self.run_phase('stack', check=False,
                              NOVA_IPXE_DEMO_MENU='False')
        self.assertEqual(1, proc.returncode)
        self.assertIn('set NOVA_IPXE_BOOT_MENU_URL', proc.stderr)
        with open(self.nova_conf) as f:
            self.assertEqual(NOVA_CONF, f.read())

    def test_missing_iso(self):
        proc = self.run_phase('stack', check=False,
                              NOVA_IPXE_ISO=os.path.join(self.tmp, 'no.iso'))
        self.assertEqual(1, proc.returncode)
        self.assertIn('no iPXE ISO at', proc.stderr)
        self.assertEqual([], self.cloud()['images'])

    def test_disabled_service_does_nothing(self):
        self.run_phase('stack', DISABLED_SERVICES='nova-ipxe')
        self.assertEqual([], self.calls())
        with open(self.nova_conf) as f:
            self.assertEqual(NOVA_CONF, f.read())

    def test_fedora_package(self):
        self.run_phase('stack', NIPXE_FAKE_OS='fedora')
        self.assertEqual([['install_package', 'ipxe-bootimgs-x86']],
                         self.calls('install_package'))


class TestUnstackAndClean(PluginTestCase):

    def test_unstack_undoes_stack(self):
        self.run_phase('stack')
        self.start_nova_compute()
        self.run_phase('unstack')
        self.assert_undone()
        # The installation stays until clean.
        self.assertTrue(os.path.islink(os.path.join(self.nova_virt, 'ipxe')))
        self.assertEqual([], self.calls('pip_uninstall'))

    def test_clean_removes_the_installation(self):
        self.run_phase('stack')
        self.start_nova_compute()
        self.reset_calls()
        self.run_phase('clean')
        self.assert_undone()
        self.assertEqual(['__init__.py'], os.listdir(self.nova_virt))
        self.assertEqual([['pip_uninstall', 'nova-ipxe']],
                         self.calls('pip_uninstall'))
        self.assertFalse(os.path.exists(os.path.join(self.data_dir,
                                                     'nova-ipxe')))

    def test_unstack_and_clean_after_nothing(self):
        # A failed or partial stack: nothing to undo, no error.
        self.run_phase('clean')
        self.assertEqual(['__init__.py'], os.listdir(self.nova_virt))
        with open(self.nova_conf) as f:
            self.assertEqual(NOVA_CONF, f.read())

    def test_unstack_keeps_a_network_in_use(self):
        self.run_phase('stack')
        state = self.cloud()
        state['networks'][0]['ports'] = 1
        self.save_cloud(state)
        self.run_phase('unstack')
        cloud = self.cloud()
        self.assertEqual(1, len(cloud['networks']))
        self.assertEqual([], cloud['images'])
        [warning] = self.calls('warn')
        self.assertIn('not deleted (servers still on it?)', warning[1])

    def test_unstack_keeps_another_compute_driver(self):
        self.run_phase('stack')
        # The operator changed compute_driver after stack: not ours to undo.
        with open(self.nova_conf) as f:
            text = f.read()
        with open(self.nova_conf, 'w') as f:
            f.write(text.replace('ipxe.LibvirtDriver', 'fake.FakeDriver'))
        self.run_phase('unstack')
        self.assertEqual('fake.FakeDriver',
                         self.read_nova_conf(self.nova_conf).compute_driver)


class TestFiles(base.TestCase):

    def test_shellcheck(self):
        files = PLUGIN_FILES + sorted(glob.glob(os.path.join(HERE, '*.sh')))
        proc = subprocess.run(
            [samples.require_tool('shellcheck'), '--shell=bash',
             '--external-sources'] + files,
            cwd=samples.REPO, capture_output=True, text=True)
        self.assertEqual(0, proc.returncode, proc.stdout + proc.stderr)

    def test_every_setting_documented(self):
        with open(PLUGIN_FILES[1]) as f:
            settings = set(re.findall(r'^(NOVA_IPXE_\w+)=', f.read(), re.M))
        with open(os.path.join(samples.REPO, 'devstack', 'README.rst')) as f:
            readme = set(re.findall(r'``(NOVA_IPXE_\w+)``', f.read()))
        # NOVA_IPXE_DIR is enable_plugin's clone, not a choice.
        self.assertEqual(settings - {'NOVA_IPXE_DIR'}, readme)
        # Every [ipxe] option the plugin writes has its setting.
        with open(PLUGIN_FILES[0]) as f:
            options = re.search(r'NOVA_IPXE_OPTIONS="([^"]*)"',
                                f.read()).group(1).split()
        self.assertEqual(
            {'NOVA_IPXE_' + o.upper() for o in options},
            {v for v in settings if v[len('NOVA_IPXE_'):].lower()
             in options})
        # ...and is a real [ipxe] option.
        [(group, opts)] = [g for g in ipxe_conf.list_opts()
                           if getattr(g[0], 'name', g[0]) == 'ipxe']
        self.assertLessEqual(set(options), {o.name for o in opts})

    def test_demo_menu_targets(self):
        with open(MENU) as f:
            text = f.read()
        self.assertTrue(text.startswith('#!ipxe\n'))
        labels = {i[1] for i in ipxe_syntax.commands(text)
                  if i[0] == 'label'}
        items = [i[1][1] for i in ipxe_syntax.commands(text)
                 if i[0] == 'cmd' and i[1][:1] == ('item',)
                 and not i[1][1].startswith('--')]
        self.assertEqual(['info', 'disk', 'shell', 'reboot'], items)
        self.assertLessEqual(set(items) | {'start'}, labels)
