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

"""What Nova sees when a driver cannot give an instance its iPXE ISO.

One mapping for both drivers (libvirt on Nova 34, XenAPI on Nova 21); the
contract is written down in doc/source/contributor/errors.rst:

* a tenant error, or an operator error (the same on every host configured
  alike: rescheduling cannot help), becomes :class:`IpxeBootFailed`, an
  ``ImageUnacceptable``: the compute manager aborts the build (no
  reschedule) and the instance fault shows the error's ``safe_message``;
* an infrastructure error (this host's disk, Glance as seen from here,
  XAPI), and a failure to read the source ISO on this host, becomes
  :class:`IpxeHostFailure`, a plain ``NovaException``: Nova reschedules
  the build to another host, and the fault says to try again or contact
  the operator.

Either way the detailed message, the one that says what the operator
must fix, goes to the compute log, and the original error is chained
(``raise ... from``) so the admin-only fault details hold it too.
"""

import typing

from nova import exception as nova_exception
from oslo_log import log as logging

from nova_ipxe import exception

LOG = logging.getLogger(__name__)


class IpxeBootFailed(nova_exception.ImageUnacceptable):
    """The ISO cannot be built from this image here or on any host.

    An ImageUnacceptable, so that the compute manager aborts the build
    (no reschedule) with this message in the tenant-visible fault; the
    message is the core error's ``safe_message`` (no host path, no option
    value).
    """


class IpxeHostFailure(nova_exception.NovaException):
    """This host failed to build or attach the ISO; another may not.

    Not one of the exceptions the compute manager aborts a build on, so
    the build is rescheduled.
    """

    msg_fmt = 'The iPXE boot ISO could not be made on this host: %(reason)s'


def host_read_failure(error: exception.NovaIpxeError) -> bool:
    """``error`` is the source ISO failing to read on this host's disk.

    The reader reports any unreadable source as an InvalidIso (the CLI
    reads files a user names); raised while handling an ``OSError`` it
    is the host's disk, not the tenant's image.
    """
    cause = error.__cause__ or error.__context__
    return isinstance(error, exception.InvalidIso) and isinstance(
        cause, OSError)


def as_host_error(
        error: exception.NovaIpxeError) -> exception.NovaIpxeError:
    """The error in the category the mapping decides by."""
    if host_read_failure(error):
        return exception.IsoReadFailed(
            source=error.kwargs.get('source'),
            reason=error.kwargs.get('reason'))
    return error


def for_nova(error: exception.NovaIpxeError,
             image_id: str) -> nova_exception.NovaException:
    """The Nova exception to raise for a nova-ipxe error."""
    error = as_host_error(error)
    if error.category == exception.INFRASTRUCTURE:
        return IpxeHostFailure(reason=error.safe_message)
    return IpxeBootFailed(image_id=image_id, reason=error.safe_message)


def reraise(error: exception.NovaIpxeError, instance: typing.Any,
            image_id: str) -> typing.NoReturn:
    """Log the detailed message and raise what Nova should see."""
    LOG.error('nova-ipxe: %s', as_host_error(error), instance=instance)
    raise for_nova(error, image_id) from error
