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

"""The 2013 chain, stock and for real: Nova 21.2.4's
``vm_utils.handle_ipxe_iso`` -> os-xenapi 0.3.4's ``inject_ipxe_config``
-> ``XenAPISession.call_plugin_serialized('ipxe.py', 'inject', ...)`` ->
the XAPI stand-in's ``host.call_plugin`` -> our dom0 plugin, and the ISO
it leaves in the SR booted in QEMU.

What this proves about Python 3 (doc/source/contributor/nova.rst): the
plugin does its job, then os-xenapi's ``pickle.loads()`` of the answer
(a str) raises TypeError, so the stock spawn step fails; the "tool
missing" failure is the one path Nova handles (it boots the stock ISO).
"""

import os
import pickle
import shutil
import sys

import fixtures
import nova.conf
from nova.network import model as network_model
from nova.tests import fixtures as nova_fixtures
from nova.tests.unit import fake_instance
from nova.virt import driver as virt_driver
from nova.virt import fake
from nova.virt.xenapi import vm_utils
from os_xenapi.client import disk_management
from os_xenapi.client import session as xenapi_session
from oslo_config import fixture as config_fixture

from nova_ipxe.virt import xenapi
from nova_ipxe.virt import xenapi_driver
from tests import base
from tests.functional import test_boot
from tests import samples
from tests.unit import test_xenapi_plugin
from tests import xapi_fixture
from tools import bootlab

NOVA_CONF = nova.conf.CONF
VDI_UUID = '7d3c2b1a-0f9e-4d8c-b7a6-5e4d3c2b1a09'
# A dom0_plugin_version.py as os-xenapi 0.3.4's (Python 2) answers: its
# version, 2.1, pickled as protocol 0 text.
VERSION_PLUGIN = '''#!/usr/bin/python3
import XenAPIPlugin
XenAPIPlugin.dispatch({'get_version': lambda s, a: "S'2.1'\\np0\\n."})
'''


class StandinSession(xenapi_session.XenAPISession):
    """os-xenapi's session, unchanged but for two start-up steps.

    ``_get_ip_from_url`` resolves ``host:port`` with gethostbyname, which
    fails for the stand-in's free port; ``_verify_plugin_version`` fails
    on Python 3 whatever dom0 answers (see the test below).  Neither is
    part of the chain under test.
    """

    def _get_ip_from_url(self, url):
        return '127.0.0.1'

    def _verify_plugin_version(self):
        pass


def network_info(label, ip='192.0.2.10'):
    subnet = network_model.Subnet(
        cidr='192.0.2.0/24', version=4,
        gateway=network_model.IP(address='192.0.2.1', type='gateway'),
        dns=[network_model.IP(address='192.0.2.53', type='dns')],
        ips=[network_model.FixedIP(address=ip)])
    network = network_model.Network(id='n1', label=label, subnets=[subnet])
    return network_model.NetworkInfo([network_model.VIF(
        id='v1', address=bootlab.unique_mac(), network=network)])


class LegacyChainTestCase(test_boot.BootTestCase):

    def setUp(self):
        super().setUp()
        self.nova_conf = self.useFixture(config_fixture.Config(NOVA_CONF))

    def start(self, **kwargs):
        self.standin = self.useFixture(xapi_fixture.StandinFixture(**kwargs))
        self.session = StandinSession(
            self.standin.url, 'root', self.standin.info['password'],
            concurrent=1)
        os.makedirs(os.path.join(self.standin.sr_dir, 'iso'))
        self.iso = os.path.join(self.standin.sr_dir, 'iso',
                                VDI_UUID + '.img')
        shutil.copy(samples.BOOKWORM_ISO, self.iso)

    def handle_ipxe_iso(self, menu_url):
        self.nova_conf.config(group='xenserver',
                              ipxe_boot_menu_url=menu_url,
                              ipxe_network_name='tenant-net',
                              ipxe_mkisofs_cmd='/usr/bin/mkisofs')
        instance = fake_instance.fake_instance_obj(None)
        return vm_utils.handle_ipxe_iso(
            self.session, instance, {'uuid': VDI_UUID},
            network_info('tenant-net'))

    def test_stock_chain_rewrites_the_iso_which_boots(self):
        self.start()
        menu = self.one_lan(ipv4='192.0.2.1')
        # The plugin did its job; os-xenapi then unpickles a str.
        e = self.assertRaises(TypeError, self.handle_ipxe_iso,
                              menu.url_for('/menu.ipxe'))
        self.assertIn('bytes-like object is required', str(e))
        vm = self.boot(self.iso, [bootlab.Nic('tap0', bootlab.unique_mac())])
        request = menu.wait_for('/menu.ipxe', timeout=test_boot.BOOT_TIMEOUT,
                                vm=vm)
        self.record('xenapi-legacy-chain', vm, request)
        self.assertEqual('192.0.2.10', request['client'])
        seen = menu.wait_for('/seen', timeout=test_boot.BOOT_TIMEOUT, vm=vm)
        self.assertEqual(('192.0.2.1', '192.0.2.53'),
                         (seen['query']['gateway'], seen['query']['dns']))
        self.assertEqual(0, vm.wait(test_boot.BOOT_TIMEOUT).returncode)
        self.assertNoDhcp()

    def test_tool_missing_boots_the_stock_iso(self):
        # No pycdlib (-S), no xorriso, and an ISO the in-place writer has
        # no room in.
        bin_dir = self.useFixture(fixtures.TempDir()).path
        self.start(plugin_python=sys.executable + ' -S',
                   env={'STANDIN_PLUGIN_PATH': bin_dir})
        shutil.copy(test_xenapi_plugin.full_root_iso(self.tmp), self.iso)
        with open(self.iso, 'rb') as f:
            before = f.read()
        logger = self.useFixture(fixtures.FakeLogger())
        # Nova reads details[:3] == [XENAPI_PLUGIN_FAILURE, 'inject',
        # 'CommandNotFound'], logs it and goes on with the stock ISO.
        self.assertIsNone(self.handle_ipxe_iso('http://192.0.2.1/m'))
        self.assertIn("ISO creation tool '/usr/bin/mkisofs' does not "
                      "exist", logger.output)
        with open(self.iso, 'rb') as f:
            self.assertEqual(before, f.read())

    def test_stock_session_start_fails_on_python3(self):
        self.start()
        path = os.path.join(self.standin.plugin_dir,
                            'dom0_plugin_version.py')
        with open(path, 'w') as f:
            f.write(VERSION_PLUGIN)
        os.chmod(path, 0o755)
        # What XenAPISession.__init__ runs: dom0 answers "2.1" pickled,
        # and os-xenapi cannot read its own answer on Python 3.
        e = self.assertRaises(TypeError,
                              xenapi_session.XenAPISession
                              ._verify_plugin_version, self.session)
        self.assertIn('bytes-like object is required', str(e))
        self.assertEqual('2.1', pickle.loads(
            self.session.call_plugin('dom0_plugin_version.py',
                                     'get_version', {}).encode()))


