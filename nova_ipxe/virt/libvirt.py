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

"""``compute_driver = ipxe.LibvirtDriver``: Nova's libvirt driver, plus
boot from a flagged iPXE ISO with the instance's own network settings.

An instance whose image is an iPXE ISO (:func:`nova_ipxe.image.
is_ipxe_image`) gets the layout the 2013 XenAPI feature gave it: a blank
root disk of the flavor's ``root_gb`` under Nova's own name ``disk`` (the
first ``<disk>`` and the first disk-bus device, so snapshot, shelve and
legacy rescue take the installed OS), and a per-instance ISO built from
Nova's cached copy of the image, attached as a CD that boots first.
Every other instance is left to the stock driver untouched.

Override points (Nova 31 to 34, see doc/source/contributor/nova.rst;
their signatures per release are in :mod:`nova_ipxe.virt.release`):

* ``_create_and_inject_local_root``: fetch the ISO into ``_base`` with
  Nova's own cache and lock, then create the blank ``disk``;
* ``_get_guest_xml``, the one hook with ``network_info`` on every path
  (spawn, hard reboot, rescue, finish_migration, finish_revert): build the
  ISO and rewrite a copy of ``disk_info`` so that ``disk`` is a disk;
* ``_get_guest_storage_config``: add the CD with ``<boot order='1'>`` and
  give the disk order 2.  No ``boot_index`` is left in the rewritten
  mapping, so Nova's ``_conf_non_lxc`` emits no ``<os><boot>`` (libvirt
  refuses both kinds mixed) and ``_get_guest_config`` needs no override;
* ``default_device_names_for_instance`` and
  ``get_device_name_for_instance``: keep the root's device name free;
* ``pre_live_migration``: build the ISO on the destination (its
  ``_base`` copy fetched with the source host as fallback, as Nova's own
  disks are) after Nova creates missing files there as zeros;
* ``_needs_rebase_original_qcow2_image``: never rebase an unshelved OS
  disk onto the ISO;
* ``init_host``: log the Nova release, refuse an untested one.
"""

import copy
import os

from lxml import etree
from nova import block_device
from nova.compute import task_states
from nova.compute import vm_states
from nova import exception as nova_exception
from nova.virt.libvirt import blockinfo
from nova.virt.libvirt import config as vconfig
from nova.virt.libvirt import driver as libvirt_driver
from nova.virt.libvirt import imagebackend
from nova.virt.libvirt import imagecache
from nova.virt.libvirt import utils as libvirt_utils
from oslo_log import log as logging
from oslo_utils import fileutils
from oslo_utils import strutils
from oslo_utils import units

from nova_ipxe import builder
from nova_ipxe import conf as ipxe_conf
from nova_ipxe import exception
from nova_ipxe import iso
from nova_ipxe import menuurl
from nova_ipxe.virt import errors
from nova_ipxe.virt import instance as ipxe_instance
from nova_ipxe.virt import release

LOG = logging.getLogger(__name__)
CONF = ipxe_conf.CONF

# The per-instance ISO, in the instance directory (removed with it).
ISO_NAME = 'ipxe.iso'
# During a rescue; unrescue deletes "*.rescue" in the instance directory.
RESCUE_ISO_NAME = 'ipxe.iso.rescue'
# Where the CD's device name and path travel in our copy of disk_info.
CD_KEY = 'ipxe.cd'
# Server metadata that takes a server out of the menu for good.
BOOT_KEY = 'ipxe_boot'
# Fetch failures after which the ISO built before is kept (_keep_built).
GONE = (nova_exception.ImageNotFound, nova_exception.ImageNotAuthorized,
        nova_exception.GlanceConnectionFailed)
# Where a failed build fails the operation ([ipxe] on_build_failure):
# the tenant can fix the cause and retry.  Anywhere else (reboots, moves)
# the server keeps what it had (_keep_built).
FAIL_TASK_STATES = (task_states.SPAWNING, task_states.REBUILD_SPAWNING,
                    task_states.RESCUING)
