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

"""Read the boot files of a stock iPXE ISO and build a new one around a
script, in-process with pycdlib (no mount, no root, no external tool).

The source ISO is untrusted (a tenant uploads it).  In the order a build
meets them:

* :mod:`~nova_ipxe.iso.structure`: bounds on what pycdlib would parse
  (descriptors, directory entries and depth, Rock Ridge continuation
  areas, the boot catalog, an isohybrid GPT), checked before it parses;
* :mod:`~nova_ipxe.iso.fileio`: the bounded read of a source file and
  the file objects pycdlib reads and writes;
* :mod:`~nova_ipxe.iso.cdlib`: pycdlib as our parses and builds use it;
* :mod:`~nova_ipxe.iso.layout`: what a source holds (boot images,
  isolinux.cfg, the iPXE kernel and EFI loader), read and checked once;
* :mod:`~nova_ipxe.iso.template`: a build once per size class of
  script, that later builds patch their script into;
* :mod:`~nova_ipxe.iso.base`: :class:`BaseIso`, a parsed source that
  builds per-instance ISOs.

Callers use the names below.
"""

from nova_ipxe.exception import shown
from nova_ipxe.iso.base import BaseIso
from nova_ipxe.iso.base import BuildResult
from nova_ipxe.iso.base import OUTPUT_SLACK
from nova_ipxe.iso.fileio import is_iso_file
from nova_ipxe.iso.fileio import read_iso_file
from nova_ipxe.iso.layout import AUTOEXEC
from nova_ipxe.iso.layout import BiosBoot
from nova_ipxe.iso.layout import EFI_LOADER
from nova_ipxe.iso.layout import efi_loader_reads_autoexec
from nova_ipxe.iso.layout import EfiBoot
from nova_ipxe.iso.layout import is_ipxe_kernel
from nova_ipxe.iso.layout import IsoFile
from nova_ipxe.iso.layout import Layout
from nova_ipxe.iso.layout import MAX_EFI_IMAGE
from nova_ipxe.iso.layout import SCRIPT_ISO_PATH
from nova_ipxe.iso.layout import SCRIPT_NAME
from nova_ipxe.iso.structure import check_structure
from nova_ipxe.iso.structure import SECTOR

__all__ = ('AUTOEXEC', 'BaseIso', 'BiosBoot', 'BuildResult',
           'check_structure', 'EFI_LOADER', 'efi_loader_reads_autoexec',
           'EfiBoot', 'is_ipxe_kernel', 'is_iso_file', 'IsoFile', 'Layout',
           'MAX_EFI_IMAGE', 'OUTPUT_SLACK', 'read_iso_file',
           'SCRIPT_ISO_PATH', 'SCRIPT_NAME', 'SECTOR', 'shown')
