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

"""isolinux.cfg: the default entry's kernel, and the file we write."""

from nova_ipxe import isolinux
from tests import base


class IsolinuxCfgTestCase(base.TestCase):

    def test_forms(self):
        for text, kernel in [
                ('DEFAULT ipxe.lkrn\nLABEL ipxe.lkrn\n KERNEL ipxe.krn\n',
                 'ipxe.krn'),
                ('default a\nlabel b\n kernel b.krn\nlabel a\n linux a.krn'
                 ' quiet\n', 'a.krn'),
                ('DEFAULT ipxe.lkrn initrd=x\n', 'ipxe.lkrn'),
                ('KERNEL /boot/ipxe.lkrn\n', '/boot/ipxe.lkrn'),
                ('UI menu.c32\nLABEL x\n KERNEL x.krn\nLABEL y\n MENU '
                 'DEFAULT\n KERNEL y.krn\n', 'y.krn'),
                ('# nothing\n', None)]:
            self.assertEqual(kernel, isolinux.kernel_ref(text), text)

    def test_first_label_when_default_names_nothing(self):
        text = 'DEFAULT missing\nLABEL a\nLABEL b\n KERNEL b.krn\n'
        # DEFAULT names no label, so it names a kernel directly.
        self.assertEqual('missing', isolinux.kernel_ref(text))
        self.assertEqual('b.krn', isolinux.kernel_ref(
            'LABEL a\nLABEL b\n KERNEL b.krn\n'))

    def test_render(self):
        text = isolinux.render('/ipxe.krn', '/nipxe.ipx')
        self.assertEqual('/ipxe.krn', isolinux.kernel_ref(text))
        self.assertIn('\n INITRD /nipxe.ipx\n', text)
        self.assertIn('\nPROMPT 0\n', text)
        self.assertNotIn('APPEND', text)
