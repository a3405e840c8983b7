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
import signal
import stat
import subprocess
import sys
import time

from tests import base
from tests import samples

MENU = 'http://192.0.2.1:8080/menu.ipxe'
UUID_NL = '8d0f7b6e-3c2a-4b1d-9e8f-7a6b5c4d3e2f\nnova-ipxe: error: forged'


class CliTestCase(base.TestCase):

    def run_cli(self, *args, stdin=None):
        return subprocess.run(
            [sys.executable, '-m', 'nova_ipxe.cli'] + list(args),
            input=stdin, capture_output=True, text=True, cwd=samples.REPO)

    def assertError(self, result, text, status=1):
        self.assertEqual(status, result.returncode, result.stderr)
        self.assertNotIn('Traceback', result.stderr)
        errors = [line for line in result.stderr.splitlines()
                  if line.startswith('nova-ipxe: error: ')]
        self.assertEqual(1, len(errors), result.stderr)
        self.assertIn(text, errors[0])

    def test_render_script_from_stdin(self):
        with open(samples.NETWORK_DATA) as f:
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
            'build-iso', '--source', samples.trixie_iso(), '--network-data',
            samples.NETWORK_DATA, '--menu-url', MENU, '--output', out,
            '--instance-uuid', '8d0f7b6e-3c2a-4b1d-9e8f-7a6b5c4d3e2f')
        self.assertEqual(0, result.returncode, result.stderr)
        self.assertIn('BIOS yes, UEFI yes', result.stdout)
        script = self.run_cli('render-script', '--network-data',
                              samples.NETWORK_DATA, '--menu-url', MENU,
                              '--instance-uuid',
                              '8d0f7b6e-3c2a-4b1d-9e8f-7a6b5c4d3e2f')
        self.assertEqual(script.stdout.encode(),
                         samples.iso_files(out)['/nipxe.ipx'])
        info = self.run_cli('inspect', out, '--json')
        self.assertEqual(0, info.returncode, info.stderr)
        info = json.loads(info.stdout)
        self.assertEqual('/ipxe.krn', info['bios']['kernel'])
        self.assertTrue(info['uefi']['script_injection'])
        text = self.run_cli('inspect', samples.bookworm_iso())
        self.assertIn('script: no (its EFI iPXE predates', text.stdout)

    def test_menu_url_with_ipxe_settings(self):
        result = self.run_cli('render-script', '--network-data',
                              samples.NETWORK_DATA, '--no-identity',
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
                              '--network-data', samples.NETWORK_DATA)
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
                                      samples.NETWORK_DATA),
                         'boot_menu_url is not set')
        # A host name with no ASCII form is left out, as for Nova's.
        result = self.run_cli(
            'render-script', '--network-data', samples.NETWORK_DATA,
            '--menu-url', MENU, '--hostname', 'bad host')
        self.assertEqual(0, result.returncode, result.stderr)
        self.assertIn("Leaving the host name 'bad host'", result.stderr)
        self.assertNotIn('set hostname', result.stdout)
        self.assertError(self.run_cli(
            'build-iso', '--source', bad_json, '--network-data',
            samples.NETWORK_DATA, '--menu-url', MENU, '--output',
            os.path.join(self.tmp, 'x.iso')), 'not a readable ISO')
        self.assertError(self.run_cli(
            '--config-file', '/nonexistent.conf', 'inspect',
            samples.bookworm_iso()), 'cannot read /nonexistent.conf')
        self.assertError(self.run_cli(
            'build-iso', '--source', samples.bookworm_iso(), '--uefi',
            'require', '--network-data', samples.NETWORK_DATA, '--menu-url',
            MENU, '--output', os.path.join(self.tmp, 'x.iso')),
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


# Runs the CLI with pycdlib's writer stalled after its first bytes, so
# that a signal arrives while the temp file is half written.
# Stalls where a build writes the output file: a build patches its script
# into the base's template (see nova_ipxe.iso._Template).
STALLED_WRITE = '''
import os, sys, time
from nova_ipxe import iso
def write(self, fp, *args, **kwargs):
    fp.write(b"partial ISO")
    fp.flush()
    open(os.environ["NIPXE_WRITING"], "w").close()
    time.sleep(120)
iso._Template.write = write
from nova_ipxe import cli
sys.exit(cli.main(sys.argv[1:]))
'''

OBSOLETE_CONF = '[xenserver]\nipxe_mkisofs_cmd = mkisofs\n'


class HostileCliTestCase(CliTestCase):
    """The promises about the process."""

    def write(self, name, text):
        path = os.path.join(self.tmp, name)
        with open(path, 'w') as f:
            f.write(text)
        return path

    def test_logging_never_reaches_stdout(self):
        conf = self.write('warn.conf', OBSOLETE_CONF)
        result = self.run_cli('--config-file', conf, 'render-script',
                              '--network-data', samples.NETWORK_DATA,
                              '--menu-url', MENU)
        self.assertEqual(0, result.returncode, result.stderr)
        self.assertTrue(result.stdout.startswith('#!ipxe\n'), result.stdout)
        self.assertIn('ipxe_mkisofs_cmd', result.stderr)  # it was logged
        self.assertNotIn('obsolete', result.stdout)
        result = self.run_cli('--config-file', conf, 'inspect',
                              samples.trixie_iso(), '--json')
        self.assertEqual(0, result.returncode, result.stderr)
        self.assertIn('ipxe_mkisofs_cmd', result.stderr)
        self.assertEqual('/ipxe.krn',
                         json.loads(result.stdout)['bios']['kernel'])

    def test_control_characters_never_split_a_line(self):
        data = json.load(open(samples.NETWORK_DATA))
        data['links'].append({'id': 'v\nnova-ipxe: error: forged\r\x1b[2J',
                              'type': 'vlan'})
        logged = self.write('vlan.json', json.dumps(data))
        result = self.run_cli('render-script', '--network-data', logged,
                              '--menu-url', MENU)
        self.assertEqual(0, result.returncode, result.stderr)
        self.assertIn('vlan link', result.stderr)
        for line in result.stderr.splitlines():
            self.assertNotIn('forged', line.split('vlan link')[0])
        self.assertNotIn('\x1b', result.stderr)
        self.assertNotIn('\r', result.stderr)
        data['links'].pop()
        data['networks'][1]['ip_address'] = '2001:db8::10%eth0\nforged'
        bad = self.write('zone.json', json.dumps(data))
        for args in (('--network-data', bad),
                     ('--network-data', samples.NETWORK_DATA,
                      '--instance-uuid', UUID_NL)):
            result = self.run_cli('render-script', '--menu-url', MENU, *args)
            self.assertError(result, 'nova-ipxe: error: ')
            self.assertEqual(1, len(result.stderr.splitlines()),
                             result.stderr)
            self.assertEqual('', result.stdout)
        # A host name is left out with a warning: one line, escaped.
        result = self.run_cli('render-script', '--menu-url', MENU,
                              '--network-data', samples.NETWORK_DATA,
                              '--hostname', 'vm\nnova-ipxe: error: '
                              'forged\u202e')
        self.assertEqual(0, result.returncode, result.stderr)
        self.assertEqual(1, len(result.stderr.splitlines()), result.stderr)
        self.assertNotIn('nova-ipxe: error', result.stderr.split("'")[0])
        self.assertNotIn('\u202e', result.stderr)

    def test_network_data_bounded_on_what_is_read(self):
        self.assertError(self.run_cli(
            'render-script', '--menu-url', MENU, '--network-data',
            '/dev/zero'), 'not a regular file or a pipe')
        self.assertError(self.run_cli(
            'render-script', '--menu-url', MENU, '--network-data',
            self.tmp), 'not a regular file or a pipe')
        with open('/dev/zero', 'rb') as zero:
            result = subprocess.run(
                [sys.executable, '-m', 'nova_ipxe.cli', 'render-script',
                 '--menu-url', MENU, '--network-data', '-'], stdin=zero,
                capture_output=True, text=True, cwd=samples.REPO)
        self.assertError(result, 'standard input: larger than 1048576')
        links = [{'id': 'l%d' % i, 'ethernet_mac_address':
                  'fa:16:3e:%02x:%02x:%02x' % (i >> 16, i >> 8 & 255,
                                               i & 255)}
                 for i in range(100000)]
        huge = self.write('huge.json', json.dumps({'links': links}))
        self.assertError(self.run_cli('render-script', '--menu-url', MENU,
                                      '--network-data', huge),
                         'larger than 1048576 bytes')
        many = self.write('many.json', json.dumps({'links': links[:1000]}))
        self.assertError(self.run_cli('render-script', '--menu-url', MENU,
                                      '--network-data', many),
                         'links: more than 64 entries')
        deep = self.write('deep.json', '[' * 500000)
        self.assertError(self.run_cli('render-script', '--menu-url', MENU,
                                      '--network-data', deep),
                         'nested deeper than')

    def test_network_data_from_a_pipe(self):
        fifo = os.path.join(self.tmp, 'nd.fifo')
        os.mkfifo(fifo)
        proc = subprocess.Popen(
            [sys.executable, '-m', 'nova_ipxe.cli', 'render-script',
             '--menu-url', MENU, '--network-data', fifo],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            cwd=samples.REPO)
        with open(fifo, 'w') as f, open(samples.NETWORK_DATA) as src:
            f.write(src.read())
        out, err = proc.communicate(timeout=60)
        self.assertEqual(0, proc.returncode, err)
        self.assertTrue(out.startswith('#!ipxe\n'))

    def build_args(self, output):
        return ('build-iso', '--source', samples.trixie_iso(),
                '--network-data', samples.NETWORK_DATA, '--menu-url', MENU,
                '--output', output)

    def test_output_onto_what_is_not_a_file_is_refused(self):
        fifo = os.path.join(self.tmp, 'out.fifo')
        os.mkfifo(fifo)
        link = os.path.join(self.tmp, 'link.iso')
        os.symlink(fifo, link)
        directory = os.path.join(self.tmp, 'dir.iso')
        os.mkdir(directory)
        for output, kind in ((fifo, 'is a FIFO'),
                             (link, 'is a FIFO (through a symlink)'),
                             (directory, 'is a directory'),
                             ('/dev/null', 'is a device')):
            self.assertError(self.run_cli(*self.build_args(output)), kind,
                             status=2)
        self.assertTrue(stat.S_ISFIFO(os.lstat(fifo).st_mode))
        self.assertTrue(os.path.islink(link))
        self.assertEqual([], os.listdir(directory))
        self.assertTrue(stat.S_ISCHR(os.stat('/dev/null').st_mode))
        self.assertEqual(sorted(['out.fifo', 'link.iso', 'dir.iso']),
                         sorted(os.listdir(self.tmp)))

    def test_signal_during_write_leaves_nothing_behind(self):
        for sig, message in ((signal.SIGTERM, 'terminated'),
                             (signal.SIGINT, 'interrupted')):
            out_dir = os.path.join(self.tmp, sig.name)
            os.mkdir(out_dir)
            output = os.path.join(out_dir, 'vm.iso')
            with open(output, 'w') as f:
                f.write('the previous ISO')
            marker = os.path.join(self.tmp, sig.name + '.writing')
            proc = subprocess.Popen(
                [sys.executable, '-c', STALLED_WRITE]
                + list(self.build_args(output)),
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                cwd=samples.REPO, env=dict(os.environ, NIPXE_WRITING=marker))
            self.addCleanup(proc.kill)
            for _ in range(600):
                if os.path.exists(marker) or proc.poll() is not None:
                    break
                time.sleep(0.1)
            self.assertTrue(os.path.exists(marker), proc.stderr)
            # The temp file is there, half written ...
            self.assertEqual(2, len(os.listdir(out_dir)))
            proc.send_signal(sig)
            out, err = proc.communicate(timeout=60)
            self.assertEqual(1, proc.returncode, err)
            self.assertEqual(['nova-ipxe: error: ' + message],
                             err.splitlines())
            # ... and gone; the previous ISO is untouched.
            self.assertEqual(['vm.iso'], os.listdir(out_dir))
            with open(output) as f:
                self.assertEqual('the previous ISO', f.read())

    def test_names_from_the_iso_escaped_in_errors_and_logs(self):
        # Issue 16: inspect escaped names, the log path did not.  A bidi
        # override (U+202E, Cf) and a zero-width space reach the error
        # line and the log's warning only escaped.
        _, _, files = samples.bookworm_parts()
        name = '/ipxe\u202exkr.\u200bkrn'
        evil = samples.isolinux_iso(
            os.path.join(self.tmp, 'bidi.iso'),
            ('DEFAULT ipxe\nLABEL ipxe\n KERNEL %s\n' % name).encode(), {
                ('/IPXE.KRN;1', name): files['/ipxe.krn']})
        result = self.run_cli(
            'build-iso', '--source', evil, '--network-data',
            samples.NETWORK_DATA, '--menu-url', 'https://menu.example/m',
            '--output', os.path.join(self.tmp, 'out.iso'))
        self.assertError(result, 'which is not a plain path')
        self.assertIn('/ipxe\\u202exkr.\\u200bkrn', result.stderr)
        for ch in ('\u202e', '\u200b'):
            self.assertNotIn(ch, result.stderr)

    def test_inspect_escapes_names_from_the_iso(self):
        _, _, files = samples.bookworm_parts()
        evil = samples.isolinux_iso(
            os.path.join(self.tmp, 'evil.iso'),
            b'DEFAULT ipxe\nLABEL ipxe\n KERNEL /ipxe.krn\n', {
                ('/IPXE.KRN;1', '/ipxe.krn'): files['/ipxe.krn'],
                ('/EVIL.TXT;1', '/e\x1b[2J\nforged'): b'x'})
        result = self.run_cli('inspect', evil)
        self.assertEqual(0, result.returncode, result.stderr)
        self.assertNotIn('\x1b', result.stdout)
        self.assertIn('/e\\x1b[2J\\x0aforged', result.stdout)
        self.assertFalse([line for line in result.stdout.splitlines()
                          if line.startswith('forged')])
        result = self.run_cli('inspect', evil, '--json')
        self.assertNotIn('\x1b', result.stdout)
        # describe() escapes names from the ISO for every output form.
        self.assertIn('/e\\x1b[2J\\x0aforged',
                      json.loads(result.stdout)['files'])
