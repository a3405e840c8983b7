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

"""``compute_driver = ipxe.XenAPIDriver``: Nova 21's XenAPI driver with
nova-ipxe's boot ISO.

Nova 21 (Ussuri) is the last Nova with the XenAPI driver.  For an iPXE
image (``disk_format=iso`` and ``hw_ipxe_boot``, legacy ``ipxe_boot``)
this driver does what the 2013 code did, at the same place (between
creating the VM record and booting it), without dom0's help:

* ``_get_vdis_for_instance``: Nova's own copy of the ISO into a VDI is
  skipped (the per-instance ISO replaces it);
* ``_attach_disks`` (it has ``network_info``): the ISO comes from the
  base-ISO cache (:mod:`nova_ipxe.cache`, fetched with Nova's image API
  and the request's context, :mod:`nova_ipxe.virt.imageapi`), the
  instance's script is rendered from ``network_info``
  (:mod:`nova_ipxe.virt.netinfo`, as the libvirt driver does), the ISO is
  built into a file beside the cache and streamed into a VDI through
  XAPI's ``/import_raw_vdi`` (:mod:`nova_ipxe.virt.xenapi`); then Nova's
  stock code attaches it as the CD (userdevice 1, boot order ``dc``)
  beside the blank root disk of the flavor's size;
* ``[ipxe] on_build_failure = stock`` boots Nova's own copy of the
  unmodified ISO instead; ``fail`` fails the spawn, leaving no VDI, with
  the error Nova sees chosen by :mod:`nova_ipxe.virt.errors` (as on
  libvirt);
* rescue with an iPXE image puts the rescue VM's CD on userdevice 0
  (``_attach_rescue_cd``): Nova's rescue puts the server's disk on 1,
  where an ISO-booted VM has its CD;
* ``_destroy`` also removes nova-ipxe VDIs of the instance that no VM
  uses any more (Nova destroys the VDIs of the VM's VBDs; a spawn that
  failed between upload and attach would leave one behind).

Nova's stock ``handle_ipxe_iso`` (the 2013 plugin chain) is never reached
for these instances: it only runs when Nova fetched the ISO itself.

The driver also repairs os-xenapi 0.3.4 for Python 3
(doc/source/contributor/nova.rst): its
``call_plugin_serialized`` sends a Python 3 pickle as bytes and
``pickle.loads()`` dom0's answer, a str, which raises TypeError, and
``XenAPISession.__init__`` makes such a call (the plugin version check),
so stock Nova 21's driver cannot start against XAPI on Python 3.
:class:`Py3PluginSession` sends protocol 0 text, which dom0's Python 2
plugins read, and reads their protocol 0 text answers.
"""

import contextlib
import os
import pickle
import tempfile

from nova.i18n import _
from nova.image import glance
from nova.objects import fields
from nova.virt import configdrive
from nova.virt import driver as virt_driver
from nova.virt.xenapi import driver
from nova.virt.xenapi import host
from nova.virt.xenapi import pool
from nova.virt.xenapi import vm_utils
from nova.virt.xenapi import vmops
from nova.virt.xenapi import volumeops
from os_xenapi.client import session as xenapi_session
from oslo_log import log as logging

from nova_ipxe import builder
from nova_ipxe import cache
from nova_ipxe import conf as ipxe_conf
from nova_ipxe import exception
from nova_ipxe.virt import errors
from nova_ipxe.virt import imageapi
from nova_ipxe.virt import instance as ipxe_instance
from nova_ipxe.virt import xenapi

LOG = logging.getLogger(__name__)
CONF = ipxe_conf.CONF
IMAGE_API = glance.API()


def wants_ipxe(image_meta, disk_image_type):
    # Nova maps the legacy property ipxe_boot to hw_ipxe_boot.
    flag = image_meta.properties.get('hw_ipxe_boot', False)
    return (disk_image_type == vm_utils.ImageType.DISK_ISO
            and builder.is_ipxe_image('iso', {'hw_ipxe_boot': flag}))


