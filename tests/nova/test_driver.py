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
        # An unsigned stock loader from trixie's iPXE.
        from tests import samples
        data = samples.trixie_file('ipxe.efi')
        self.assertFalse(libvirt.pe_signed(data))
        # The same PE with a certificate table entry pointing at bytes
        # appended to it.
        pe = int.from_bytes(data[0x3c:0x40], 'little')
        opt = pe + 24
        magic = int.from_bytes(data[opt:opt + 2], 'little')
        entry = opt + (112 if magic == 0x20b else 96) + 4 * 8
        signed = bytearray(data) + b'\0' * 64
        signed[entry:entry + 8] = (len(data).to_bytes(4, 'little')
                                   + (64).to_bytes(4, 'little'))
        self.assertTrue(libvirt.pe_signed(bytes(signed)))
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
        # load_compute_driver sys.exit(1)s when the import fails.
        self.assertRaises(SystemExit, driver.load_compute_driver, None,
                          'ipxe.NoSuchDriver')


class LoadTestCase(libvirt_base.IpxeServersTestBase):

    def test_nova_compute_loads_ipxe_libvirt_driver(self):
        self.start_compute()
        drv = self.computes['compute1'].driver
        self.assertIsInstance(drv, libvirt.LibvirtDriver)
        self.assertEqual('ipxe.LibvirtDriver',
                         libvirt_base.CONF.compute_driver)
        loaded = driver.load_compute_driver(None, 'ipxe.LibvirtDriver')
        self.assertIsInstance(loaded, libvirt.LibvirtDriver)


class LoaderSecureTestCase(testtools.TestCase):
    """<loader secure> beside firmware autoselection (libvirt < 9.2)."""

    UEFI = ('<domain type="qemu"><os firmware="efi"><firmware><feature '
            'name="secure-boot" enabled="no"/></firmware><type>hvm</type>'
            '<loader secure="no"/></os></domain>')

    def test_dropped_with_autoselection(self):
        out = libvirt.LibvirtDriver._loader_secure_for_libvirt(self.UEFI)
        self.assertNotIn('<loader', out)
        self.assertIn('name="secure-boot" enabled="no"', out)
        self.assertIn('firmware="efi"', out)

    def test_a_loader_with_a_path_keeps_it(self):
        xml = self.UEFI.replace('<loader secure="no"/>',
                                '<loader secure="yes">/x.fd</loader>')
        out = libvirt.LibvirtDriver._loader_secure_for_libvirt(xml)
        self.assertIn('<loader>/x.fd</loader>', out)

    def test_left_alone_without_autoselection(self):
        xml = ('<domain><os><type>hvm</type><loader secure="yes" '
               'type="pflash">/x.fd</loader></os></domain>')
        self.assertEqual(
            xml, libvirt.LibvirtDriver._loader_secure_for_libvirt(xml))
