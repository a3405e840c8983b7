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

"""The dom0 plugin xenapi_plugins/ipxe.py, run as xapi runs it.

Every call goes through the XAPI stand-in's ``host.call_plugin``, which
executes the plugin file in a subprocess with a stand-in XenAPIPlugin
module, driven by the real ``XenAPI`` client.  The legacy ``inject`` gets
a real ISO in a temporary SR, written by each of the plugin's writers:
the standard library alone (the plugin's interpreter run with ``-S``, so
no pycdlib, and a PATH without xorriso), pycdlib, xorriso, and none that
can (a full root directory and no tool); hostile arguments change nothing
on disk.
"""

import hashlib
import importlib.util
import io
import json
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import xmlrpc.client

import pycdlib

from nova_ipxe import exception
from nova_ipxe.virt import xenapi
from tests import base
from tests import samples
from tests import xapi_fixture

VDI_UUID = '0b6f3f8e-3c1d-4a57-8e0b-2f7d6c5a4b3e'
URL = 'http://192.0.2.1:8080/menu.ipxe'
# sr_path and vdi_uuid come first, filled in by inject().
GOOD = [URL, '192.0.2.10', '255.255.255.0', '192.0.2.1', '192.0.2.53',
        '/usr/bin/mkisofs']


def py2_pickle(value):
    """What Python 2's ``pickle.dumps(value)`` (protocol 0) writes.

    Python 3's protocol 0 writes str as UNICODE ('V'); Python 2 wrote a
    plain str as STRING ('S'), and that is what Nova 20 and older send.
    """
    out = []
    memo = [0]

    def put():
        out.append('p%d\n' % memo[0])
        memo[0] += 1

    def dump(v):
        if v is None:
            out.append('N')
        elif isinstance(v, str):
            out.append("S'%s'\n" % v)
            put()
        elif isinstance(v, tuple):
            out.append('(')
            for item in v:
                dump(item)
            out.append('t')
            put()
        elif isinstance(v, dict):
            out.append('(d')
            put()
            for k, item in sorted(v.items()):
                dump(k)
                dump(item)
                out.append('s')
        else:
            raise TypeError(v)
    dump(value)
    return ''.join(out) + '.'


def inventory(path):
    """Every file under ``path`` with its hash: "nothing changed"."""
    found = {}
    for d, _, files in os.walk(path):
        for name in files:
            p = os.path.join(d, name)
            with open(p, 'rb') as f:
                found[os.path.relpath(p, path)] = hashlib.sha256(
                    f.read()).hexdigest()
    return found


def iso_files(path):
    """{ISO 9660 path, lower case, no version: bytes} of every file."""
    iso = pycdlib.PyCdlib()
    iso.open(path)
    try:
        names = {}
        for d, _, files in iso.walk(iso_path='/'):
            for name in files:
                out = io.BytesIO()
                iso.get_file_from_iso_fp(out,
                                         iso_path=os.path.join(d, name))
                names[os.path.join(d, name.split(';')[0]).lower()] = (
                    out.getvalue())
        return names, iso.eltorito_boot_catalog
    finally:
        iso.close()


def full_root_iso(directory):
    """An ISOLINUX iPXE ISO with no room in its root directory sector.

    Plain ISO 9660, so that record sizes are exact.
    """
    src = pycdlib.PyCdlib()
    src.open(samples.BOOKWORM_ISO)
    files = {}
    for name in ('ISOLINUX.BIN', 'ISOLINUX.CFG', 'LDLINUX.C32',
                 'IPXE.KRN'):
        out = io.BytesIO()
        src.get_file_from_iso_fp(out, iso_path='/%s;1' % name)
        files[name] = out.getvalue()
    src.close()
    # Records: '.' and '..' 68 bytes, BOOT.CAT;1 and IPXE.KRN;1 44 each,
    # ISOLINUX.BIN;1 and .CFG;1 48 each, LDLINUX.C32;1 46, each
    # FILLnnnn.BIN;1 48: with 36 fillers one sector holds 2026 bytes, and
    # NIPXE.IPX;1 (44 bytes) no longer fits.
    path = os.path.join(directory, 'full-root.iso')
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=1)
    for name, data in files.items():
        iso.add_fp(io.BytesIO(data), len(data), '/%s;1' % name)
    for i in range(36):
        iso.add_fp(io.BytesIO(b'x'), 1, '/FILL%04d.BIN;1' % i)
    iso.add_eltorito('/ISOLINUX.BIN;1', bootcatfile='/BOOT.CAT;1',
                     boot_load_size=4, boot_info_table=True)
    iso.write(path)
    iso.close()
    return path


