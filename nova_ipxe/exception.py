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

"""The nova-ipxe error hierarchy.

Every error belongs to one of three categories, so that a driver can act
on it without a table of classes:

* :class:`TenantError` -- what the tenant supplied is wrong: the image
  (its record or its bytes), the server's network data or metadata, a
  menu URL override.  The tenant can fix it.
* :class:`OperatorError` -- what the operator must fix: the ``[ipxe]``
  configuration, an ISO that cannot take a script, the XenServer host.
* :class:`InfrastructureError` -- something failed underneath: Glance,
  the disk, the cache.  Trying again may work.

Each error carries two messages.  ``str(error)`` (also ``.message``) is
the detailed one for the log: it may name host paths and option values.
``.safe_message`` may be shown to a tenant (a Nova instance fault): it
names only what the tenant supplied, never a host path or an option
value.  Both are one line: control characters and line breaks in the
values are escaped, so no value can split a message or forge a log line.

Callers pass keyword arguments that fill the class's templates.  Library
messages never assume the CLI; the ``nova-ipxe`` command adds its own
hints.
"""

import typing
import unicodedata

TENANT = 'tenant'
OPERATOR = 'operator'
INFRASTRUCTURE = 'infrastructure'
CATEGORIES = (TENANT, OPERATOR, INFRASTRUCTURE)

# Longest message kept; hostile values (a 5000-digit netmask) are cut.
MAX_MESSAGE = 1024
# Characters never shown as they are: controls (Cc: C0, C1, DEL),
# format characters (Cf: bidirectional overrides such as U+202E,
# zero-width characters), line and paragraph separators (Zl, Zp), and
# what has no glyph at all (surrogates, private use, unassigned).
HIDDEN_CATEGORIES = frozenset(('Cc', 'Cf', 'Zl', 'Zp', 'Cs', 'Co', 'Cn'))


def _escape(ch):
    code = ord(ch)
    if code < 0x100:
        return '\\x%02x' % code
    return '\\u%04x' % code if code < 0x10000 else '\\U%08x' % code


def one_line(text: object, limit: int = MAX_MESSAGE) -> str:
    """``text`` with every hidden character escaped, at most ``limit``.

    Whatever a tenant controls (image bytes, names, metadata) is shown
    through this, in messages and log lines: no value can split a line,
    forge one, or reorder what a reader sees.
    """
    text = str(text)
    text = text[:limit + 1]     # escaping never shortens it
    if not text.isprintable():
        text = ''.join(_escape(c) if unicodedata.category(c) in
                       HIDDEN_CATEGORIES else c for c in text)
    if len(text) > limit:
        text = text[:limit - 3] + '...'
    return text


def show(value: object, limit: int = 64) -> str:
    """A bounded, printable rendering of an untrusted value.

    Never fails and never recurses: containers show their type only, a
    huge int its size (``repr`` of one over 4300 digits raises).
    """
    if isinstance(value, str):
        text = value if len(value) <= limit else value[:limit] + '...'
        return one_line(repr(text))
    if isinstance(value, bool) or value is None:
        return repr(value)
    if isinstance(value, int):
        if value.bit_length() > 64:
            return 'an integer of %d bits' % value.bit_length()
        return repr(value)
    if isinstance(value, float):
        return repr(value)
    if type(value).__module__ == 'ipaddress':
        return one_line(str(value), limit * 2)
    return 'a %s' % type(value).__name__


