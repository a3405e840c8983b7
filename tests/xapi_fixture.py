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

"""The XAPI stand-in (tools/xapi_standin.py) as a test fixture.

It runs as a subprocess (Nova's test process is eventlet-patched, and an
in-process server could freeze it), with a private SR directory and a
plugin directory holding xenapi_plugins/ipxe.py under both names.
"""

import json
import os
import shutil
import subprocess
import sys
import xmlrpc.client

import fixtures

from tests import samples

PLUGIN_SOURCE = os.path.join(samples.REPO, 'xenapi_plugins', 'ipxe.py')


class StandinFixture(fixtures.Fixture):
    """``url``, ``sr_dir``, ``plugin_dir``, ``info`` (refs), ``control``.

    With ``tls=(certificate, key)`` the stand-in also serves HTTPS at
    ``tls_url`` (else None); ``url`` and ``control`` stay plain HTTP.
    """

    def __init__(self, plugin_python=None, env=None, address=None,
                 port=None, tls=None):
        super().__init__()
        self.tls = tls
        self.plugin_python = plugin_python
        self.env = env
        self.address = address
        self.port = port

    def _setUp(self):
        root = self.useFixture(fixtures.TempDir()).path
        self.sr_dir = os.path.join(root, 'sr')
        self.plugin_dir = os.path.join(root, 'plugins')
        os.makedirs(self.sr_dir)
        os.makedirs(self.plugin_dir)
        for name in ('ipxe', 'ipxe.py'):  # as the README installs it
            shutil.copy(PLUGIN_SOURCE, os.path.join(self.plugin_dir, name))
            os.chmod(os.path.join(self.plugin_dir, name), 0o755)
        cmd = [sys.executable, '-m', 'tools.xapi_standin',
               '--sr-dir', self.sr_dir, '--plugin-dir', self.plugin_dir]
        if self.plugin_python:
            cmd += ['--plugin-python', self.plugin_python]
        if self.address:
            cmd += ['--address', self.address]
        if self.port is not None:
            cmd += ['--port', str(self.port)]
        if self.tls:
            cmd += ['--tls-cert', self.tls[0], '--tls-key', self.tls[1]]
        env = dict(os.environ, **(self.env or {}))
        # The plugin accepts SR paths under this root only.
        env['NOVA_IPXE_SR_ROOTS'] = root
        self.proc = subprocess.Popen(cmd, cwd=samples.REPO, env=env,
                                     stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE)
        self.addCleanup(self._stop)
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError('the XAPI stand-in did not start')
        urls = json.loads(line)
        self.url = urls['url']
        self.tls_url = urls.get('tls_url')
        if self.port == 80:
            self.url = self.url[:-len(':80')]
        self.control = xmlrpc.client.ServerProxy(self.url, allow_none=True)
        self.info = self.ctl('info')

    def _stop(self):
        self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc.stdout.close()

    def ctl(self, op, *args):
        result = getattr(self.control.standin, op)(*args)
        assert result['Status'] == 'Success', result
        return result['Value']

    def counts(self):
        return self.ctl('counts')

    def fault(self, name, details, times=1):
        self.ctl('fault', name, [str(d) for d in details], times)

    def vdi_bytes(self, vdi_ref):
        with open(self.ctl('vdi_path', vdi_ref), 'rb') as f:
            return f.read()
