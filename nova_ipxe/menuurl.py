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

"""Boot menu URLs: validation by trust level, overrides, identity query.

An operator URL (``[ipxe] boot_menu_url``) is trusted to use iPXE settings
such as ``${net0/mac}``.  A tenant URL (image property or server metadata
``ipxe_boot_menu_url``) is not: it is re-encoded with a strict character
set so that ``$``, whitespace and anything unusual become percent escapes.
Either way the result must be a single iPXE token (see
:func:`nova_ipxe.script.check_token`).

Neither may carry credentials (``user:password@``): the script, URL
included, is readable by the tenant inside the ISO, so an operator URL
with credentials is refused (:class:`InvalidConfiguredMenuUrl`), not
merely warned about.
"""

import urllib.parse

from nova_ipxe import exception
from nova_ipxe import script
from nova_ipxe import signature

OVERRIDE_KEY = 'ipxe_boot_menu_url'
OPERATOR_SCHEMES = ('http', 'https', 'tftp')
TENANT_SCHEMES = ('http', 'https')
MAX_URL_LENGTH = 2048
# RFC 3986 unreserved and reserved characters, minus "$" (iPXE settings)
# and "#" (fragments mean nothing to a chain and start iPXE comments).
_TENANT_SAFE = "-._~:/?[]@!&'()*+,;=%"


def _split(url, schemes, error=exception.InvalidMenuUrl):
    if not isinstance(url, str) or not url:
        raise error(url=exception.show(url), reason='empty or not a string')
    if len(url) > MAX_URL_LENGTH:
        raise error(
            url=url[:64] + '...',
            reason='longer than %d characters' % MAX_URL_LENGTH)
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # parsed lazily; raises for a bad port or IPv6 host
    except ValueError as e:
        raise error(url=url, reason=str(e))
    if parts.username is not None or parts.password is not None:
        # The tenant can read the URL in the ISO; never hand it a secret
        # (checked first: no other message repeats the URL with it).
        raise error(url=_without_credentials(parts),
                    reason='credentials in the URL are not allowed (the '
                           'instance can read the URL)')
    if parts.scheme.lower() not in schemes:
        raise error(url=url, reason='scheme must be one of %s'
                    % ', '.join(schemes))
    if not parts.netloc:
        raise error(url=url, reason='no host')
    if '#' in url:
        raise error(url=url, reason='fragments (#) are not allowed')
    return parts


def _without_credentials(parts):
    """The URL for an error message, its user:password@ left out."""
    host = parts.netloc.rpartition('@')[2]
    return urllib.parse.urlunsplit(parts._replace(netloc='***@' + host))


def operator_url(url):
    """Validate an operator-configured URL; iPXE settings are allowed."""
    url = url.strip() if isinstance(url, str) else url
    _split(url, OPERATOR_SCHEMES, exception.InvalidConfiguredMenuUrl)
    try:
        return script.check_token(url, 'boot menu URL', allow_settings=True)
    except exception.InvalidScriptValue as e:
        raise exception.InvalidConfiguredMenuUrl(url=url,
                                                 reason=e.kwargs['reason'])


def tenant_url(url):
    """Validate and re-encode a tenant-supplied URL (no iPXE settings)."""
    if not isinstance(url, str):
        raise exception.InvalidMenuUrl(url=exception.show(url),
                                       reason='not a string')
    url = url.strip()
    _split(url, TENANT_SCHEMES)
    # A "%" not starting a valid escape is encoded too, so that no escape
    # sequence can be invented by the decoder on the menu server side.
    chars = []
    for i, ch in enumerate(url):
        if ch == '%' and not _is_escape(url, i):
            chars.append('%25')
        elif ch in _TENANT_SAFE or (ch.isascii() and ch.isalnum()):
            chars.append(ch)
        else:
            chars.append(urllib.parse.quote(ch, safe=''))
    encoded = ''.join(chars)
    parts = _split(encoded, TENANT_SCHEMES)
    # The path is signed percent-decoded (nova_ipxe.signature): what it
    # decodes to must be text with no line break or hidden character.
    try:
        problem = signature.path_problem(signature.decode_path(
            parts.path or '/'))
    except ValueError:
        problem = 'the path is not percent-encoded UTF-8'
    if problem:
        raise exception.InvalidMenuUrl(url=url, reason=problem)
    try:
        return script.check_token(encoded, 'boot menu URL')
    except exception.InvalidScriptValue as e:
        raise exception.InvalidMenuUrl(url=url, reason=e.kwargs['reason'])


def _is_escape(text, i):
    hexdigits = '0123456789abcdefABCDEF'
    return (i + 2 < len(text) and text[i + 1] in hexdigits
            and text[i + 2] in hexdigits)


def resolve(configured, image_properties=None, server_metadata=None,
            allow_override=True):
    """Pick the menu URL for one instance.

    Server metadata beats the image property, which beats the configured
    URL.  Returns ``(url, source)`` with ``source`` one of ``server``,
    ``image``, ``config``.
    """
    if allow_override:
        for source, values in (('server', server_metadata),
                               ('image', image_properties)):
            value = (values or {}).get(OVERRIDE_KEY)
            if value:
                return tenant_url(value), source
    if not configured:
        raise exception.ConfigError(
            reason='boot_menu_url is not set and no %s override was given'
                   % OVERRIDE_KEY)
    return operator_url(configured), 'config'