class IpxeVMOps(vmops.VMOps):

    def __init__(self, session, virtapi):
        super().__init__(session, virtapi)
        self._cache = None

    def _get_vdis_for_instance(self, context, instance, name_label,
                               image_meta, image_type, block_device_info):
        vdis = self._connect_cinder_volumes(instance, block_device_info)
        if 'root' in vdis or not wants_ipxe(image_meta, image_type):
            return super()._get_vdis_for_instance(
                context, instance, name_label, image_meta, image_type,
                block_device_info)
        for vdi in vdis.values():
            vdi['ref'] = self._session.call_xenapi('VDI.get_by_uuid',
                                                   vdi['uuid'])
        return vdis  # the ISO comes in _attach_disks, with network_info

    def _create_vm_record(self, context, instance, name_label,
                          disk_image_type, kernel_file, ramdisk_file,
                          image_meta, rescue=False):
        if wants_ipxe(image_meta, disk_image_type):
            # iPXE needs firmware: only an HVM guest has one (Nova would
            # pick PV for os_type=linux).
            if instance.vm_mode not in (None, fields.VMMode.HVM):
                LOG.warning('Booting the iPXE image as HVM, not %s',
                            instance.vm_mode, instance=instance)
            instance.vm_mode = fields.VMMode.HVM
        return super()._create_vm_record(
            context, instance, name_label, disk_image_type, kernel_file,
            ramdisk_file, image_meta, rescue=rescue)

    def _attach_disks(self, context, instance, image_meta, vm_ref,
                      name_label, vdis, disk_image_type, network_info,
                      rescue=False, admin_password=None, files=None):
        ipxe = wants_ipxe(image_meta, disk_image_type)
        if 'iso' not in vdis and ipxe:
            vdis['iso'] = self._ipxe_iso_vdi(context, instance, image_meta,
                                             name_label, disk_image_type,
                                             network_info)
        if rescue and ipxe:
            return self._attach_rescue_cd(context, instance, vm_ref, vdis,
                                          network_info, admin_password,
                                          files)
        return super()._attach_disks(
            context, instance, image_meta, vm_ref, name_label, vdis,
            disk_image_type, network_info, rescue=rescue,
            admin_password=admin_password, files=files)

    def _attach_rescue_cd(self, context, instance, vm_ref, vdis,
                          network_info, admin_password, files):
        """The rescue VM's devices: the iPXE CD in the root's place.

        Nova 21 gives an ISO-booted VM its CD on userdevice 1
        (``DEVICE_CD``) and a blank root on 0, and then attaches the
        server's own root to the rescue VM on userdevice 1 as well
        (``DEVICE_RESCUE``, ``_attach_orig_disks``): XAPI refuses the
        second device, which is why stock Nova cannot rescue from an ISO.
        The CD takes userdevice 0 instead, where the rescue VM's blank
        root would have gone (it has the server's disk to work on).  Swap
        and ephemeral disks come with the server's, as in stock rescue;
        a config drive stays where stock puts it.
        """
        vm_utils.attach_cd(self._session, vm_ref, vdis.pop('iso')['ref'],
                           vmops.DEVICE_ROOT)
        if configdrive.required_by(instance):
            vm_utils.generate_configdrive(
                self._session, context, instance, vm_ref,
                vmops.DEVICE_CONFIGDRIVE, network_info,
                admin_password=admin_password, files=files)

    def _ipxe_iso_vdi(self, context, instance, image_meta, name_label,
                      disk_image_type, network_info):
        try:
            with self._built_iso(context, instance, image_meta,
                                 network_info) as iso:
                xapi = xenapi.Xapi.from_conf(self._session, CONF)
                ref = xenapi.import_iso(xapi, iso, instance.uuid,
                                        sr_name=CONF.ipxe.xenapi_sr)
        except exception.NovaIpxeError as e:
            try:
                builder.stock_on_failure(e)  # re-raises unless "stock"
            except exception.NovaIpxeError:
                errors.reraise(e, instance, image_meta.id)
            stock = vm_utils.create_image(
                context, self._session, instance, name_label, image_meta.id,
                disk_image_type, self.image_handler)['iso']
            stock['ref'] = self._session.call_xenapi('VDI.get_by_uuid',
                                                     stock['uuid'])
            return stock
        return {'uuid': self._session.call_xenapi('VDI.get_uuid', ref),
                'ref': ref, 'file': None}

    def _base_cache(self):
        # Made on first use, so that a cache_dir this host cannot write
        # fails the spawn that needs it, with the reason (CacheError).
        if self._cache is None:
            self._cache = cache.BaseIsoCache.from_conf(CONF)
        return self._cache

    @contextlib.contextmanager
    def _built_iso(self, context, instance, image_meta, network_info):
        """The per-instance ISO, in a temporary file open for reading.

        The base ISO comes from the base-ISO cache, as for the nova-ipxe
        command: streamed to disk and verified against Glance's hash
        once per image and hash, shared by every spawn and rescue on the
        host, bounded by ``[ipxe] cache_max_size``.  The parse is shared
        the same way (keyed by the image and its hash), and the built ISO
        is streamed from disk into the VDI.
        """
        opts = CONF.ipxe
        client = imageapi.NovaImageClient(IMAGE_API, context)
        spec = ipxe_instance.spec(instance, network_info, opts.dhcp_subnets)
        base_cache = self._base_cache()
        with base_cache.get(client, image_meta.id,
                            opts.max_iso_size) as entry:
            base = builder.PARSED_BASES.get(
                entry.info.cache_key, entry.path, CONF,
                name='Glance image %s' % entry.info.id)
            # Beside the cache, on the disk sized for ISOs (not /tmp,
            # which may be memory).
            with tempfile.TemporaryDirectory(
                    prefix='.build-', dir=base_cache.directory) as tmp:
                output = os.path.join(tmp, 'ipxe.iso')
                builder.build_iso(base, spec, output, CONF)
                with open(output, 'rb') as iso:
                    yield iso

    def _destroy(self, instance, vm_ref, network_info=None,
                 destroy_disks=True, block_device_info=None):
        super()._destroy(instance, vm_ref, network_info=network_info,
                         destroy_disks=destroy_disks,
                         block_device_info=block_device_info)
        if vm_ref is not None and destroy_disks:
            xapi = xenapi.Xapi.from_conf(self._session, CONF)
            removed = xenapi.destroy_instance_isos(
                xapi, instance.uuid, sr_name=CONF.ipxe.xenapi_sr)
            if removed:
                LOG.debug('Destroyed %d nova-ipxe VDI(s)', removed,
                          instance=instance)


