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

"""Signed boot menu identity: HMAC-SHA256 over a canonical form.

With ``[ipxe] menu_signing_key`` set, nova-ipxe appends to the identity
query of the chain URL::

    ...?uuid=U&hostname=H&mac=M&ip=I&ts=T&kid=K&sig=S

``sig`` is the lowercase hex HMAC-SHA256, keyed with the key shared with
the menu server (the key itself is never in the ISO), of this canonical
form: UTF-8 text, lines joined by a single ``\\n``, no trailing newline::

    nova-ipxe-menu-v2
    kid=K
    ts=T
    path=/menu.ipxe
    uuid=U
    hostname=H
    mac=M
    ip=I

Every value is checked before it is signed and again before a signature
is verified, so that no value can contain a line break or look like
another line (the v1 form joined unchecked, percent-decoded values and
could be made to sign another server's identity):

* ``kid``: 1 to 64 of ``A-Z a-z 0-9 . _ -`` (``[ipxe]
  menu_signing_key_id``; a menu server keeps every key id it accepts,
  for rotation).
* ``ts``: the build time, ASCII decimal Unix seconds, no sign and no
  leading zero.  :func:`verify` accepts it within ``[now - max_age,
  now + max_skew]``.  The ISO is rebuilt on hard reboot, not on a reboot
  inside the guest.
* ``path``: the menu URL's path, percent-decoded as strict UTF-8; it
  must start with ``/`` and hold no character of the Unicode categories
  Cc, Cf, Zl or Zp (controls, format characters such as U+202E, line and
  paragraph separators).  The scheme, host and the operator's own query
  are not signed: the menu server is the host, and an operator query may
  hold iPXE settings that expand at boot.
* The identity lines are the fields ``uuid``, ``hostname``, ``mac``,
  ``ip``, in this order, that the query carries before ``sig``, each in
  its one canonical ASCII form: ``uuid`` lowercase hyphenated, ``mac``
  lowercase colon-separated, ``ip`` as Python's ``ipaddress`` prints it
  (IPv6 compressed), ``hostname`` lowercase RFC 1123 labels, a label with
  letters outside ASCII written as ``xn--`` + its RFC 3492 Punycode (no
  IDNA mapping: decode with Punycode alone).  A field not carried is left
  out.  A value known only at boot (``ip=${ip}`` of a DHCP NIC) is placed
  after ``sig`` and is not signed.
* A query in which any of these names or ``ts``, ``kid``, ``sig``
  appears twice is refused, so that no parser can read another value
  than the one verified.  ``sig`` is exactly 64 lowercase hex digits.

:func:`verify` is the menu server's side and raises nothing but
:class:`InvalidSignature`, whatever a guest sends.  This file uses the
standard library only and may be copied into a menu server as it is;
test vectors (valid requests and refusals, with the ``now`` they were
checked at) are in ``tests/unit/signature_vectors.json``.
"""

import dataclasses
import hashlib
import hmac
import ipaddress
import re
import time
import unicodedata
import urllib.parse

VERSION = 'nova-ipxe-menu-v2'
FIELDS = ('uuid', 'hostname', 'mac', 'ip')
PARAMS = ('ts', 'kid', 'sig')
# Seconds a ts may be ahead of the menu server's clock.
MAX_SKEW = 300
# Longest query verify() reads: an identity query is about 300 bytes.
MAX_QUERY = 4096

_KID_RE = re.compile(r'[A-Za-z0-9._-]{1,64}', re.ASCII)
_TS_RE = re.compile(r'0|[1-9][0-9]{0,11}', re.ASCII)
_SIG_RE = re.compile(r'[0-9a-f]{64}', re.ASCII)
_UUID_RE = re.compile(r'[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-'
                      r'[0-9a-f]{12}', re.ASCII)
_MAC_RE = re.compile(r'[0-9a-f]{2}(:[0-9a-f]{2}){5}', re.ASCII)
_LABEL_RE = re.compile(r'[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?', re.ASCII)
_HIDDEN = frozenset(('Cc', 'Cf', 'Zl', 'Zp'))


class InvalidSignature(ValueError):
    """The query carries no valid signature.

    A plain ValueError, not a nova_ipxe.exception class: this module must
    work on its own inside a menu server.
    """


class UnsignableValue(ValueError):
    """A value to sign is not in its canonical form (signing side)."""


@dataclasses.dataclass(frozen=True)
class Verified:
    kid: str
    ts: int
    fields: dict        # the signed identity values


def _hostname_ok(value):
    return (len(value) <= 253 and
            all(_LABEL_RE.fullmatch(label) for label in value.split('.')))


def _ip_ok(value):
    try:
        return str(ipaddress.ip_address(value)) == value
    except ValueError:
        return False


_FIELD_CHECKS = {
    'uuid': _UUID_RE.fullmatch,
    'hostname': _hostname_ok,
    'mac': _MAC_RE.fullmatch,
    'ip': _ip_ok,
}


def field_problem(name, value):
    """Why ``value`` is not the canonical form of field ``name``, or None."""
    if not isinstance(value, str) or not value.isascii():
        return '%s is not ASCII text' % name
    if not _FIELD_CHECKS[name](value):
        return '%s is not in canonical form' % name
    return None


def path_problem(path):
    """Why a decoded path cannot be signed, or None."""
    if not isinstance(path, str) or not path.startswith('/'):
        return 'the path does not start with /'
    for ch in path:
        if unicodedata.category(ch) in _HIDDEN:
            return ('the path holds the control or format character '
                    'U+%04X' % ord(ch))
    return None