class PluginTestCase(base.TestCase):

    plugin_python = None     # the stand-in's interpreter, with pycdlib
    with_xorriso = True
    writers = None           # default: every writer the plugin finds

    def setUp(self):
        super().setUp()
        env = {}
        if not self.with_xorriso:
            env['STANDIN_PLUGIN_PATH'] = self.path_without('xorriso')
        if self.writers:
            env['NOVA_IPXE_PLUGIN_WRITERS'] = self.writers
        self.standin = self.useFixture(xapi_fixture.StandinFixture(
            plugin_python=self.plugin_python, env=env))
        self.session = xenapi.connect(self.standin.url, 'root',
                                      self.standin.info['password'])
        self.xapi = xenapi.Xapi(self.session, self.standin.url)
        self.sr_path = self.standin.sr_dir
        os.makedirs(os.path.join(self.sr_path, 'iso'))
        self.iso = os.path.join(self.sr_path, 'iso', VDI_UUID + '.img')
        shutil.copy(samples.BOOKWORM_ISO, self.iso)

    def path_without(self, tool):
        bin_dir = self.useFixture(
            __import__('fixtures').TempDir()).path
        for name in ('python3',):
            os.symlink(shutil.which(name), os.path.join(bin_dir, name))
        self.assertIsNone(shutil.which(tool, path=bin_dir))
        return bin_dir

    def call(self, fn, args):
        return self.xapi.call('host.call_plugin', self.standin.info['host'],
                              'ipxe.py', fn, args)

    def inject_args(self, *values, **overrides):
        args = [self.sr_path, VDI_UUID] + list(values or GOOD)
        for i, name in enumerate(('sr_path', 'vdi_uuid', 'boot_menu_url',
                                  'ip_address', 'netmask', 'gateway',
                                  'dns', 'mkisofs_cmd')):
            if name in overrides:
                args[i] = overrides[name]
        return tuple(args)

    def inject(self, *values, **overrides):
        # What os-xenapi's call_plugin_serialized sends on Python 3.
        params = pickle.dumps(dict(args=self.inject_args(
            *values, **overrides), kwargs={}))
        return self.call('inject', {'params': xmlrpc.client.Binary(params),
                                    'host_uuid': 'h'})

    def assertInjected(self):
        files, catalog = iso_files(self.iso)
        script = files['/nipxe.ipx'].decode()
        self.assertTrue(script.startswith('#!ipxe\n'))
        for line in ('set net0/ip 192.0.2.10', 'set net0/netmask '
                     '255.255.255.0', 'set net0/gateway 192.0.2.1',
                     'set dns 192.0.2.53',
                     'chain --autofree %s && exit ||' % URL):
            self.assertIn(line + '\n', script)
        self.assertIn(' KERNEL /ipxe.krn\n INITRD /nipxe.ipx\n',
                      files['/isolinux.cfg'].decode())
        # BIOS only: no stock, script-less UEFI iPXE can boot from it.
        self.assertEqual([], catalog.sections)
        self.assertNotIn('mkisofs', script)
        self.assertEqual(['%s.img' % VDI_UUID],
                         os.listdir(os.path.join(self.sr_path, 'iso')))
        return script


