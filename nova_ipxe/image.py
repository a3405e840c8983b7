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

"""The one rule that says whether an image is an iPXE boot image."""

import typing

from oslo_utils import strutils

IPXE_BOOT_PROPERTIES = ('hw_ipxe_boot', 'ipxe_boot')


def is_ipxe_image(disk_format: typing.Optional[str],
                  properties: typing.Optional[typing.Mapping[str, object]]
                  ) -> bool:
    """An ISO whose ``hw_ipxe_boot`` (legacy: ``ipxe_boot``) is true."""
    if disk_format != 'iso':
        return False
    properties = properties or {}
    return any(strutils.bool_from_string(properties.get(key), default=False)
               for key in IPXE_BOOT_PROPERTIES)
