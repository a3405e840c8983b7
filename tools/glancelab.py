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

"""Glance lab: a real, private Glance API on loopback, without Keystone.

Used by the functional tests and by the demo.  Standard library and
``requests`` only.  Glance itself lives in ``.venv-glance`` (install it with
``tools/install-glance.sh``); it is served by gunicorn from a temporary
directory holding its config, sqlite database, image files and logs, all
deleted on :meth:`GlanceServer.stop`::

    from tools import glancelab

    with glancelab.GlanceServer() as glance:
        image_id = glance.create_image(
            'ipxe', '/usr/lib/ipxe/ipxe.iso',
            properties={'hw_ipxe_boot': 'true'})
        print(glance.url, glance.image(image_id)['os_hash_value'])
        ...  # download glance.url + '/v2/images/<id>/file'
        print(glance.download_count(image_id))

Requests need no token: the noauth paste pipeline gives every request an
unauthenticated context, and the policy file makes that context admin.

Glance inspects uploads: bytes that are not an ISO labelled ``iso`` are
refused with 415 (:class:`ImageRejected`).  Upload real ISOs.

Command line: ``python -m tools.glancelab [--upload FILE]`` runs a Glance,
prints its URL (and the image id) and serves until interrupted.
"""

import argparse
import atexit
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import requests

from tools import labproc

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV = os.path.join(REPO, '.venv-glance')
INSTALL_HINT = 'run tools/install-glance.sh'
PASTE_INI = os.path.join('etc', 'glance', 'glance-api-paste.ini')
START_TIMEOUT = 60.0  # a cold start takes 1.5-3 s here
REQUEST_TIMEOUT = 30.0
# gunicorn's quick shutdown: the graceful one (SIGTERM) costs 2.5 s a server,
# and nothing of a lab Glance needs to outlive stop().
STOP_SIGNAL = signal.SIGINT


class GlanceLabError(Exception):
    """The lab Glance failed; the message says what."""


class PrerequisiteError(GlanceLabError):
    """Glance is not installed where the lab looks for it."""


class GlanceStartError(GlanceLabError):
    """Glance did not start; the message carries the tail of its logs."""


class GlanceRequestError(GlanceLabError):
    """Glance answered an API call with an unexpected status."""

    def __init__(self, message, status=None, body=''):
        super().__init__(message)
        self.status = status
        self.body = body


class ImageRejected(GlanceRequestError):
    """Glance refused the uploaded bytes (415: not what disk_format says)."""


def find_paste_ini(venv=VENV):
    """The stock glance-api-paste.ini shipped inside the venv, or None."""
    # pip puts data_files under <venv>/etc; look further if a layout differs.
    direct = os.path.join(venv, PASTE_INI)
    if os.path.isfile(direct):
        return direct
    for root, _dirs, files in os.walk(venv):
        if 'glance-api-paste.ini' in files:
            path = os.path.join(root, 'glance-api-paste.ini')
            if path.endswith(PASTE_INI):
                return path
    return None


def check_prerequisites(venv=VENV):
    """Raise PrerequisiteError unless the Glance venv is complete."""
    missing = [os.path.join(venv, 'bin', tool)
               for tool in ('gunicorn', 'glance-manage')
               if not os.access(os.path.join(venv, 'bin', tool), os.X_OK)]
    if not missing and find_paste_ini(venv) is None:
        missing.append(os.path.join(venv, PASTE_INI))
    if missing:
        raise PrerequisiteError('Glance is not installed (missing %s); %s' % (
            ', '.join(missing), INSTALL_HINT))


