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

"""Put a per-instance ISO in front of a XenServer / XCP-ng VM over XenAPI.

The ISO is built on the compute host (:mod:`nova_ipxe.builder`); this
module only moves it: a VDI on the configured SR (default: the pool's
default SR), the bytes through XAPI's HTTP ``/import_raw_vdi`` handler
with a task, then a read-only, bootable CD VBD and ``d`` first in the HVM
boot order.  Nothing is mounted or run in dom0.

Every VDI and VBD made here carries ``other_config[nova_ipxe_instance]``
so that re-attach, detach and clean-up find exactly ours.  A failure
destroys what the failed operation created and raises a
:class:`nova_ipxe.exception.XapiError` naming the XAPI call and its error
code.

Works on the ``XenAPI`` client library (PyPI ``XenAPI.Session``, as the
``nova-ipxe`` tools and the tests use it) and on os-xenapi's
``XenAPISession`` (Nova 21's session); no Nova import.
"""

import json
import os
import time
import typing
import urllib.parse
import xmlrpc.client

from oslo_log import log as logging
import requests
import XenAPI

from nova_ipxe import exception

LOG = logging.getLogger(__name__)

OWNER_KEY = 'nova_ipxe_instance'
# Nova's vmops.DEVICE_CD and the 2013 layout: root disk 0, CD 1.
CD_USERDEVICE = '1'
NULL_REF = 'OpaqueRef:NULL'
PLUGIN = 'ipxe.py'
# The plugin API this compute side speaks (xenapi_plugins/ipxe.py).
PLUGIN_API_MAJOR = 2
SECTOR = 2048
TASK_POLL = (0.05, 0.5)  # first and longest wait between task polls


def _failure_details(error):
    details = getattr(error, 'details', None)
    if isinstance(details, (list, tuple)) and details:
        return [str(d) for d in details]
    return None


def _raise_xapi_error(error, cls, call, **kwargs):
    """Re-raise a XAPI failure or transport error as ``cls``.

    Anything else (a programming error) propagates unchanged.
    """
    details = _failure_details(error)
    if details is None and not isinstance(error, (OSError,
                                                  xmlrpc.client.Error)):
        raise error
    raise cls(call=call,
              code=details[0] if details else type(error).__name__,
              details=' '.join(details[1:]) if details else str(error),
              **kwargs) from error


# The ISO to upload: bytes, or a binary file at its start.
IsoData = typing.Union[bytes, bytearray, memoryview, typing.BinaryIO]


def connect(url: str, username: str, password: str,
            originator: str = 'nova-ipxe',
            ignore_ssl: bool = False) -> typing.Any:
    """A logged-in ``XenAPI.Session``; a clear error when that fails."""
    session = XenAPI.Session(url, ignore_ssl=ignore_ssl)
    try:
        session.xenapi.login_with_password(username, password, '1.0',
                                           originator)
    except Exception as e:
        _raise_xapi_error(e, exception.XapiLoginFailed,
                          'session.login_with_password', url=url)
    return session


