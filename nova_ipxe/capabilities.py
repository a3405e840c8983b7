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

"""What an iPXE binary can do, read from the binary itself.

A build's features are what its boot banner prints ("Features: DNS HTTP
HTTPS ..."): iPXE prints the names in its ``features`` table, an array
of pointers to the names.  Its commands are the ``commands`` table, an
array of {name, function} pairs.  Both tables are found in the linked
image by following pointers to known names, so nothing depends on a
build's addresses:

* a BIOS ``.lkrn`` (Linux bzImage) is an uncompressed real-mode prefix
  followed by a raw LZMA1 stream (lc=2, lp=0, pb=0, as iPXE's
  ``util/zbin.c`` writes it) holding the image, linked at address 0.
  The stream's offset differs per build (4692 in Debian bookworm's, 4740
  in trixie's): it is found by trying the offsets where a stream can
  start;
* a UEFI ``.efi`` is a plain PE32+ (iPXE does not compress it); its
  sections are laid out at their RVAs and pointers are ImageBase + RVA.

IPv6 is no banner feature: a build has it when its settings table holds
the ``ip6`` setting (``net/ipv6.c``), found the same way (a name pointer
followed by a description pointer).

What cannot be read (another format, a future layout) is reported as
unknown, and nothing is refused on its account.
"""

import dataclasses
import ipaddress
import lzma
import re
import struct
import urllib.parse

from oslo_log import log as logging

from nova_ipxe import exception

LOG = logging.getLogger(__name__)

LKRN = 'lkrn (LZMA)'
PE = 'PE32+'
PE32 = 'PE32'

# Every FEATURE() name in iPXE's source (checked 2026-12 at 0ab2277c).
KNOWN_FEATURES = frozenset((
    'AoE', 'COMBOOT', 'DNS', 'EFI', 'ELF', 'FCoE', 'FTP', 'HTTP', 'HTTPS',
    'MBOOT', 'Menu', 'NBI', 'NFS', 'PXE', 'PXEXT', 'SDI', 'SLAM', 'SRP',
    'TFTP', 'VLAN', 'bzImage', 'iSCSI'))
_LZMA_FILTERS = [{'id': lzma.FILTER_LZMA1, 'lc': 2, 'lp': 0, 'pb': 0,
                  'dict_size': 1 << 20}]
# The LZMA stream starts after the bzImage setup header and the prefix.
_LZMA_SEARCH = (0x200, 64 * 1024)
COMMAND_ANCHORS = (b'imgfetch', b'chain', b'echo')
_COMMAND_RE = re.compile(rb'^[a-z][a-z0-9_-]{0,31}$')
_MAX_IMAGE = 64 * 1024 * 1024
# Commands the rendered script may use and the scheme -> feature rule.
SCHEME_FEATURES = {'http': 'HTTP', 'https': 'HTTPS', 'tftp': 'TFTP'}


@dataclasses.dataclass(frozen=True)
class Capabilities:
    """What one iPXE binary supports; ``readable`` False: unknown."""

    binary: str
    format: str = None
    features: tuple = ()        # in banner order
    commands: frozenset = frozenset()
    ipv6: bool = False
    readable: bool = True
    reason: str = None          # why it could not be read

    def has(self, feature):
        return feature in self.features

    @property
    def summary(self):
        """The yes/no answers ``inspect`` shows and the build checks."""
        return {'https': self.has('HTTPS'), 'http': self.has('HTTP'),
                'tftp': self.has('TFTP'), 'dns': self.has('DNS'),
                'vlan': self.has('VLAN') and 'vcreate' in self.commands,
                'ipv6': self.ipv6}

    def describe(self):
        if not self.readable:
            return {'binary': self.binary, 'readable': False,
                    'reason': self.reason}
        info = {'binary': self.binary, 'readable': True,
                'format': self.format, 'features': list(self.features),
                'commands': sorted(self.commands)}
        info.update(self.summary)
        return info


def unknown(binary, reason):
    return Capabilities(binary=binary, readable=False, reason=reason)


# -- locating the linked image -------------------------------------------

