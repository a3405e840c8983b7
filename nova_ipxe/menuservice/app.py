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

"""The WSGI application: one boot menu answer per verified server.

``GET <any path>?uuid=..&...&sig=..`` (the chain URL of a nova-ipxe
script) is verified, the server is looked up in Nova and its profile's
iPXE script is the answer.  Every refusal is also an iPXE script, served
with status 200 so that iPXE runs it: it says why on the console and
ends with ``exit 1``, and the nova-ipxe script falls back
(``[ipxe] on_chain_failure``).

An installer then uses the URLs its profile was given, each authorised
by a token bound to the server, its address and the key id that signed
the menu request, and valid ``token_ttl`` seconds:

* ``GET /preseed/T`` -- the profile's preseed;
* ``GET /key/T`` -- the public key of the server's key pair;
* ``GET /done/T`` -- sets the server's ``ipxe_boot=false`` metadata, so
  that its next boots get the ``local`` profile.
"""

import hashlib
import hmac
import ipaddress
import re
import time
import urllib.parse
import wsgiref.util

from oslo_log import log as logging

from nova_ipxe import exception
from nova_ipxe import identity
from nova_ipxe.menuservice import conf as menu_conf
from nova_ipxe.menuservice import nova as nova_mod
from nova_ipxe.menuservice import profiles as profiles_mod
from nova_ipxe import script
from nova_ipxe import signature

LOG = logging.getLogger(__name__)
TOKEN_VERSION = 'nova-ipxe-menu-token-v1'
# The installer's URLs end the path: behind Apache the service may be
# mounted under a prefix that reaches it in PATH_INFO (/nova-ipxe-menu).
_INSTALLER_RE = re.compile(r'/(preseed|key|done)/', re.ASCII)
_TOKEN_RE = re.compile(
    r'/(preseed|key|done)/(%s)/([A-Za-z0-9._-]{1,64})/([0-9]{1,12})/'
    r'([0-9a-f]{64})\Z' % script.UUID_RE.pattern, re.ASCII)
_SHOWN_RE = re.compile(r'[^A-Za-z0-9 .,:=/_+@()-]')
FALSE = ('false', '0', 'no', 'off')


class Refused(Exception):
    """The request is answered with the refusal script; ``str`` is why."""


def refusal_script(reason):
    """A tiny iPXE script that says why and returns (``exit 1``).

    The reason is reduced to characters iPXE prints as they are: no
    ``${`` expansion, no comment, no operator, one line.
    """
    shown = _SHOWN_RE.sub('?', str(reason))[:200]
    return ('#!ipxe\necho nova-ipxe-menu: refused: %s\n'
            'echo nova-ipxe-menu: falling back\nexit 1\n' % shown)


def _token_sig(key, uuid, ip, kid, ts):
    text = '\n'.join((TOKEN_VERSION, uuid, ip, kid, str(ts)))
    key = key.encode('utf-8') if isinstance(key, str) else bytes(key)
    return hmac.new(key, text.encode('utf-8'), hashlib.sha256).hexdigest()


def _source(environ):
    """The request's source address in canonical text, or None."""
    try:
        return str(ipaddress.ip_address(environ.get('REMOTE_ADDR', '')))
    except ValueError:
        return None


def _raw_path(environ):
    """The path as the client sent it (percent-encoded), for verify()."""
    uri = environ.get('REQUEST_URI') or environ.get('RAW_URI')
    if uri:
        return urllib.parse.urlsplit(uri).path
    path = environ.get('SCRIPT_NAME', '') + environ.get('PATH_INFO', '')
    # PEP 3333: the path is bytes decoded as Latin-1.
    return urllib.parse.quote(path.encode('latin-1'), safe="/;=,~!$&'()*+@:")


