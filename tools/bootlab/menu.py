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


"""The lab's menu server: an HTTP server in the namespace, every request
logged (the process side is ``menu_server.py http``)."""

import json
import os

from tools.bootlab import errors
from tools.bootlab import helper


class MenuServer(helper.Helper):
    """An HTTP server in the lab serving iPXE scripts from ``routes``.

    ``routes`` maps a path (no query) to a body text, for example
    ``{'/menu': '#!ipxe\\nreboot\\n'}``; other paths get 404.  Every request
    is logged (see ``menu_server.py``).  ``port=0`` picks a free port (see
    ``port`` after ``start()``).
    """

    mode = 'http'

    def __init__(self, lab, bind, port=0, routes=None, name='menu'):
        super().__init__(lab, name)
        self.bind = bind
        self.port = port
        self.routes_path = lab.path('%s-routes.json' % name)
        self.set_routes(routes or {})

    def _argv(self):
        return ['--bind', self.bind, '--port', str(self.port),
                '--routes', self.routes_path, '--log', self.log_path]

    def start(self, timeout=15):
        super().start(timeout)
        self.port = int(self.ready_words[2])
        return self

    def set_routes(self, routes):
        """Replace the served routes (effective for the next request)."""
        for path, body in routes.items():
            if not path.startswith('/') or not isinstance(body, str):
                raise errors.LabError('routes map "/path" to text, got %r: %r'
                                      % (path, type(body)))
        tmp = self.routes_path + '.tmp'
        with open(tmp, 'w', encoding='utf-8') as f:
            json.dump(routes, f)
        os.replace(tmp, self.routes_path)

    @property
    def url(self):
        host = '[%s]' % self.bind if ':' in self.bind else self.bind
        return 'http://%s:%d' % (host, self.port)

    def url_for(self, path):
        return self.url + path

    def requests(self):
        """Logged requests, oldest first (dicts, see menu_server.py)."""
        return self.records()

    def wait_for(self, path, timeout=60, vm=None, predicate=None):
        """The first request for ``path`` (and matching ``predicate``).

        Raises LabTimeout after ``timeout`` seconds, or LabError at once
        when ``vm`` is given and its QEMU has ended without the request.
        """
        def find(requests):
            for req in requests:
                if req['path'] == path and (predicate is None
                                            or predicate(req)):
                    return req
            return None
        try:
            return self._wait('request for %s on %s' % (path, self.url),
                              find, timeout, vm)
        except errors.LabError as e:
            seen = ['%s %s from %s' % (r['method'], r['raw_path'],
                                       r['client'])
                    for r in self.requests()]
            raise type(e)('%s (requests seen: %s)'
                          % (e, ', '.join(seen) or 'none')) from None
