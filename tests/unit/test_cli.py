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

"""The nova-ipxe command, run as a real process."""

import json
import os
import subprocess
import sys

from tests import base
from tests import isofactory

MENU = 'http://192.0.2.1:8080/menu.ipxe'


class CliTestCase(base.TestCase):

    def run_cli(self, *args, stdin=None):
        return subprocess.run(
            [sys.executable, '-m', 'nova_ipxe.cli'] + list(args),
            input=stdin, capture_output=True, text=True, cwd=base.REPO)

    def assertError(self, result, text, status=1):
        self.assertEqual(status, result.returncode, result.stderr)
        self.assertNotIn('Traceback', result.stderr)
        errors = [line for line in result.stderr.splitlines()
                  if line.startswith('nova-ipxe: error: ')]
        self.assertEqual(1, len(errors), result.stderr)
        self.assertIn(text, errors[0])

    def test_render_script_from_stdin(self):
        with open(base.DEMO_NETWORK_DATA) as f:
            data = f.read()
        result = self.run_cli('render-script', '--network-data', '-',
                              '--menu-url', MENU, '--hostname', 'vm-1',
                              stdin=data)
        self.assertEqual(0, result.returncode, result.stderr)
        self.assertTrue(result.stdout.startswith('#!ipxe\n'))
        self.assertIn('set hostname vm-1\n', result.stdout)
        self.assertIn(MENU + '?hostname=vm-1&mac=', result.stdout)

    def test_build_iso_and_inspect(self):
        out = os.path.join(self.tmp, 'vm.iso')
        result = self.run_cli(
            'build-iso', '--source', base.TRIXIE_ISO, '--network-data',
            base.DEMO_NETWORK_DATA, '--menu-url', MENU, '--output', out,
            '--instance-uuid', '8d0f7b6e-3c2a-4b1d-9e8f-7a6b5c4d3e2f')
        self.assertEqual(0, result.returncode, result.stderr)
        self.assertIn('BIOS yes, UEFI yes', result.stdout)
        script = self.run_cli('render-script', '--network-data',
                              base.DEMO_NETWORK_DATA, '--menu-url', MENU,
                              '--instance-uuid',
                              '8d0f7b6e-3c2a-4b1d-9e8f-7a6b5c4d3e2f')
        self.assertEqual(script.stdout.encode(),
                         isofactory.iso_files(out)['/nipxe.ipx'])
        info = self.run_cli('inspect', out, '--json')
        self.assertEqual(0, info.returncode, info.stderr)
        info = json.loads(info.stdout)
        self.assertEqual('/ipxe.krn', info['bios']['kernel'])
        self.assertTrue(info['uefi']['script_injection'])
        text = self.run_cli('inspect', base.BOOKWORM_ISO)
        self.assertIn('script: no (its EFI iPXE predates', text.stdout)

    def test_menu_url_with_ipxe_settings(self):
        result = self.run_cli('render-script', '--network-data',
                              base.DEMO_NETWORK_DATA, '--no-identity',
                              '--menu-url', 'http://b/m?ip=${ip}&x=$y')
        self.assertEqual(0, result.returncode, result.stderr)
        self.assertIn(' http://b/m?ip=${ip}&x=$y && goto menu_run',
                      result.stdout)

    def test_config_file(self):
        conf = os.path.join(self.tmp, 'nova-ipxe.conf')
        with open(conf, 'w') as f:
            f.write('[ipxe]\nboot_menu_url = http://cfg.example/m\n'
                    'on_chain_failure = shell\nchain_retries = 7\n')
        result = self.run_cli('--config-file', conf, 'render-script',
                              '--network-data', base.DEMO_NETWORK_DATA)
        self.assertEqual(0, result.returncode, result.stderr)
        self.assertIn('--timeout 30000 http://cfg.example/m?mac=',
                      result.stdout)
        self.assertIn('iseq ${nipxe-try} 7 &&', result.stdout)
        self.assertIn('\nshell\n', result.stdout)

    def test_bad_inputs_exit_1(self):
        bad_json = os.path.join(self.tmp, 'bad.json')
        with open(bad_json, 'w') as f:
            f.write('{"links": [')
        self.assertError(self.run_cli('render-script', '--network-data',
                                      bad_json, '--menu-url', MENU),
                         'not JSON')
        self.assertError(self.run_cli('render-script', '--network-data',
                                      '/nonexistent.json', '--menu-url',
                                      MENU), 'cannot read it')
        self.assertError(self.run_cli('render-script', '--network-data',
                                      base.DEMO_NETWORK_DATA),
                         'boot_menu_url is not set')
        self.assertError(self.run_cli(
            'render-script', '--network-data', base.DEMO_NETWORK_DATA,
            '--menu-url', MENU, '--hostname', 'bad host'),
            'not an RFC 1123 host name')
        self.assertError(self.run_cli(
            'build-iso', '--source', bad_json, '--network-data',
            base.DEMO_NETWORK_DATA, '--menu-url', MENU, '--output',
            os.path.join(self.tmp, 'x.iso')), 'not a readable ISO')
        self.assertError(self.run_cli(
            '--config-file', '/nonexistent.conf', 'inspect',
            base.BOOKWORM_ISO), 'cannot read /nonexistent.conf')
        self.assertError(self.run_cli(
            'build-iso', '--source', base.BOOKWORM_ISO, '--uefi', 'require',
            '--network-data', base.DEMO_NETWORK_DATA, '--menu-url', MENU,
            '--output', os.path.join(self.tmp, 'x.iso')),
            'cannot boot UEFI with an injected script')
        self.assertFalse(os.path.exists(os.path.join(self.tmp, 'x.iso')))

    def test_usage_errors_exit_2(self):
        for args in ([], ['frobnicate'], ['inspect'],
                     ['build-iso', '--source', 'x'],
                     ['build-iso', '--uefi', 'sometimes']):
            result = self.run_cli(*args)
            self.assertEqual(2, result.returncode, args)
            self.assertNotIn('Traceback', result.stderr)
            self.assertRegex(result.stderr, r'(?m)^nova-ipxe( [a-z-]+)?: '
                                            r'error: ')