class MenuService:
    """The WSGI application."""

    def __init__(self, conf, nova, profiles=None, clock=time.time):
        self.opts = conf.menu_service
        if not self.opts.signing_keys:
            raise exception.ConfigError(
                reason='[menu_service] signing_keys is required')
        self.keys = dict(self.opts.signing_keys)
        self.nova = nova
        self.profiles = profiles or profiles_mod.Profiles(
            self.opts.profiles_dir)
        self.clock = clock

    # -- WSGI ------------------------------------------------------------
    def __call__(self, environ, start_response):
        method = environ.get('REQUEST_METHOD', 'GET')
        path = environ.get('PATH_INFO', '') or '/'
        source = _source(environ)
        try:
            if method not in ('GET', 'HEAD'):
                status, body, what = ('405 Method Not Allowed',
                                      'GET only\n', 'method not allowed')
            elif path.endswith('/healthcheck'):
                status, body, what = '200 OK', 'OK\n', 'healthcheck'
            elif _INSTALLER_RE.search(path):
                status, body, what = self._installer(path, source, environ)
            else:
                body, what = self._menu(environ, source)
                status = '200 OK'
        except Exception:
            LOG.exception('%s %s from %s failed', method,
                          exception.show(path), source)
            status, body, what = ('500 Internal Server Error',
                                  'internal error\n', 'internal error')
        LOG.info('%s %s from %s: %s %s', method, exception.show(path, 120),
                 source, status.split()[0], what)
        data = body.encode('utf-8')
        # iPXE scripts, preseeds, keys and refusals: all plain text.
        start_response(status, [('Content-Type', 'text/plain; charset=utf-8'),
                                ('Content-Length', str(len(data))),
                                ('Cache-Control', 'no-store')])
        return [b''] if method == 'HEAD' else [data]

    # -- the menu request ------------------------------------------------
    def _menu(self, environ, source):
        """(iPXE script, what the log says)."""
        try:
            profile, values = self._resolve(environ, source)
            text = self.profiles.render(profile, 'ipxe', values)
        except (Refused, profiles_mod.ProfileError) as e:
            return refusal_script(e), 'refused: %s' % exception.one_line(
                e, 300)
        return text, 'profile %s for %s' % (profile, values['uuid'])

    def _verified(self, environ, source):
        try:
            verified = signature.verify(
                self.keys, _raw_path(environ),
                environ.get('QUERY_STRING', ''), now=self.clock(),
                max_age=self.opts.max_age, max_skew=self.opts.max_skew)
        except signature.InvalidSignature as e:
            raise Refused('invalid signature: %s' % e)
        fields = verified.fields
        if 'uuid' not in fields:
            raise Refused('the signed identity names no server (no uuid)')
        if source is None:
            raise Refused('no source address')
        if 'ip' in fields and fields['ip'] != source:
            raise Refused('signed for %s, asked from %s'
                          % (fields['ip'], source))
        return verified

    def _server(self, uuid):
        try:
            return self.nova.server(uuid)
        except nova_mod.UnknownServer:
            raise Refused('Nova has no server %s' % uuid)
        except nova_mod.NovaError as e:
            LOG.error('Cannot ask Nova about %s: %s', uuid, e)
            raise Refused('Nova cannot be asked now')

    def _resolve(self, environ, source):
        verified = self._verified(environ, source)
        fields = verified.fields
        uuid = fields['uuid']
        server = self._server(uuid)
        if not server.has_port(fields.get('mac'), source):
            raise Refused('%s%s is not a port of server %s' % (
                source, ' with MAC %s' % fields['mac']
                if 'mac' in fields else '', uuid))
        profile = self._profile_of(server)
        values = self._values(environ, server, fields, source, verified.kid)
        return profile, values

    def _profile_of(self, server):
        meta = server.metadata
        if str(meta.get(menu_conf.METADATA_BOOT, '')).lower() in FALSE:
            return 'local'
        name = meta.get(menu_conf.METADATA_PROFILE) or 'default'
        try:
            self.profiles.check_name(name)
        except profiles_mod.ProfileError as e:
            raise Refused('server metadata %s: %s'
                          % (menu_conf.METADATA_PROFILE, e))
        if not self.profiles.has(name):
            raise Refused('no profile %s' % name)
        return name

    def _hostname(self, server, fields):
        if 'hostname' in fields:
            return fields['hostname']
        text, _ = identity.canonical_hostname(server.hostname)
        return text or 'server-' + server.uuid[:8]

    def _base_url(self, environ):
        if self.opts.public_url:
            return self.opts.public_url.rstrip('/')
        return wsgiref.util.application_uri(environ).rstrip('/')

    def _values(self, environ, server, fields, source, kid):
        ts = int(self.clock())
        token = '%s/%s/%d/%s' % (server.uuid, kid, ts, _token_sig(
            self.keys[kid], server.uuid, source, kid, ts))
        base = self._base_url(environ)
        opts = self.opts
        return {
            'uuid': server.uuid,
            'hostname': self._hostname(server, fields),
            'domain': opts.domain,
            'ip': source,
            'mac': fields.get('mac') or next(
                (m for _, m, a in server.addresses if a == source), None),
            'network': server.network_of(source),
            'has_key': bool(server.key_name),
            'menu_url': profiles_mod.OperatorValue(opts.default_menu_url)
            if opts.default_menu_url else None,
            'netboot_url': opts.debian_netboot_url,
            'mirror': opts.debian_mirror,
            'mirror_directory': opts.debian_mirror_directory,
            'preseed_url': '%s/preseed/%s' % (base, token),
            'key_url': '%s/key/%s' % (base, token),
            'done_url': '%s/done/%s' % (base, token),
        }

    # -- the installer's requests ------------------------------------------
    def _installer(self, path, source, environ):
        """(status, body, what the log says)."""
        try:
            kind, server, kid = self._token(path, source)
        except Refused as e:
            return ('403 Forbidden', 'refused\n',
                    'refused: %s' % exception.one_line(e, 300))
        uuid = server.uuid
        if kind == 'done':
            try:
                self.nova.set_metadata(uuid, menu_conf.METADATA_BOOT,
                                       'false')
            except nova_mod.NovaError as e:
                LOG.error('Cannot take %s out of the menu: %s', uuid, e)
                return ('503 Service Unavailable',
                        'Nova unavailable\n', 'Nova unavailable')
            return ('200 OK', 'done\n',
                    'server %s installed: %s=false'
                    % (uuid, menu_conf.METADATA_BOOT))
        if kind == 'key':
            key = self._public_key(server)
            if not key:
                return ('404 Not Found', 'no key\n',
                        'no usable key pair for %s' % uuid)
            return ('200 OK', key + '\n',
                    'key pair %s of %s' % (server.key_name, uuid))
        try:
            profile = self._profile_of(server)
            values = self._values(environ, server, {}, source, kid)
            values['ssh_key'] = self._public_key(server)
            text = self.profiles.render(profile, 'preseed', values)
        except (Refused, profiles_mod.ProfileError) as e:
            return ('403 Forbidden', 'refused\n',
                    'refused: %s' % exception.one_line(e, 300))
        return ('200 OK', text,
                'preseed %s for %s' % (profile, uuid))

    def _public_key(self, server):
        """The server's public key (one OpenSSH line), or None."""
        try:
            key = self.nova.public_key(server)
        except nova_mod.NovaError as e:
            LOG.error('Cannot read the key pair of %s: %s', server.uuid, e)
            return None
        if key and not _key_ok(key):
            LOG.warning('Not serving the key pair of %s: not one OpenSSH '
                        'public key line', server.uuid)
            return None
        return key.strip() if key else None

    def _token(self, path, source):
        match = _TOKEN_RE.search(path)
        if not match:
            raise Refused('malformed token')
        kind, uuid, kid, ts, sig = match.groups()
        if kid not in self.keys or source is None:
            raise Refused('unknown key id or no source address')
        expected = _token_sig(self.keys[kid], uuid, source, kid, int(ts))
        if not hmac.compare_digest(expected, sig):
            raise Refused('token not valid for %s' % source)
        age = int(self.clock()) - int(ts)
        if age > self.opts.token_ttl or age < -self.opts.max_skew:
            raise Refused('token expired')
        server = self._server(uuid)
        if not server.has_port(None, source):
            raise Refused('%s is no longer a port of server %s'
                          % (source, uuid))
        return kind, server, kid


_KEY_RE = re.compile(r'(ssh|ecdsa|sk)-[A-Za-z0-9@.+-]+ [A-Za-z0-9+/=]+'
                     r'( [\x20-\x7e]*)?', re.ASCII)


def _key_ok(key):
    """One OpenSSH public key line, printable ASCII only."""
    return bool(_KEY_RE.fullmatch(key.strip()))
