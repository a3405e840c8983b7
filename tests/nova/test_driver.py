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

import importlib
import importlib.metadata
import inspect
import os

import fixtures
import nova
from nova.virt import driver
from nova.virt.libvirt import driver as libvirt_driver
import testtools

from nova_ipxe.virt import libvirt
from nova_ipxe.virt import release
from tests.nova import libvirt_base


def _signature(func):
    """Parameter names, kinds and defaults; annotations left out."""
    sig = inspect.signature(func)
    sig = sig.replace(return_annotation=sig.empty, parameters=[
        p.replace(annotation=p.empty) for p in sig.parameters.values()])
    return str(sig)[1:-1]


def _resolve(dotted):
    """The object a dotted name (module path, then attributes) names."""
    parts = dotted.split('.')
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module('.'.join(parts[:i]))
        except ImportError:
            continue
        for attr in parts[i:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(dotted)


class ReleaseTableTestCase(testtools.TestCase):
    """release.py's table for the installed Nova, one run per release."""

    def setUp(self):
        super().setUp()
        self.version = release.nova_version()
        self.major = release.major(self.version)

    def test_installed_nova_is_a_supported_release(self):
        self.assertIn(self.major, release.RELEASES,
                      'Nova %s is not in release.RELEASES' % self.version)
        self.assertTrue(release.check(self.version, False)[0])

    def test_upgrade_check_reports_this_release(self):
        # nova-ipxe-status reads the same metadata nova-compute runs.
        from oslo_config import cfg

        from nova_ipxe import conf as ipxe_conf
        from nova_ipxe import status
        conf = cfg.ConfigOpts()
        ipxe_conf.register_opts(conf)
        conf([], default_config_files=[])
        result = status.Checks(conf)._check_nova_release()
        self.assertEqual(status.Code.SUCCESS, result.code)
        self.assertIn(release.describe(self.version), result.details)

    def test_overridden_nova_methods_keep_their_signatures(self):
        # Fails loudly when this release's Nova changes a method we
        # override: release.OVERRIDES must then say so.
        table = release.OVERRIDES[self.major]
        for name, want in table.items():
            real = getattr(libvirt_driver.LibvirtDriver, name)
            self.assertEqual(want, _signature(real),
                             'Nova %s changed LibvirtDriver.%s'
                             % (self.version, name))

    def test_every_override_is_recorded(self):
        ours = {name for name, value in vars(libvirt.LibvirtDriver).items()
                if callable(value)
                and hasattr(libvirt_driver.LibvirtDriver, name)}
        for major, table in release.OVERRIDES.items():
            self.assertEqual(set(table), ours, 'release %d' % major)

    def test_overrides_accept_every_call_novas_signature_allows(self):
        # Our parameters are Nova's, in Nova's order, up to where ours
        # pass the rest on (**kwargs): any call Nova's code makes binds
        # the same way on ours.
        for name in release.OVERRIDES[self.major]:
            nova_params = list(inspect.signature(getattr(
                libvirt_driver.LibvirtDriver, name)).parameters.values())
            ours = list(inspect.signature(getattr(
                libvirt.LibvirtDriver, name)).parameters.values())

            def key(params):
                return [(p.name, p.kind, p.default) for p in params]
            named = [p for p in ours if p.kind not in (
                p.VAR_POSITIONAL, p.VAR_KEYWORD)]
            if len(named) == len(ours):
                self.assertEqual(key(nova_params), key(ours), name)
            else:
                # Ours passes on whatever else Nova's caller gives.
                self.assertEqual(key(nova_params[:len(named)]), key(named),
                                 name)
                # What Nova takes beyond them, ours takes as **kwargs
                # (Nova's callers pass those by name) or *args.
                rest = {p.kind for p in ours[len(named):]}
                for p in nova_params[len(named):]:
                    self.assertIn(p.VAR_POSITIONAL
                                  if p.kind == p.VAR_POSITIONAL
                                  else p.VAR_KEYWORD, rest, name)

    def test_every_other_nova_name_the_driver_uses(self):
        # Public or private, what the driver calls, reads or subclasses
        # is there, with the signature the table gives.
        for dotted, want in release.NOVA_NAMES[self.major].items():
            try:
                obj = _resolve(dotted)
            except (ImportError, AttributeError) as e:
                self.fail('Nova %s has no %s (%s)' % (self.version, dotted,
                                                      e))
            if want is not None:
                self.assertEqual(want, _signature(obj),
                                 'Nova %s changed %s' % (self.version,
                                                         dotted))

    def test_the_table_names_what_the_driver_module_uses(self):
        # Each Nova module attribute virt/libvirt.py reads (module.name)
        # is in NOVA_NAMES, so a new use cannot skip the table.
        import ast
        with open(libvirt.__file__) as f:
            tree = ast.parse(f.read())
        modules = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and (
                    node.module.startswith('nova.')
                    or node.module == 'nova'):
                for alias in node.names:
                    modules[alias.asname or alias.name] = '%s.%s' % (
                        node.module, alias.name)
        used = set()
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute)
                    and isinstance(node.value, ast.Name)
                    and node.value.id in modules):
                used.add('%s.%s' % (modules[node.value.id], node.attr))
        # And each of Nova's LibvirtDriver methods it calls on self.
        nova_class = 'nova.virt.libvirt.driver.LibvirtDriver'
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute)
                    and isinstance(node.value, ast.Name)
                    and node.value.id == 'self'
                    and node.attr not in vars(libvirt.LibvirtDriver)
                    and hasattr(libvirt_driver.LibvirtDriver, node.attr)):
                used.add('%s.%s' % (nova_class, node.attr))
        names = set(release.NOVA_NAMES[self.major])
        known = {n for n in used if n in names or any(
            k.startswith(n + '.') for k in names)}
        # The class we subclass: its methods are in OVERRIDES and
        # NOVA_NAMES under their own names.
        known.add(nova_class)
        self.assertEqual(set(), used - known)


