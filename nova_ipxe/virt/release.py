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

"""The Nova releases ipxe.LibvirtDriver runs on, and where they differ.

One codebase serves every release in :data:`RELEASES`.  What the driver
relies on in Nova is written down here per release, and
``tests/nova/test_driver.py`` checks it against the Nova installed, one
run per release (``tools/run-tests.sh``, tox ``nova31`` ... ``nova34``):

* :data:`OVERRIDES`: the signature of each Nova method the driver
  overrides.  The overrides take the parameters they use by name and pass
  the rest on untouched, so a parameter added by one release (Nova 33's
  ``old_guest``) reaches Nova's method on that release and is never
  passed to an older one;
* :data:`NOVA_NAMES`: every other Nova name, public or private, the
  driver calls, reads or subclasses, with the signature of the callables.

The start-up gate (:func:`check`) refuses a Nova major the driver was not
tested with, unless ``[ipxe] allow_untested_nova``.  This module imports
nothing from Nova: ``nova-ipxe-status`` reads it on any host.
"""

import importlib.metadata

from nova_ipxe import exception

# Nova major -> (OpenStack series, the version the tests last ran on).
RELEASES = {
    31: ('2025.1', '31.3.1'),
    32: ('2025.2', '32.2.1'),
    33: ('2026.1', '33.0.2'),
    34: ('2026.2', '34.0.0'),
}
# The release ipxe.XenAPIDriver runs on (the last Nova with XenAPI).
XENAPI_RELEASE = 21

# -- the overridden methods, per release ------------------------------------

_OVERRIDES_33 = {
    '_create_and_inject_local_root': (
        'self, context, instance, disk_mapping, booted_from_volume, '
        'suffix, disk_images, injection_info, fallback_from_host'),
    '_get_guest_xml': (
        'self, context, instance, network_info, disk_info, image_meta, '
        'rescue=None, block_device_info=None, mdevs=None, accel_info=None, '
        'share_info=None, old_guest=None'),
    '_get_guest_storage_config': (
        'self, context, instance, image_meta, disk_info, rescue, '
        'block_device_info, flavor, os_type'),
    'default_device_names_for_instance': (
        'self, instance, root_device_name, *block_device_lists'),
    'get_device_name_for_instance': 'self, instance, bdms, block_device_obj',
    'pre_live_migration': (
        'self, context, instance, block_device_info, network_info, '
        'disk_info, migrate_data'),
    'init_host': 'self, host',
    '_needs_rebase_original_qcow2_image': 'self, instance, backend',
}
# Before Nova 33, _get_guest_xml (and _get_guest_config, which the driver
# does not override) had no old_guest.
_OVERRIDES_31 = dict(_OVERRIDES_33, _get_guest_xml=(
    'self, context, instance, network_info, disk_info, image_meta, '
    'rescue=None, block_device_info=None, mdevs=None, accel_info=None, '
    'share_info=None'))

OVERRIDES = {
    31: _OVERRIDES_31,
    32: _OVERRIDES_31,
    33: _OVERRIDES_33,
    34: _OVERRIDES_33,
}

# -- every other Nova name the driver uses ----------------------------------

