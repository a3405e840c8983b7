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

"""A XAPI stand-in for tests: XML-RPC and HTTP on loopback.

It implements the calls nova-ipxe and the legacy Nova 21 chain make, the
way XAPI answers them (``{'Status': 'Success', 'Value': ...}`` or
``{'Status': 'Failure', 'ErrorDescription': [CODE, ...]}``), for the real
``XenAPI`` client library:

* ``session.login_with_password`` / ``logout`` / ``get_this_host``;
* ``pool``, ``host``, ``SR``, ``PBD``, ``VM``, ``VDI``, ``VBD``, ``task``:
  ``create``, ``destroy``, ``get_record``, ``get_all``, ``get_by_uuid``,
  ``get_by_name_label``, ``get_<field>``, ``set_<field>``, and
  ``VBD.insert``/``eject``/``unplug``, ``SR.get_VDIs``,
  ``PBD.get_all_records_where`` (the SR path query Nova 21 makes);
* ``host.call_plugin``: runs the plugin file from ``--plugin-dir`` in a
  subprocess, as xapi does (one argument, an XML-RPC methodCall of
  ``(session, args)``; stdout one methodResponse), with a stand-in
  ``XenAPIPlugin`` module (tools/xapi_plugin_env) on its path;
* ``PUT /import_raw_vdi?session_id&task_id&vdi&format=raw`` storing the
  bytes as ``<sr-dir>/<vdi uuid>.raw`` and finishing the task.

Control calls for tests (no session needed): ``standin.counts`` (live
objects per class), ``standin.fault`` (make the next calls of a method
fail with given details; special names ``upload_refuse`` (HTTP status),
``upload_cut`` (bytes read before the connection is dropped) and
``task_fail`` (error info of the import task)), ``standin.vdi_path``.

Run: ``python -m tools.xapi_standin --sr-dir DIR [--plugin-dir DIR]``;
it prints one JSON line ``{"url": ...}`` once it listens (port 0: a free
port on 127.0.0.1) and stops on SIGTERM or when its stdin closes.  With
``--tls-cert`` and ``--tls-key`` the same calls are also served over
HTTPS on a second free port, given as ``tls_url``.
"""

import argparse
import http.server
import json
import os
import socketserver
import ssl
import subprocess
import sys
import threading
import urllib.parse
import uuid
import xmlrpc.client

HERE = os.path.dirname(os.path.abspath(__file__))
PLUGIN_ENV = os.path.join(HERE, 'xapi_plugin_env')
CLASSES = ('pool', 'host', 'SR', 'PBD', 'VM', 'VDI', 'VBD', 'task',
           'session')
USER, PASSWORD = 'root', 'standin-password'
PLUGIN_TIMEOUT = 120
MAX_ARG = 128 * 1024  # Linux's MAX_ARG_STRLEN: one argv entry


class XapiFailure(Exception):
    def __init__(self, *details):
        super().__init__(*details)
        self.details = [str(d) for d in details]


def _ref(cls):
    return 'OpaqueRef:%s-%s' % (cls, uuid.uuid4())


