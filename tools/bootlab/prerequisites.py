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


"""The host tools and firmware the boot lab needs, and the check for them."""

import os
import shutil

from tools.bootlab import errors
from tools.bootlab import netns
from tools.bootlab import vm
from tools import stock

IPXE_ISO = stock.BOOKWORM_ISO
IPXE_LKRN = stock.BOOKWORM_LKRN


def check_prerequisites(uefi=False, iso=False, kernel=False):
    """Raise PrerequisiteError naming what is missing (never skips).

    Always checks root, ``/dev/net/tun``, ``ip`` and QEMU with SeaBIOS.
    ``uefi`` adds OVMF; ``iso``/``kernel`` add the stock iPXE ISO/lkrn.
    """
    missing = []

    def need(ok, what, package):
        if not ok:
            missing.append((what, package))

    need(shutil.which(vm.QEMU), vm.QEMU, 'qemu-system-x86')
    need(os.path.exists(vm.SEABIOS), vm.SEABIOS, 'seabios')
    need(os.path.exists(vm.VGABIOS), vm.VGABIOS, 'seabios')
    need(shutil.which(netns.IP), 'ip', 'iproute2')
    if uefi:
        need(os.path.exists(vm.OVMF_CODE), vm.OVMF_CODE, 'ovmf')
        need(os.path.exists(vm.OVMF_VARS), vm.OVMF_VARS, 'ovmf')
    if iso:
        need(os.path.exists(IPXE_ISO), IPXE_ISO, 'ipxe')
    if kernel:
        need(os.path.exists(IPXE_LKRN), IPXE_LKRN, 'ipxe')
    problems = []
    if missing:
        packages = sorted({p for _, p in missing})
        problems.append(
            'missing %s; install with: apt-get install '
            '--no-install-recommends %s' % (
                ', '.join('%s (Debian package %s)' % m for m in missing),
                ' '.join(packages)))
    if os.geteuid() != 0:
        problems.append('the boot lab must run as root (it creates network '
                        'namespaces and tap devices)')
    if not os.path.exists('/dev/net/tun'):
        problems.append('/dev/net/tun is missing (kernel module tun; '
                        'in a container pass the device through)')
    if problems:
        raise errors.PrerequisiteError('boot lab prerequisites: ' +
                                       '; '.join(problems))
