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

    nova-ipxe-menu-v1
    kid=K
    ts=T
    path=/menu.ipxe
    uuid=U
    hostname=H
    mac=M
    ip=I

* ``kid`` is ``[ipxe] menu_signing_key_id`` (rotation: a menu server
  keeps every key id it accepts), ``ts`` the build time in decimal Unix
  seconds (a server may bound its age; the ISO of a running instance is
  rebuilt on hard reboot, not on a reboot inside the guest).
* ``path`` is the percent-decoded path of the menu URL (the scheme, host
  and the operator's own query are not signed: the menu server is the
  host, and an operator query may hold iPXE settings that expand at boot).
* The identity lines are the fields ``uuid``, ``hostname``, ``mac``,
  ``ip``, in this order, that the query carries before ``sig``, with
  percent-decoded values; a field not carried is left out.  A value known
  only at boot (``ip=${ip}`` of a DHCP NIC) is placed after ``sig`` and
  is not signed.
* A query in which any of these names or ``ts``, ``kid``, ``sig``
  appears twice is refused, so that no parser can read another value
  than the one verified.

:func:`verify` is the menu server's side.  This file uses the standard
library only and may be copied into a menu server as it is; test vectors
are in ``tests/unit/signature_vectors.json``.
"""

import dataclasses
import hashlib
import hmac
import time
import urllib.parse

VERSION = 'nova-ipxe-menu-v1'
FIELDS = ('uuid', 'hostname', 'mac', 'ip')
PARAMS = ('ts', 'kid', 'sig')


class InvalidSignature(ValueError):
    """The query carries no valid signature.

    A plain ValueError, not a nova_ipxe.exception class: this module must
    work on its own inside a menu server.
    """


@dataclasses.dataclass(frozen=True)
class Verified:
    kid: str
    ts: int
    fields: dict        # the signed identity values


def canonical(kid, ts, path, fields):
    """The text that is signed; ``fields`` maps names in FIELDS."""
    lines = [VERSION, 'kid=%s' % kid, 'ts=%d' % int(ts),
             'path=%s' % urllib.parse.unquote(path)]
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


def verify(keys, path, query, now=None, max_age=None):
    """Check the signature a menu request carries.

    :param keys: {key id: key} the menu server accepts.
    :param path: the request path (percent-encoded, as received).
    :param query: the raw query string of the request.
    :param max_age: refuse signatures older than this many seconds.
    :returns: :class:`Verified`.
    :raises InvalidSignature: with the reason.
    """
    try:
        pairs = urllib.parse.parse_qsl(query or '', keep_blank_values=True,
                                       strict_parsing=True)
    except ValueError as e:
        raise InvalidSignature('unparsable query: %s' % e)
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
    kid = signed['kid']
    if kid not in keys:
        raise InvalidSignature('unknown key id %r' % kid)
    try:
        ts = int(signed['ts'], 10)
    except ValueError:
        raise InvalidSignature('ts is not an integer')
    fields = {name: signed[name] for name in FIELDS if name in signed}
    expected = sign(keys[kid], kid, ts, path, fields)
    if not hmac.compare_digest(expected, dict(pairs)['sig'].lower()):
        raise InvalidSignature('signature mismatch')
    if max_age is not None:
        now = time.time() if now is None else now
        if now - ts > max_age:
            raise InvalidSignature('signed %d seconds ago, more than %d'
                                   % (now - ts, max_age))
    return Verified(kid=kid, ts=ts, fields=fields)