class Store:
    """The object tables and the faults, behind one lock."""

    def __init__(self, sr_dir, plugin_dir=None, plugin_python=None):
        self.lock = threading.RLock()
        self.tables = {cls: {} for cls in CLASSES}
        self.faults = {}
        self.sr_dir = sr_dir
        self.plugin_dir = plugin_dir
        self.plugin_python = plugin_python or [sys.executable]
        self.host = self._add('host', name_label='standin-host',
                              hostname='standin', address='127.0.0.1',
                              software_version={
                                  'product_version': '8.2.1',
                                  'product_brand': 'XCP-ng',
                                  'platform_version': '3.2.1'},
                              API_version_major='2', API_version_minor='20')
        self.sr = self._add('SR', name_label='Local storage', type='ext',
                            physical_size=str(1 << 40),
                            physical_utilisation='0', VDIs=[])
        self._add('PBD', host=self.host, SR=self.sr,
                  device_config={'path': sr_dir}, currently_attached=True)
        self.pool = self._add('pool', name_label='', master=self.host,
                              default_SR=self.sr)
        self.vm = self._add('VM', name_label='instance-1',
                            power_state='Halted', VBDs=[],
                            HVM_boot_policy='BIOS order',
                            HVM_boot_params={'order': 'dc'},
                            other_config={})

    def _add(self, cls, **fields):
        ref = _ref(cls)
        rec = {'uuid': str(uuid.uuid4()), 'other_config': {}}
        rec.update(fields)
        self.tables[cls][ref] = rec
        return ref

    def counts(self):
        with self.lock:
            return {cls: len(t) for cls, t in self.tables.items()}

    def take_fault(self, name):
        with self.lock:
            faults = self.faults.get(name)
            if faults:
                return faults.pop(0)
            return None

    def record(self, cls, ref):
        try:
            return self.tables[cls][ref]
        except KeyError:
            raise XapiFailure('HANDLE_INVALID', cls, ref)

    def vdi_path(self, ref):
        return os.path.join(self.sr_dir, self.record('VDI', ref)['uuid']
                            + '.raw')


