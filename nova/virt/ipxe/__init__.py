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

"""Shim so that ``compute_driver = ipxe.<Driver>`` loads.

Nova's ``load_compute_driver`` only imports ``nova.virt.<compute_driver>``,
so out-of-tree drivers ship a sub-package here (only this one: never
``nova/__init__.py`` or ``nova/virt/__init__.py``).  The drivers live in
``nova_ipxe.virt`` and are imported on first use, so a libvirt host never
imports the XenAPI driver and the other way round.
"""

import importlib

_DRIVERS = {
    'LibvirtDriver': 'nova_ipxe.virt.libvirt',
    'XenAPIDriver': 'nova_ipxe.virt.xenapi_driver',
}


def __getattr__(name):
    module = _DRIVERS.get(name)
    if module is None:
        raise AttributeError('module %r has no attribute %r'
                             % (__name__, name))
    return getattr(importlib.import_module(module), name)


def __dir__():
    return sorted(_DRIVERS)
