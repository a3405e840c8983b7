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

"""Entry points: ``nova-ipxe-menu`` (a small server for trying it) and
:func:`init_application` for Apache mod_wsgi or uwsgi.

The WSGI entry point reads the files named by
``$NOVA_IPXE_MENU_CONFIG`` (colon-separated; default
``/etc/nova-ipxe/menu-service.conf``).
"""

import os
import socketserver
import sys
import wsgiref.simple_server

from oslo_config import cfg
from oslo_log import log as logging

from nova_ipxe.menuservice import app
from nova_ipxe.menuservice import conf as menu_conf
from nova_ipxe.menuservice import nova

LOG = logging.getLogger(__name__)
DEFAULT_CONFIG = '/etc/nova-ipxe/menu-service.conf'


def _setup(argv, default_config_files=None):
    conf = cfg.ConfigOpts()
    menu_conf.register_opts(conf)
    logging.register_options(conf)
    conf(argv, project='nova-ipxe', prog='nova-ipxe-menu',
         default_config_files=default_config_files)
    logging.setup(conf, 'nova-ipxe-menu')
    return conf


def make_app(conf):
    return app.MenuService(conf, nova.Nova.from_conf(conf))


def init_application():
    files = os.environ.get('NOVA_IPXE_MENU_CONFIG', DEFAULT_CONFIG)
    conf = _setup([], default_config_files=[f for f in files.split(':')
                                            if f])
    return make_app(conf)


class _Server(socketserver.ThreadingMixIn, wsgiref.simple_server.WSGIServer):
    daemon_threads = True


class _Handler(wsgiref.simple_server.WSGIRequestHandler):
    def log_message(self, format, *args):
        pass    # the application logs every request through oslo.log


def main(argv=None):
    # Its own file by default, never nova.conf or nova-ipxe.conf.
    conf = _setup(sys.argv[1:] if argv is None else argv,
                  default_config_files=[f for f in (DEFAULT_CONFIG,)
                                        if os.path.exists(f)])
    application = make_app(conf)
    opts = conf.menu_service
    server = wsgiref.simple_server.make_server(
        opts.bind_host, opts.bind_port, application,
        server_class=_Server, handler_class=_Handler)
    host, port = server.server_address[:2]
    LOG.info('nova-ipxe-menu listening on %s:%d', host, port)
    # For scripts that start it with bind_port = 0.
    print('READY %s %d' % (host, port), flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