def _config(tmp, paste_ini, policy_file):
    # Written by hand, not with configparser, so that it reads like the
    # glance-api.conf an operator would write.
    return '\n'.join([
        '[DEFAULT]',
        'debug = false',
        'use_stderr = false',
        'log_file = %s' % os.path.join(tmp, 'glance-api.log'),
        'node_staging_uri = file://%s' % os.path.join(tmp, 'staging'),
        '',
        '[database]',
        'connection = sqlite:///%s' % os.path.join(tmp, 'glance.sqlite'),
        '',
        '[glance_store]',
        'stores = file',
        'default_store = file',
        'filesystem_store_datadir = %s' % os.path.join(tmp, 'images'),
        '',
        '[paste_deploy]',
        # No flavor: the stock "default" pipeline, which has no keystone
        # and no image cache (unauthenticated-context).
        'config_file = %s' % paste_ini,
        '',
        '[oslo_policy]',
        'policy_file = %s' % policy_file,
        '',
        '[oslo_concurrency]',
        'lock_path = %s' % os.path.join(tmp, 'locks'),
        '',
    ])


class GlanceServer:
    """A private Glance API on 127.0.0.1; a context manager.

    ``url`` is ``http://127.0.0.1:PORT`` once started.  ``tmpdir`` holds
    ``glance-api.conf``, ``glance-api.log``, ``gunicorn.log`` (gunicorn's
    own errors), ``access.log`` (one line per request) and the images.
    """

    def __init__(self, venv=VENV, start_timeout=START_TIMEOUT):
        self.venv = venv
        self.start_timeout = start_timeout
        self.url = None
        self.port = None
        self.tmpdir = None
        self.config_file = None
        self.proc = None
        self.start_seconds = None  # gunicorn exec to first 200
        self.session = requests.Session()

    # -- life cycle ---------------------------------------------------------

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def start(self):
        """Write the config, db_sync, run gunicorn, wait for a 200."""
        if self.proc is not None:
            raise GlanceLabError('this GlanceServer is already started')
        check_prerequisites(self.venv)
        atexit.register(self.stop)
        try:
            self._prepare()
            self._db_sync()
            self._spawn()
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self):
        """Stop gunicorn (the whole process group), delete the temp dir."""
        atexit.unregister(self.stop)
        self.session.close()
        if self.proc is not None:
            labproc.terminate(self.proc, grace=5.0, first_signal=STOP_SIGNAL)
            self.proc = None
        if self.tmpdir is not None:
            shutil.rmtree(self.tmpdir, ignore_errors=True)
            self.tmpdir = None

    @property
    def glance_log(self):
        return os.path.join(self.tmpdir, 'glance-api.log')

    @property
    def gunicorn_log(self):
        return os.path.join(self.tmpdir, 'gunicorn.log')

    @property
    def access_log(self):
        return os.path.join(self.tmpdir, 'access.log')

    def log_tail(self, lines=30):
        """The last lines of Glance's and gunicorn's logs, for messages."""
        parts = []
        for path in (self.glance_log, self.gunicorn_log):
            text = labproc.tail(path, lines)
            if text:
                parts.append('--- %s:\n%s' % (os.path.basename(path), text))
        return '\n'.join(parts) or '(logs are empty)'

    def _prepare(self):
        self.tmpdir = tempfile.mkdtemp(prefix='nipxe-glance-')
        for sub in ('images', 'staging', 'locks'):
            os.mkdir(os.path.join(self.tmpdir, sub))
        # Without this every request is 403: the unauthenticated context
        # has no roles, and the default rules want some.
        policy_file = os.path.join(self.tmpdir, 'policy.json')
        with open(policy_file, 'w') as f:
            json.dump({'context_is_admin': ''}, f)
        self.config_file = os.path.join(self.tmpdir, 'glance-api.conf')
        with open(self.config_file, 'w') as f:
            f.write(_config(self.tmpdir, find_paste_ini(self.venv),
                            policy_file))

    def _env(self):
        env = dict(os.environ)
        # The WSGI app takes no arguments: it reads glance-api.conf from
        # this directory only.
        env['OS_GLANCE_CONFIG_DIR'] = self.tmpdir
        env['PYTHONDONTWRITEBYTECODE'] = '1'
        return env

    def _db_sync(self):
        cmd = [os.path.join(self.venv, 'bin', 'glance-manage'),
               '--config-file', self.config_file, 'db_sync']
        try:
            out = subprocess.run(
                cmd, env=self._env(), stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                timeout=120, preexec_fn=labproc.die_with_parent)
        except subprocess.TimeoutExpired:
            raise GlanceStartError('glance-manage db_sync took over 120 s\n' +
                                   self.log_tail())
        if out.returncode != 0:
            raise GlanceStartError(
                'glance-manage db_sync failed (exit %d):\n%s\n%s' % (
                    out.returncode,
                    out.stdout.decode('utf-8', 'replace')[-4000:],
                    self.log_tail()))

    def _spawn(self):
        # We bind the listening socket and hand it to gunicorn (fd://), so
        # the port is ours before gunicorn starts: no race for a free port.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.bind(('127.0.0.1', 0))
            sock.listen(64)
            self.port = sock.getsockname()[1]
            self.url = 'http://127.0.0.1:%d' % self.port
            cmd = [os.path.join(self.venv, 'bin', 'gunicorn'),
                   '--bind', 'fd://%d' % sock.fileno(),
                   '--workers', '1', '--threads', '4', '-k', 'gthread',
                   '--graceful-timeout', '3',
                   '--access-logfile', self.access_log,
                   '--error-logfile', self.gunicorn_log,
                   'glance.wsgi.api:application']
            with open(os.path.join(self.tmpdir, 'gunicorn.out'), 'wb') as out:
                self._started = time.monotonic()
                self.proc = subprocess.Popen(
                    cmd, env=self._env(), cwd=self.tmpdir,
                    stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                    pass_fds=(sock.fileno(),), start_new_session=True,
                    preexec_fn=labproc.die_with_parent)
        finally:
            sock.close()

    def _wait_ready(self):
        deadline = self._started + self.start_timeout
        last = 'no answer'
        while True:
            if self.proc.poll() is not None:
                raise GlanceStartError(
                    'gunicorn exited with status %s before Glance answered;'
                    ' %s\n%s\n--- gunicorn.out:\n%s' % (
                        self.proc.returncode, self.url, self.log_tail(),
                        labproc.tail(os.path.join(self.tmpdir,
                                                  'gunicorn.out'))))
            left = deadline - time.monotonic()
            if left <= 0:
                raise GlanceStartError(
                    'Glance at %s did not answer GET /v2/images with 200 '
                    'within %.0f s (last: %s)\n%s' % (
                        self.url, self.start_timeout, last, self.log_tail()))
            try:
                # The socket already listens, so this waits in the backlog
                # until the worker has loaded the app.
                r = self.session.get(self.url + '/v2/images',
                                     timeout=min(5.0, max(left, 0.1)))
                if r.status_code == 200:
                    self.start_seconds = time.monotonic() - self._started
                    return
                last = 'HTTP %d %s' % (r.status_code, r.text[:200])
            except requests.RequestException as e:
                last = repr(e)
            time.sleep(0.1)

    # -- API ----------------------------------------------------------------

    def _check(self, r, expected, what):
        if r.status_code not in expected:
            body = r.text[:2000]
            cls = ImageRejected if r.status_code == 415 else \
                GlanceRequestError
            raise cls('%s: Glance answered %d: %s' % (
                what, r.status_code, body), status=r.status_code, body=body)
        return r

    def create_image(self, name, path_or_bytes, disk_format='iso',
                     container_format='bare', properties=None,
                     timeout=REQUEST_TIMEOUT):
        """Create an image and upload its bytes; return its id when active.

        ``properties`` become extra top-level keys of the record (Glance
        wants strings for custom properties: ``{'hw_ipxe_boot': 'true'}``).
        Raises :class:`ImageRejected` if Glance refuses the bytes (415); the
        half-made image is deleted then.
        """
        body = dict(properties or {})
        body.update(name=name, disk_format=disk_format,
                    container_format=container_format)
        r = self._check(self.session.post(self.url + '/v2/images', json=body,
                                          timeout=timeout),
                        (201,), 'create image %r' % name)
        image_id = r.json()['id']
        try:
            self._upload(image_id, path_or_bytes, timeout)
        except ImageRejected as e:
            # A rejected image stays queued, and a second PUT gets 500 (the
            # store kept the bytes): delete it rather than leave a trap.
            self.delete_image(image_id, missing_ok=True)
            raise ImageRejected(
                'Glance refused the bytes of %r as %s/%s (415; Glance checks '
                'that the data is what disk_format says, so upload a real '
                'one): %s' % (name, disk_format, container_format, e.body),
                status=e.status, body=e.body) from None
        self.wait_for_status(image_id, 'active', timeout=timeout)
        return image_id

    def _upload(self, image_id, path_or_bytes, timeout):
        url = '%s/v2/images/%s/file' % (self.url, image_id)
        headers = {'Content-Type': 'application/octet-stream'}
        if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
            r = self.session.put(url, data=bytes(path_or_bytes),
                                 headers=headers, timeout=timeout)
        else:
            with open(path_or_bytes, 'rb') as f:
                # A file object streams with a Content-Length.
                r = self.session.put(url, data=f, headers=headers,
                                     timeout=timeout)
        self._check(r, (204,), 'upload image %s' % image_id)

    def wait_for_status(self, image_id, status, timeout=REQUEST_TIMEOUT):
        deadline = time.monotonic() + timeout
        while True:
            record = self.image(image_id)
            if record['status'] == status:
                return record
            if record['status'] in ('killed', 'deleted'):
                raise GlanceLabError('image %s is %s, not %s\n%s' % (
                    image_id, record['status'], status, self.log_tail()))
            if time.monotonic() > deadline:
                raise GlanceLabError(
                    'image %s still %s after %.0f s (wanted %s)' % (
                        image_id, record['status'], timeout, status))
            time.sleep(0.1)

    def image(self, image_id):
        """The image record (GET /v2/images/{id}) as a dict."""
        r = self.session.get('%s/v2/images/%s' % (self.url, image_id),
                             timeout=REQUEST_TIMEOUT)
        return self._check(r, (200,), 'get image %s' % image_id).json()

    def delete_image(self, image_id, missing_ok=False):
        r = self.session.delete('%s/v2/images/%s' % (self.url, image_id),
                                timeout=REQUEST_TIMEOUT)
        self._check(r, (204, 404) if missing_ok else (204,),
                    'delete image %s' % image_id)

    def download_count(self, image_id, settle=0.2):
        """How many ``GET /v2/images/<id>/file`` gunicorn has logged.

        gunicorn writes an access line just after the last byte is sent
        (aborted downloads are logged too), so a client that has just read
        a download may be a moment ahead: wait until the count has stayed
        the same for ``settle`` seconds (at most 5 s).
        """
        pattern = re.compile(r'"GET /v2/images/%s/file(\?\S*)? HTTP/' %
                             re.escape(image_id))
        deadline = time.monotonic() + 5.0
        count = self._count_access(pattern)
        while True:
            time.sleep(settle)
            again = self._count_access(pattern)
            if again == count or time.monotonic() > deadline:
                return again
            count = again

    def _count_access(self, pattern):
        try:
            with open(self.access_log, encoding='utf-8',
                      errors='replace') as f:
                return sum(1 for line in f if pattern.search(line))
        except FileNotFoundError:
            return 0


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog='python -m tools.glancelab',
        description='Run a private Glance on loopback until interrupted.')
    parser.add_argument('--upload', metavar='ISO',
                        help='upload this ISO as image "ipxe" with '
                        'hw_ipxe_boot=true')
    args = parser.parse_args(argv)

    def interrupted(signum, frame):
        raise KeyboardInterrupt()

    # Also when started in the background (SIGINT ignored) or killed with
    # SIGTERM: leave through the with block so that stop() cleans up.
    signal.signal(signal.SIGINT, interrupted)
    signal.signal(signal.SIGTERM, interrupted)
    try:
        with GlanceServer() as glance:
            print('glance: %s (started in %.2f s, files in %s)' % (
                glance.url, glance.start_seconds, glance.tmpdir), flush=True)
            if args.upload:
                image_id = glance.create_image(
                    'ipxe', args.upload,
                    properties={'hw_ipxe_boot': 'true'})
                print('image: %s' % image_id, flush=True)
            signal.pause()
    except KeyboardInterrupt:
        pass
    except GlanceLabError as e:
        print('glancelab: error: %s' % e, file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
