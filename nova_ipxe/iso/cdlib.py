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

"""pycdlib as our parses and builds use it: one checksum summed in C."""

import array
import sys

import pycdlib


def _boot_info_table_csum(self, data_fp, data_len):
    """pycdlib's El Torito boot info table checksum, summed in C.

    pycdlib adds the boot file's 32-bit words one by one in Python
    (about 1.5 ms for isolinux.bin, twice per cold build); this computes
    the same sum over the same bytes with array.array.
    """
    block = self.logical_block_size
    size = -(-data_len // block) * block  # whole sectors, zero padded
    data = data_fp.read(size).ljust(size, b'\0')
    words = array.array('I', data[64:])
    if sys.byteorder == 'big':
        words.byteswap()
    return sum(words) & 0xffffffff


class Cdlib(pycdlib.PyCdlib):
    """The pycdlib our parses and builds use: only the checksum differs.

    A subclass rather than a patch of pycdlib.PyCdlib, so any other user
    of pycdlib in the process (nova-compute) keeps pycdlib as shipped.
    """

    if (hasattr(pycdlib.PyCdlib, '_calculate_eltorito_boot_info_table_csum')
            and array.array('I').itemsize == 4):
        _calculate_eltorito_boot_info_table_csum = _boot_info_table_csum
