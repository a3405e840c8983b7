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
# Larger than any iPXE image (a full build decodes to about 1-2 MiB).
MAX_IMAGE = 16 * 1024 * 1024
# The PE/COFF limit Windows' loader applies; iPXE's .efi has 4 or 5.
MAX_PE_SECTIONS = 96
# Scheme -> banner feature the scheme needs.
SCHEME_FEATURES = {'http': 'HTTP', 'https': 'HTTPS', 'tftp': 'TFTP'}


class WorkBudget:
    """The work reading one binary may take, counted, not timed.

    Hostile bytes can make every step of reading repeat: an LZMA probe at
    each of thousands of zero bytes, millions of name occurrences each
    searched for a pointer, thousands of PE sections.  Each kind of work
    has a limit far above what any real iPXE build needs (see
    ``LIMITS``; a Debian build needs a few percent of each); the first
    limit reached ends the reading with "unknown", which the module
    treats as harmless.
    """

    LIMITS = {
        # Bytes LZMA produced over all probes of a .lkrn.
        'decoded': 4 * MAX_IMAGE,
        # Name and pointer occurrences examined, table entries read.
        'occurrences': 200000,
        # Bytes the pointer searches scanned (memchr speed).
        'scanned': 1024 * 1024 * 1024,
        # Bytes the PE reader copied into the laid-out image.
        'copied': 2 * MAX_IMAGE,
    }

    def __init__(self, limits=None):
        self.limits = dict(self.LIMITS, **(limits or {}))
        self.spent = dict.fromkeys(self.limits, 0)

    def spend(self, kind, amount=1):
        self.spent[kind] += amount
        if self.spent[kind] > self.limits[kind]:
            raise WorkExhausted(kind, self.limits[kind])

    def left(self, kind):
        return max(0, self.limits[kind] - self.spent[kind])


class WorkExhausted(Exception):
    """Reading a binary took more work than any iPXE build needs."""

    def __init__(self, kind, limit):
        super().__init__('reading it needed more than %d %s, more than '
                         'any iPXE build needs' % (limit, _UNITS[kind]))
        self.kind = kind


_UNITS = {'decoded': 'bytes of LZMA output',
          'occurrences': 'name and pointer occurrences',
          'scanned': 'bytes of pointer search',
          'copied': 'bytes of PE sections'}


class _Unreadable(ValueError):
    """The bytes are not a binary of a format this module reads."""


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

_CHUNK = 64 * 1024


def _decode(view, budget, probe=False):
    """Decode the raw LZMA1 stream at the start of ``view``.

    Returns (image, whole stream) or None when the bytes are not a valid
    stream.  Fed in chunks, so that a stream that would decode without
    end is stopped by the budget, not by memory.  A probe decodes only
    the first 4 KiB.
    """
    decoder = lzma.LZMADecompressor(lzma.FORMAT_RAW, filters=_LZMA_FILTERS)
    out = []
    size = 0
    pos = 0
    limit = 4096 if probe else MAX_IMAGE
    try:
        while not decoder.eof and size < limit:
            want = min(_CHUNK, limit - size, budget.left('decoded') + 1)
            if decoder.needs_input:
                if pos >= len(view):
                    break
                chunk = view[pos:pos + (4096 if probe else _CHUNK)]
                pos += len(chunk)
            else:
                chunk = b''
            part = decoder.decompress(chunk, max_length=want)
            if not part and not chunk:
                break   # nothing more will come out
            budget.spend('decoded', len(part))
            out.append(part)
            size += len(part)
    except lzma.LZMAError:
        return None
    return b''.join(out), decoder.eof


def lkrn_payload(data, budget=None):
    """(offset, decoded image) of the LZMA1 stream in an ``.lkrn``."""
    budget = budget or WorkBudget()
    view = memoryview(data)
    start, end = _LZMA_SEARCH
    offset = data.find(b'\0', start, end)
    while 0 <= offset < min(len(data), end):
        # A raw LZMA1 stream's range coder always starts with a 0 byte.
        if _decode(view[offset:], budget, probe=True) is not None:
            decoded = _decode(view[offset:], budget)
            # The payload is most of the file and expands: a short stream
            # that happens to decode (there is one in the prefix) is not
            # it, nor is one that runs past MAX_IMAGE.
            if decoded is not None:
                image, eof = decoded
                if eof and len(image) > len(data) - offset:
                    return offset, image
        offset = data.find(b'\0', offset + 1, end)
    return None, None


def _pe_field(data, fmt, at):
    if at < 0 or at + struct.calcsize(fmt) > len(data):
        raise _Unreadable('the PE headers run past the end of the file')
    return struct.unpack_from(fmt, data, at)


def pe_image(data, budget=None):
    """(format, image laid out at its RVAs, ImageBase, pointer size).

    Every structural read is bounds-checked: a truncated or lying header
    is :class:`ValueError`, never a ``struct.error``.
    """
    budget = budget or WorkBudget()
    if len(data) < 0x40 or data[:2] != b'MZ':
        raise _Unreadable('not a PE file')
    pe = _pe_field(data, '<I', 0x3c)[0]
    if pe + 24 > len(data) or data[pe:pe + 4] != b'PE\0\0':
        raise _Unreadable('no PE header')
    sections, opt_size = _pe_field(data, '<HxxxxxxxxxxxxH', pe + 6)
    if sections > MAX_PE_SECTIONS:
        raise _Unreadable('%d PE sections, more than %d'
                          % (sections, MAX_PE_SECTIONS))
    magic = _pe_field(data, '<H', pe + 24)[0]
    if magic == 0x20b:
        fmt, ptr, base = PE, 8, _pe_field(data, '<Q', pe + 48)[0]
    elif magic == 0x10b:
        fmt, ptr, base = PE32, 4, _pe_field(data, '<I', pe + 52)[0]
    else:
        raise _Unreadable('unknown PE optional header magic %#x' % magic)
    table = pe + 24 + opt_size
    layout = []
    for i in range(sections):
        vsize, rva, raw_size, raw_ptr = _pe_field(data, '<IIII',
                                                  table + 40 * i + 8)
        n = min(vsize or raw_size, raw_size, max(0, len(data) - raw_ptr))
        layout.append((rva, n, raw_ptr))
    size = max((rva + n for rva, n, _ in layout), default=0)
    if not layout or size > MAX_IMAGE:
        raise _Unreadable('implausible section layout')
    image = bytearray(size)
    for rva, n, raw_ptr in layout:
        budget.spend('copied', n)
        image[rva:rva + n] = data[raw_ptr:raw_ptr + n]
    return fmt, bytes(image), base, ptr


