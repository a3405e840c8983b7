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

"""Boot lab: boot a VM in QEMU (TCG) on a private network with no DHCP.

Used by the functional tests and by the demo.  Standard library only
(``LabFixture`` additionally needs the ``fixtures`` package).  Needs root,
``ip`` (iproute2), ``qemu-system-x86_64`` (qemu-system-x86), and for the
stock images ``ipxe`` and, for UEFI, ``ovmf``.

Everything happens inside a network namespace ``nipxe-<hex>`` created for
the lab and deleted afterwards; it is never connected to the host (no veth,
no route out, no NAT).  Use documentation addresses only (192.0.2.0/24,
198.51.100.0/24, 203.0.113.0/24, 2001:db8::/32)::

    from tools import bootlab

    bootlab.check_prerequisites()
    with bootlab.Lab() as lab:
        lab.add_bridge('br0', ipv4='192.0.2.1/24', ipv6='2001:db8::1/64')
        lab.add_tap('tap0', 'br0')
        menu = bootlab.MenuServer(lab, '192.0.2.1', 8080,
                                  {'/menu': '#!ipxe\\nreboot\\n'}).start()
        dhcp = bootlab.DhcpSentinel(lab).start()
        vm = bootlab.Vm(lab, cdrom='/path/to/regenerated.iso',
                        nics=[bootlab.Nic('tap0', bootlab.unique_mac())])
        vm.start()
        first = menu.wait_for('/menu', timeout=60, vm=vm)
        result = vm.wait(timeout=120)
        print(first['time'] - vm.started_at, result.wall_time,
              dhcp.count())

A guest ``reboot`` makes QEMU exit 0 (``-no-reboot``): end boots with it.
Times: ``Vm.started_at`` and the ``time`` of every logged request or DHCP
packet are ``time.time()`` values (same clock, different processes).

``RouterAdvertiser`` sends IPv6 router advertisements (M/O flags) so a
test can prove that a static script ignores them (iPXE's ``dhcp`` then
sends DHCPv6 SOLICITs, which the sentinel counts).

Findings (QEMU 7.2, SeaBIOS 1.16.2, iPXE 1.0.0+git-20190125, TCG):
without ``-fw_cfg name=etc/sercon-port`` the serial log of an lkrn boot is
empty (QEMU warns that the name lacks ``opt/``; SeaBIOS reads only this
name).  SeaBIOS's serial console buffers the last line: output written just
before ``reboot`` can be cut off (add ``sleep 1`` if it matters).  With
e1000 the guest ignores the lab's immediate ARP replies for about 1 s after
``ifopen`` (probably QEMU's emulated link negotiation), so a static boot
reaches the menu ~1.9 s after power-on with e1000 and ~0.9 s with
virtio-net-pci.

Command line: ``python -m tools.bootlab boot --cdrom X.iso`` boots an ISO on
a fresh lab and prints a JSON summary; ``python -m tools.bootlab reap``
deletes namespaces left behind by lab owners that died (SIGKILL).

The modules: ``netns`` (the namespace, its bridges and taps, cleanup),
``vm`` (QEMU), ``menu`` (the menu server), ``dhcp`` (the DHCP sentinel and
the router advertiser), ``helper`` (how those run in the namespace, as
``menu_server.py``), ``prerequisites`` and ``cli``; the process helpers are
shared with the Glance lab in ``tools/labproc.py``.  Everything a caller
needs is importable from here.
"""

from tools.bootlab.cli import main
from tools.bootlab.dhcp import DhcpSentinel
from tools.bootlab.dhcp import RouterAdvertiser
from tools.bootlab.errors import LabError
from tools.bootlab.errors import LabTimeout
from tools.bootlab.errors import PrerequisiteError
from tools.bootlab.menu import MenuServer
from tools.bootlab.netns import Bridge
from tools.bootlab.netns import check_documentation_address
from tools.bootlab.netns import Lab
from tools.bootlab.netns import reap_stale
from tools.bootlab.netns import unique_name
from tools.bootlab.prerequisites import check_prerequisites
from tools.bootlab.prerequisites import IPXE_ISO
from tools.bootlab.prerequisites import IPXE_LKRN
from tools.bootlab.vm import boot
from tools.bootlab.vm import BootResult
from tools.bootlab.vm import check_png
from tools.bootlab.vm import clean_serial
from tools.bootlab.vm import Nic
from tools.bootlab.vm import OVMF_CODE
from tools.bootlab.vm import OVMF_VARS
from tools.bootlab.vm import Qmp
from tools.bootlab.vm import unique_mac
from tools.bootlab.vm import unique_macs
from tools.bootlab.vm import Vm

try:
    from tools.bootlab.netns import LabFixture
except ImportError:  # pragma: no cover (no fixtures package)
    pass

__all__ = [
    'boot', 'BootResult', 'Bridge', 'check_documentation_address',
    'check_png', 'check_prerequisites', 'clean_serial', 'DhcpSentinel',
    'IPXE_ISO', 'IPXE_LKRN', 'Lab', 'LabError', 'LabFixture', 'LabTimeout',
    'main', 'MenuServer', 'Nic', 'OVMF_CODE', 'OVMF_VARS',
    'PrerequisiteError', 'Qmp', 'reap_stale', 'RouterAdvertiser',
    'unique_mac', 'unique_macs', 'unique_name', 'Vm',
]