class StartupGateTestCase(testtools.TestCase):

    def test_untested_major_refused_naming_the_supported_releases(self):
        e = self.assertRaises(release.UntestedNova, release.check,
                              '35.0.0', False)
        for major, (series, _) in release.RELEASES.items():
            self.assertIn('%d (%s)' % (major, series), str(e))
        self.assertIn('allow_untested_nova', str(e))
        self.assertRaises(release.UntestedNova, release.check, '30.3.0',
                          False)

    def test_untested_major_allowed_by_the_option(self):
        tested, message = release.check('35.0.0', True)
        self.assertFalse(tested)
        self.assertIn('Nova 35.0.0', message)
        self.assertIn('allow_untested_nova', message)


class OverridesTestCase(testtools.TestCase):

    def test_get_guest_config_is_not_overridden(self):
        # Nova's own tests wrap the bound method onto Nova's class; an
        # override calling super() would recurse (see nova_upstream).
        self.assertIs(libvirt_driver.LibvirtDriver._get_guest_config,
                      libvirt.LibvirtDriver._get_guest_config)


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
        # The instance attributes of Nova's driver ours reads.
        self.assertTrue(hasattr(drv, '_image_api'))
        self.assertTrue(hasattr(drv, 'image_backend'))

    def test_start_logs_the_nova_release(self):
        self.start_compute()
        self.assertIn('nova-ipxe: ipxe.LibvirtDriver on %s'
                      % release.describe(release.nova_version()),
                      self.stdlog.logger.output)

    def test_refuses_to_start_on_an_untested_nova(self):
        self.useFixture(fixtures.MonkeyPatch(
            'nova_ipxe.virt.release.nova_version', lambda: '35.0.0'))
        e = self.assertRaises(release.UntestedNova, self.start_compute)
        self.assertIn('not tested with Nova 35.0.0', str(e))
        self.assertIn(release.supported(), str(e))
        self.assertNotIn('compute1', self.computes)

    def test_untested_nova_starts_with_a_warning_when_allowed(self):
        self.useFixture(fixtures.MonkeyPatch(
            'nova_ipxe.virt.release.nova_version', lambda: '35.0.0'))
        self.flags(allow_untested_nova=True, group='ipxe')
        self.start_compute()
        self.assertIsInstance(self.computes['compute1'].driver,
                              libvirt.LibvirtDriver)
        self.assertIn('WARNING [nova_ipxe.virt.libvirt] nova-ipxe: '
                      'ipxe.LibvirtDriver on Nova 35.0.0, a release it was '
                      'not tested with', self.stdlog.logger.output)


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
