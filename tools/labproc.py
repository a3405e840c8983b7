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

"""Child processes of the labs (boot lab, Glance lab): standard library.

The labs start their servers and guests in a session of their own
(``start_new_session=True``) with :func:`die_with_parent` as
``preexec_fn``, and stop them with :func:`terminate`, so that nothing
outlives a test run, not even a SIGKILLed one.
"""

import ctypes
import os
import signal
import subprocess

PR_SET_PDEATHSIG = 1

try:
    _libc = ctypes.CDLL(None, use_errno=True)
except OSError:  # pragma: no cover
    _libc = None


def die_with_parent():  # runs in the child between fork and exec
    """``preexec_fn``: the child gets SIGKILL when its starter dies.

    PR_SET_PDEATHSIG fires when the thread that started the child dies, so
    QEMU, gunicorn and the lab helpers never outlive a SIGKILLed test
    runner (gunicorn's workers exit by themselves when their master goes).
    """
    if _libc is not None:
        _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def terminate(proc, grace=3.0, first_signal=signal.SIGTERM):
    """Stop a process started in its own session, whole group at once.

    ``first_signal`` to the group, then SIGKILL after ``grace`` seconds;
    returns the exit status (None if the process could not be reaped).
    A leader already reaped is left alone: its id may belong to someone
    else by now (pid_max is 32768 here).  The labs' helpers start no
    children, and gunicorn's workers exit when their master has gone.
    """
    if proc.poll() is not None:
        return proc.returncode
    for sig, wait in ((first_signal, grace), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        except PermissionError:  # pragma: no cover
            proc.send_signal(sig)
        try:
            return proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
    return proc.poll()


def pid_alive(pid):
    """Whether a process ``pid`` exists (ours or anyone's)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover
        return True
    return True


def tail(path, lines=30):
    """The last ``lines`` lines of a log file ('' if it cannot be read)."""
    try:
        with open(path, 'rb') as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 16384))
            text = f.read().decode('utf-8', 'replace')
    except OSError:
        return ''
    return '\n'.join(text.splitlines()[-lines:])