def lkrn_payload(data):
    """(offset, decoded image) of the LZMA1 stream in an ``.lkrn``."""
    view = memoryview(data)
    start, end = _LZMA_SEARCH
    for offset in range(start, min(len(data), end)):
        # A raw LZMA1 stream's range coder always starts with a 0 byte.
        if data[offset] != 0:
            continue
        probe = lzma.LZMADecompressor(lzma.FORMAT_RAW, filters=_LZMA_FILTERS)
        try:
            probe.decompress(view[offset:offset + 4096], max_length=4096)
        except lzma.LZMAError:
            continue
        decoder = lzma.LZMADecompressor(lzma.FORMAT_RAW,
                                        filters=_LZMA_FILTERS)
        try:
            image = decoder.decompress(view[offset:], max_length=_MAX_IMAGE)
        except lzma.LZMAError:
            continue
        # The payload is most of the file and expands: a short stream
        # that happens to decode (there is one in the prefix) is not it.
        if decoder.eof and len(image) > len(data) - offset:
            return offset, image
    return None, None


def pe_image(data):
    """(format, image laid out at its RVAs, ImageBase, pointer size)."""
    if len(data) < 0x40 or data[:2] != b'MZ':
        raise ValueError('not a PE file')
    pe = struct.unpack_from('<I', data, 0x3c)[0]
    if pe + 24 > len(data) or data[pe:pe + 4] != b'PE\0\0':
        raise ValueError('no PE header')
    sections, opt_size = struct.unpack_from('<HxxxxxxxxxxxxH', data, pe + 6)
    magic = struct.unpack_from('<H', data, pe + 24)[0]
    if magic == 0x20b:
        fmt, ptr, base = PE, 8, struct.unpack_from('<Q', data, pe + 48)[0]
    elif magic == 0x10b:
        fmt, ptr, base = PE32, 4, struct.unpack_from('<I', data, pe + 52)[0]
    else:
        raise ValueError('unknown PE optional header magic %#x' % magic)
    table = pe + 24 + opt_size
    layout = []
    for i in range(sections):
        off = table + 40 * i
        if off + 40 > len(data):
            raise ValueError('section table runs past the end')
        vsize, rva, raw_size, raw_ptr = struct.unpack_from('<IIII', data,
                                                           off + 8)
        layout.append((rva, min(vsize or raw_size, raw_size), raw_ptr))
    size = max((rva + n for rva, n, _ in layout), default=0)
    if not layout or size > _MAX_IMAGE:
        raise ValueError('implausible section layout')
    image = bytearray(size)
    for rva, n, raw_ptr in layout:
        image[rva:rva + n] = data[raw_ptr:raw_ptr + n]
    return fmt, bytes(image), base, ptr


# -- reading the tables ----------------------------------------------------

class _Image:
    def __init__(self, image, base, ptr):
        self.image = image
        self.base = base
        self.ptr = ptr
        self.pack = '<Q' if ptr == 8 else '<I'

    def string_at(self, value):
        """The NUL-terminated string a pointer value points at, or None."""
        offset = value - self.base
        if not 0 <= offset < len(self.image):
            return None
        end = self.image.find(b'\0', offset, offset + 64)
        return self.image[offset:end] if end > offset else None

    def word(self, offset):
        if not 0 <= offset <= len(self.image) - self.ptr:
            return None
        return struct.unpack_from(self.pack, self.image, offset)[0]

    def pointers_to(self, text):
        """Aligned offsets of words pointing at the string ``text``."""
        found = []
        end = len(text)
        # Searching for text, not text + NUL, and checking the NUL is
        # about twice as fast: the image is mostly zero bytes.
        start = self.image.find(text)
        while start >= 0:
            if self.image[start + end:start + end + 1] == b'\0':
                found += self._aligned(
                    struct.pack(self.pack, start + self.base))
            start = self.image.find(text, start + 1)
        return found

    def features(self):
        """The longest run of pointers to known feature names.

        Any pointer into the table finds all of it by walking its
        neighbours, so only names not yet in a run are searched for.
        """
        best = ()
        for name in sorted(KNOWN_FEATURES):
            if name in best:
                continue
            for at in self.pointers_to(name.encode()):
                first = at
                while self._feature_at(first - self.ptr):
                    first -= self.ptr
                run = []
                while self._feature_at(first):
                    run.append(self._feature_at(first))
                    first += self.ptr
                if len(run) > len(best):
                    best = tuple(run)
        return best

    def _feature_at(self, offset):
        value = self.word(offset)
        name = None if value is None else self.string_at(value)
        name = name and name.decode('ascii', 'replace')
        return name if name in KNOWN_FEATURES else None

    def _aligned(self, packed):
        # A pointer's high bytes are zero: find its significant bytes
        # (fast, as for the names) and compare the whole word there.
        key = packed.rstrip(b'\0')
        if len(key) < 3:
            key = packed
        at = self.image.find(key)
        while at >= 0:
            if (at % self.ptr == 0 and
                    self.image[at:at + self.ptr] == packed):
                yield at
            at = self.image.find(key, at + 1)

    def commands(self):
        """The command table, found from a command every build has.

        Any one entry finds the whole table by walking its neighbours.
        """
        best = []
        stride = 2 * self.ptr  # {name, exec} pairs
        for anchor in COMMAND_ANCHORS:
            if anchor.decode() in best:
                continue
            for at in self.pointers_to(anchor):
                first = at
                while self._command_name(first - stride):
                    first -= stride
                names = []
                while self._command_name(first):
                    names.append(self._command_name(first).decode('ascii'))
                    first += stride
                if len(names) > len(best):
                    best = names
        return frozenset(best)

    def _command_name(self, offset):
        value = self.word(offset)
        name = None if value is None else self.string_at(value)
        return name if name and _COMMAND_RE.match(name) else None

    def has_setting(self, name):
        """A settings table entry: name pointer, then description."""
        for at in self.pointers_to(name):
            value = self.word(at + self.ptr)
            description = None if value is None else self.string_at(value)
            if description and len(description) > 3:
                return True
        return False