class VersionTestCase(PluginTestCase):

    def test_version_is_what_the_compute_side_checks(self):
        answer = xenapi.plugin_version(self.xapi)
        self.assertEqual('2.0', answer['version'])
        self.assertEqual({'stdlib': True, 'pycdlib': True,
                          'xorriso': True}, answer['tools'])

    def test_both_names_answer(self):
        for name in ('ipxe', 'ipxe.py'):
            raw = self.xapi.call('host.call_plugin',
                                 self.standin.info['host'], name,
                                 'version', {})
            self.assertEqual('2.0', json.loads(raw)['version'])

    def test_missing_plugin(self):
        os.unlink(os.path.join(self.standin.plugin_dir, 'ipxe.py'))
        e = self.assertRaises(exception.XapiPluginError,
                              xenapi.plugin_version, self.xapi)
        self.assertEqual('XENAPI_MISSING_PLUGIN', e.code)

    def test_unknown_call(self):
        e = self.assertRaises(exception.XapiError, self.call, 'mount', {})
        self.assertEqual('UNKNOWN_XENAPI_PLUGIN_FUNCTION', e.code)


class ReinjectMixin:
    """What every writer must do when the ISO already has our script."""

    def test_injecting_twice_replaces_the_script(self):
        self.inject()
        self.inject(URL, '192.0.2.11', '255.255.255.0', None, None, None)
        files, _ = iso_files(self.iso)
        self.assertIn('set net0/ip 192.0.2.11\n',
                      files['/nipxe.ipx'].decode())
        self.assertNotIn('192.0.2.10', files['/nipxe.ipx'].decode())


class InjectStdlibTestCase(ReinjectMixin, PluginTestCase):
    """No tool in dom0 at all: the standard library's in-place writer."""

    plugin_python = sys.executable + ' -S'
    with_xorriso = False

    def test_inject(self):
        tools = xenapi.plugin_version(self.xapi)['tools']
        self.assertEqual({'stdlib': True, 'pycdlib': False,
                          'xorriso': False}, tools)
        self.assertEqual('N.', self.inject())
        self.assertInjected()
        with open(self.iso, 'rb') as f:
            self.assertEqual(b'\0' * 32768, f.read(32768))  # no isohybrid

    def test_full_root_directory_and_no_tool(self):
        shutil.copy(full_root_iso(self.tmp), self.iso)
        before = inventory(self.sr_path)
        e = self.assertRaises(exception.XapiError, self.inject)
        # [XENAPI_PLUGIN_FAILURE, fn, ClassName, msg]: Nova 21's
        # handle_ipxe_iso reads details[:3] and boots the stock ISO on
        # CommandNotFound.
        self.assertEqual('XENAPI_PLUGIN_FAILURE', e.code)
        self.assertIn('inject CommandNotFound the root directory has no '
                      'room for the script, and neither pycdlib nor '
                      'xorriso is installed', str(e))
        self.assertEqual(before, inventory(self.sr_path))


class InjectPycdlibTestCase(ReinjectMixin, PluginTestCase):

    writers = 'pycdlib'

    def test_python3_pickle(self):
        self.assertEqual('N.', self.inject())
        self.assertInjected()

    def test_python2_pickle_as_text(self):
        # Nova 20 and older (Python 2) send the pickle as a plain string.
        params = py2_pickle(dict(args=self.inject_args(), kwargs={}))
        self.assertTrue(params.startswith("(dp0\nS'args'\n"))
        self.assertEqual('N.', self.call('inject', {'params': params}))
        self.assertInjected()

    def test_no_gateway_no_dns(self):
        self.inject(URL, '192.0.2.10', '255.255.255.0', None, None, None)
        files, _ = iso_files(self.iso)
        script = files['/nipxe.ipx'].decode()
        self.assertNotIn('gateway', script)
        self.assertNotIn('set dns', script)


class FallbackTestCase(PluginTestCase):
    """No room for the in-place writer: pycdlib takes over."""

    writers = 'stdlib,pycdlib'

    def test_full_root_directory(self):
        shutil.copy(full_root_iso(self.tmp), self.iso)
        self.inject()
        files, _ = iso_files(self.iso)
        self.assertIn('set net0/ip 192.0.2.10\n',
                      files['/nipxe.ipx'].decode())
        self.assertIn('/fill0035.bin', files)