def decode_path(path):
    """The percent-decoded path (strict UTF-8); ValueError if not."""
    return urllib.parse.unquote(path, errors='strict')


def canonical(kid, ts, path, fields):
    """The text that is signed; ``fields`` maps names in FIELDS.

    ``path`` is as on the URL (percent-encoded).  Raises
    :class:`UnsignableValue` for a value not in its canonical form.
    """
    if not isinstance(kid, str) or not _KID_RE.fullmatch(kid):
        raise UnsignableValue('kid must be 1 to 64 of A-Z a-z 0-9 . _ -')
    if isinstance(ts, bool) or not isinstance(ts, int) or not (
            0 <= ts < 10 ** 12):
        raise UnsignableValue('ts must be an int of at most 12 digits')
    try:
        decoded = decode_path(path)
    except (TypeError, ValueError):
        raise UnsignableValue('the path is not percent-encoded UTF-8')
    problem = path_problem(decoded)
    for name in FIELDS:
        if problem is None and name in fields:
            problem = field_problem(name, fields[name])
    if problem:
        raise UnsignableValue(problem)
    unknown = set(fields) - set(FIELDS)
    if unknown:
        raise UnsignableValue('unknown fields %s' % ', '.join(sorted(unknown)))
    lines = [VERSION, 'kid=%s' % kid, 'ts=%d' % ts, 'path=%s' % decoded]
    lines += ['%s=%s' % (name, fields[name]) for name in FIELDS
              if name in fields]
    return '\n'.join(lines)


def _key_bytes(key):
    return key.encode('utf-8') if isinstance(key, str) else bytes(key)


def sign(key, kid, ts, path, fields):
    """The hex HMAC-SHA256 of :func:`canonical`."""
    message = canonical(kid, ts, path, fields).encode('utf-8')
    return hmac.new(_key_bytes(key), message, hashlib.sha256).hexdigest()


def query_params(key, kid, path, fields, ts=None):
    """The ``(name, value)`` pairs to append after the identity fields."""
    ts = int(time.time() if ts is None else ts)
    return [('ts', str(ts)), ('kid', kid),
            ('sig', sign(key, kid, ts, path, fields))]


def verify(keys, path, query, now=None, max_age=None, max_skew=MAX_SKEW):
    """Check the signature a menu request carries.

    :param keys: {key id: key} the menu server accepts.
    :param path: the request path (percent-encoded, as received).
    :param query: the raw query string of the request.
    :param max_age: refuse signatures older than this many seconds
        (None: no age limit).
    :param max_skew: refuse a ``ts`` more than this many seconds ahead.
    :returns: :class:`Verified`.
    :raises InvalidSignature: with the reason; never anything else.
    """
    try:
        return _verify(keys, path, query, now, max_age, max_skew)
    except InvalidSignature:
        raise
    except Exception as e:
        # Whatever a guest sends (or a caller passes) ends here, typed.
        raise InvalidSignature('malformed request (%s)' % type(e).__name__)


def _verify(keys, path, query, now, max_age, max_skew):
    if not isinstance(query, str) or len(query) > MAX_QUERY:
        raise InvalidSignature('the query is not text of at most %d '
                               'characters' % MAX_QUERY)
    try:
        pairs = urllib.parse.parse_qsl(query, keep_blank_values=True,
                                       strict_parsing=True,
                                       errors='strict')
    except ValueError as e:
        raise InvalidSignature('unparsable query: %s' % type(e).__name__)
    names = [name for name, _ in pairs]
    for name in FIELDS + PARAMS:
        if names.count(name) > 1:
            raise InvalidSignature('%s appears %d times'
                                   % (name, names.count(name)))
    if 'sig' not in names:
        raise InvalidSignature('no sig parameter')
    signed = dict(pairs[:names.index('sig')])
    for name in ('ts', 'kid'):
        if name not in signed:
            raise InvalidSignature('no %s parameter before sig' % name)
    sig = dict(pairs)['sig']
    if not _SIG_RE.fullmatch(sig):
        raise InvalidSignature('sig is not 64 lowercase hex digits')
    kid = signed['kid']
    if not _KID_RE.fullmatch(kid):
        raise InvalidSignature('kid is not a key id')
    if kid not in keys:
        raise InvalidSignature('unknown key id %r' % kid)
    if not _TS_RE.fullmatch(signed['ts']):
        raise InvalidSignature('ts is not ASCII decimal digits')
    ts = int(signed['ts'], 10)
    try:
        decoded = decode_path(path)
    except (TypeError, ValueError):
        raise InvalidSignature('the path is not percent-encoded UTF-8')
    problem = path_problem(decoded)
    fields = {name: signed[name] for name in FIELDS if name in signed}
    for name, value in fields.items():
        problem = problem or field_problem(name, value)
    if problem:
        raise InvalidSignature(problem)
    expected = sign(keys[kid], kid, ts, path, fields)
    if not hmac.compare_digest(expected, sig):
        raise InvalidSignature('signature mismatch')
    now = int(time.time() if now is None else now)
    if ts > now + max_skew:
        raise InvalidSignature('signed %d seconds in the future, more than '
                               '%d' % (ts - now, max_skew))
    if max_age is not None and now - ts > max_age:
        raise InvalidSignature('signed %d seconds ago, more than %d'
                               % (now - ts, max_age))
    return Verified(kid=kid, ts=ts, fields=fields)