def read(data, binary):
    """Read the capabilities of an iPXE binary (``.lkrn`` or ``.efi``)."""
    data = bytes(data)
    try:
        if data[:2] == b'MZ':
            fmt, image, base, ptr = pe_image(data)
            images = [_Image(image, base, ptr)]
        else:
            offset, image = lkrn_payload(data)
            if image is None:
                return unknown(binary, 'no LZMA payload found after the '
                                       'real-mode prefix')
            fmt = LKRN
            # BIOS builds are i386; an x86_64 pcbios build uses 8 bytes.
            images = [_Image(image, 0, 4), _Image(image, 0, 8)]
    except ValueError as e:
        return unknown(binary, str(e))
    for img in images:
        features = img.features()
        commands = img.commands()
        if features and commands:
            return Capabilities(binary=binary, format=fmt,
                                features=features, commands=commands,
                                ipv6=img.has_setting(b'ip6'))
    return unknown(binary, 'no iPXE feature or command table found')


# -- what a build needs ----------------------------------------------------

def script_commands(text):
    """The command names a rendered iPXE script runs."""
    names = set()
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(('#', ':')):
            continue
        expect = True
        for token in line.split():
            if token.startswith('#'):
                break
            if token in ('||', '&&', ';'):
                expect = True
            elif expect:
                names.add(token)
                expect = False
    return names


def _url_needs(url):
    """[(feature or 'ipv6', why)] a menu URL needs from iPXE."""
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    needs = []
    if scheme in SCHEME_FEATURES:
        needs.append((SCHEME_FEATURES[scheme],
                      'the boot menu URL is %s://' % scheme))
    host = parts.hostname or ''
    if '${' in parts.netloc or not host:
        return needs  # expanded at boot time: nothing to tell now
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        needs.append(('DNS', 'the boot menu URL names the host %s' % host))
    else:
        if address.version == 6:
            needs.append(('ipv6', 'the boot menu URL is on the IPv6 '
                                  'address %s' % host))
    return needs


def _nic_needs(nic):
    if nic.ipv4 or nic.dhcp4:
        return []
    if nic.ipv6:
        return [('ipv6', 'the menu NIC %s has only an IPv6 address'
                 % nic.mac)]
    return []


def problems(caps, menu_url, menu_nic, script_text):
    """What ``caps`` lacks to fetch ``menu_url`` and run the script."""
    if not caps.readable:
        return []
    missing = []
    for need, why in _url_needs(menu_url) + _nic_needs(menu_nic):
        if need == 'ipv6':
            if not caps.ipv6:
                missing.append('%s but it has no IPv6' % why)
        elif not caps.has(need):
            missing.append('%s but it has no %s (features: %s)' % (
                why, need, ' '.join(caps.features) or 'none'))
    absent = sorted(script_commands(script_text) - caps.commands)
    if absent:
        missing.append('the script runs %s, which it lacks'
                       % ', '.join(absent))
    return missing


def check(boot_path, caps, menu_url, menu_nic, script_text, source):
    """Refuse a boot path whose iPXE cannot fetch the menu or run it.

    Raises :class:`~nova_ipxe.exception.IpxeCapabilityMissing`.
    """
    missing = problems(caps, menu_url, menu_nic, script_text)
    if missing:
        raise exception.IpxeCapabilityMissing(
            source=source, boot_path=boot_path, binary=caps.binary,
            reason='; '.join(missing))
