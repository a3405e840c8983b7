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

"""The package as an operator installs it: ``python -m build``, then the
wheel into a fresh virtualenv beside the real ``nova`` (34.x), loaded the
way nova-compute loads a driver, and uninstalled again.

One test, in order, because every step needs the one before: building and
installing Nova takes most of a minute, so it is done once.
"""

import hashlib
import json
import os
import subprocess
import sys
import tarfile
import venv
import zipfile

from tests import base
from tests import samples

# SQLAlchemy 2.1 breaks Nova 34 (doc/source/contributor/nova.rst).
NOVA_PINS = ['nova>=34.0.0,<35', 'SQLAlchemy<2.1']
# What importing Nova's fake libvirt (nova.tests.fixtures) needs beyond
# Nova itself.
FAKE_LIBVIRT_REQS = ['fixtures', 'testtools', 'testscenarios',
                     'wsgi-intercept']

# Run inside the fresh venv: load a driver as nova-compute does
# (nova.virt.driver.load_compute_driver), with Nova's own fake libvirt
# module standing in for libvirt-python (a C binding to a running
# libvirtd). Prints one JSON line.
LOAD = r'''
import json, sys
import nova.tests.fixtures.libvirt as fakelibvirt
sys.modules['libvirt'] = fakelibvirt
from nova import config
from nova.virt import driver
config.parse_args([], default_config_files=[])
try:
    drv = driver.load_compute_driver(None, sys.argv[1])
except SystemExit as e:
    print(json.dumps({'exit': e.code}))
else:
    from nova.virt.libvirt import driver as libvirt_driver
    print(json.dumps({
        'class': '%s.%s' % (type(drv).__module__, type(drv).__name__),
        'is_libvirt': isinstance(drv, libvirt_driver.LibvirtDriver)}))
'''

# The shim's lazy lookup, without loading a driver.
SHIM = r'''
import json
import nova.virt.ipxe as shim
print(json.dumps({'file': shim.__file__, 'names': dir(shim)}))
'''


def tree_digest(top):
    """{relative path: sha256} of every file under ``top``, no caches."""
    digest = {}
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames[:] = [d for d in dirnames if d != '__pycache__']
        for name in filenames:
            path = os.path.join(dirpath, name)
            with open(path, 'rb') as f:
                digest[os.path.relpath(path, top)] = hashlib.sha256(
                    f.read()).hexdigest()
    return digest