class Api:
    """XML-RPC method handlers; every call answers as XAPI does."""

    def __init__(self, store):
        self.store = store

    def dispatch(self, method, params):
        try:
            return {'Status': 'Success',
                    'Value': self._call(method, list(params))}
        except XapiFailure as e:
            return {'Status': 'Failure', 'ErrorDescription': e.details}

    def _call(self, method, params):
        s = self.store
        if method.startswith('standin.'):
            return self._control(method[len('standin.'):], params)
        fault = s.take_fault(method)
        if fault:
            raise XapiFailure(*fault)
        if method == 'session.login_with_password':
            if params[:2] != [USER, PASSWORD]:
                raise XapiFailure('SESSION_AUTHENTICATION_FAILED',
                                  params[0] if params else '',
                                  'Authentication failure')
            with s.lock:
                return s._add('session', this_host=s.host)
        if '.' not in method:
            raise XapiFailure('MESSAGE_METHOD_UNKNOWN', method)
        if not params or params[0] not in s.tables['session']:
            raise XapiFailure('SESSION_INVALID',
                              params[0] if params else '')
        cls, op = method.split('.', 1)
        args = params[1:]
        with s.lock:
            special = getattr(self, '%s_%s' % (cls, op), None)
            if cls == 'host' and op == 'call_plugin':
                pass  # runs outside the lock, below
            elif special is not None:
                return special(*args)
            else:
                return self._generic(cls, op, args)
        return self.host_call_plugin(params[0], *args)

    # -- generic accessors (XAPI's naming) ---------------------------------

    def _generic(self, cls, op, args):
        s = self.store
        if cls not in s.tables:
            raise XapiFailure('MESSAGE_METHOD_UNKNOWN', '%s.%s' % (cls, op))
        table = s.tables[cls]
        if op == 'get_all':
            return list(table)
        if op == 'get_all_records':
            return dict(table)
        if op == 'get_by_uuid':
            for ref, rec in table.items():
                if rec['uuid'] == args[0]:
                    return ref
            raise XapiFailure('UUID_INVALID', cls, args[0])
        if op == 'get_by_name_label':
            return [ref for ref, rec in table.items()
                    if rec.get('name_label') == args[0]]
        if op == 'get_record':
            return s.record(cls, args[0])
        if op == 'destroy':
            s.record(cls, args[0])
            del table[args[0]]
            return ''
        if op.startswith('get_'):
            rec = s.record(cls, args[0])
            field = op[4:]
            if field not in rec:
                raise XapiFailure('MESSAGE_METHOD_UNKNOWN',
                                  '%s.%s' % (cls, op))
            return rec[field]
        if op.startswith('set_'):
            s.record(cls, args[0])[op[4:]] = args[1]
            return ''
        raise XapiFailure('MESSAGE_METHOD_UNKNOWN', '%s.%s' % (cls, op))

    # -- the calls with side effects --------------------------------------

    def session_logout(self):
        return ''

    def task_create(self, label, description):
        return self.store._add('task', name_label=label,
                               name_description=description,
                               status='pending', error_info=[], result='',
                               progress=0.0)

    def VDI_create(self, rec):
        s = self.store
        sr = s.record('SR', rec.get('SR'))
        size = int(rec.get('virtual_size', '0'))
        if size <= 0:
            raise XapiFailure('VDI_INVALID_SIZE', str(size))
        used = sum(int(v['virtual_size']) for v in s.tables['VDI'].values()
                   if v['SR'] == rec['SR'])
        if used + size > int(sr['physical_size']):
            raise XapiFailure('SR_FULL', str(size),
                              str(int(sr['physical_size']) - used))
        fields = dict(rec, VBDs=[], read_only=rec.get('read_only', False))
        fields.pop('uuid', None)
        ref = s._add('VDI', **fields)
        sr['VDIs'].append(ref)
        return ref

    def VDI_destroy(self, ref):
        s = self.store
        rec = s.record('VDI', ref)
        if rec['VBDs']:
            raise XapiFailure('VDI_IN_USE', ref, 'destroy')
        try:
            os.unlink(s.vdi_path(ref))
        except FileNotFoundError:
            pass
        s.tables['SR'][rec['SR']]['VDIs'].remove(ref)
        del s.tables['VDI'][ref]
        return ''

    def VBD_create(self, rec):
        s = self.store
        vm = s.record('VM', rec.get('VM'))
        for other in vm['VBDs']:
            if s.tables['VBD'][other]['userdevice'] == rec['userdevice']:
                raise XapiFailure('DEVICE_ALREADY_EXISTS',
                                  rec['userdevice'])
        vdi = rec.get('VDI') or 'OpaqueRef:NULL'
        if vdi != 'OpaqueRef:NULL':
            s.record('VDI', vdi)
        fields = dict(rec, VDI=vdi, currently_attached=False)
        ref = s._add('VBD', **fields)
        vm['VBDs'].append(ref)
        if vdi != 'OpaqueRef:NULL':
            s.tables['VDI'][vdi]['VBDs'].append(ref)
        return ref

    def VBD_destroy(self, ref):
        s = self.store
        rec = s.record('VBD', ref)
        s.tables['VM'][rec['VM']]['VBDs'].remove(ref)
        if rec['VDI'] in s.tables['VDI']:
            s.tables['VDI'][rec['VDI']]['VBDs'].remove(ref)
        del s.tables['VBD'][ref]
        return ''

    def VM_destroy(self, ref):
        # XAPI destroys a VM's VBDs with it, never its VDIs.
        for vbd in list(self.store.record('VM', ref)['VBDs']):
            self.VBD_destroy(vbd)
        del self.store.tables['VM'][ref]
        return ''

    def VBD_insert(self, ref, vdi):
        s = self.store
        rec = s.record('VBD', ref)
        s.record('VDI', vdi)
        if not rec['empty']:
            raise XapiFailure('VBD_NOT_EMPTY', ref)
        rec.update(VDI=vdi, empty=False)
        s.tables['VDI'][vdi]['VBDs'].append(ref)
        return ''

    def VBD_eject(self, ref):
        s = self.store
        rec = s.record('VBD', ref)
        if rec['empty']:
            raise XapiFailure('VBD_IS_EMPTY', ref)
        s.tables['VDI'][rec['VDI']]['VBDs'].remove(ref)
        rec.update(VDI='OpaqueRef:NULL', empty=True)
        return ''

    def VBD_unplug(self, ref):
        self.store.record('VBD', ref)['currently_attached'] = False
        return ''

    def PBD_get_all_records_where(self, query):
        # Nova 21 asks: field "host"="<ref>" and field "SR"="<ref>".
        s = self.store
        return {ref: rec for ref, rec in s.tables['PBD'].items()
                if '"%s"' % rec['host'] in query
                and '"%s"' % rec['SR'] in query}

    def session_get_this_host(self, session):
        return self.store.record('session', session)['this_host']

    # -- plugins ------------------------------------------------------------

    def host_call_plugin(self, session, host, plugin, fn, args):
        s = self.store
        with s.lock:
            s.record('host', host)
        path = os.path.join(s.plugin_dir or '', plugin)
        if not s.plugin_dir or not os.path.isfile(path):
            raise XapiFailure('XENAPI_MISSING_PLUGIN', plugin)
        call = xmlrpc.client.dumps((session, args), fn)
        if len(call.encode()) > MAX_ARG:
            # What execve() does with a longer argument: E2BIG.
            raise XapiFailure('XENAPI_PLUGIN_FAILURE', 'exec',
                              'Unix.Unix_error', 'E2BIG')
        env = {'PATH': os.environ.get('STANDIN_PLUGIN_PATH',
                                      os.environ.get('PATH', '')),
               'PYTHONPATH': PLUGIN_ENV, 'LANG': 'C.UTF-8'}
        for name in ('NOVA_IPXE_SR_ROOTS', 'NOVA_IPXE_PLUGIN_WRITERS'):
            if name in os.environ:  # the plugin's test hooks
                env[name] = os.environ[name]
        try:
            proc = subprocess.run(s.plugin_python + [path, call], env=env,
                                  stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE,
                                  timeout=PLUGIN_TIMEOUT, cwd='/')
        except subprocess.TimeoutExpired:
            raise XapiFailure('XENAPI_PLUGIN_FAILURE', 'timeout', plugin,
                              '')
        if proc.returncode != 0:
            raise XapiFailure('XENAPI_PLUGIN_FAILURE', 'non-zero exit',
                              str(proc.returncode),
                              proc.stderr.decode('utf-8', 'replace')[-500:])
        try:
            (result,), _ = xmlrpc.client.loads(proc.stdout)
        except Exception as e:
            raise XapiFailure('XENAPI_PLUGIN_FAILURE', 'unparsable output',
                              type(e).__name__, proc.stdout[:200])
        if result.get('Status') != 'Success':
            raise XapiFailure(*result.get('ErrorDescription', ['?']))
        return result['Value']

    # -- control ------------------------------------------------------------

    def _control(self, op, params):
        s = self.store
        if op == 'counts':
            return s.counts()
        if op == 'fault':
            name, details = params[0], params[1]
            times = params[2] if len(params) > 2 else 1
            with s.lock:
                s.faults.setdefault(name, []).extend([details] * times)
            return ''
        if op == 'vdi_path':
            with s.lock:
                return s.vdi_path(params[0])
        if op == 'info':
            return {'pool': s.pool, 'host': s.host, 'sr': s.sr,
                    'vm': s.vm, 'sr_dir': s.sr_dir, 'user': USER,
                    'password': PASSWORD}
        if op == 'add_vbd':  # a device nova-ipxe did not create
            with s.lock:
                return self.VBD_create(params[0])
        if op == 'set_sr_size':
            with s.lock:
                s.tables['SR'][s.sr]['physical_size'] = str(params[0])
            return ''
        raise XapiFailure('MESSAGE_METHOD_UNKNOWN', 'standin.' + op)


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'
    # One write per response, sent at once: headers and body in separate
    # small segments meet the client's delayed ACK (40 ms a call).
    wbufsize = 64 * 1024
    disable_nagle_algorithm = True

    def log_message(self, fmt, *args):
        pass

    def _reply(self, status, body=b''):
        self.send_response(status)
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        length = int(self.headers.get('Content-Length', 0))
        try:
            params, method = xmlrpc.client.loads(self.rfile.read(length))
            body = xmlrpc.client.dumps(
                (self.server.api.dispatch(method, params),),
                methodresponse=True, allow_none=True)
        except Exception as e:  # a malformed request: an XML-RPC fault
            body = xmlrpc.client.dumps(xmlrpc.client.Fault(1, repr(e)),
                                       methodresponse=True)
        self._reply(200, body.encode())

    def do_PUT(self):
        url = urllib.parse.urlsplit(self.path)
        if url.path != '/import_raw_vdi':
            return self._reply(404)
        query = dict(urllib.parse.parse_qsl(url.query))
        store = self.server.api.store
        with store.lock:
            if query.get('session_id') not in store.tables['session']:
                return self._reply(401)
            task = store.tables['task'].get(query.get('task_id'))
            vdi = store.tables['VDI'].get(query.get('vdi'))
            if vdi is None or query.get('format') != 'raw':
                return self._reply(400)
            path = store.vdi_path(query['vdi'])
        length = int(self.headers.get('Content-Length', -1))
        refused = store.take_fault('upload_refuse')
        if refused:
            self.close_connection = True
            return self._reply(int(refused[0]), refused[1].encode())
        cut = store.take_fault('upload_cut')
        if length < 0 or length > int(vdi['virtual_size']):
            self._finish(task, 'failure', ['VDI_IO_ERROR', 'size'])
            return self._reply(500)
        tmp = path + '.part'
        received = 0
        with open(tmp, 'wb') as f:
            while received < length:
                limit = length - received
                if cut:
                    limit = min(limit, int(cut[0]) - received)
                    if limit <= 0:
                        break
                chunk = self.rfile.read(min(limit, 1 << 20))
                if not chunk:
                    break
                f.write(chunk)
                received += len(chunk)
        if received != length:
            os.unlink(tmp)
            self._finish(task, 'failure', ['VDI_IO_ERROR',
                                           'short upload %d' % received])
            self.close_connection = True
            self.connection.shutdown(2)
            return
        os.replace(tmp, path)
        failed = store.take_fault('task_fail')
        if failed:
            self._finish(task, 'failure', failed)
        else:
            self._finish(task, 'success', [])
        self._reply(200)

    def _finish(self, task, status, error_info):
        if task is not None:
            with self.server.api.store.lock:
                task.update(status=status, error_info=error_info,
                            progress=1.0)


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--sr-dir', required=True)
    parser.add_argument('--plugin-dir')
    parser.add_argument('--plugin-python', default=sys.executable,
                        help='interpreter (and options) the plugins run '
                             'with, split on spaces')
    parser.add_argument('--address', default='127.0.0.1')
    parser.add_argument('--port', type=int, default=0)
    parser.add_argument('--tls-cert', help='also serve HTTPS with this '
                        'certificate (PEM), on a second free port')
    parser.add_argument('--tls-key')
    args = parser.parse_args(argv)
    store = Store(args.sr_dir, args.plugin_dir, args.plugin_python.split())
    api = Api(store)
    server = Server((args.address, args.port), Handler)
    servers = [server]
    host, port = server.server_address[:2]
    urls = {'url': 'http://%s:%d' % (host, port)}
    if args.tls_cert:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(args.tls_cert, args.tls_key)
        tls = Server((args.address, 0), Handler)
        # A failed handshake raises in accept(), which the server ignores.
        tls.socket = context.wrap_socket(tls.socket, server_side=True)
        servers.append(tls)
        urls['tls_url'] = 'https://%s:%d' % tls.server_address[:2]
    for s in servers:
        s.api = api
        threading.Thread(target=s.serve_forever, daemon=True).start()
    print(json.dumps(urls), flush=True)
    try:
        sys.stdin.read()  # until the parent closes it or dies
    except KeyboardInterrupt:
        pass
    for s in servers:
        s.shutdown()


if __name__ == '__main__':
    main()
