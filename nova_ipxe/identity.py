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

"""The menu identity: who is asking for the boot menu, signed on request.

The chain URL carries the instance's identity (``uuid``, ``hostname``,
``mac``, ``ip``) so that a menu server can answer each server by name,
and, with ``[ipxe] menu_signing_key``, a signature over it (see
:mod:`nova_ipxe.signature` for the signed form).  Building the identity,
putting each value into its canonical form, signing it and appending it
to the URL is this module's one job; the builder calls
:func:`chain_url` once.

Host names: Nova keeps Latin-1 letters when it turns a server's name into
its host name (``Café 1`` becomes ``café-1``), and API 2.90+ lets a
tenant set one.  Every such name must boot, so :func:`canonical_hostname`
writes a label with letters outside ASCII as ``xn--`` + its RFC 3492
Punycode (``café-1`` -> ``xn--caf-1-dsa``), and a name that has no ASCII
form (an underscore, an empty label, a label too long once encoded) is
left out of the script and the identity with a warning: never a failed
spawn for a name.
"""

import urllib.parse

from oslo_log import log as logging

from nova_ipxe import exception
from nova_ipxe import script
from nova_ipxe import signature

LOG = logging.getLogger(__name__)
MIN_SIGNING_KEY = 16


def canonical_hostname(name):
    """``(ASCII host name, None)`` or ``(None, why it cannot be carried)``.

    ASCII letters are lower-cased (host names are case-insensitive);
    other letters are kept as they are and encoded, never folded (the
    Kelvin sign is not ``k``).  ``None`` gives ``(None, None)``.
    """
    if name is None:
        return None, None
    if not isinstance(name, str) or not name:
        return None, 'it is empty or not text'
    if len(name) > 253:
        return None, 'it is longer than 253 characters'
    labels = []
    for label in name.split('.'):
        label = ''.join(c.lower() if c.isascii() else c for c in label)
        if not label.isascii():
            if not all(c.isascii() or c.isalnum() for c in label):
                return None, ('a label holds a character that is neither '
                              'a letter nor a digit')
            label = 'xn--' + label.encode('punycode').decode('ascii')
        if not script.HOSTNAME_LABEL_RE.fullmatch(label):
            return None, ('a label is empty, longer than 63 characters '
                          'once encoded, starts or ends with "-", or '
                          'holds a character other than letters, digits '
                          'and "-"')
        labels.append(label)
    text = '.'.join(labels)
    if len(text) > 253:
        return None, 'it is longer than 253 characters once encoded'
    return text, None


def hostname(name, instance_uuid=None):
    """The host name to put in the script and the identity, or None.

    A name with no ASCII form is left out with a warning (the boot goes
    on without it).
    """
    text, why = canonical_hostname(name)
    if why:
        LOG.warning('Leaving the host name %s of %s out of the iPXE script '
                    'and the menu identity: %s.', exception.show(name),
                    instance_uuid or 'the instance', why)
    return text


def params(menu_nic, instance_uuid=None, host=None):
    """The identity query pairs for the NIC that chains the menu.

    ``host`` is already canonical (:func:`hostname`).
    """
    if menu_nic.ipv4:
        ip = menu_nic.ipv4.ip
    elif menu_nic.ipv6:
        ip = menu_nic.ipv6.ip
    else:
        ip = script.Setting('${ip}')  # DHCP: known only at boot time
    return [('uuid', script.check_uuid(instance_uuid)),
            ('hostname', host and script.check_hostname(host)),
            ('mac', menu_nic.mac), ('ip', ip)]


def with_params(url, pairs):
    """Append ``pairs`` (ordered) to the URL's query, encoded.

    A :class:`nova_ipxe.script.Setting` value is placed as its iPXE
    expansion; everything else is percent-encoded.
    """
    pairs = [(k, v) for k, v in pairs if v is not None]
    if not pairs:
        return url
    query = '&'.join('%s=%s' % (k, v.expression if isinstance(
        v, script.Setting) else urllib.parse.quote(str(v), safe=''))
        for k, v in pairs)
    sep = '&' if '?' in url else '?'
    if url.endswith(('?', '&')):
        sep = ''
    return script.check_token(url + sep + query, 'boot menu URL',
                              allow_settings=True)


def signed(url, source, pairs, key, kid, ts=None):
    """``pairs`` with ts, kid and sig (see :mod:`nova_ipxe.signature`).

    Values iPXE expands at boot cannot be signed: they go after ``sig``.
    ``source`` (``config``, ``image`` or ``server``) says whose URL it
    is, and so whose error a path that cannot be signed is.
    """
    if len(key) < MIN_SIGNING_KEY:
        raise exception.ConfigError(
            reason='menu_signing_key must be at least %d characters'
                   % MIN_SIGNING_KEY)
    path = urllib.parse.urlsplit(url).path or '/'
    if '${' in path:
        raise exception.SigningError(
            reason='the path of the boot menu URL %s uses iPXE settings, '
                   'which expand at boot; a signed path must be literal'
                   % url)
    present = [(k, v) for k, v in pairs if v is not None]
    static = [(k, v) for k, v in present
              if not isinstance(v, script.Setting)]
    dynamic = [(k, v) for k, v in present if isinstance(v, script.Setting)]
    fields = {k: str(v) for k, v in static}
    try:
        tail = signature.query_params(key, kid, path, fields, ts=ts)
    except signature.UnsignableValue as e:
        if source == 'config':
            raise exception.SigningError(
                reason='the boot menu URL %s cannot be signed: %s'
                       % (url, e))
        raise exception.InvalidMenuUrl(url=url, reason=str(e))
    return static + tail + dynamic


def chain_url(url, source, menu_nic, opts, instance_uuid=None, host=None):
    """The menu URL with the identity (and signature) the options ask for.

    :param opts: the ``[ipxe]`` option group.
    :param host: the canonical host name (:func:`hostname`) or None.
    """
    if not opts.menu_identity:
        if opts.menu_signing_key:
            raise exception.ConfigError(
                reason='menu_signing_key signs the identity: it needs '
                       'menu_identity = true')
        return url
    pairs = params(menu_nic, instance_uuid, host)
    if opts.menu_signing_key:
        pairs = signed(url, source, pairs, opts.menu_signing_key,
                       opts.menu_signing_key_id)
    return with_params(url, pairs)