class TestWheel(base.TestCase):

    def run_ok(self, cmd, **kw):
        proc = subprocess.run(cmd, capture_output=True, text=True, **kw)
        if proc.returncode:
            self.fail('%s failed (%d):\n%s\n%s' % (
                ' '.join(cmd), proc.returncode, proc.stdout[-3000:],
                proc.stderr[-3000:]))
        return proc.stdout

    def probe(self, python, code, *args):
        out = self.run_ok([python, '-c', code] + list(args),
                          cwd=self.tmp, env=dict(os.environ,
                                                 PYTHONDONTWRITEBYTECODE='1'))
        return json.loads(out.strip().splitlines()[-1])

    def build(self):
        # From a clone, as a release is built: pbr takes the version and
        # the file list from git, and the work tree stays clean.
        src = os.path.join(self.tmp, 'src')
        self.run_ok(['git', 'clone', '-q', samples.REPO, src])
        dist = os.path.join(self.tmp, 'dist')
        self.run_ok([sys.executable, '-m', 'build', '--no-isolation',
                     '--outdir', dist, src])
        names = sorted(os.listdir(dist))
        self.assertEqual(2, len(names), names)
        sdist = [n for n in names if n.endswith('.tar.gz')]
        wheel = [n for n in names if n.endswith('-py3-none-any.whl')]
        self.assertEqual((1, 1), (len(sdist), len(wheel)), names)
        return os.path.join(dist, sdist[0]), os.path.join(dist, wheel[0])

    def check_wheel(self, wheel):
        with zipfile.ZipFile(wheel) as z:
            files = z.namelist()
            [entry_points] = [n for n in files
                              if n.endswith('.dist-info/entry_points.txt')]
            entry_points = z.read(entry_points).decode()
        # Under nova/ only the shim: never nova/__init__.py or
        # nova/virt/__init__.py, which would replace Nova's own.
        self.assertEqual(['nova/virt/ipxe/__init__.py'],
                         [f for f in files if f.startswith('nova/')])
        self.assertIn('nova_ipxe/conf.py', files)
        self.assertFalse([f for f in files if f.startswith('tests/')])
        self.assertIn('nova-ipxe = nova_ipxe.cli:main', entry_points)
        self.assertIn('nova_ipxe = nova_ipxe.conf:list_opts', entry_points)
        data = {f.split('.data/data/', 1)[1] for f in files
                if '.data/data/' in f}
        self.assertEqual({'etc/nova-ipxe/nova-ipxe.conf.sample',
                          'share/nova-ipxe/xenapi_plugins/ipxe.py',
                          'share/nova-ipxe/xenapi_plugins/README.rst'}, data)

    def check_sdist(self, sdist):
        with tarfile.open(sdist) as t:
            names = {n.split('/', 1)[1] for n in t.getnames() if '/' in n}
        for path in ('setup.cfg', 'requirements.txt', 'nova/virt/ipxe/'
                     '__init__.py', 'devstack/plugin.sh', 'doc/source/'
                     'conf.py', 'etc/nova-ipxe/nova-ipxe.conf.sample'):
            self.assertIn(path, names)
        self.assertNotIn('nova/__init__.py', names)

    def test_build_install_load_uninstall(self):
        env_dir = os.path.join(self.tmp, 'venv')
        venv.create(env_dir, with_pip=True)
        python = os.path.join(env_dir, 'bin', 'python')
        # --no-compile: byte-compiling Nova's 3000 modules is most of the
        # install's CPU time, and nothing here needs the .pyc files.
        pip = [python, '-m', 'pip', 'install', '-q', '--no-compile',
               '--disable-pip-version-check']
        # Nova installs (mostly waiting on the index) while the wheel builds.
        log = os.path.join(self.tmp, 'nova-install.log')
        with open(log, 'w') as out:
            nova_install = subprocess.Popen(
                pip + NOVA_PINS + FAKE_LIBVIRT_REQS, stdout=out,
                stderr=subprocess.STDOUT)
        self.addCleanup(nova_install.kill)
        sdist, wheel = self.build()
        self.check_sdist(sdist)
        self.check_wheel(wheel)
        if nova_install.wait():
            with open(log) as f:
                self.fail('installing Nova failed:\n' + f.read()[-3000:])
        site = self.probe(python, 'import json, sysconfig; print(json.dumps('
                                  'sysconfig.get_paths()["purelib"]))')
        nova_dir = os.path.join(site, 'nova')
        before = tree_digest(nova_dir)
        # Nova alone: ipxe.* does not load, and nova-compute would exit.
        self.assertEqual({'exit': 1},
                         self.probe(python, LOAD, 'ipxe.LibvirtDriver'))

        self.run_ok(pip + [wheel])
        after = tree_digest(nova_dir)
        self.assertEqual(['virt/ipxe/__init__.py'],
                         sorted(set(after) - set(before)))
        self.assertEqual(before, {k: v for k, v in after.items()
                                  if k in before})
        shim = self.probe(python, SHIM)
        self.assertEqual(os.path.join(nova_dir, 'virt', 'ipxe',
                                      '__init__.py'), shim['file'])
        self.assertEqual(['LibvirtDriver', 'XenAPIDriver'], shim['names'])
        # The stock driver loads in this harness...
        self.assertEqual(
            {'class': 'nova.virt.libvirt.driver.LibvirtDriver',
             'is_libvirt': True},
            self.probe(python, LOAD, 'libvirt.LibvirtDriver'))
        # ...and so does ours, a subclass of it.
        self.assertEqual({'class': 'nova_ipxe.virt.libvirt.LibvirtDriver',
                          'is_libvirt': True},
                         self.probe(python, LOAD, 'ipxe.LibvirtDriver'))
        self.assertTrue(os.path.isfile(os.path.join(
            env_dir, 'share', 'nova-ipxe', 'xenapi_plugins', 'ipxe.py')))

        self.run_ok([python, '-m', 'pip', 'uninstall', '-y', '-q',
                     'nova-ipxe'])
        # Nova is exactly as it was, and still loads its own driver.
        self.assertEqual(before, tree_digest(nova_dir))
        self.assertEqual({'exit': 1},
                         self.probe(python, LOAD, 'ipxe.LibvirtDriver'))
        self.assertEqual(
            {'class': 'nova.virt.libvirt.driver.LibvirtDriver',
             'is_libvirt': True},
            self.probe(python, LOAD, 'libvirt.LibvirtDriver'))
