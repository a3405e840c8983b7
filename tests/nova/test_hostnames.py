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

"""Every host name Nova makes from a server name boots.

Nova's own ``sanitize_hostname`` (what the API stores as
``instance.hostname``) against nova-ipxe's canonical form: the name is
carried in an ASCII form iPXE and the signature accept, or left out,
and rendering the script never fails for it.
"""

import random

from nova import utils as nova_utils
from testtools import content

from nova_ipxe import builder
from nova_ipxe import identity
from nova_ipxe import script
from nova_ipxe import signature
from tests import base

# Every Latin-1 character, the first planes' letters, marks, digits,
# separators and controls: what a tenant can type into a server name.
ALPHABET = ([chr(c) for c in range(0x20, 0x250)] +
            ['\u0131', '\u212a', '\u202e', '\u200b', '\u2028', '\u00a0',
             '\uff44', '\u0663', '\u0301', '\U0001f600', '_', '.', ' '])


def server_names(count=3000, seed=16):
    rng = random.Random(seed)
    names = ['Caf\u00e9 1', '\u00c5ngstr\u00f6m', 'my_host', 'a.b',
             '\u00e9' * 80, '-x-', '...', '']
    names += [''.join(rng.choice(ALPHABET) for _ in range(rng.randint(
        1, 70))) for _ in range(count)]
    return names


class NovaHostnameTestCase(base.TestCase):

    def test_every_name_nova_makes_boots(self):
        carried = left_out = 0
        for name in server_names():
            hostname = nova_utils.sanitize_hostname(name, 'Server-1')
            text, why = identity.canonical_hostname(hostname)
            rendered = builder.render_script(builder.Instance(
                network_data=self.network_data(), hostname=hostname,
                uuid='8d0f7b6e-3c2a-4b1d-9e8f-7a6b5c4d3e2f'), self.conf)
            self.assertTrue(rendered.text.isascii())
            if text is None:
                left_out += 1
                self.assertTrue(why, hostname)
                self.assertNotIn('set hostname', rendered.text)
                continue
            carried += 1
            self.assertEqual(text, script.check_hostname(text))
            self.assertIsNone(signature.field_problem('hostname', text))
            self.assertIn('set hostname %s\n' % text, rendered.text)
        self.addDetail('hostnames', content.text_content(
            '%d carried, %d left out' % (carried, left_out)))
        # Nova keeps letters, digits and hyphens: nearly all are carried
        # (left out: labels over 63 characters once in Punycode).
        self.assertGreater(carried, 0.9 * (carried + left_out))
