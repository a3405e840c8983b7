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

"""Hostile iPXE binaries: bytes a tenant can put in an ISO to make
reading capabilities expensive (a tenant's attack on the spawn path).

Each builder starts from Debian bookworm's real ``ipxe.lkrn`` or
``ipxe.efi`` so that the file still passes the "is this iPXE" checks
and reaches the capability reader, then adds what made the reading
cost without bound before it had a work budget.  Deterministic: no
randomness, so a test and the bench see the same bytes.
"""

import lzma
import struct

from nova_ipxe import capabilities
from tests import samples

# Where bookworm's LZMA payload starts (the reader finds it; the hostile
# builders cut the prefix there so that the iPXE marker stays).
BOOKWORM_PAYLOAD = 4692


def _lkrn():
    with open(samples.require(samples.BOOKWORM_LKRN), 'rb') as f:
        return f.read()


def _efi():
    with open(samples.require(samples.BOOKWORM_EFI), 'rb') as f:
        return f.read()


def _raw_lzma(data):
    return lzma.compress(data, format=lzma.FORMAT_RAW,
                         filters=[{'id': lzma.FILTER_LZMA1, 'lc': 2,
                                   'lp': 0, 'pb': 0, 'dict_size': 1 << 20}])


def zero_run(zeros=12 * 1024):
    """A run of zero bytes where the LZMA stream may start.

    Every zero byte is a place a raw LZMA1 stream can start, and zeros
    decode: before the budget, each probe decoded the rest of the file
    (12 KiB: 49 s for one build).
    """
    lkrn = _lkrn()
    # After the bzImage setup header (0x1f1-0x268), which must stay.
    return lkrn[:0x280] + b'\0' * zeros + lkrn[0x280:]


def ends_in_zeros(size=1400 * 1024):
    """The prefix, then zeros to the end: every probe decodes for long."""
    lkrn = _lkrn()
    prefix = lkrn[:BOOKWORM_PAYLOAD]
    return prefix + b'\0' * (size - len(prefix))


def name_bomb(size=capabilities.MAX_IMAGE - 64):
    """A tiny LZMA stream decoding to millions of names.

    Each occurrence of a name used to be searched for across the image.
    """
    unit = b'chain\0echo\0imgfetch\0DNS\0HTTP\0ip6\0'
    image = (unit * (size // len(unit) + 1))[:size]
    lkrn = _lkrn()
    return lkrn[:BOOKWORM_PAYLOAD] + _raw_lzma(image)


def pointer_bomb(entries=1 << 20):
    """Names, then a million aligned pointers to them.

    Each pointer found used to walk its table again from the start.
    """
    names = b'\0chain\0DNS\0'
    chain, dns = 1, 7
    words = struct.pack('<II', chain, 0) * (entries // 2)
    words += struct.pack('<I', dns) * (entries // 2)
    image = names + b'\0' * (16 - len(names)) + words
    image += b'\0' * 64   # the image decodes larger than the stream
    lkrn = _lkrn()
    return lkrn[:BOOKWORM_PAYLOAD] + _raw_lzma(image)


def pe_sections(count=20000):
    """A PE32+ header claiming ``count`` sections over the same bytes."""
    efi = bytearray(_efi())
    pe = struct.unpack_from('<I', efi, 0x3c)[0]
    opt_size = struct.unpack_from('<H', efi, pe + 20)[0]
    table = pe + 24 + opt_size
    struct.pack_into('<H', efi, pe + 6, count)
    section = struct.pack('<8sIIIIIIHHI', b'.bomb', 0x100000, 0x1000,
                          0x100000, 0, 0, 0, 0, 0, 0)
    body = bytes(efi[:table]) + section * count
    return body + bytes(efi[len(body):]) if len(body) < len(efi) else body


def pe_overlapping(count=capabilities.MAX_PE_SECTIONS):
    """The most sections allowed, each copying the whole file again."""
    return pe_sections(count)


def pe_truncations():
    """Bookworm's ipxe.efi cut at every length through its headers."""
    efi = _efi()
    pe = struct.unpack_from('<I', efi, 0x3c)[0]
    opt_size = struct.unpack_from('<H', efi, pe + 20)[0]
    end = pe + 24 + opt_size + 40 * 8
    return [efi[:n] for n in range(0, end + 1)]


# name: (builder, what it targets), for tests and bench/hostile_binaries.py
CASES = {
    'zero-run-12k': (zero_run, 'LZMA probes at 12 KiB of zero bytes'),
    'ends-in-zeros': (ends_in_zeros, 'a kernel that ends in zeros'),
    'name-bomb': (name_bomb, '16 MiB of names from a small LZMA stream'),
    'pointer-bomb': (pointer_bomb, 'a million pointers into two tables'),
    'pe-20000-sections': (pe_sections, 'a PE with 20,000 sections'),
    'pe-96-overlapping': (pe_overlapping, '96 sections of 1 MiB each'),
}
