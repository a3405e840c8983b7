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

"""Where the stock iPXE builds and the sample instance live.

The one place that names them: the labs, the demo and the tests
(``tests/samples.py``) read these paths.  ``tools/install-deps.sh``
installs Debian bookworm's ``ipxe`` package and fetches trixie's
(``tools/fetch-trixie-ipxe.sh``) into ``.cache/trixie-ipxe``.
"""

import os

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Debian bookworm's ipxe package (1.0.0+git-20190125): BIOS only, its EFI
# iPXE predates autoexec.ipxe.
BOOKWORM_ISO = '/usr/lib/ipxe/ipxe.iso'
BOOKWORM_LKRN = '/boot/ipxe.lkrn'

# Debian trixie's ipxe package (1.21.1+git20250501), unpacked in the tree:
# BIOS and UEFI, with autoexec.ipxe support.
TRIXIE_DIR = os.path.join(REPO, '.cache', 'trixie-ipxe')
TRIXIE_LIB = os.path.join(TRIXIE_DIR, 'usr', 'lib', 'ipxe')
TRIXIE_ISO = os.path.join(TRIXIE_LIB, 'ipxe.iso')

# The sample instance of the demo: one NIC, static IPv4 and IPv6, DNS.
NETWORK_DATA = os.path.join(REPO, 'tools', 'demo', 'network_data.json')
