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

from nova_ipxe import exception
from nova_ipxe import menuurl
from tests import base


class CredentialsTestCase(base.TestCase):
    """The tenant can read the URL in its ISO."""

    def test_operator_url_with_credentials_refused(self):
        for url in ('http://boot:s3cret@boot.example/menu',
                    'https://s3cret@boot.example/menu',
                    'http://:s3cret@boot.example/menu',
                    'tftp://boot:s3cret@192.0.2.1/menu',
                    'http://${user}:${s3cret}@boot.example/menu'):
            e = self.assertRaises(exception.InvalidConfiguredMenuUrl,
                                  menuurl.operator_url, url)
            self.assertEqual(exception.OPERATOR, e.category)
            self.assertIn('credentials', str(e))
            # Neither message repeats the secret.
            self.assertNotIn('s3cret', str(e))
            self.assertNotIn('s3cret', e.safe_message)
        # An "@" in the path or query is no credential.
        self.assertEqual('http://boot.example/m?by=ops@example',
                         menuurl.operator_url(
                             'http://boot.example/m?by=ops@example'))

    def test_tenant_url_with_credentials_refused(self):
        for url in ('http://u:s3cret@h/m', 'https://u@h/m'):
            e = self.assertRaises(exception.InvalidMenuUrl,
                                  menuurl.tenant_url, url)
            self.assertEqual(exception.TENANT, e.category)
            self.assertNotIn('s3cret', str(e))

    def test_non_string_values_are_typed(self):
        deep = []
        for _ in range(100000):
            deep = [deep]
        for value in (10 ** 5000, deep, {'a': 1}, b'http://h/m', None):
            e = self.assertRaises(exception.InvalidMenuUrl,
                                  menuurl.tenant_url, value)
            self.assertLessEqual(len(str(e)), exception.MAX_MESSAGE)
            self.assertRaises(exception.InvalidConfiguredMenuUrl,
                              menuurl.operator_url, value)