class Py3PluginSessionTestCase(base.TestCase):
    """ipxe.XenAPIDriver's session, unmodified, against the stand-in.

    The stand-in listens on port 80 of a loopback address of its own:
    os-xenapi resolves the URL's netloc with gethostbyname, so a URL with
    a port cannot be used.
    """

    def setUp(self):
        super().setUp()
        address = '127.%d.%d.%d' % tuple(os.urandom(3))
        self.standin = self.useFixture(xapi_fixture.StandinFixture(
            address=address, port=80))
        path = os.path.join(self.standin.plugin_dir,
                            'dom0_plugin_version.py')
        with open(path, 'w') as f:
            f.write(VERSION_PLUGIN)
        os.chmod(path, 0o755)

    def test_session_starts_and_the_legacy_inject_completes(self):
        session = xenapi_driver.Py3PluginSession(
            self.standin.url, 'root', self.standin.info['password'],
            concurrent=1)
        self.assertEqual('2.1', session.call_plugin_serialized(
            'dom0_plugin_version.py', 'get_version'))
        os.makedirs(os.path.join(self.standin.sr_dir, 'iso'))
        iso = os.path.join(self.standin.sr_dir, 'iso', VDI_UUID + '.img')
        shutil.copy(samples.BOOKWORM_ISO, iso)
        # The whole 2013 call, answer included, through this session.
        self.assertIsNone(disk_management.inject_ipxe_config(
            session, self.standin.sr_dir, VDI_UUID,
            'http://192.0.2.1/menu.ipxe', '192.0.2.10', '255.255.255.0',
            '192.0.2.1', '192.0.2.53', '/usr/bin/mkisofs'))
        with open(iso, 'rb') as f:
            self.assertIn(b'set net0/ip 192.0.2.10\n', f.read())
        self.assertEqual('2.0', xenapi.plugin_version(xenapi.Xapi(
            session), session.host_ref)['version'])

    def test_driver_starts_and_attaches_through_its_session(self):
        self.useFixture(nova_fixtures.RPCFixture('nova.test'))
        conf = self.useFixture(config_fixture.Config(NOVA_CONF))
        conf.config(group='xenserver', connection_url=self.standin.url,
                    connection_username='root',
                    connection_password=self.standin.info['password'])
        driver = virt_driver.load_compute_driver(fake.FakeVirtAPI(),
                                                 'ipxe.XenAPIDriver')
        self.assertIsInstance(driver._session,
                              xenapi_driver.Py3PluginSession)
        self.assertIsInstance(driver._vmops, xenapi_driver.IpxeVMOps)
        # The attach library on os-xenapi's session (call_xenapi, its
        # session id and URL), HTTP upload included.
        xapi = xenapi.Xapi.from_conf(driver._session, NOVA_CONF)
        with open(samples.BOOKWORM_ISO, 'rb') as f:
            data = f.read()
        vbd, vdi = xenapi.attach_iso(xapi, self.standin.info['vm'], data,
                                     VDI_UUID)
        self.assertEqual(data, self.standin.vdi_bytes(vdi))
        self.assertEqual(1, xenapi.detach_iso(xapi, self.standin.info['vm']))
        self.assertEqual((0, 0), (self.standin.counts()['VDI'],
                                  self.standin.counts()['VBD']))