class InjectXorrisoTestCase(PluginTestCase):

    plugin_python = sys.executable + ' -S'   # no site-packages: no pycdlib
    writers = 'xorriso'

    def test_inject(self):
        tools = xenapi.plugin_version(self.xapi)['tools']
        self.assertEqual({'stdlib': False, 'pycdlib': False,
                          'xorriso': True}, tools)
        self.inject()
        self.assertInjected()


class HostileTestCase(PluginTestCase):

    def assertRefused(self, *values, **overrides):
        before = inventory(self.sr_path)
        e = self.assertRaises(exception.XapiError, self.inject, *values,
                              **overrides)
        self.assertIn('InvalidArgument', str(e))
        self.assertEqual(before, inventory(self.sr_path))
        return e

    def test_path_traversal(self):
        self.assertRefused(sr_path=self.sr_path + '/../..')
        self.assertRefused(sr_path='/etc')
        self.assertRefused(sr_path='relative/sr')
        self.assertRefused(vdi_uuid='../../etc/passwd')
        self.assertRefused(vdi_uuid=VDI_UUID + '/x')

    def test_symlinked_targets(self):
        outside = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, outside)
        shutil.copy(samples.BOOKWORM_ISO, os.path.join(outside, 'victim.img'))
        other = '1c2d3e4f-5a6b-4c7d-8e9f-0a1b2c3d4e5f'
        os.symlink(os.path.join(outside, 'victim.img'),
                   os.path.join(self.sr_path, 'iso', other + '.img'))
        self.assertRefused(vdi_uuid=other)
        link = os.path.join(self.sr_path, 'linked')
        os.symlink(outside, link)
        os.makedirs(os.path.join(outside, 'iso'))
        self.assertRefused(sr_path=link)
        self.assertEqual({'victim.img': inventory(outside)['victim.img']},
                         inventory(outside))

    def test_injection_strings(self):
        self.assertRefused(URL + '\nshell', '192.0.2.10', '255.255.255.0',
                           None, None, None)
        self.assertRefused(URL + ' || shell', '192.0.2.10',
                           '255.255.255.0', None, None, None)
        self.assertRefused(URL, '192.0.2.10\nshell', '255.255.255.0',
                           None, None, None)
        self.assertRefused(URL, '192.0.2.10', '255.0.255.0', None, None,
                           None)
        self.assertRefused(URL, '192.0.2.10', '255.255.255.0',
                           '192.0.2.1 || shell', None, None)
        self.assertRefused('file:///etc/shadow', '192.0.2.10',
                           '255.255.255.0', None, None, None)

    def test_oversized_values(self):
        self.assertRefused(URL + '?' + 'a' * 5000, '192.0.2.10',
                           '255.255.255.0', None, None, None)
        before = inventory(self.sr_path)
        # Over the plugin's 64 KiB cap, under xapi's 128 KiB argument cap.
        big = pickle.dumps(dict(args=self.inject_args(), kwargs={
            'x': 'a' * 70000}))
        e = self.assertRaises(exception.XapiError, self.call, 'inject',
                              {'params': xmlrpc.client.Binary(big)})
        self.assertIn('InvalidArgument params is', str(e))
        # Over 128 KiB the plugin never starts (E2BIG, as in xapi).
        huge = pickle.dumps(dict(args=self.inject_args(), kwargs={
            'x': 'a' * 200000}))
        e = self.assertRaises(exception.XapiError, self.call, 'inject',
                              {'params': xmlrpc.client.Binary(huge)})
        self.assertIn('E2BIG', str(e))
        self.assertEqual(before, inventory(self.sr_path))

    def test_pickled_objects_are_never_constructed(self):
        marker = os.path.join(self.sr_path, 'pwned')

        class Evil(object):
            def __reduce__(self):
                return (subprocess.call, (['touch', marker],))
        params = pickle.dumps(dict(args=(Evil(),), kwargs={}))
        e = self.assertRaises(exception.XapiError, self.call, 'inject',
                              {'params': xmlrpc.client.Binary(params)})
        self.assertIn('refusing pickled object', str(e))
        self.assertFalse(os.path.exists(marker))

    def test_not_an_iso(self):
        with open(self.iso, 'wb') as f:
            f.write(b'\0' * 65536)
        before = inventory(self.sr_path)
        e = self.assertRaises(exception.XapiError, self.inject)
        self.assertIn('InvalidIso', str(e))
        self.assertEqual(before, inventory(self.sr_path))

    def test_wrong_arity(self):
        self.assertRefused(*GOOD[:-1] + ['x', 'y'])


