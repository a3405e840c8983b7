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

"""A Nova instance described to the core (:class:`builder.Instance`).

Both drivers (libvirt on Nova 34, XenAPI on Nova 21) describe an instance
the same way: network data from ``network_info`` (:mod:`netinfo`), the
image's menu URL override from system_metadata, and the server metadata.
Reads the instance's attributes only; imports nothing from Nova.
"""

import typing

from nova_ipxe import builder
from nova_ipxe import menuurl
from nova_ipxe.virt import netinfo

# Nova keeps image properties it does not know (ours) only in the
# instance's system_metadata, as image_<name>, cut to 255 characters.
SYSMETA_MENU_URL = 'image_' + menuurl.OVERRIDE_KEY


def image_properties(instance: typing.Any) -> typing.Dict[str, str]:
    """The instance's image properties that the script reads."""
    value = (instance.system_metadata or {}).get(SYSMETA_MENU_URL)
    return {menuurl.OVERRIDE_KEY: value} if value else {}


def spec(instance: typing.Any, network_info: typing.Any, dhcp: str,
         image_props: typing.Optional[typing.Mapping[str, typing.Any]] = None
         ) -> builder.Instance:
    """The :class:`builder.Instance` for ``instance`` on ``network_info``.

    :param dhcp: ``[ipxe] dhcp_subnets``.
    :param image_props: the booted image's properties when they are not
        the instance's own (a rescue image, read from Glance).
    """
    network_data, names = netinfo.network_data(network_info, dhcp=dhcp)
    if image_props is None:
        image_props = image_properties(instance)
    return builder.Instance(
        network_data=network_data, uuid=instance.uuid,
        hostname=instance.hostname, network_names=names,
        image_properties=image_props,
        server_metadata=dict(instance.metadata or {}))
