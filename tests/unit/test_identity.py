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

import codecs

from nova_ipxe import identity
from nova_ipxe import script
from nova_ipxe import signature
from tests import base

# Every character Nova's sanitize_hostname keeps beyond ASCII: the
# Latin-1 characters that are \w (letters, superscript digits, the
# fractions, the ordinal indicators, the micro sign).
LATIN1_WORD = [chr(c) for c in range(0xa0, 0x100) if chr(c).isalnum()]


class CanonicalHostnameTestCase(base.TestCase):

    def test_ascii_names_unchanged_but_case(self):
        for name, want in (('demo-1', 'demo-1'), ('Demo-1.EXAMPLE',
                                                  'demo-1.example'),
                           ('123', '123'), ('xn--caf-dma', 'xn--caf-dma')):
            self.assertEqual((want, None), identity.canonical_hostname(name))

    def test_latin1_names_nova_makes_are_carried(self):
        # Nova 34: sanitize_hostname('Café 1') == 'café-1'.
        self.assertEqual(('xn--caf-1-dsa', None),
                         identity.canonical_hostname('caf\u00e9-1'))
        for ch in LATIN1_WORD:
            for name in (ch, 'a' + ch, ch + '-9', 'x.' + ch * 10):
                text, why = identity.canonical_hostname(name)
                self.assertIsNone(why, (name, why))
                self.assertEqual(text, script.check_hostname(text))
                self.assertIsNone(signature.field_problem('hostname', text))
                # Decoding gives the name back: nothing was folded.
                for label, got in zip(name.split('.'), text.split('.')):
                    self.assertEqual(label, label if label.isascii() else
                                     codecs.decode(got[4:], 'punycode'))

    def test_never_folded(self):
        # The Kelvin sign is not "k", the dotless i is not "i".
        for name in ('demo-\u212a', 'd\u0131'):
            text, why = identity.canonical_hostname(name)
            self.assertIsNone(why)
            self.assertTrue(text.startswith('xn--'))
            self.assertNotEqual(name.lower(), text)

    def test_names_without_an_ascii_form(self):
        for name in ('my_host', '-bad', 'bad-', 'a..b', 'demo.', '',
                     'a b', '#x', 'caf\u00e9\u202e', '\u00e9' * 63,
                     'x' * 64, 'a.' * 127 + 'a', None, 5):
            text, why = identity.canonical_hostname(name)
            self.assertIsNone(text, name)
            if name is not None:
                self.assertTrue(why, name)
