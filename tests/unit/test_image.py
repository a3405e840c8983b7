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

"""nova_ipxe.image: which Glance images are iPXE boot images."""

from nova_ipxe import image
from tests import base


class IsIpxeImageTestCase(base.TestCase):

    def test_rule(self):
        yes = image.is_ipxe_image
        self.assertTrue(yes('iso', {'hw_ipxe_boot': True}))
        self.assertTrue(yes('iso', {'hw_ipxe_boot': 'true'}))
        self.assertTrue(yes('iso', {'ipxe_boot': 'True'}))
        self.assertFalse(yes('iso', {'hw_ipxe_boot': 'false',
                                     'ipxe_boot': 'no'}))
        self.assertFalse(yes('qcow2', {'hw_ipxe_boot': 'true'}))
        self.assertFalse(yes('iso', {}))
        self.assertFalse(yes('iso', None))
        self.assertFalse(yes('iso', {'hw_ipxe_boot': 'maybe'}))
