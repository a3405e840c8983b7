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

"""What the menu service reads from Nova, and the one thing it writes.

Plain REST through a keystoneauth adapter (no novaclient): the server
(its host name, key pair, metadata and addresses with their MACs), the
key pair's public key, and the metadata key that takes a server out of
the menu once installed.  Servers are cached for ``cache_ttl`` seconds:
an installer asks for its menu, preseed and key within a minute.
"""

import dataclasses
import threading
import time

from keystoneauth1 import exceptions as ks_exc
from keystoneauth1 import loading as ks_loading
from oslo_log import log as logging

from nova_ipxe.menuservice import conf as menu_conf

LOG = logging.getLogger(__name__)
# 2.10: GET /os-keypairs/{name}?user_id= for another user's key pair;
# OS-EXT-SRV-ATTR:hostname (admin) is there since 2.3.
MICROVERSION = '2.10'


class NovaError(Exception):
    """Nova could not be asked (down, refused the service user)."""


class UnknownServer(Exception):
    """Nova has no server with this UUID."""


@dataclasses.dataclass(frozen=True)
class Server:
    uuid: str
    hostname: str           # as Nova holds it; canonicalised by the caller
    user_id: str
    key_name: str
    metadata: dict
    # (network name, MAC, address) for every fixed and floating address.
    addresses: tuple

    def has_port(self, mac, ip):
        """Whether one of the server's ports has ``mac`` and ``ip``."""
        return any((mac is None or m == mac) and a == ip
                   for _, m, a in self.addresses)

    def network_of(self, ip):
        return next((n for n, _, a in self.addresses if a == ip), None)


def _addresses(body):
    found = []
    for network, entries in sorted((body.get('addresses') or {}).items()):
        for entry in entries or ():
            mac = str(entry.get('OS-EXT-IPS-MAC:mac_addr') or '').lower()
            found.append((str(network), mac or None, str(entry.get('addr'))))
    return tuple(found)


class Nova:
    """Reads servers and key pairs; ``adapter`` is a keystoneauth Adapter."""

    def __init__(self, adapter, ttl=10, clock=time.monotonic):
        self.adapter = adapter
        self.ttl = ttl
        self.clock = clock
        self._cache = {}
        self._lock = threading.Lock()

    @classmethod
    def from_conf(cls, conf):
        group = menu_conf.NOVA_GROUP.name
        auth = ks_loading.load_auth_from_conf_options(conf, group)
        session = ks_loading.load_session_from_conf_options(
            conf, group, auth=auth)
        adapter = ks_loading.load_adapter_from_conf_options(
            conf, group, session=session, auth=auth)
        return cls(adapter, ttl=conf.menu_service.cache_ttl)

    def _request(self, method, url, **kw):
        try:
            resp = self.adapter.request(url, method, microversion=MICROVERSION,
                                        microversion_service_type='compute',
                                        raise_exc=False, **kw)
        except ks_exc.ClientException as e:
            raise NovaError('%s %s: %s' % (method, url, type(e).__name__))
        return resp

    def server(self, uuid):
        """The :class:`Server` ``uuid`` names (cached).

        Raises :class:`UnknownServer` or :class:`NovaError`.
        """
        now = self.clock()
        with self._lock:
            hit = self._cache.get(uuid)
            if hit and hit[0] > now:
                return hit[1]
        resp = self._request('GET', '/servers/%s' % uuid)
        if resp.status_code == 404:
            raise UnknownServer(uuid)
        if resp.status_code != 200:
            raise NovaError('GET /servers/%s: HTTP %d'
                            % (uuid, resp.status_code))
        try:
            body = resp.json()['server']
            server = Server(
                uuid=str(body['id']),
                hostname=body.get('OS-EXT-SRV-ATTR:hostname'),
                user_id=body.get('user_id'),
                key_name=body.get('key_name'),
                metadata=dict(body.get('metadata') or {}),
                addresses=_addresses(body))
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise NovaError('GET /servers/%s: unexpected answer (%s)'
                            % (uuid, type(e).__name__))
        if server.uuid != uuid:
            raise NovaError('GET /servers/%s answered another server' % uuid)
        with self._lock:
            self._cache[uuid] = (now + self.ttl, server)
        return server

    def public_key(self, server):
        """The public key of the server's key pair, or None."""
        if not server.key_name:
            return None
        resp = self._request('GET', '/os-keypairs/%s' % server.key_name,
                             params={'user_id': server.user_id})
        if resp.status_code == 404:
            return None
        if resp.status_code != 200:
            raise NovaError('GET /os-keypairs: HTTP %d' % resp.status_code)
        try:
            return str(resp.json()['keypair']['public_key'])
        except (ValueError, KeyError, TypeError) as e:
            raise NovaError('GET /os-keypairs: unexpected answer (%s)'
                            % type(e).__name__)

    def set_metadata(self, uuid, key, value):
        resp = self._request('POST', '/servers/%s/metadata' % uuid,
                             json={'metadata': {key: value}})
        if resp.status_code != 200:
            raise NovaError('POST /servers/%s/metadata: HTTP %d'
                            % (uuid, resp.status_code))
        with self._lock:
            self._cache.pop(uuid, None)
