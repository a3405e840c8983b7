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

"""Nova's own functional libvirt tests, every compute as ipxe.LibvirtDriver.

Discovery of this package loads ``nova/tests/functional/libvirt`` from the
installed Nova, after making ``nova.virt.driver.load_compute_driver`` load
``ipxe.LibvirtDriver`` wherever a test asks for ``libvirt.LibvirtDriver``.
``NOVA_IPXE_UPSTREAM_DRIVER=stock`` runs them on the stock driver instead,
for the side-by-side counts.  Run it with its own ``--test-path``
(tools/run-tests.sh, tox envs ``nova31`` ... ``nova34``).

Some of Nova's tests replace ``LibvirtDriver._get_guest_config`` on Nova's
class with a wrapper that calls the running driver's *bound* method: a
subclass overriding that method and calling ``super()`` would recurse
forever.  ipxe.LibvirtDriver does not override ``_get_guest_config`` (nor
any method those tests wrap), so they run unchanged.
"""

import os

# Monkey-patched first, as in tests/nova (see its docstring).
import tests.nova  # noqa: F401,I100,I202
from nova.virt import driver  # noqa: H306

STOCK = os.environ.get('NOVA_IPXE_UPSTREAM_DRIVER') == 'stock'

_real_load = driver.load_compute_driver


def _load_ipxe(virtapi, compute_driver=None):
    from nova import conf
    name = compute_driver or conf.CONF.compute_driver
    if name == 'libvirt.LibvirtDriver':
        name = 'ipxe.LibvirtDriver'
    drv = _real_load(virtapi, name)
    if name == 'ipxe.LibvirtDriver':
        from nova_ipxe.virt import libvirt
        assert isinstance(drv, libvirt.LibvirtDriver), drv
    return drv


if not STOCK:
    driver.load_compute_driver = _load_ipxe


def load_tests(loader, standard_tests, pattern):
    import nova.tests.functional.libvirt as upstream
    start = os.path.dirname(upstream.__file__)
    top = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
        start))))
    standard_tests.addTests(loader.discover(
        start_dir=start, pattern=pattern or 'test*.py', top_level_dir=top))
    return standard_tests