class Python36TestCase(base.TestCase):

    def test_plugin_runs_on_python_3_6(self):
        # dom0 Python is 3.6 on XenServer 8 / XCP-ng 8.x.
        vermin = os.path.join(os.path.dirname(sys.executable), 'vermin')
        proc = subprocess.run(
            [vermin, '-t=3.6-', '--violations', '--no-tips',
             xapi_fixture.PLUGIN_SOURCE], stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, universal_newlines=True)
        self.assertEqual(0, proc.returncode, proc.stdout)

    def test_plugin_imports_only_the_standard_library(self):
        proc = subprocess.run(
            [sys.executable, '-S', '-c',
             'import importlib.util, sys; spec = importlib.util.'
             'spec_from_file_location("p", sys.argv[1]); m = importlib.'
             'util.module_from_spec(spec); spec.loader.exec_module(m); '
             'print(sorted(k for k, v in m.available_tools().items() '
             'if v))', xapi_fixture.PLUGIN_SOURCE],
            stdout=subprocess.PIPE, universal_newlines=True, check=True)
        self.assertEqual("['stdlib', 'xorriso']", proc.stdout.strip())

    def test_shebang_is_what_xapi_executes(self):
        with open(xapi_fixture.PLUGIN_SOURCE) as f:
            self.assertEqual('#!/usr/bin/python3\n', f.readline())


def load_plugin():
    spec = importlib.util.spec_from_file_location(
        'nova_ipxe_dom0_plugin', xapi_fixture.PLUGIN_SOURCE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class InPlaceWriterTestCase(base.TestCase):
    """The standard-library writer hands over where it cannot be sound."""

    def udf_iso(self):
        src = pycdlib.PyCdlib()
        src.open(samples.BOOKWORM_ISO)
        iso = pycdlib.PyCdlib()
        iso.new(interchange_level=1, udf='2.60')
        for name in ('ISOLINUX.BIN', 'ISOLINUX.CFG', 'LDLINUX.C32',
                     'IPXE.KRN'):
            out = io.BytesIO()
            src.get_file_from_iso_fp(out, iso_path='/%s;1' % name)
            iso.add_fp(io.BytesIO(out.getvalue()), len(out.getvalue()),
                       '/%s;1' % name, udf_path='/' + name.lower())
        src.close()
        iso.add_eltorito('/ISOLINUX.BIN;1', bootcatfile='/BOOT.CAT;1',
                         udf_bootcatfile='/boot.cat', boot_load_size=4,
                         boot_info_table=True)
        path = os.path.join(self.tmp, 'udf.iso')
        iso.write(path)
        iso.close()
        return path

    def test_udf_bridge_goes_to_pycdlib(self):
        plugin = load_plugin()
        path = self.udf_iso()
        script = plugin.render_script({
            'ip': '192.0.2.10', 'netmask': '255.255.255.0',
            'gateway': None, 'dns': None, 'url': URL})
        with open(path, 'rb') as f:
            before = f.read()
        e = self.assertRaises(plugin.CommandNotFound, plugin.rewrite, path,
                              script, tools={'stdlib': True})
        self.assertIn('UDF bridge', str(e))
        with open(path, 'rb') as f:
            self.assertEqual(before, f.read())
        self.assertEqual('pycdlib', plugin.rewrite(
            path, script, tools={'stdlib': True, 'pycdlib': True}))