# Dotted name -> signature for a callable (as str(inspect.signature)
# prints it, without the parentheses and annotations), or None for a
# class, constant or attribute whose presence is what matters.  Filled
# per release below, where a release differs.
_NAMES = {
    # Nova's image cache: fetch into _base under its lock, with its
    # format check and fallback_from_host (virt/libvirt.py _fetch_base).
    'nova.virt.libvirt.driver.LibvirtDriver._try_fetch_image_cache': (
        'self, image, fetch_func, context, filename, image_id, instance, '
        'size, fallback_from_host=None'),
    'nova.virt.libvirt.driver.LibvirtDriver._is_booted_from_volume': (
        'block_device_info'),
    'nova.virt.libvirt.driver.LibvirtDriver._set_cache_mode': (
        'self, conf'),
    'nova.virt.libvirt.driver.LibvirtDriver._get_guest_config': None,
    'nova.virt.libvirt.driver.driver.get_block_device_info': (
        'instance, block_device_mapping'),
    'nova.virt.libvirt.imagebackend.Image.__init__': (
        'self, path, source_type, driver_format, is_block_dev=False, '
        'disk_info_mapping=None'),
    'nova.virt.libvirt.imagebackend.Flat': None,
    'nova.virt.libvirt.imagebackend.Qcow2': None,
    'nova.virt.libvirt.imagebackend.Image.create_snap': 'self, name',
    'nova.virt.libvirt.imagebackend.Image.resize_image': 'self, size',
    'nova.virt.libvirt.imagebackend.Image.get_disk_size': 'self, name',
    'nova.virt.libvirt.imagebackend.Backend.by_name': (
        'self, instance, name, image_type=None, disk_info_mapping=None'),
    'nova.virt.libvirt.imagebackend.images.get_image_format': 'path',
    'nova.virt.libvirt.imagebackend._update_utime_ignore_eacces': 'path',
    'nova.virt.libvirt.imagecache.get_cache_fname': 'image_id',
    'nova.virt.libvirt.utils.fetch_image': (
        'context, target, image_id, trusted_certs=None'),
    'nova.virt.libvirt.utils.get_instance_path': (
        'instance, relative=False'),
    'nova.virt.libvirt.utils.get_instance_path_at_destination': (
        'instance, migrate_data=None'),
    'nova.virt.libvirt.utils.create_image': (
        'path, disk_format, disk_size, backing_file=None, '
        'encryption=None, safe=False'),
    'nova.virt.libvirt.utils.copy_image': (
        'src, dest, host=None, receive=False, on_execute=None, '
        'on_completion=None, compression=True'),
    'nova.virt.libvirt.utils.RESIZE_SNAPSHOT_NAME': None,
    'nova.virt.libvirt.blockinfo.get_disk_bus_for_device_type': (
        'instance, virt_type, image_meta, device_type=\'disk\''),
    'nova.virt.libvirt.blockinfo.find_disk_dev_for_disk_bus': (
        'mapping, bus, assigned_devices=None'),
    'nova.virt.libvirt.blockinfo.get_dev_prefix_for_disk_bus': 'disk_bus',
    'nova.virt.libvirt.blockinfo.get_disk_info': (
        'virt_type, instance, image_meta, block_device_info=None, '
        'rescue=False, rescue_image_meta=None'),
    'nova.virt.libvirt.blockinfo.get_info_from_bdm': (
        'instance, virt_type, image_meta, bdm, mapping=None, '
        'disk_bus=None, dev_type=None, allowed_types=None, '
        'assigned_devices=None'),
    'nova.virt.libvirt.blockinfo.get_next_disk_info': (
        'mapping, disk_bus, device_type=\'disk\', boot_index=None, '
        'assigned_devices=None'),
    'nova.virt.libvirt.config.LibvirtConfigGuestDisk': None,
    'nova.block_device.strip_dev': 'device_name',
    'nova.block_device.prepend_dev': 'device_name',
    'nova.compute.task_states.SPAWNING': None,
    'nova.compute.task_states.REBUILD_SPAWNING': None,
    'nova.compute.task_states.RESCUING': None,
    'nova.compute.task_states.RESIZE_FINISH': None,
    'nova.compute.vm_states.SHELVED_OFFLOADED': None,
    'nova.exception.ImageUnacceptable': None,
    'nova.exception.ImageNotFound': None,
    'nova.exception.ImageNotAuthorized': None,
    'nova.exception.GlanceConnectionFailed': None,
    'nova.exception.InvalidDiskInfo': None,
}
NOVA_NAMES = {major: _NAMES for major in RELEASES}


# -- which Nova runs here ----------------------------------------------------

class UntestedNova(exception.OperatorError):
    msg_fmt = ('ipxe.LibvirtDriver was not tested with Nova %(version)s; '
               'supported: %(supported)s. Install a supported Nova, or set '
               '[ipxe] allow_untested_nova = true to start anyway')


def nova_version():
    """The installed Nova's version string, or None without Nova.

    Read from the package metadata: Nova is not imported.
    """
    try:
        return importlib.metadata.version('nova')
    except importlib.metadata.PackageNotFoundError:
        return None


def major(version):
    try:
        return int(str(version).split('.', 1)[0])
    except ValueError:
        return None


def describe(version):
    """``Nova 33.0.2 (2026.1)``, or without the series when unknown."""
    series = RELEASES.get(major(version), (None,))[0]
    return 'Nova %s%s' % (version, ' (%s)' % series if series else '')


def supported():
    """The supported releases, for messages: ``31 (2025.1), ...``."""
    return ', '.join('%d (%s)' % (m, s) for m, (s, _) in
                     sorted(RELEASES.items()))


def is_tested(version):
    return major(version) in RELEASES


def check(version, allow_untested):
    """The start-up gate: the message to log, or :class:`UntestedNova`.

    Returns (tested, message).  An untested major raises unless
    ``allow_untested``; then it comes back with ``tested`` False, for a
    warning.
    """
    if is_tested(version):
        tested = RELEASES[major(version)][1]
        return True, ('ipxe.LibvirtDriver on %s (tested with %s)'
                      % (describe(version), tested))
    error = UntestedNova(version=version, supported=supported())
    if not allow_untested:
        raise error
    return False, ('ipxe.LibvirtDriver on %s, a release it was not tested '
                   'with (supported: %s): starting because [ipxe] '
                   'allow_untested_nova is set' % (describe(version),
                                                   supported()))


def main(argv=None):
    """``python -m nova_ipxe.virt.release [--allow-untested]``.

    Prints the gate's message for the Nova installed beside it; exit
    status 1 when nova-compute would refuse to start, 2 without Nova.
    For installers (the devstack plugin) that must fail early.
    """
    import sys
    argv = sys.argv[1:] if argv is None else argv
    version = nova_version()
    if version is None:
        print('nova-ipxe: Nova is not installed with %s' % sys.executable)
        return 2
    try:
        _, message = check(version, '--allow-untested' in argv)
    except UntestedNova as e:
        print('nova-ipxe: %s' % e)
        return 1
    print('nova-ipxe: %s' % message)
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