# -- reading the tables ----------------------------------------------------

class _Image:
    """A linked image and the pointer size its tables use."""

    def __init__(self, image, base, ptr, budget=None):
        self.image = image
        self.base = base
        self.ptr = ptr
        self.pack = '<Q' if ptr == 8 else '<I'
        self.budget = budget or WorkBudget()
        self._pointers = {}   # name: offsets, each name searched once

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
        self.budget.spend('occurrences')
        return struct.unpack_from(self.pack, self.image, offset)[0]

    def pointers_to(self, text):
        """Aligned offsets of words pointing at the string ``text``."""
        if text in self._pointers:
            return self._pointers[text]
        found = []
        end = len(text)
        # Searching for text, not text + NUL, and checking the NUL is
        # about twice as fast: the image is mostly zero bytes.
        start = self.image.find(text)
        while start >= 0:
            self.budget.spend('occurrences')
            if self.image[start + end:start + end + 1] == b'\0':
                found += self._aligned(
                    struct.pack(self.pack, start + self.base))
            start = self.image.find(text, start + 1)
        self._pointers[text] = found
        return found

    def _aligned(self, packed):
        # A pointer's high bytes are zero: find its significant bytes
        # (fast, as for the names) and compare the whole word there.
        key = packed.rstrip(b'\0')
        if len(key) < 3:
            key = packed
        found = []
        at = self.image.find(key)
        self.budget.spend('scanned', len(self.image))
        while at >= 0:
            self.budget.spend('occurrences')
            if (at % self.ptr == 0 and
                    self.image[at:at + self.ptr] == packed):
                found.append(at)
            at = self.image.find(key, at + 1)
        return found

    def _runs(self, anchors, stride, entry):
        """The longest run of table entries around pointers to anchors.

        ``entry(offset)`` reads one entry or None.  A run is walked once:
        a pointer inside a run already walked adds nothing.
        """
        best = []
        walked = set()
        for anchor in anchors:
            if anchor in best:
                continue
            for at in self.pointers_to(anchor.encode()):
                if at in walked:
                    continue
                first = at
                while entry(first - stride):
                    first -= stride
                run = []
                while True:
                    value = entry(first)
                    if not value:
                        break
                    walked.add(first)
                    run.append(value)
                    first += stride
                if len(run) > len(best):
                    best = run
        return best

    def features(self):
        """The longest run of pointers to known feature names.

        Any pointer into the table finds all of it by walking its
        neighbours, so only names not yet in a run are searched for.
        """
        return tuple(self._runs(sorted(KNOWN_FEATURES), self.ptr,
                                self._feature_at))

    def _feature_at(self, offset):
        value = self.word(offset)
        name = None if value is None else self.string_at(value)
        name = name and name.decode('ascii', 'replace')
        return name if name in KNOWN_FEATURES else None

    def commands(self):
        """The command table, found from a command every build has.

        Any one entry finds the whole table by walking its neighbours.
        """
        return frozenset(self._runs(
            [a.decode() for a in COMMAND_ANCHORS], 2 * self.ptr,
            self._command_name))   # {name, exec} pairs

    def _command_name(self, offset):
        value = self.word(offset)
        name = None if value is None else self.string_at(value)
        return (name.decode('ascii') if name and _COMMAND_RE.match(name)
                else None)

    def has_setting(self, name):
        """A settings table entry: name pointer, then description."""
        for at in self.pointers_to(name):
            value = self.word(at + self.ptr)
            description = None if value is None else self.string_at(value)
            if description and len(description) > 3:
                return True
        return False


def read(data, binary, budget=None):
    """Read the capabilities of an iPXE binary (``.lkrn`` or ``.efi``).

    Never raises for what the bytes hold: anything unreadable, and any
    reading that spends its :class:`WorkBudget`, is "unknown".
    """
    budget = budget or WorkBudget()
    data = bytes(data)
    try:
        if data[:2] == b'MZ':
            fmt, image, base, ptr = pe_image(data, budget)
            images = [_Image(image, base, ptr, budget)]
        else:
            offset, image = lkrn_payload(data, budget)
            if image is None:
                return unknown(binary, 'no LZMA payload found after the '
                                       'real-mode prefix')
            fmt = LKRN
            # BIOS builds are i386; an x86_64 pcbios build uses 8 bytes.
            images = [_Image(image, 0, 4, budget),
                      _Image(image, 0, 8, budget)]
        for img in images:
            features = img.features()
            commands = img.commands()
            if features and commands:
                return Capabilities(binary=binary, format=fmt,
                                    features=features, commands=commands,
                                    ipv6=img.has_setting(b'ip6'))
    except _Unreadable as e:
        return unknown(binary, str(e))
    except WorkExhausted as e:
        LOG.warning('Reading the iPXE binary %s: %s; its capabilities are '
                    'unknown.', exception.one_line(repr(binary)), e)
        return unknown(binary, str(e))
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