class Py3PluginSession(xenapi_session.XenAPISession):
    """os-xenapi's session with plugin pickles that work on Python 3."""

    def call_plugin_serialized(self, plugin, fn, *args, **kwargs):
        # Protocol 0 is ASCII text: an XML-RPC string, as xapi's plugin
        # arguments must be, and readable by dom0's Python 2 pickle.
        params = pickle.dumps(dict(args=args, kwargs=kwargs), protocol=0)
        rv = self.call_plugin(plugin, fn, {'params': params.decode(
            'latin-1')})
        if isinstance(rv, str):
            rv = rv.encode('latin-1')  # Python 2 answers in text
        return pickle.loads(rv, encoding='latin-1')


class XenAPIDriver(driver.XenAPIDriver):
    """Nova 21's XenAPIDriver with the per-instance iPXE ISO."""

    def __init__(self, virtapi, read_only=False):
        # Nova 21's XenAPIDriver.__init__, with Py3PluginSession and
        # IpxeVMOps in place of XenAPISession and VMOps.
        virt_driver.ComputeDriver.__init__(self, virtapi)
        url = driver.CONF.xenserver.connection_url
        username = driver.CONF.xenserver.connection_username
        password = driver.CONF.xenserver.connection_password
        if not url or password is None:
            raise Exception(_('Must specify connection_url, '
                              'connection_username (optionally), and '
                              'connection_password to use '
                              'compute_driver=ipxe.XenAPIDriver'))
        self._session = Py3PluginSession(url, username, password,
                                         originator='nova')
        self._volumeops = volumeops.VolumeOps(self._session)
        self._host_state = None
        self._host = host.Host(self._session, self.virtapi)
        self._vmops = IpxeVMOps(self._session, self.virtapi)
        self._initiator = None
        self._hypervisor_hostname = None
        self._pool = pool.ResourcePool(self._session, self.virtapi)

    def init_host(self, host):
        super().init_host(host)
        ipxe_conf.report_obsolete(CONF)
        try:
            answer = xenapi.plugin_version(xenapi.Xapi.from_conf(
                self._session, CONF), self._session.host_ref)
        except exception.XapiPluginError as e:
            # Only the 2013 inject flow needs the plugin; this driver
            # uploads the ISO itself.
            LOG.info('nova-ipxe dom0 plugin not usable (%s); not needed '
                     'by ipxe.XenAPIDriver', e)
        else:
            LOG.info('nova-ipxe dom0 plugin %s, tools %s',
                     answer['version'], answer.get('tools'))