# Nova 34 writes <loader secure> beside firmware autoselection (<os
# firmware='efi'>), which libvirt 9.0 (Debian bookworm) refuses; libvirt's
# firmware selection rework (9.2) is expected to take it (only 9.0 was
# checked): see _loader_secure_for_libvirt.
LOADER_SECURE_WITH_AUTOSELECTION = (9, 2, 0)
# Image backends whose root disk is a file in the instance directory.
SUPPORTED_IMAGES_TYPES = ('default', 'qcow2', 'flat', 'raw')


def _props(image_meta):
    """The iPXE flag of an ImageMeta as the core's rule reads it."""
    if not image_meta.obj_attr_is_set('disk_format'):
        return None, {}
    value = image_meta.properties.get('hw_ipxe_boot')
    return image_meta.disk_format, {'hw_ipxe_boot': value}


def image_meta_is_ipxe(image_meta):
    disk_format, props = _props(image_meta)
    return builder.is_ipxe_image(disk_format, props)


def left_menu(instance):
    """The tenant set server metadata ``ipxe_boot=false``."""
    value = (instance.metadata or {}).get(BOOT_KEY)
    return value is not None and not strutils.bool_from_string(
        value, default=True)


class LibvirtDriver(libvirt_driver.LibvirtDriver):
    """Nova's libvirt driver with iPXE ISO boot."""

    def init_host(self, host):
        # Before Nova's own checks: a half-working driver on a Nova it
        # was not tested with is worse than one that does not start.
        version = release.nova_version()
        tested, message = release.check(version,
                                        CONF.ipxe.allow_untested_nova)
        (LOG.info if tested else LOG.warning)('nova-ipxe: %s', message)
        return super().init_host(host)

    # -- which instances are ours ----------------------------------------

    def _ipxe_layout(self, instance, image_meta=None, block_device_info=None,
                     check=False):
        """Blank root ``disk`` + CD layout (flagged ISO, not from volume).

        With ``check``, refuse image backends the layout cannot work on.
        """
        if image_meta is None or not image_meta.obj_attr_is_set(
                'disk_format'):
            # Evacuate passes an empty ImageMeta.
            image_meta = instance.image_meta
        if not image_meta_is_ipxe(image_meta):
            return False
        if block_device_info and self._is_booted_from_volume(
                block_device_info):
            return False
        if check and CONF.libvirt.images_type not in SUPPORTED_IMAGES_TYPES:
            raise errors.IpxeBootFailed(
                image_id=instance.image_ref,
                reason='iPXE ISO boot needs a file-based image backend on '
                       'the compute host (qcow2 or flat), not %s'
                       % CONF.libvirt.images_type)
        return True

    @staticmethod
    def _base_path(image_id):
        return os.path.join(CONF.instances_path,
                            CONF.image_cache.subdirectory_name,
                            imagecache.get_cache_fname(image_id))

    # -- the base ISO and the blank root ---------------------------------

    def _fetch_base(self, context, instance, image_id,
                    fallback_from_host=None):
        """``_base/<sha1(image_id)>`` through Nova's own image cache.

        Nova's fetch, lock, format safety check and fallback_from_host;
        the file is never modified.
        """
        base = _BaseOnly(self._base_path(image_id))
        self._try_fetch_image_cache(base, libvirt_utils.fetch_image, context,
                                    os.path.basename(base.path), image_id,
                                    instance, None, fallback_from_host)
        return base.path

    def _create_and_inject_local_root(self, context, instance, disk_mapping,
                                      booted_from_volume, suffix, disk_images,
                                      injection_info, fallback_from_host):
        image_id = disk_images['image_id']
        if suffix == '.rescue' and self._rescue_image_is_ipxe(context,
                                                              image_id):
            # The rescue CD is built in _get_guest_xml; no disk.rescue.
            self._fetch_base(context, instance, image_id, fallback_from_host)
            return False
        # Unshelve spawns from the snapshot, with instance.image_ref set
        # to it (manager._unshelve_instance): stock path.
        if (suffix or booted_from_volume or image_id != instance.image_ref
                or instance.vm_state == vm_states.SHELVED_OFFLOADED
                or not self._ipxe_layout(instance, check=True)):
            return super()._create_and_inject_local_root(
                context, instance, disk_mapping, booted_from_volume, suffix,
                disk_images, injection_info, fallback_from_host)
        self._fetch_base(context, instance, image_id, fallback_from_host)
        backend = self.image_backend.by_name(
            instance, 'disk', disk_info_mapping=disk_mapping['disk'])
        created = not backend.exists()
        if instance.task_state == task_states.RESIZE_FINISH:
            try:
                backend.create_snap(libvirt_utils.RESIZE_SNAPSHOT_NAME)
            except NotImplementedError:
                pass
        size = instance.flavor.root_gb * units.Gi
        if created:
            fmt = ('qcow2' if isinstance(backend, imagebackend.Qcow2)
                   else 'raw')
            with fileutils.remove_path_on_error(backend.path):
                # A root_gb of 0 still needs a disk to install onto.
                libvirt_utils.create_image(backend.path, fmt,
                                           size or units.Gi)
            if hasattr(backend, 'correct_format'):
                backend.correct_format()  # Flat: record it in disk.info
            LOG.info('nova-ipxe: created the blank root disk (%d GiB)',
                     instance.flavor.root_gb or 1, instance=instance)
        elif size and size > backend.get_disk_size(backend.path):
            backend.resize_image(size)
        return created

    def _needs_rebase_original_qcow2_image(self, instance, backend):
        # Unshelving an iPXE server: its OS disk must not be rebased onto
        # the ISO it was installed from.
        if image_meta_is_ipxe(instance.image_meta):
            return False
        return super()._needs_rebase_original_qcow2_image(instance, backend)

    # -- device names ----------------------------------------------------

    @staticmethod
    def _root_disk_dev(instance, image_meta):
        disk_bus = blockinfo.get_disk_bus_for_device_type(
            instance, CONF.libvirt.virt_type, image_meta, 'disk')
        return disk_bus, blockinfo.find_disk_dev_for_disk_bus({}, disk_bus)

    @classmethod
    def _take_root_slot(cls, instance, image_meta, mapping):
        """Give Nova's CD-root slot to the blank root disk, in ``mapping``.

        Nova maps the ISO root as a CD (hda, or sda on q35).  The blank
        root takes the first name of the disk bus; the CD keeps Nova's
        slot unless both buses share a prefix (a sata or scsi root on
        q35: sda), then it takes the next free name.  Returns the CD's
        slot.
        """
        cd_slot = dict(mapping['disk'])
        bus, root_dev = cls._root_disk_dev(instance, image_meta)
        mapping['disk'] = {'bus': bus, 'dev': root_dev, 'type': 'disk'}
        mapping['root'] = dict(mapping['disk'])
        if cd_slot['dev'] == root_dev:
            cd_slot['dev'] = blockinfo.find_disk_dev_for_disk_bus(
                {k: v for k, v in mapping.items() if isinstance(v, dict)},
                cd_slot['bus'])
        return cd_slot

    def default_device_names_for_instance(self, instance, root_device_name,
                                          *block_device_lists):
        super().default_device_names_for_instance(
            instance, root_device_name, *block_device_lists)
        if not self._ipxe_layout(instance):
            return
        # Nova named the root as the CD (hda/sda) and gave the first disk
        # name (vda) to an ephemeral, swap or volume: move those up one,
        # in order, so the blank root keeps vda.
        bus, root_dev = self._root_disk_dev(instance, instance.image_meta)
        prefix = blockinfo.get_dev_prefix_for_disk_bus(bus)
        bdms = [bdm for lst in block_device_lists for bdm in lst
                if bdm.device_name and bdm.boot_index != 0]
        names = {block_device.strip_dev(b.device_name): b
                 for b in bdms}
        if root_dev not in names:
            return
        mine = sorted((n for n in names if n.startswith(prefix)),
                      key=lambda n: (len(n), n))
        taken = {n: {'dev': n} for n in names if n not in mine}
        taken['ipxe.root'] = {'dev': root_dev}
        for name in mine:
            new = blockinfo.find_disk_dev_for_disk_bus(taken, bus)
            taken[name] = {'dev': new}
            bdm = names[name]
            bdm.device_name = '/dev/' + new
            bdm.save()

    def get_device_name_for_instance(self, instance, bdms, block_device_obj):
        if not self._ipxe_layout(instance):
            return super().get_device_name_for_instance(
                instance, bdms, block_device_obj)
        # Stock, with the root's disk name reserved.
        block_device_info = libvirt_driver.driver.get_block_device_info(
            instance, bdms)
        mapping = blockinfo.get_disk_info(
            CONF.libvirt.virt_type, instance, instance.image_meta,
            block_device_info=block_device_info)['mapping']
        if mapping.get('disk', {}).get('type') == 'cdrom':
            # Reserve the root's name and the CD's (_take_root_slot).
            mapping[CD_KEY] = self._take_root_slot(
                instance, instance.image_meta, mapping)
        else:
            mapping['ipxe.root'] = {
                'dev': self._root_disk_dev(instance, instance.image_meta)[1]}
        block_device_obj.device_name = None
        info = blockinfo.get_info_from_bdm(
            instance, CONF.libvirt.virt_type, instance.image_meta,
            block_device_obj, mapping=mapping)
        return block_device.prepend_dev(info['dev'])

    # -- the per-instance ISO --------------------------------------------

    def _rescue_image(self, context, image_id):
        try:
            return self._image_api.get(context, image_id)
        except nova_exception.ImageNotFound:
            return None

    def _rescue_image_is_ipxe(self, context, image_id):
        image = self._rescue_image(context, image_id)
        return bool(image) and builder.is_ipxe_image(
            image.get('disk_format'), image.get('properties'))

    def _build(self, context, instance, network_info, image_id, output,
               image_properties, firmware_uefi=False, secure_boot=False):
        """Build ``output`` from the image's ``_base`` copy, or fail.

        Returns ``output``, or None when the image is gone and no ISO was
        built before (:meth:`_keep_built`).

        ``image_properties`` are the booted image's (a rescue image's);
        None reads the instance's own from its system_metadata.
        """
        base_path = self._base_path(image_id)
        if not os.path.exists(base_path):
            # e.g. a new host after a migration, or an aged cache.
            try:
                self._fetch_base(context, instance, image_id)
            except GONE as e:
                return self._keep_built(
                    instance, output, 'image %s cannot be fetched (%s) and '
                    'is not in the image cache' % (image_id, e))
        try:
            st = os.stat(base_path)
            base = builder.PARSED_BASES.get(
                ('nova', image_id, st.st_ino, st.st_size), base_path, CONF,
                name='image %s' % image_id)
            if secure_boot and not base.efi_loader_signed():
                raise exception.UnsupportedIso(
                    source='image %s' % image_id,
                    reason='os_secure_boot is required and its UEFI iPXE '
                           'loader is not signed')
            spec = ipxe_instance.spec(instance, network_info,
                                      CONF.ipxe.dhcp_subnets,
                                      image_properties)
            # The core renders, checks the ISO's iPXE can fetch and run
            # that menu (HTTPS, IPv6, ...), builds and logs.
            builder.build_iso(base, spec, output, CONF,
                              uefi='require' if firmware_uefi else None)
        except exception.NovaIpxeError as e:
            if not builder.stock_on_failure(e, CONF):
                raise
            # Boot the unmodified ISO: a copy, so _base stays untouched.
            tmp = output + '.part'
            with fileutils.remove_path_on_error(tmp):
                libvirt_utils.copy_image(base_path, tmp)
                os.replace(tmp, output)
        return output

    def _keep_built(self, instance, output, why):
        """The ISO cannot be rebuilt: the one built before, or None.

        A server that exists must not be made unbootable by a rebuild of
        its ISO on a reboot or a move: Nova puts a server whose reboot
        failed in ERROR, where its tenant can no longer change the server
        metadata that could fix it (compute/api.py
        update_instance_metadata), and images get deleted (golden image
        rotation) while servers booted from them live on.  It keeps the
        ISO built before (only network changes since are missing), or,
        with none (a new host), boots its own disk without the CD.
        """
        if iso.is_iso_file(output):
            LOG.warning('nova-ipxe: %s: keeping the ISO built before, %s; '
                        'network changes since then are not in it', why,
                        output, instance=instance)
            return output
        # Nothing there, or what Nova made of a file it had no source for
        # (zeros, pre_live_migration; left for the incoming guest, whose
        # firmware then boots its disk): no CD from the next boot on.
        LOG.warning('nova-ipxe: %s, and no ISO was built before on this '
                    'host: booting the server from its disk, without the '
                    'iPXE CD', why, instance=instance)
        return None

    @staticmethod
    def _firmware(image_meta):
        props = image_meta.properties
        uefi = props.get('hw_firmware_type') == 'uefi'
        secure = uefi and props.get('os_secure_boot') == 'required'
        return uefi, secure

    def _remove(self, path, instance):
        try:
            os.unlink(path)
            LOG.info('nova-ipxe: removed %s', path, instance=instance)
        except FileNotFoundError:
            pass

    def _get_guest_xml(self, context, instance, network_info, disk_info,
                       image_meta, rescue=None, block_device_info=None,
                       **kwargs):
        # The rest differs between releases (old_guest since Nova 33,
        # release.OVERRIDES) and Nova passes it by name: passed on as
        # Nova's caller gave it.
        disk_info = self._ipxe_disk_info(context, instance, network_info,
                                         disk_info, image_meta, rescue,
                                         block_device_info)
        xml = super()._get_guest_xml(
            context, instance, network_info, disk_info, image_meta,
            rescue=rescue, block_device_info=block_device_info, **kwargs)
        if (self._ipxe_layout(instance, image_meta, block_device_info)
                and not self._host.has_min_version(
                    LOADER_SECURE_WITH_AUTOSELECTION)):
            xml = self._loader_secure_for_libvirt(xml)
        return xml

    @staticmethod
    def _loader_secure_for_libvirt(xml):
        """Drop ``<loader secure>`` where ``<os firmware>`` autoselects.

        libvirt before 9.2 refuses the attribute with firmware
        autoselection ("loader attribute 'secure' cannot be specified when
        firmware autoselection is enabled"), so a UEFI guest as Nova 34
        writes it never starts on Debian bookworm's libvirt 9.0.  The
        secure-boot ``<firmware><feature>`` Nova writes beside it says the
        same to the autoselection.  Only for iPXE servers: others are the
        stock driver's.
        """
        root = etree.fromstring(xml)
        os_el = root.find('os')
        loader = os_el.find('loader') if os_el is not None else None
        if (loader is None or os_el.get('firmware') is None
                or loader.get('secure') is None):
            return xml
        del loader.attrib['secure']
        if not loader.attrib and not (loader.text or '').strip():
            os_el.remove(loader)
        return etree.tostring(root, encoding='unicode', pretty_print=True)

    def _ipxe_disk_info(self, context, instance, network_info, disk_info,
                        image_meta, rescue, block_device_info):
        """Build the ISO(s) and return the disk_info to render, a copy."""
        inst_dir = libvirt_utils.get_instance_path(instance)
        layout = self._ipxe_layout(instance, image_meta, block_device_info,
                                   check=True)
        rescue_iso = None
        if rescue:
            rescue_id = rescue.get('image_id')
            image = rescue_id and self._rescue_image(context, rescue_id)
            if image and builder.is_ipxe_image(image.get('disk_format'),
                                               image.get('properties')):
                uefi, secure = self._firmware(image_meta)
                rescue_iso = self._try_build(
                    context, instance, network_info, rescue_id,
                    os.path.join(inst_dir, RESCUE_ISO_NAME),
                    {menuurl.OVERRIDE_KEY: image['properties'].get(
                        menuurl.OVERRIDE_KEY)}, uefi, secure)
        if not layout and not rescue_iso:
            return self._no_cd_root(instance, disk_info, image_meta, rescue)

        disk_info = copy.deepcopy(disk_info)
        mapping = disk_info['mapping']
        legacy_rescue = bool(rescue) and (
            mapping.get('disk.rescue') == mapping.get('root'))
        if layout and not legacy_rescue and 'disk' in mapping:
            # Nova mapped the root as the CD (hda, or sda on q35): the
            # blank disk takes the first disk-bus name, our CD that slot.
            cd_slot = self._take_root_slot(instance, image_meta, mapping)
            info = mapping.get('disk.rescue')
            if rescue and info and info['dev'] == mapping['disk']['dev']:
                # Stable rescue gave the rescue disk the first disk name,
                # free in Nova's CD-root mapping (blockinfo.
                # get_disk_mapping): move it to the next free one, or
                # the two would clash and Nova would take the rescue disk
                # for the root (driver._get_guest_storage_config).
                mapping['disk.rescue'] = dict(
                    info, dev=blockinfo.find_disk_dev_for_disk_bus(
                        {k: v for k, v in mapping.items()
                         if k != 'disk.rescue' and isinstance(v, dict)},
                        info['bus']))
            if not rescue:
                iso_path = os.path.join(inst_dir, ISO_NAME)
                if left_menu(instance):
                    self._remove(iso_path, instance)
                else:
                    uefi, secure = self._firmware(image_meta)
                    if self._try_build(context, instance, network_info,
                                       instance.image_ref, iso_path, None,
                                       uefi, secure):
                        mapping[CD_KEY] = dict(cd_slot, type='cdrom',
                                               path=iso_path, boot_order='1')
                        mapping['disk']['boot_order'] = '2'
        if rescue_iso:
            info = mapping['disk.rescue']
            if legacy_rescue or info['type'] != 'cdrom':
                # Legacy rescue (or hw_rescue_device=disk) puts it on the
                # disk bus: make it a CD on the CD bus instead.
                info = blockinfo.get_next_disk_info(
                    {k: v for k, v in mapping.items()
                     if k not in ('root', 'disk.rescue')},
                    disk_info['cdrom_bus'], 'cdrom')
            info = dict(info, type='cdrom', path=rescue_iso,
                        boot_order='1', ipxe=True)
            mapping['disk.rescue'] = info
            if legacy_rescue:
                mapping['root'] = info  # keeps Nova's legacy branch
            # In front of the server's own disk.
            mapping['disk']['boot_order'] = '2'
        # Per-device boot order only: no boot_index may reach
        # get_boot_order(), or Nova would add <os><boot> too.
        for info in mapping.values():
            if isinstance(info, dict):
                info.pop('boot_index', None)
        return disk_info

    def _no_cd_root(self, instance, disk_info, image_meta, rescue):
        """A root left a CD by its BDM, on an image that is no ISO.

        Nova keeps the image BDM's device_type once it is ``cdrom``
        (blockinfo.get_root_info), so after a rebuild from an ISO to a
        disk image, or an unshelve from the snapshot of an ISO-booted
        server, the OS disk would be presented as a CD.  Present it as
        the disk it is, on the first disk name (which ours reserved).
        """
        mapping = disk_info['mapping']
        disk = mapping.get('disk')
        if (rescue or not disk or disk.get('type') != 'cdrom'
                or not image_meta.obj_attr_is_set('disk_format')
                or image_meta.disk_format == 'iso'):
            return disk_info
        disk_info = copy.deepcopy(disk_info)
        mapping = disk_info['mapping']
        bus, root_dev = self._root_disk_dev(instance, image_meta)
        root = {'bus': bus, 'dev': root_dev, 'type': 'disk',
                'boot_index': '1'}
        mapping['disk'], mapping['root'] = root, dict(root)
        return disk_info

    def _try_build(self, context, instance, network_info, image_id, output,
                   image_properties, uefi, secure):
        try:
            return self._build(context, instance, network_info, image_id,
                               output, image_properties, uefi, secure)
        except exception.NovaIpxeError as e:
            if instance.task_state in FAIL_TASK_STATES:
                self._remove(output, instance)
                errors.reraise(e, instance, image_id)
            LOG.error('nova-ipxe: %s', e, instance=instance)
            return self._keep_built(instance, output,
                                    'the ISO could not be rebuilt')

    def _get_guest_storage_config(self, context, instance, image_meta,
                                  disk_info, rescue, block_device_info,
                                  flavor, os_type):
        devices = super()._get_guest_storage_config(
            context, instance, image_meta, disk_info, rescue,
            block_device_info, flavor, os_type)
        mapping = disk_info['mapping']
        root = mapping.get('disk') or {}
        rescue_cd = mapping.get('disk.rescue') or {}
        for i, dev in enumerate(devices):
            if not isinstance(dev, vconfig.LibvirtConfigGuestDisk):
                continue
            if rescue_cd.get('ipxe') and dev.target_dev == rescue_cd['dev']:
                # Nova rendered disk.rescue from its backend: our ISO.
                devices[i] = self._cdrom_config(rescue_cd)
            elif (root.get('boot_order') and dev.target_dev == root['dev']
                    and dev.source_device == 'disk'):
                dev.boot_order = root['boot_order']
        if mapping.get(CD_KEY):
            devices.append(self._cdrom_config(mapping[CD_KEY]))
        return devices

    def _cdrom_config(self, info):
        cd = vconfig.LibvirtConfigGuestDisk()
        cd.source_type = 'file'
        cd.source_device = 'cdrom'
        cd.source_path = info['path']
        cd.target_bus = info['bus']
        cd.target_dev = info['dev']
        cd.driver_format = 'raw'
        if CONF.libvirt.virt_type in ('qemu', 'kvm'):
            cd.driver_name = 'qemu'
        cd.readonly = True
        cd.boot_order = info['boot_order']
        self._set_cache_mode(cd)
        return cd

    # -- moves -------------------------------------------------------------

    def pre_live_migration(self, context, instance, block_device_info,
                           network_info, disk_info, migrate_data):
        # Nova creates the instance directory here (and refuses an
        # existing one) and creates missing unbacked files, our ISO among
        # them, as zeros (_create_images_and_backing): build it for this
        # host afterwards, before the guest starts here.
        result = super().pre_live_migration(
            context, instance, block_device_info, network_info, disk_info,
            migrate_data)
        if self._ipxe_layout(instance) and not left_menu(instance):
            inst_dir = libvirt_utils.get_instance_path_at_destination(
                instance, migrate_data)
            if not os.path.exists(self._base_path(instance.image_ref)):
                # Nova fetches its own disks with the source as fallback
                # (fallback_from_host=instance.host in its own
                # pre_live_migration): the ISO too, or an image deleted
                # from Glance would fail the migration here.
                self._fetch_base(context, instance, instance.image_ref,
                                 fallback_from_host=instance.host)
            uefi, secure = self._firmware(instance.image_meta)
            self._try_build(context, instance, network_info,
                            instance.image_ref,
                            os.path.join(inst_dir, ISO_NAME), None,
                            uefi, secure)
        return result


class _BaseOnly(imagebackend.Flat):
    """An image whose ``cache()`` only fills ``_base`` (no instance file).

    Lets ``_try_fetch_image_cache`` do Nova's fetch under Nova's lock and
    run Nova's format safety check, without creating an overlay or copy
    of the ISO in the instance directory.
    """

    def __init__(self, base_path):
        self.disk_name = os.path.basename(base_path)
        imagebackend.Image.__init__(self, base_path, 'file', 'raw',
                                    is_block_dev=False)
        self.preallocate = False

    def exists(self):
        return os.path.exists(self.path)

    def correct_format(self):
        pass

    def create_image(self, prepare_template, base, size, safe=False, *args,
                     **kwargs):
        if not os.path.exists(base):
            prepare_template(target=base, *args, **kwargs)
        if not CONF.workarounds.disable_deep_image_inspection:
            inspector = imagebackend.images.get_image_format(base)
            try:
                inspector.safety_check()
            except Exception as e:
                LOG.warning('Base image %s failed safety check: %s', base, e)
                raise nova_exception.InvalidDiskInfo(
                    reason='Base image failed safety check')
        imagebackend._update_utime_ignore_eacces(base)

    def flatten(self):
        raise NotImplementedError()
