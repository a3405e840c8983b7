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

"""How ipxe.LibvirtDriver sits on Nova: overrides, loading, packaging."""

import importlib.metadata
import inspect
import os
import subprocess

import fixtures

import nova
from nova.virt import driver
from nova.virt.libvirt import driver as libvirt_driver
import testtools

from nova_ipxe.virt import libvirt
from tests.nova import libvirt_base


class OverridesTestCase(testtools.TestCase):

    def test_overridden_nova_methods_keep_their_signatures(self):
        # Fails loudly when Nova changes a method we override.
        for name, want in libvirt.NOVA_OVERRIDES.items():
            real = getattr(libvirt_driver.LibvirtDriver, name)
            self.assertEqual(want, str(inspect.signature(real))[1:-1],
                             'Nova changed LibvirtDriver.%s' % name)

    def test_every_override_is_recorded(self):
        ours = {name for name, value in vars(libvirt.LibvirtDriver).items()
                if callable(value)
                and hasattr(libvirt_driver.LibvirtDriver, name)}
        self.assertEqual(set(libvirt.NOVA_OVERRIDES), ours)

    def test_get_guest_config_is_not_overridden(self):
        # Nova's own tests wrap the bound method onto Nova's class; an
        # override calling super() would recurse (see nova_upstream).
        self.assertIs(libvirt_driver.LibvirtDriver._get_guest_config,
                      libvirt.LibvirtDriver._get_guest_config)

    def test_pe_signature_detection(self):
        # Real Authenticode signatures, made by osslsigncode (not by the
        # layout the code reads), on a PE32+ (trixie's x86_64 ipxe.efi)
        # and a PE32 (pip's 32-bit Windows launcher): the two optional
        # header sizes the certificate table is found behind.
        import pip._vendor.distlib as distlib
        from tests import samples
        tmp = self.useFixture(fixtures.TempDir()).path
        cert, key = samples.self_signed_cert(tmp)
        pe32 = os.path.join(os.path.dirname(distlib.__file__), 't32.exe')
        with open(pe32, 'rb') as f:
            pe32 = f.read()
        for name, data in (('PE32+', samples.trixie_file('ipxe.efi')),
                           ('PE32', pe32)):
            unsigned = os.path.join(tmp, name + '.unsigned')
            signed = os.path.join(tmp, name + '.signed')
            with open(unsigned, 'wb') as f:
                f.write(data)
            subprocess.run([samples.require_tool('osslsigncode'), 'sign',
                            '-certs', cert, '-key', key, '-in', unsigned,
                            '-out', signed], check=True,
                           capture_output=True)
            with open(signed, 'rb') as f:
                signed = f.read()
            self.assertFalse(libvirt.pe_signed(data), name)
            self.assertTrue(libvirt.pe_signed(signed), name)
            # A table that runs past the end of the file is no signature.
            self.assertFalse(libvirt.pe_signed(signed[:-16]), name)
        self.assertFalse(libvirt.pe_signed(b'MZ' + b'\0' * 10))


class PackagingTestCase(testtools.TestCase):

    def test_shim_comes_from_nova_site_packages(self):
        import nova.virt.ipxe as shim
        site = os.path.dirname(os.path.dirname(nova.__file__))
        self.assertEqual(os.path.join(site, 'nova', 'virt', 'ipxe',
                                      '__init__.py'), shim.__file__)
        self.assertIs(libvirt.LibvirtDriver, shim.LibvirtDriver)

    def test_uninstall_removes_only_the_shim_from_nova(self):
        # pip uninstall removes what the RECORD lists: under nova/ that
        # must be the shim alone, never nova/__init__.py or nova/virt/.
        files = importlib.metadata.files('nova-ipxe')
        under_nova = sorted(str(f) for f in files
                            if str(f).startswith('nova/'))
        self.assertEqual(['nova/virt/ipxe/__init__.py'],
                         [f for f in under_nova
                          if not f.endswith('.pyc')])
        nova_files = {str(f) for f in importlib.metadata.files('nova')}
        self.assertIn('nova/virt/__init__.py', nova_files)
        self.assertNotIn('nova/virt/ipxe/__init__.py', nova_files)

    def test_broken_driver_name_exits_like_nova_compute(self):
        # load_compute_driver sys.exit(1)s when the import fails; the log
        # says it found the shim but no such class in it (without the
        # shim it would say there is no module nova.virt.ipxe).
        log = self.useFixture(fixtures.FakeLogger())
        e = self.assertRaises(SystemExit, driver.load_compute_driver, None,
                              'ipxe.NoSuchDriver')
        self.assertEqual(1, e.code)
        self.assertIn('Class NoSuchDriver cannot be found', log.output)
        self.assertNotIn('No module named', log.output)


class LoadTestCase(libvirt_base.IpxeServersTestBase):

    def test_nova_compute_loads_ipxe_libvirt_driver(self):
        self.start_compute()
        drv = self.computes['compute1'].driver
        self.assertIsInstance(drv, libvirt.LibvirtDriver)
        self.assertEqual('ipxe.LibvirtDriver',
                         libvirt_base.CONF.compute_driver)
        loaded = driver.load_compute_driver(None, 'ipxe.LibvirtDriver')
        self.assertIsInstance(loaded, libvirt.LibvirtDriver)
