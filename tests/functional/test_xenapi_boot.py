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

"""What XAPI ends up holding boots: the bytes the stand-in received over
``/import_raw_vdi``, and the ISO the dom0 plugin rewrote in the SR, each
booted in QEMU on a network with no DHCP, reaching the menu from the
instance's static address."""

import os
import pickle
import shutil
import sys
import xmlrpc.client

import fixtures

from nova_ipxe import builder
from nova_ipxe.virt import xenapi
from tests.functional import test_boot
from tests import samples
from tests import xapi_fixture
from tools import bootlab

VDI_UUID = '4e6c1f1a-8d2b-4c3e-9f5a-7b6d5c4e3f21'


class XenapiBootTestCase(test_boot.BootTestCase):

    def start_standin(self, **kwargs):
        self.standin = self.useFixture(xapi_fixture.StandinFixture(**kwargs))
        self.xapi = xenapi.Xapi(xenapi.connect(
            self.standin.url, 'root', self.standin.info['password']),
            self.standin.url)

    def test_uploaded_cd_boots_to_the_menu(self):
        self.start_standin()
        menu = self.one_lan(ipv4='192.0.2.1')
        mac = bootlab.unique_mac()
        self.flags(boot_menu_url=menu.url_for('/menu.ipxe'),
                   chain_timeout=10, chain_retry_delay=1)
        data = samples.network_data_of(samples.nic_data(
            mac, 'tap-a', ipv4=test_boot.VM_V4), dns=['192.0.2.53'])
        rendered = builder.render_script(builder.Instance(
            network_data=data, uuid=test_boot.UUID, hostname='vm-1'),
            self.conf)
        base_iso = builder.load_base(samples.BOOKWORM_ISO, self.conf)
        iso_bytes, _ = base_iso.build_bytes(rendered.text)
        _, vdi = xenapi.attach_iso(self.xapi, self.standin.info['vm'],
                                   iso_bytes, test_boot.UUID)
        path = os.path.join(self.tmp, 'from-xapi.iso')
        with open(path, 'wb') as f:
            f.write(self.standin.vdi_bytes(vdi))
        vm = self.boot(path, [bootlab.Nic('tap0', mac)])
        self.assertV4Menu('xenapi-upload', menu, mac, vm)

    def test_plugin_rewrite_with_no_tool_boots_to_the_menu(self):
        # No pycdlib (-S), no xorriso on PATH: the in-place writer.
        self.start_standin(plugin_python=sys.executable + ' -S', env={
            'STANDIN_PLUGIN_PATH': self.useFixture(
                fixtures.TempDir()).path})
        self.plugin_rewrite_boots('xenapi-plugin-stdlib')

    def test_plugin_rewrite_with_pycdlib_boots_to_the_menu(self):
        self.start_standin(env={'NOVA_IPXE_PLUGIN_WRITERS': 'pycdlib'})
        self.plugin_rewrite_boots('xenapi-plugin-pycdlib')

    def test_plugin_rewrite_with_xorriso_boots_to_the_menu(self):
        self.start_standin(env={'NOVA_IPXE_PLUGIN_WRITERS': 'xorriso'})
        self.plugin_rewrite_boots('xenapi-plugin-xorriso')

    def plugin_rewrite_boots(self, name):
        menu = self.one_lan(ipv4='192.0.2.1')
        os.makedirs(os.path.join(self.standin.sr_dir, 'iso'))
        iso = os.path.join(self.standin.sr_dir, 'iso', VDI_UUID + '.img')
        shutil.copy(samples.BOOKWORM_ISO, iso)
        params = pickle.dumps(dict(args=(
            self.standin.sr_dir, VDI_UUID, menu.url_for('/menu.ipxe'),
            '192.0.2.10', '255.255.255.0', '192.0.2.1', '192.0.2.53',
            'mkisofs'), kwargs={}))
        self.xapi.call('host.call_plugin', self.standin.info['host'],
                       'ipxe.py', 'inject',
                       {'params': xmlrpc.client.Binary(params)})
        vm = self.boot(iso, [bootlab.Nic('tap0', bootlab.unique_mac())])
        request = menu.wait_for('/menu.ipxe', timeout=test_boot.BOOT_TIMEOUT,
                                vm=vm)
        self.record(name, vm, request)
        self.assertEqual('192.0.2.10', request['client'])
        seen = menu.wait_for('/seen', timeout=test_boot.BOOT_TIMEOUT, vm=vm)
        self.assertEqual('192.0.2.53', seen['query']['dns'])
        self.assertEqual(0, vm.wait(test_boot.BOOT_TIMEOUT).returncode)
        self.assertNoDhcp()