class NovaIpxeError(Exception):
    """Base class.

    ``msg_fmt`` (detailed, for the log) and ``safe_fmt`` (for the tenant)
    are filled from the keyword arguments.  ``safe_fmt`` may only use
    arguments whose values came from the tenant.
    """

    category = INFRASTRUCTURE
    msg_fmt = 'nova-ipxe failed: %(reason)s'
    safe_fmt = ('The iPXE boot ISO could not be built because of an '
                'internal error.')

    def __init__(self, message: typing.Optional[str] = None,
                 **kwargs: typing.Any) -> None:
        self.kwargs = kwargs
        if message is None:
            message = self._format(self.msg_fmt)
        self.message = one_line(message)
        self.safe_message = one_line(self._format(self.safe_fmt))
        super().__init__(self.message)

    def _format(self, template):
        try:
            return template % self.kwargs
        except Exception:
            # A template bug, or a value whose repr() fails (an int of
            # over 4300 digits, deep nesting), must not hide the problem.
            return '%s: %s' % (template, ', '.join(
                '%s=%s' % (k, show(v)) for k, v in self.kwargs.items()))


class TenantError(NovaIpxeError):
    """The tenant's image, network data, metadata or override is wrong."""

    category = TENANT
    safe_fmt = 'The iPXE boot request is invalid: %(reason)s.'


class OperatorError(NovaIpxeError):
    """The operator must fix the configuration, the ISO or the host."""

    category = OPERATOR
    safe_fmt = ('The iPXE boot ISO could not be built because of a problem '
                'in the cloud\'s configuration; contact the cloud operator.')


class InfrastructureError(NovaIpxeError):
    """Glance, the disk or the cache failed; trying again may work."""

    category = INFRASTRUCTURE
    safe_fmt = ('The iPXE boot ISO could not be built because of a '
                'temporary failure in the cloud; try again later.')


# -- the operator's side ------------------------------------------------

class ConfigError(OperatorError):
    msg_fmt = 'Invalid [ipxe] configuration: %(reason)s'


class MenuNetworkNotFound(OperatorError):
    msg_fmt = ('No NIC is attached to the menu network %(network)r '
               '(networks present: %(present)s). Fix [ipxe] menu_network '
               'or attach the instance to that network.')
    safe_fmt = ('The server has no port on the network the cloud boots iPXE '
                'menus from; attach it to that network or contact the cloud '
                'operator.')


class UnsupportedIso(OperatorError):
    """A well-formed ISO that cannot take a script (layout, iPXE build)."""

    msg_fmt = '%(source)s cannot take an iPXE script: %(reason)s.'
    safe_fmt = ('The image cannot take an iPXE script: %(reason)s. Use an '
                'iPXE ISO built with ISOLINUX and, for UEFI, iPXE 2021 or '
                'later.')


class UefiUnsupported(UnsupportedIso):
    msg_fmt = ('%(source)s cannot boot UEFI with an injected script: '
               '%(reason)s. Use an iPXE build from 2021 or later, or set '
               '[ipxe] uefi to auto or off.')
    safe_fmt = ('The image cannot boot UEFI with an injected iPXE script: '
                '%(reason)s. Use an iPXE build from 2021 or later.')


class EfiImageFull(UnsupportedIso):
    msg_fmt = ('The EFI boot image %(image)s has no room for %(name)s '
               '(%(needed)d bytes needed, %(free)d free). Rebuild the iPXE '
               'ISO with a larger EFI image, or set [ipxe] uefi = off.')
    safe_fmt = ('The image\'s EFI boot image %(image)s has no room for the '
                'iPXE script; rebuild the ISO with a larger EFI image.')


class IpxeCapabilityMissing(UnsupportedIso):
    """The ISO's iPXE for one boot path lacks what the menu needs."""

    msg_fmt = ('%(source)s: its %(boot_path)s iPXE (%(binary)s) cannot boot '
               'the menu: %(reason)s. Use an iPXE ISO built with it (see '
               '"nova-ipxe inspect"), or change [ipxe] boot_menu_url.')
    safe_fmt = ('The image\'s %(boot_path)s iPXE lacks a feature the boot '
                'menu needs (such as HTTPS, IPv6 or DNS); use an iPXE ISO '
                'built with it, or contact the cloud operator.')


class SigningError(OperatorError):
    msg_fmt = 'Cannot sign the boot menu identity: %(reason)s.'


