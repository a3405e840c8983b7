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

"""Every private Nova name the libvirt driver reaches still exists.

NOVA_OVERRIDES pins the methods we override; this covers what we call
or read without overriding: ``module._name`` on a Nova module and
``self._name`` that our classes inherit from a Nova class (a method, a
class attribute, or an attribute Nova's ``__init__`` sets).  Read from
the driver's source, so a new use is covered without a list to keep.
"""

import ast
import inspect
import types

import testtools

from nova_ipxe.virt import libvirt


def _nova_modules():
    return {name: value for name, value in vars(libvirt).items()
            if isinstance(value, types.ModuleType)
            and value.__name__.split('.')[0] == 'nova'}


def _nova_classes():
    """{our class name: its Nova base class}."""
    return {name: base for name, cls in vars(libvirt).items()
            if isinstance(cls, type) and cls.__module__ == libvirt.__name__
            for base in cls.__bases__[:1]
            if base.__module__.split('.')[0] == 'nova'}


def _sets_in_init(cls, name):
    for klass in cls.__mro__:
        init = vars(klass).get('__init__')
        if init is None:
            continue
        try:
            source = inspect.getsource(init)
        except (OSError, TypeError):
            continue
        if 'self.%s =' % name in source or 'self.%s:' % name in source:
            return True
    return False


class PrivateNovaNamesTestCase(testtools.TestCase):

    def setUp(self):
        super().setUp()
        self.tree = ast.parse(inspect.getsource(libvirt))

    def test_private_module_names(self):
        modules = _nova_modules()
        used = {(node.value.id, node.attr) for node in ast.walk(self.tree)
                if isinstance(node, ast.Attribute)
                and node.attr.startswith('_')
                and not node.attr.startswith('__')
                and isinstance(node.value, ast.Name)
                and node.value.id in modules}
        self.assertIn(('imagebackend', '_update_utime_ignore_eacces'),
                      used)
        missing = sorted('%s.%s' % (mod, name) for mod, name in used
                         if not hasattr(modules[mod], name))
        self.assertEqual([], missing)

    def test_private_names_inherited_from_nova(self):
        bases = _nova_classes()
        self.assertIn('LibvirtDriver', bases)
        checked = set()
        missing = []
        for node in self.tree.body:
            if not (isinstance(node, ast.ClassDef) and node.name in bases):
                continue
            ours = getattr(libvirt, node.name)
            nova_base = bases[node.name]
            for use in ast.walk(node):
                if not (isinstance(use, ast.Attribute)
                        and use.attr.startswith('_')
                        and not use.attr.startswith('__')
                        and isinstance(use.value, (ast.Name, ast.Call))):
                    continue
                if isinstance(use.value, ast.Name) and use.value.id not in (
                        'self', 'cls'):
                    continue
                if isinstance(use.value, ast.Call) and not (
                        isinstance(use.value.func, ast.Name)
                        and use.value.func.id == 'super'):
                    continue
                name = use.attr
                if name in vars(ours) and not isinstance(use.value,
                                                         ast.Call):
                    continue    # ours, not Nova's
                checked.add('%s.%s' % (node.name, name))
                if not (hasattr(nova_base, name)
                        or _sets_in_init(nova_base, name)):
                    missing.append('%s.%s' % (nova_base.__name__, name))
        # The ones this test was written for must be among those checked.
        for name in ('_image_api', '_is_booted_from_volume',
                     '_set_cache_mode', '_try_fetch_image_cache'):
            self.assertIn('LibvirtDriver.' + name, checked)
        self.assertEqual([], sorted(set(missing)))