class Xapi:
    """The XAPI calls this module makes, on either client.

    :param session: a logged-in ``XenAPI.Session`` or os-xenapi
        ``XenAPISession``.
    :param url: XAPI's base URL for the HTTP upload (required with a
        ``XenAPI.Session``; os-xenapi's session knows its own).
    """

    def __init__(self, session: typing.Any, url: typing.Optional[str] = None,
                 ca_file: typing.Optional[str] = None, insecure: bool = False,
                 timeout: float = 120) -> None:
        self.session = session
        # os-xenapi's session keeps its URL; a XenAPI.Session (an XML-RPC
        # proxy, whose every attribute is a remote method) does not.
        self.url = url or vars(session).get('url')
        if not self.url:
            raise ValueError('XAPI URL needed for the HTTP upload')
        self.verify = False if insecure else (ca_file or True)
        self.timeout = timeout
        # A XenAPI.Session answers every attribute with a remote method,
        # so look at the class, not the instance.
        self._os_xenapi = hasattr(type(session), 'call_xenapi')

    @classmethod
    def from_conf(cls, session: typing.Any, conf: typing.Any,
                  url: typing.Optional[str] = None) -> 'Xapi':
        opts = conf.ipxe
        return cls(session, url=url, ca_file=opts.xenapi_ca_file,
                   insecure=opts.xenapi_insecure,
                   timeout=opts.xenapi_upload_timeout)

    def call(self, method: str, *args: typing.Any) -> typing.Any:
        try:
            if self._os_xenapi:
                return self.session.call_xenapi(method, *args)
            return self.session.xenapi_request(method, args)
        except Exception as e:
            _raise_xapi_error(e, exception.XapiError, method)

    def session_id(self) -> str:
        if self._os_xenapi:
            return self.session.get_session_id()
        return self.session._session

    # -- the steps -----------------------------------------------------

    def find_sr(self, name: typing.Optional[str] = None) -> str:
        """The SR by UUID or name label; default: the pool's default."""
        if name:
            try:
                return self.call('SR.get_by_uuid', name)
            except exception.XapiError as e:
                if e.code != 'UUID_INVALID':
                    raise
            refs = self.call('SR.get_by_name_label', name)
            if len(refs) != 1:
                raise exception.XapiError(
                    call='SR.get_by_name_label', code='SR_NOT_FOUND',
                    details='%d SRs are named %r ([ipxe] xenapi_sr)'
                            % (len(refs), name))
            return refs[0]
        pool = self.call('pool.get_all')[0]
        sr = self.call('pool.get_default_SR', pool)
        if not sr or sr == NULL_REF:
            raise exception.XapiError(
                call='pool.get_default_SR', code='SR_NOT_FOUND',
                details='the pool has no default SR; set [ipxe] xenapi_sr')
        return sr

    def create_vdi(self, sr_ref: str, size: int, instance_uuid: str,
                   label: str) -> str:
        virtual_size = -(-size // SECTOR) * SECTOR
        return self.call('VDI.create', {
            'name_label': label,
            'name_description': 'iPXE boot ISO built by nova-ipxe',
            'SR': sr_ref,
            'virtual_size': str(virtual_size),
            'type': 'user',
            'sharable': False,
            'read_only': False,
            'xenstore_data': {},
            'other_config': {OWNER_KEY: instance_uuid},
            'sm_config': {},
            'tags': [],
        })

    def upload(self, vdi_ref: str, data: IsoData) -> None:
        """PUT ``data`` into the VDI through ``/import_raw_vdi``.

        :param data: bytes, or a binary file at its start (streamed from
            disk, never read into memory).
        """
        task = self.call('task.create', 'nova-ipxe ISO upload',
                         'import_raw_vdi for %s' % vdi_ref)
        try:
            query = urllib.parse.urlencode({
                'session_id': self.session_id(), 'task_id': task,
                'vdi': vdi_ref, 'format': 'raw'})
            url = '%s/import_raw_vdi?%s' % (self.url.rstrip('/'), query)
            try:
                resp = requests.put(
                    url, data=data if hasattr(data, 'read') else bytes(data),
                    verify=self.verify,
                    timeout=self.timeout,
                    headers={'Content-Type': 'application/octet-stream'})
            except requests.RequestException as e:
                # requests names the URL, whose query holds the session
                # ID (a credential): keep it out of the log.
                details = str(e).replace(query, 'session_id=***')
                raise exception.XapiUploadFailed(
                    vdi=vdi_ref, call='PUT /import_raw_vdi',
                    code=type(e).__name__,
                    details=details.replace(self.session_id(), '***'))
            if resp.status_code != 200:
                raise exception.XapiUploadFailed(
                    vdi=vdi_ref, call='PUT /import_raw_vdi',
                    code='HTTP %d' % resp.status_code,
                    details=resp.text[:200])
            self.wait_for_task(task, vdi_ref)
        finally:
            try:
                self.call('task.destroy', task)
            except exception.XapiError as e:
                LOG.warning('Could not destroy XAPI task %s: %s', task, e)

    def wait_for_task(self, task: str, vdi_ref: str) -> None:
        deadline = time.monotonic() + self.timeout
        delay = TASK_POLL[0]
        while True:
            status = self.call('task.get_status', task)
            if status == 'success':
                return
            if status in ('failure', 'cancelled'):
                info = self.call('task.get_error_info', task) or [status]
                raise exception.XapiUploadFailed(
                    vdi=vdi_ref, call='import_raw_vdi task',
                    code=info[0], details=' '.join(info[1:]))
            if time.monotonic() > deadline:
                raise exception.XapiUploadFailed(
                    vdi=vdi_ref, call='import_raw_vdi task',
                    code='TIMEOUT', details='still %s after %d s ([ipxe] '
                    'xenapi_upload_timeout)' % (status, self.timeout))
            time.sleep(delay)
            delay = min(delay * 2, TASK_POLL[1])

    def create_cd_vbd(self, vm_ref: str, vdi_ref: str, instance_uuid: str,
                      userdevice: str = CD_USERDEVICE) -> str:
        return self.call('VBD.create', {
            'VM': vm_ref,
            'VDI': vdi_ref,
            'userdevice': userdevice,
            'bootable': True,
            'mode': 'RO',
            'type': 'CD',
            'unpluggable': True,
            'empty': False,
            'other_config': {OWNER_KEY: instance_uuid},
            'qos_algorithm_type': '',
            'qos_algorithm_params': {},
        })

    def boot_cd_first(self, vm_ref: str) -> None:
        params = dict(self.call('VM.get_HVM_boot_params', vm_ref))
        order = params.get('order') or 'c'
        wanted = 'd' + order.replace('d', '')
        if order != wanted:
            params['order'] = wanted
            self.call('VM.set_HVM_boot_params', vm_ref, params)

    def is_ours(self, ref: str, cls: str) -> bool:
        other = self.call('%s.get_other_config' % cls, ref) or {}
        return OWNER_KEY in other

    def our_cds(self, vm_ref: str
                ) -> typing.List[typing.Tuple[str, typing.Optional[str]]]:
        """[(VBD ref, VDI ref or None)] of the CDs nova-ipxe attached."""
        found = []
        for vbd in self.call('VM.get_VBDs', vm_ref):
            rec = self.call('VBD.get_record', vbd)
            if OWNER_KEY in (rec.get('other_config') or {}):
                vdi = rec.get('VDI')
                found.append((vbd, None if vdi in (None, '', NULL_REF)
                              else vdi))
        return found

    def destroy_vbd(self, vbd_ref: str) -> None:
        if self.call('VBD.get_currently_attached', vbd_ref):
            self.call('VBD.unplug', vbd_ref)
        self.call('VBD.destroy', vbd_ref)


def _undo(xapi, created):
    """Destroy what a failed operation created, newest first."""
    for cls, ref in reversed(created):
        try:
            xapi.call('%s.destroy' % cls, ref)
        except exception.XapiError as e:
            LOG.error('Could not destroy %s %s after a failed attach: %s',
                      cls, ref, e)


def _size(data):
    """The length of bytes, or of a binary file from its start."""
    if hasattr(data, 'fileno'):
        return os.fstat(data.fileno()).st_size
    return len(data)


def import_iso(xapi: Xapi, data: IsoData, instance_uuid: str,
               sr_ref: typing.Optional[str] = None,
               sr_name: typing.Optional[str] = None) -> str:
    """Create a VDI holding ``data``; on failure nothing is left.

    :param data: the ISO: bytes, or a binary file at its start.
    :returns: the VDI's ref.
    """
    created = []
    size = _size(data)
    try:
        sr_ref = sr_ref or xapi.find_sr(sr_name)
        vdi = xapi.create_vdi(sr_ref, size, instance_uuid,
                              'nova-ipxe ISO %s' % instance_uuid)
        created.append(('VDI', vdi))
        xapi.upload(vdi, data)
    except BaseException:
        _undo(xapi, created)
        raise
    LOG.debug('Uploaded %d bytes into VDI %s for %s', size, vdi,
              instance_uuid)
    return vdi


def attach_iso(xapi: Xapi, vm_ref: str, data: IsoData, instance_uuid: str,
               sr_ref: typing.Optional[str] = None,
               sr_name: typing.Optional[str] = None,
               userdevice: str = CD_USERDEVICE) -> typing.Tuple[str, str]:
    """Attach ``data`` (an ISO) to the halted VM as its boot CD.

    A CD attached earlier by nova-ipxe is replaced once the new one has
    been uploaded; a device nova-ipxe did not create is left alone and
    refused.  On failure everything this call created is destroyed.

    :returns: (VBD ref, VDI ref)
    """
    start = time.monotonic()
    for vbd in xapi.call('VM.get_VBDs', vm_ref):
        rec = xapi.call('VBD.get_record', vbd)
        if (rec.get('userdevice') == userdevice
                and OWNER_KEY not in (rec.get('other_config') or {})):
            raise exception.XapiDeviceBusy(vm=vm_ref, type=rec.get('type'),
                                           userdevice=userdevice)
    vdi = import_iso(xapi, data, instance_uuid, sr_ref, sr_name)
    created = [('VDI', vdi)]
    try:
        detach_iso(xapi, vm_ref)
        vbd = xapi.create_cd_vbd(vm_ref, vdi, instance_uuid, userdevice)
        created.append(('VBD', vbd))
        xapi.boot_cd_first(vm_ref)
    except BaseException:
        _undo(xapi, created)
        raise
    LOG.info('Attached the iPXE ISO for %s as CD %s (VBD %s, VDI %s) in '
             '%.2f s', instance_uuid, userdevice, vbd, vdi,
             time.monotonic() - start)
    return vbd, vdi


def detach_iso(xapi: Xapi, vm_ref: str) -> int:
    """Remove the CDs nova-ipxe attached to the VM, and their VDIs."""
    removed = 0
    for vbd, vdi in xapi.our_cds(vm_ref):
        xapi.destroy_vbd(vbd)
        if vdi is not None and xapi.is_ours(vdi, 'VDI'):
            xapi.call('VDI.destroy', vdi)
        removed += 1
    return removed


def destroy_instance_isos(xapi: Xapi, instance_uuid: str,
                          sr_ref: typing.Optional[str] = None,
                          sr_name: typing.Optional[str] = None) -> int:
    """Destroy the instance's nova-ipxe VDIs that no VM uses any more.

    For after a VM's destruction: XAPI destroys a VM's VBDs with it but
    never its VDIs, so a VDI whose attach failed, or whose VM went away
    without Nova, would stay.  A VDI that still has a VBD belongs to
    another VM of the same instance (the server while its rescue VM is
    destroyed, or the other way round) and is kept.
    """
    sr_ref = sr_ref or xapi.find_sr(sr_name)
    removed = 0
    # One call for all records, rather than one per VDI of the SR.
    for vdi, rec in xapi.call('VDI.get_all_records').items():
        if (rec.get('SR') != sr_ref or (rec.get('other_config') or {})
                .get(OWNER_KEY) != instance_uuid or rec.get('VBDs')):
            continue
        xapi.call('VDI.destroy', vdi)
        removed += 1
    return removed


def plugin_version(xapi: Xapi, host_ref: typing.Optional[str] = None
                   ) -> typing.Dict[str, typing.Any]:
    """Ask the dom0 plugin for its version (a JSON call).

    :returns: the plugin's answer, a dict with ``version`` and ``tools``.
    :raises: XapiPluginError when it is missing or speaks another API.
    """
    host_ref = host_ref or xapi.call('session.get_this_host',
                                     xapi.session_id())
    try:
        raw = xapi.call('host.call_plugin', host_ref, PLUGIN, 'version', {})
    except exception.XapiError as e:
        raise exception.XapiPluginError(plugin=PLUGIN, call='version',
                                        code=e.code, details=e.kwargs.get(
                                            'details', ''))
    try:
        answer = json.loads(raw)
        major = int(str(answer['version']).split('.')[0])
    except (ValueError, TypeError, KeyError):
        raise exception.XapiPluginError(plugin=PLUGIN, call='version',
                                        code='BAD_ANSWER',
                                        details=repr(raw)[:100])
    if major != PLUGIN_API_MAJOR:
        raise exception.XapiPluginError(
            plugin=PLUGIN, call='version', code='VERSION_MISMATCH',
            details='plugin API %s, this compute side speaks %d.x'
                    % (answer['version'], PLUGIN_API_MAJOR))
    return answer