# -- the tenant's side --------------------------------------------------

class InvalidNetworkData(TenantError):
    msg_fmt = ('Invalid network data at %(field)s: %(reason)s. Check the '
               'network_data.json (OpenStack metadata format).')
    safe_fmt = 'Invalid network data at %(field)s: %(reason)s.'


class InvalidScriptValue(TenantError):
    msg_fmt = ('Refusing %(what)s %(value)r for the iPXE script: '
               '%(reason)s.')
    safe_fmt = msg_fmt


class InvalidMenuUrl(TenantError):
    msg_fmt = ('Invalid boot menu URL %(url)r: %(reason)s. Use a plain '
               'http:// or https:// URL.')
    safe_fmt = msg_fmt


class InvalidConfiguredMenuUrl(InvalidMenuUrl):
    """The operator's ``[ipxe] boot_menu_url`` is unusable."""

    category = OPERATOR
    msg_fmt = ('Invalid boot menu URL %(url)r in [ipxe] boot_menu_url: '
               '%(reason)s. Set it to an http://, https:// or tftp:// URL.')
    safe_fmt = OperatorError.safe_fmt


class NoUsableNic(TenantError):
    msg_fmt = ('None of the instance\'s NICs can reach a boot menu: '
               '%(reason)s.')
    safe_fmt = msg_fmt


class InvalidIso(TenantError):
    """The ISO's bytes are malformed, hostile or not an iPXE ISO."""

    msg_fmt = '%(source)s is not a usable iPXE ISO: %(reason)s.'
    safe_fmt = 'The image is not a usable iPXE ISO: %(reason)s.'


class EfiImageError(InvalidIso):
    msg_fmt = 'The EFI boot image %(image)s is unusable: %(reason)s.'
    safe_fmt = ('The image\'s EFI boot image %(image)s is unusable: '
                '%(reason)s.')


class ImageTooLarge(InvalidIso):
    """One condition, whether seen in the Glance record or on disk."""

    msg_fmt = ('%(source)s is %(size)s bytes, more than [ipxe] '
               'max_iso_size (%(limit)d bytes). Use a smaller iPXE ISO or '
               'raise max_iso_size.')
    # The limit is operator configuration: not shown to the tenant.
    safe_fmt = ('The image is %(size)s bytes, more than this cloud accepts '
                'for an iPXE ISO.')


class ImageNotUsable(TenantError):
    msg_fmt = 'Image %(image)s cannot be used for iPXE boot: %(reason)s.'
    safe_fmt = msg_fmt


class ImageNotFound(TenantError):
    msg_fmt = ('Image %(image)s was not found in Glance (or the request\'s '
               'token may not see it).')
    safe_fmt = msg_fmt


class ImageNotAuthorized(TenantError):
    msg_fmt = ('Glance refused access to image %(image)s (HTTP %(status)d): '
               'check the token and the image visibility.')
    safe_fmt = msg_fmt


# -- the infrastructure's side -----------------------------------------

class GlanceError(InfrastructureError):
    msg_fmt = 'Glance request for image %(image)s failed: %(reason)s.'
    safe_fmt = ('Fetching image %(image)s from Glance failed; try again '
                'later.')


class ImageDownloadFailed(GlanceError):
    msg_fmt = ('Could not download image %(image)s from Glance: %(reason)s. '
               'Check that Glance is reachable; nothing was cached.')


class ImageDownloadTimeout(ImageDownloadFailed):
    """The overall deadline passed, however the bytes were trickling."""

    msg_fmt = ('Gave up on image %(image)s at the download deadline: '
               '%(reason)s. Check Glance\'s health; nothing was cached.')


class InvalidImageRecord(GlanceError):
    """Glance's answer for the record is too large, too deep or garbled."""

    msg_fmt = ('Glance sent an unusable record for image %(image)s: '
               '%(reason)s.')


