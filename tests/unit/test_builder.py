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

"""nova_ipxe.builder: the per-instance build and its failure policy."""

from nova_ipxe import builder
from nova_ipxe import exception
from tests import base


class StockOnFailureTestCase(base.TestCase):

    def test_failure_policy(self):
        error = exception.InvalidIso(source='x', reason='y')
        self.assertRaises(exception.InvalidIso, builder.stock_on_failure,
                          error, self.conf)
        self.flags(on_build_failure='stock')
        self.assertTrue(builder.stock_on_failure(error, self.conf))
        # Programming errors are never papered over.
        self.assertRaises(KeyError, builder.stock_on_failure, KeyError('k'),
                          self.conf)
