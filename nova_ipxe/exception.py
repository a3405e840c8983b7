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

Every error an operator can meet is a subclass of :class:`NovaIpxeError`
whose message says what was wrong and what to do about it.  Callers pass
keyword arguments that fill the class's message template.
"""


class NovaIpxeError(Exception):
    """Base class; ``msg_fmt`` is filled from the keyword arguments."""

    msg_fmt = 'nova-ipxe failed: %(reason)s'

    def __init__(self, message=None, **kwargs):
        self.kwargs = kwargs
        if message is None:
            try:
                message = self.msg_fmt % kwargs
            except (KeyError, TypeError):
                # A template bug must not hide the original problem.
                message = '%s: %r' % (self.msg_fmt, kwargs)
        self.message = message
        super().__init__(message)


class ConfigError(NovaIpxeError):
    msg_fmt = 'Invalid [ipxe] configuration: %(reason)s'


class InvalidNetworkData(NovaIpxeError):
    msg_fmt = ('Invalid network data at %(field)s: %(reason)s. Check the '
               'network_data.json (OpenStack metadata format) given to '
               'nova-ipxe.')


class InvalidScriptValue(NovaIpxeError):
    msg_fmt = ('Refusing %(what)s %(value)r for the iPXE script: '
               '%(reason)s.')


class InvalidMenuUrl(NovaIpxeError):
    msg_fmt = ('Invalid boot menu URL %(url)r: %(reason)s. Set [ipxe] '
               'boot_menu_url (or the image/server override) to an http:// '
               'or https:// URL.')


class MenuNetworkNotFound(NovaIpxeError):
    msg_fmt = ('No NIC is attached to the menu network %(network)r '
               '(networks present: %(present)s). Fix [ipxe] menu_network '
               'or attach the instance to that network.')


class NoUsableNic(NovaIpxeError):
    msg_fmt = ('None of the instance\'s NICs can reach a boot menu: '
               '%(reason)s.')


class InvalidIso(NovaIpxeError):
    msg_fmt = ('%(source)s is not a usable iPXE ISO: %(reason)s.')


class IsoTooLarge(InvalidIso):
    msg_fmt = ('%(source)s is %(size)d bytes, more than [ipxe] '
               'max_iso_size (%(limit)d bytes). Use a smaller iPXE ISO or '
               'raise max_iso_size.')


class UefiUnsupported(InvalidIso):
    msg_fmt = ('%(source)s cannot boot UEFI with an injected script: '
               '%(reason)s. Use an iPXE build from 2021 or later, or set '
               '[ipxe] uefi to auto or off.')


class EfiImageError(NovaIpxeError):
    msg_fmt = 'The EFI boot image %(image)s is unusable: %(reason)s.'


class EfiImageFull(EfiImageError):
    msg_fmt = ('The EFI boot image %(image)s has no room for %(name)s '
               '(%(needed)d bytes needed, %(free)d free). Rebuild the iPXE '
               'ISO with a larger EFI image, or set [ipxe] uefi = off.')


class IsoBuildFailed(NovaIpxeError):
    msg_fmt = 'Could not write the iPXE ISO %(path)s: %(reason)s.'


class GlanceError(NovaIpxeError):
    msg_fmt = 'Glance request for image %(image)s failed: %(reason)s.'


class ImageNotFound(GlanceError):
    msg_fmt = ('Image %(image)s was not found in Glance (or this token may '
               'not see it).')


class ImageNotAuthorized(GlanceError):
    msg_fmt = ('Glance refused access to image %(image)s (HTTP %(status)d): '
               'check the token (OS_AUTH_TOKEN) and the image visibility.')


class ImageNotUsable(GlanceError):
    msg_fmt = 'Image %(image)s cannot be used for iPXE boot: %(reason)s.'


class ImageTooLarge(ImageNotUsable):
    msg_fmt = ('Image %(image)s is %(size)s bytes, more than [ipxe] '
               'max_iso_size (%(limit)d bytes). Use a smaller iPXE ISO or '
               'raise max_iso_size.')


class ImageDownloadFailed(GlanceError):
    msg_fmt = ('Could not download image %(image)s from Glance: %(reason)s. '
               'Check that Glance is reachable; nothing was cached.')


class ImageChecksumMismatch(ImageDownloadFailed):
    msg_fmt = ('The data of image %(image)s does not match its %(algo)s '
               'hash in Glance (expected %(expected)s..., got '
               '%(actual)s...); nothing was cached.')


class CacheError(NovaIpxeError):
    msg_fmt = ('The iPXE base-ISO cache at %(path)s is unusable: '
               '%(reason)s. Check [ipxe] cache_dir, its permissions and '
               'free space.')