class ImageChecksumMismatch(ImageDownloadFailed):
    msg_fmt = ('The data of image %(image)s does not match its %(algo)s '
               'hash in Glance (expected %(expected)s..., got '
               '%(actual)s...); nothing was cached.')
    safe_fmt = ('The data of image %(image)s does not match its hash in '
                'Glance; nothing was used.')


class CacheError(InfrastructureError):
    msg_fmt = ('The iPXE base-ISO cache at %(path)s is unusable: '
               '%(reason)s. Check [ipxe] cache_dir, its permissions and '
               'free space.')


class CacheLockTimeout(CacheError):
    msg_fmt = ('Waited %(seconds)s s for another fetch of image %(image)s '
               'into the iPXE base-ISO cache at %(path)s; giving up. Raise '
               '[ipxe] cache_lock_timeout if downloads take this long.')


class IsoBuildFailed(InfrastructureError):
    msg_fmt = 'Could not write the iPXE ISO %(path)s: %(reason)s.'


class IsoReadFailed(InfrastructureError):
    """The source ISO, on this host's disk, could not be read.

    Not the tenant's image: the file Nova or the cache wrote is there but
    the disk or the file system failed under it.
    """

    msg_fmt = ('Could not read the source ISO %(source)s on this host: '
               '%(reason)s. Check the disk and the file system under it.')


# -- XenServer / XCP-ng (XAPI) -----------------------------------------

class _XapiCall(object):
    """Which XAPI call failed (``call``) and with which code (``code``).

    ``code`` is XAPI's error code (the first element of a
    ``XenAPI.Failure``'s details, such as ``SR_FULL``), or the name of
    the transport error when XAPI never answered.  A mixin, so that each
    XAPI error keeps the one category of its base.
    """

    def __init__(self, message=None, **kwargs):
        kwargs.setdefault('details', '')
        # The next class in the MRO is a NovaIpxeError (a mixin).
        super().__init__(message, **kwargs)  # type: ignore[call-arg]
        self.call = kwargs.get('call')
        self.code = kwargs.get('code')


class XapiError(_XapiCall, InfrastructureError):
    """A XAPI call failed; trying again may work."""

    msg_fmt = ('XAPI call %(call)s failed with %(code)s: %(details)s. '
               'Nothing nova-ipxe created for it was kept.')
    safe_fmt = ('Attaching the iPXE boot ISO failed because of a temporary '
                'failure in the cloud; try again later.')


class XapiLoginFailed(_XapiCall, OperatorError):
    """Wrong credentials or URL: the operator must fix them."""

    msg_fmt = ('Logging in to XAPI at %(url)s failed with %(code)s: '
               '%(details)s. Check the XenServer connection URL, user and '
               'password.')
    safe_fmt = OperatorError.safe_fmt


class XapiUploadFailed(XapiError):
    msg_fmt = ('Uploading the ISO into VDI %(vdi)s through %(call)s failed '
               'with %(code)s: %(details)s. Nothing nova-ipxe created for '
               'it was kept.')


class XapiDeviceBusy(_XapiCall, OperatorError):
    """The CD slot holds a device nova-ipxe did not create."""

    msg_fmt = ('VM %(vm)s already has a %(type)s device at userdevice '
               '%(userdevice)s that nova-ipxe did not create; it was left '
               'alone.')

    def __init__(self, message: typing.Optional[str] = None,
                 **kwargs: typing.Any) -> None:
        kwargs.setdefault('call', 'VBD.create')
        kwargs.setdefault('code', 'DEVICE_ALREADY_EXISTS')
        super().__init__(message, **kwargs)


class XapiPluginError(_XapiCall, OperatorError):
    """The dom0 ``ipxe`` plugin is missing, too old or failed."""

    msg_fmt = ('The dom0 plugin %(plugin)s failed in %(call)s with '
               '%(code)s: %(details)s. Install xenapi_plugins/ipxe.py in '
               '/etc/xapi.d/plugins as both ipxe and ipxe.py.')
