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


"""A helper process of the lab (menu_server.py), ready after READY."""

import json
import os
import select
import subprocess
import sys
import time

from tools.bootlab import errors
from tools import labproc

MENU_SERVER = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                           'menu_server.py')


class Helper:
    """A menu_server.py mode run in the namespace, ready after READY."""

    mode = None

    def __init__(self, lab, name):
        self.lab = lab
        self.name = name
        self.proc = None
        self.log_path = lab.path('%s.jsonl' % name)
        self.stderr_path = lab.path('%s-stderr.log' % name)
        self.ready_words = None

    def _argv(self):
        raise NotImplementedError

    def start(self, timeout=15):
        if self.proc is not None:
            raise errors.LabError('%s already started' % self.name)
        open(self.log_path, 'a').close()
        with open(self.stderr_path, 'ab') as err:
            self.proc = self.lab.popen(
                [sys.executable, '-u', MENU_SERVER, self.mode,
                 *self._argv()],
                stdout=subprocess.PIPE, stderr=err)
        deadline = time.monotonic() + timeout
        buf = b''
        fd = self.proc.stdout.fileno()
        while b'\n' not in buf:
            left = deadline - time.monotonic()
            if left <= 0:
                self.stop()
                raise errors.LabTimeout(
                    '%s did not get ready within %.0f s: %s'
                    % (self.name, timeout, self._stderr()))
            ready, _, _ = select.select([fd], [], [], min(left, 0.5))
            if ready:
                chunk = os.read(fd, 4096)
                if not chunk:
                    self.proc.wait(timeout=5)
                    raise errors.LabError(
                        '%s exited with %s before it was ready: %s'
                        % (self.name, self.proc.returncode, self._stderr()))
                buf += chunk
        line = buf.split(b'\n', 1)[0].decode()
        if not line.startswith('READY'):
            self.stop()
            raise errors.LabError('%s: unexpected first line %r'
                                  % (self.name, line))
        self.ready_words = line.split()[1:]
        return self

    def _stderr(self):
        try:
            with open(self.stderr_path, errors='replace') as f:
                return f.read()[-4000:].strip() or '(no stderr)'
        except OSError:  # pragma: no cover
            return '(no stderr)'

    @property
    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self):
        if self.proc is not None:
            labproc.terminate(self.proc)

    def records(self):
        """Every JSON line logged so far."""
        out = []
        try:
            with open(self.log_path, encoding='utf-8') as f:
                for line in f:
                    if line.endswith('\n'):
                        out.append(json.loads(line))
        except FileNotFoundError:
            pass
        return out

    def _wait(self, describe, find, timeout, vm=None, interval=0.05):
        deadline = time.monotonic() + timeout
        while True:
            found = find(self.records())
            if found is not None:
                return found
            if self.proc is not None and self.proc.poll() is not None:
                raise errors.LabError(
                    '%s exited (%s) while waiting for %s: %s' % (
                        self.name, self.proc.returncode, describe,
                        self._stderr()))
            if vm is not None and vm.exited:
                found = find(self.records())
                if found is not None:
                    return found
                raise errors.LabError(
                    'VM %s ended (%s) before %s; serial console tail:\n%s'
                    % (vm.name, vm.describe_exit(), describe,
                       vm.serial_tail()))
            if time.monotonic() >= deadline:
                msg = 'no %s within %.1f s' % (describe, timeout)
                if vm is not None:
                    msg += '; serial console tail:\n%s' % vm.serial_tail()
                raise errors.LabTimeout(msg)
            time.sleep(interval)
