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

"""``nova-ipxe-status upgrade check`` on configuration files of its own."""

import contextlib
import io
import json
import os
import subprocess
import sys

import fixtures
from oslo_config import cfg
import testtools

from nova_ipxe import conf as ipxe_conf
from nova_ipxe import status
from nova_ipxe.virt import release

GOOD = '''
[DEFAULT]
compute_driver = ipxe.LibvirtDriver
state_path = %(tmp)s/state
[ipxe]
boot_menu_url = http://192.0.2.1/menu.ipxe
menu_signing_key = %(key)s
[libvirt]
images_type = qcow2
'''
KEY = 'k' * 40


class StatusTestCase(testtools.TestCase):

    def setUp(self):
        super().setUp()
        self.tmp = self.useFixture(fixtures.TempDir()).path

    def run_check(self, text, nova='34.0.0', **extra):
        """(exit code, {check name: (code, details)}) of a JSON run."""
        path = os.path.join(self.tmp, 'nova.conf')
        values = {'tmp': self.tmp, 'key': KEY}
        values.update(extra)
        with open(path, 'w') as f:
            f.write(text % values)
        conf = cfg.ConfigOpts()
        ipxe_conf.register_opts(conf)
        self.useFixture(fixtures.MonkeyPatch(
            'nova_ipxe.virt.release.nova_version', lambda: nova))
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = status.main(['--config-file', path, 'upgrade', 'check',
                                '--json'], conf=conf)
        checks = {c['check']: (c['result'], c['details'])
                  for c in json.loads(out.getvalue())['checks']}
        return code, checks

    def test_a_ready_host_passes(self):
        code, checks = self.run_check(GOOD)
        self.assertEqual(0, code, checks)
        self.assertEqual(set(n for n, _ in status.Checks._upgrade_checks),
                         set(checks))
        self.assertIn('Nova 34.0.0 (2026.2)', checks['Nova release'][1])
        self.assertIn(os.path.join(self.tmp, 'state', 'ipxe', 'base'),
                      checks['Base-ISO cache directory'][1])

    def test_every_supported_release_passes(self):
        for major, (_, version) in release.RELEASES.items():
            code, checks = self.run_check(GOOD, nova=version)
            self.assertEqual(0, checks['Nova release'][0], version)

    def test_untested_nova_fails_naming_the_supported_releases(self):
        code, checks = self.run_check(GOOD, nova='35.0.0')
        self.assertEqual(2, code)
        result, details = checks['Nova release']
        self.assertEqual(2, result)
        self.assertIn(release.supported(), details)
        self.assertIn('refuse to start', details)

    def test_untested_nova_allowed_is_a_warning(self):
        code, checks = self.run_check(
            GOOD + '[ipxe]\nallow_untested_nova = true\n', nova='35.0.0')
        self.assertEqual(1, code)
        self.assertEqual(1, checks['Nova release'][0])

    def test_deprecated_and_obsolete_options_warn(self):
        code, checks = self.run_check(
            GOOD + '[xenserver]\nipxe_boot_menu_url = http://x/m\n'
            'ipxe_mkisofs_cmd = mkisofs\n[ipxe]\nglance_retries = 2\n')
        self.assertEqual(1, code)
        result, details = checks['Deprecated and obsolete options']
        self.assertEqual(1, result)
        self.assertIn('[xenserver] ipxe_boot_menu_url is deprecated: use '
                      '[ipxe] boot_menu_url', details)
        self.assertIn('[ipxe] glance_retries is deprecated: use '
                      '[ipxe_glance] retries', details)
        self.assertIn('[xenserver] ipxe_mkisofs_cmd is obsolete', details)

    def test_signing_key_length(self):
        code, checks = self.run_check(GOOD, key='short')
        self.assertEqual(2, checks['Menu signing key'][0])
        self.assertIn('5 characters', checks['Menu signing key'][1])
        code, checks = self.run_check(GOOD, key='k' * 20)
        self.assertEqual(1, checks['Menu signing key'][0])
        code, checks = self.run_check(GOOD + '[ipxe]\nmenu_identity = false\n')
        self.assertEqual(2, checks['Menu signing key'][0])

    def test_cache_dir_that_cannot_be_used_fails(self):
        blocker = os.path.join(self.tmp, 'file')
        open(blocker, 'w').close()
        code, checks = self.run_check(
            GOOD + '[ipxe]\ncache_dir = %s\n' % blocker)
        self.assertEqual(2, code)
        self.assertIn('is not a directory',
                      checks['Base-ISO cache directory'][1])
        code, checks = self.run_check(
            GOOD + '[ipxe]\ncache_dir = %s\n' % os.path.join(blocker, 'cache'))
        self.assertEqual(2, checks['Base-ISO cache directory'][0])
        self.assertIn('cannot create it',
                      checks['Base-ISO cache directory'][1])

    def test_block_image_backend_fails(self):
        code, checks = self.run_check(GOOD.replace('qcow2', 'rbd'))
        self.assertEqual(2, code)
        self.assertIn('images_type = rbd', checks['Image backend'][1])

    def test_missing_menu_url(self):
        text = GOOD.replace('boot_menu_url = http://192.0.2.1/menu.ipxe',
                            '')
        code, checks = self.run_check(text)
        self.assertEqual(1, checks['Boot menu URL'][0])
        code, checks = self.run_check(
            text + '[ipxe]\nallow_menu_url_override = false\n')
        self.assertEqual(2, checks['Boot menu URL'][0])

    def test_the_installed_command(self):
        # The console script pbr made, as an operator runs it: the table,
        # and the exit status of the worst result.
        path = os.path.join(self.tmp, 'nova.conf')
        with open(path, 'w') as f:
            f.write(GOOD.replace('qcow2', 'lvm') % {'tmp': self.tmp,
                                                    'key': KEY})
        cmd = os.path.join(os.path.dirname(sys.executable),
                           'nova-ipxe-status')
        # The source tree's copy when this venv has an older install.
        argv = ([cmd] if os.path.exists(cmd)
                else [sys.executable, '-m', 'nova_ipxe.status'])
        proc = subprocess.run(
            argv + ['--config-file', path, 'upgrade', 'check'],
            capture_output=True, text=True, check=False)
        self.assertEqual(2, proc.returncode, proc.stderr)
        self.assertIn('Check: Image backend', proc.stdout)
        self.assertIn('Result: Failure', proc.stdout)
