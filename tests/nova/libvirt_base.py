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

"""Nova's own functional harness driving ``ipxe.LibvirtDriver`` with real
bytes: a real iPXE ISO in the fake Glance, Nova's real image backends
(qcow2/flat files made by qemu-img), Nova's real fetch into ``_base``.
Only libvirt itself is Nova's fake; the XML the driver defines is read
by wrapping ``Guest.create`` (fake libvirt's XMLDesc drops boot order).
"""

import contextlib
import copy
import hashlib
import inspect
import io
import os
import re
import shutil
import subprocess
import sys
import urllib.parse
import xml.etree.ElementTree as ET

import fixtures
from nova import conf as nova_conf
from nova import context as nova_context
from nova.tests import fixtures as nova_fixtures
from nova.tests.functional.libvirt import base
from nova.virt.libvirt import driver as libvirt_driver
from nova.virt.libvirt import guest as libvirt_guest
from nova.virt.libvirt import imagebackend
from nova.virt.libvirt import utils as libvirt_utils
from oslo_serialization import jsonutils
from oslo_utils.fixture import uuidsentinel as uuids

from nova_ipxe import conf as ipxe_conf  # noqa: F401  registers [ipxe]
from tests import samples

CONF = nova_conf.CONF
BOOKWORM_ISO = samples.BOOKWORM_ISO
TRIXIE_ISO = samples.TRIXIE_ISO
MENU_URL = 'http://192.0.2.1:8080/menu'
# The addresses the boot lab's bridge serves (documentation range).
PORT_IP, GATEWAY = '192.0.2.10', '192.0.2.1'
PORT_MAC = 'fa:16:3e:00:2b:0a'

# pip installs Nova's etc/ under the venv's prefix.
API_PASTE = os.path.join(sys.prefix, 'etc', 'nova', 'api-paste.ini')
# The real functions, kept before ServersTestBase mocks them.
REAL = {
    'nova.virt.libvirt.LibvirtDriver._create_image':
        libvirt_driver.LibvirtDriver._create_image,
    'nova.virt.libvirt.driver.libvirt_utils.file_open':
        libvirt_utils.file_open,
    'nova.virt.libvirt.utils.fetch_image': libvirt_utils.fetch_image,
    'nova.virt.libvirt.imagebackend.Backend.backend':
        imagebackend.Backend.backend,
    'nova.virt.libvirt.driver.LibvirtDriver._create_ephemeral':
        libvirt_driver.LibvirtDriver._create_ephemeral,
    'nova.virt.libvirt.driver.LibvirtDriver._create_swap':
        libvirt_driver.LibvirtDriver._create_swap,
}


def read(path):
    with open(path, 'rb') as f:
        return f.read()


def qemu_img_info(path):
    import json
    out = subprocess.run(['qemu-img', 'info', '--output=json', path],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def blank_qcow2(tmp, size='64M'):
    path = os.path.join(tmp, 'blank.qcow2')
    subprocess.run(['qemu-img', 'create', '-q', '-f', 'qcow2', path, size],
                   check=True)
    return read(path)


def write_marker(path, marker):
    """Write ``marker`` (padded to 512 bytes) at the start of an image."""
    tmp = path + '.marker'
    with open(tmp, 'wb') as f:
        f.write(marker.ljust(512, b'\0'))
    try:
        subprocess.run(['qemu-io', '-c', 'write -q -s %s 0 512' % tmp,
                        path], check=True, capture_output=True)
    finally:
        os.unlink(tmp)


def raw_bytes(data, tmp):
    """The first MiB of an image (bytes, any format) as raw."""
    src = os.path.join(tmp, 'img')
    with open(src, 'wb') as f:
        f.write(data)
    return raw_head(src, tmp)


def raw_head(path, tmp):
    """The first MiB of the image at ``path`` (backing chain included)."""
    dst = os.path.join(tmp, 'head.raw')
    subprocess.run(['qemu-img', 'convert', '-O', 'raw', path, dst],
                   check=True)
    with open(dst, 'rb') as f:
        return f.read(1024 * 1024)


def sha256(path):
    with open(path, 'rb') as f:
        return hashlib.sha256(f.read()).hexdigest()


def script_of(iso_path):
    files = samples.iso_files(iso_path)
    scripts = [v.decode() for v in files.values()
               if v.startswith(b'#!ipxe')]
    assert scripts, sorted(files)
    return scripts[0]


class IpxeServersTestBase(base.ServersTestBase):
    """ServersTestBase with ipxe.LibvirtDriver and real image files."""

    microversion = 'latest'
    real_bytes = True
    images_type = 'qcow2'

    def setUp(self):
        super().setUp()
        self.useFixture(nova_fixtures.PrivsepFixture())
        if self.real_bytes:
            for target, real in REAL.items():
                self.useFixture(fixtures.MonkeyPatch(target, real))
        self.flags(images_type=self.images_type, group='libvirt')
        # Fake libvirt's blockRebase copies nothing: snapshot cold, so
        # the bytes come from the instance's disk through qemu-img.
        self.flags(disable_libvirt_livesnapshot=True, group='workarounds')
        self.flags(boot_menu_url=MENU_URL, group='ipxe')
        self.ctxt = nova_context.get_admin_context()
        self._store_uploads()
        self.defined = []
        # What each compute's driver did, in order (see IpxeMoveBase).
        self.events = []
        real_create = libvirt_guest.Guest.create

        def create(cls, xml, host):
            self.defined.append(xml)
            self.events.append(self.guest_event('create', host, xml))
            return real_create(xml, host)
        # Guest.create is a classmethod: MonkeyPatch makes this one too.
        # (A staticmethod inside it worked only until Python 3.13, which
        # no longer chains classmethod to the descriptor it wraps.)
        self.useFixture(fixtures.MonkeyPatch(
            'nova.virt.libvirt.guest.Guest.create', create))

    def _wait_for_server_parameter(self, server, expected_params,
                                   max_retries=10, **kw):
        # Real bytes (qemu-img, mkfs) on a busy 2-core machine take longer
        # than the harness's 5 s: wait up to 2 minutes (not a timing
        # assertion, a timeout).
        return super()._wait_for_server_parameter(
            server, expected_params, max_retries=max(max_retries, 240), **kw)

    def _store_uploads(self):
        samples.keep_image_uploads(self.glance)

    def _setup_services(self):
        self.flags(api_paste_config=API_PASTE)
        super()._setup_services()

    def _setup_compute_service(self):
        self.flags(compute_driver='ipxe.LibvirtDriver')

    def tmp_dir(self):
        return self.useFixture(fixtures.TempDir()).path

    # -- images ---------------------------------------------------------

    def add_image(self, data, disk_format='iso', image_id=None, **props):
        image = {'id': image_id or uuids.ipxe_image, 'name': 'ipxe-boot',
                 'status': 'active', 'visibility': 'public',
                 'disk_format': disk_format, 'container_format': 'bare',
                 'size': len(data), 'min_ram': 0, 'min_disk': 0,
                 'properties': props}
        self.glance.create(None, image, data=io.BytesIO(data))
        return image['id']

    def add_ipxe_image(self, source=BOOKWORM_ISO, image_id=None, **props):
        props.setdefault('hw_ipxe_boot', 'true')
        return self.add_image(read(source), image_id=image_id, **props)

    # -- network ----------------------------------------------------------

    def lab_port(self, mac=PORT_MAC, ip=PORT_IP):
        """A port on a documentation subnet (192.0.2.0/24, gateway .1).

        The fixture's list_subnets ignores filters, so its one IPv4
        subnet is rewritten (a copy) rather than a second one added.
        """
        sub = copy.deepcopy(self.neutron.subnet_1)
        sub.update(cidr='192.0.2.0/24', gateway_ip=GATEWAY,
                   dns_nameservers=['192.0.2.53'],
                   allocation_pools=[{'start': '192.0.2.2',
                                      'end': '192.0.2.254'}])
        self.neutron._subnets[sub['id']] = sub
        port = copy.deepcopy(self.neutron.port_1)
        port.update(id=getattr(uuids, 'port_' + ip), mac_address=mac,
                    fixed_ips=[{'ip_address': ip, 'subnet_id': sub['id']}])
        self.neutron._ports[port['id']] = port
        return port

    def refresh_nw_cache(self, server):
        """Fill the instance's network info cache from Neutron.

        In this harness the cache stays empty after a boot, even with the
        stock driver, and hard reboot and rescue read network_info from
        it; a real cloud fills it while allocating the ports.
        """
        from nova.network import neutron
        from nova import objects
        try:
            inst = objects.Instance.get_by_uuid(self.ctxt, server['id'])
        except Exception:
            return
        neutron.API().get_instance_nw_info(self.ctxt, inst,
                                           force_refresh=True)

    # -- what the driver did ------------------------------------------------

    def inst_dir(self, server):
        return os.path.join(CONF.instances_path, server['id'])

    def base_file(self, image_id):
        return os.path.join(CONF.instances_path, CONF.image_cache.
                            subdirectory_name,
                            hashlib.sha1(image_id.encode()).hexdigest())

    def host_of(self, libvirt_host):
        """The name of the compute whose driver owns ``libvirt_host``."""
        for name, compute in self.computes.items():
            if compute.driver._host is libvirt_host:
                return name
        return None

    def guest_event(self, op, libvirt_host, xml):
        # A guest started from ``xml``: the CD files it points to, with
        # their digests at that moment.
        root = ET.fromstring(xml)
        cds = {}
        for d in self.disks(root):
            if d['device'] == 'cdrom' and d['source']:
                cds[d['source']] = (sha256(d['source'])
                                    if os.path.exists(d['source'])
                                    else None)
        host = (libvirt_host if isinstance(libvirt_host, str)
                else self.host_of(libvirt_host))
        return {'op': op, 'host': host, 'cds': cds, 'xml': xml}

    def last_xml(self):
        self.assertTrue(self.defined, 'no guest was defined')
        return ET.fromstring(self.defined[-1])

    @staticmethod
    def disks(root):
        out = []
        for d in root.findall('./devices/disk'):
            src = d.find('source')
            boot = d.find('boot')
            out.append({
                'device': d.get('device'),
                'dev': d.find('target').get('dev'),
                'bus': d.find('target').get('bus'),
                'source': src is not None and src.get('file'),
                'format': d.find('driver').get('type'),
                'readonly': d.find('readonly') is not None,
                'boot': boot is not None and boot.get('order')})
        return out

    @staticmethod
    def normalise(xml):
        # The creation time is the only part that differs between two
        # renderings of the same guest.
        return re.sub(r'<nova:creationTime>[^<]*</nova:creationTime>', '',
                      xml)


class IpxeLifecycleBase(IpxeServersTestBase):

    def setUp(self):
        super().setUp()
        self.start_compute()
        self.flavor = self._create_flavor(disk=2, ephemeral=0,
                                          name='m1.ipxe')
        self.image_id = self.add_ipxe_image()

    def boot(self, image_id=None, port=None, **kw):
        port = port or self.lab_port()
        server = self._create_server(image_uuid=image_id or self.image_id,
                                     flavor_id=self.flavor,
                                     networks=[{'port': port['id']}], **kw)
        self.refresh_nw_cache(server)
        return server

    def cds(self):
        return [d for d in self.disks(self.last_xml())
                if d['device'] == 'cdrom']

    def iso(self, server, name='ipxe.iso'):
        return os.path.join(self.inst_dir(server), name)


# Driver calls that work on a compute's own instance directory when a
# move comes to it (see own_storage): live migration, cold migration and
# its revert, evacuate, the source's shared-storage checks.
OWN_STORAGE_CALLS = (
    'check_can_live_migrate_destination',
    'cleanup_live_migration_destination_check', 'pre_live_migration',
    'post_live_migration_at_destination',
    'rollback_live_migration_at_destination', 'finish_migration',
    'destroy', 'cleanup', 'check_instance_shared_storage_local',
    'check_instance_shared_storage_cleanup', 'instance_on_disk', 'spawn')


class _RemoteFs:
    """Nova's RemoteFilesystem ("ssh host ...") onto the hosts' own paths.

    ``host`` is the address the destination's driver gave
    (get_host_ip_addr), mapped to the directory that stands for that
    host's disk.
    """

    def __init__(self, test):
        self.test = test

    def _path(self, host, path):
        return self.test.path_on(self.test.addresses[host], path)

    def create_file(self, host, dst_path, on_execute=None,
                    on_completion=None):
        open(self._path(host, dst_path), 'w').close()

    def remove_file(self, host, dst_path, on_execute=None,
                    on_completion=None):
        os.unlink(self._path(host, dst_path))

    def create_dir(self, host, dst_path, on_execute=None,
                   on_completion=None):
        os.makedirs(self._path(host, dst_path), exist_ok=True)

    def remove_dir(self, host, dst_path, on_execute=None,
                   on_completion=None):
        shutil.rmtree(self._path(host, dst_path), ignore_errors=True)

    def copy_file(self, src, dst, on_execute=None, on_completion=None,
                  compression=True):
        def local(spec):
            host, sep, path = spec.partition(':')
            return self._path(host, path) if sep else spec
        subprocess.run(['cp', '-r', local(src), local(dst)], check=True)


class IpxeMoveBase(IpxeLifecycleBase):
    """Two computes, and a record of what each one's driver did, in order.

    ``self.events`` gets, besides the guest creations of the base:
    ``build`` (a driver's ``_build`` wrote an ISO: host, path, digest,
    the instances_path it ran with), ``convert`` (Nova's finish_migration
    turned a raw file into qcow2), ``create_image`` (Nova created an empty
    image file) and ``migrate`` (a live migration started the guest on its
    destination, with the XML libvirt was given), and ``mark`` (the test
    started an operation).

    Nova's harness shares one instances_path between computes, and every
    compute has the same my_ip, so moves see shared storage by default;
    ``own_storage`` gives a compute a directory of its own.
    """

    ADMIN_API = True  # migrate, live migrate, evacuate, boot on a host

    def setUp(self):
        super().setUp()  # compute1
        self.start_compute('compute2')
        for name in self.computes:
            self.watch(name)
        # Per-host instances_path (None: the shared one); address -> host.
        self.storage = {}
        self.addresses = {}
        self.migrate_params = []
        self.fail_migration = False  # the live migration job fails
        real_convert = libvirt_driver.LibvirtDriver._disk_raw_to_qcow2

        def convert(path):
            self.events.append({'op': 'convert', 'path': path})
            return real_convert(path)
        self.useFixture(fixtures.MonkeyPatch(
            'nova.virt.libvirt.driver.LibvirtDriver._disk_raw_to_qcow2',
            convert))
        real_create_image = libvirt_utils.create_image

        def create_image(path, disk_format, *args, **kwargs):
            self.events.append({'op': 'create_image', 'path': path,
                                'format': disk_format})
            return real_create_image(path, disk_format, *args, **kwargs)
        self.useFixture(fixtures.MonkeyPatch(
            'nova.virt.libvirt.utils.create_image', create_image))
        self.useFixture(fixtures.MonkeyPatch(
            'nova.tests.fixtures.libvirt.Domain.migrateToURI3',
            self._migrate_stub))

    def _live_migrate(self, server, migration_expected_state='completed',
                      server_expected_state='ACTIVE', host=None):
        # Nova 33's helper, which takes the destination: Nova 31's and
        # 32's (integrated_helpers) always let the scheduler pick.
        self.api.post_server_action(
            server['id'],
            {'os-migrateLive': {'host': host, 'block_migration': 'auto'}})
        self._wait_for_migration_status(server, [migration_expected_state])
        return self._wait_for_state_change(server, server_expected_state)

    def watch(self, hostname):
        """Record each ISO this compute's driver (this instance) builds."""
        drv = self.computes[hostname].driver
        real = drv._build
        sig = inspect.signature(real)

        def build(*args, **kwargs):
            output = sig.bind(*args, **kwargs).arguments['output']
            result = real(*args, **kwargs)
            self.events.append({'op': 'build', 'host': hostname,
                                'path': output, 'sha': sha256(output),
                                'instances_path': CONF.instances_path})
            return result
        drv._build = build

    def mark(self, what):
        """Note that an operation starts now; returns the event index."""
        self.events.append({'op': 'mark', 'what': what})
        return len(self.events) - 1

    def events_of(self, op, since=0, **match):
        return [e for e in self.events[since:] if e['op'] == op and all(
            e.get(k) == v for k, v in match.items())]

    # -- storage of its own ---------------------------------------------

    @contextlib.contextmanager
    def instances_path(self, path):
        old = CONF.instances_path
        CONF.set_override('instances_path', path)
        try:
            yield path
        finally:
            CONF.set_override('instances_path', old)

    def own_storage(self, hostname, address='192.0.2.102'):
        """Give ``hostname`` an instances_path (and ``_base``) of its own.

        Stands for a host whose instance directory is on its own disk,
        under the same path as every other host's.  The driver calls a
        move makes on that host (OWN_STORAGE_CALLS) run with
        ``CONF.instances_path`` swapped to a fresh directory: only one
        compute works at a time in those calls (the other waits in an RPC
        call, or is down).  The host gets its own address, the other
        hosts reach its directory through a RemoteFilesystem stand-in, a
        shared-storage test file is looked for in the checking host's own
        directory, and the live migration stub rewrites the destination
        XML's paths into it.
        """
        shared = self.storage.setdefault(None, CONF.instances_path)
        own = os.path.join(self.tmp_dir(), 'instances')
        os.mkdir(own)
        self.storage[hostname] = own
        self.addresses[address] = hostname
        drv = self.computes[hostname].driver
        for name in OWN_STORAGE_CALLS:
            setattr(drv, name, self._in_storage(hostname, getattr(drv,
                                                                  name)))
        drv.get_host_ip_addr = lambda: address
        remotefs = _RemoteFs(self)
        for name, compute in self.computes.items():
            # Nova's fallback_from_host names the source by host name.
            self.addresses.setdefault(name, name)
            compute.driver._remotefs = remotefs
            real = compute.driver.check_instance_shared_storage_remote

            def remote(context, data, _name=name, _real=real):
                data = dict(data, filename=self.path_on(
                    _name, data['filename']))
                return _real(context, data)
            compute.driver.check_instance_shared_storage_remote = remote
        self.useFixture(fixtures.MonkeyPatch(
            'nova.virt.libvirt.volume.remotefs.RemoteFilesystem.copy_file',
            lambda fs, src, dst, **kw: remotefs.copy_file(src, dst, **kw)))
        self.assertNotEqual(shared, own)
        return own

    def _in_storage(self, hostname, real):
        sig = inspect.signature(real)

        def call(*args, **kwargs):
            bound = sig.bind(*args, **kwargs)
            info = bound.arguments.get('disk_info')
            if isinstance(info, str) and real.__name__ == 'finish_migration':
                # The source's disk list (JSON), with its paths: the same
                # strings on a real destination, its own directory here.
                disks = jsonutils.loads(info)
                for disk in disks:
                    disk['path'] = self.path_on(hostname, disk['path'])
                bound.arguments['disk_info'] = jsonutils.dumps(disks)
            with self.instances_path(self.root_of(hostname)):
                return real(*bound.args, **bound.kwargs)
        return call

    def root_of(self, hostname):
        return self.storage.get(hostname) or self.storage.get(
            None, CONF.instances_path)

    def path_on(self, hostname, path):
        """The file ``path`` (a path on any host) names on ``hostname``."""
        roots = sorted({self.root_of(h) for h in self.storage}
                       | {self.root_of(hostname)}, key=len, reverse=True)
        for root in roots:
            if path == root or path.startswith(root + os.sep):
                return self.root_of(hostname) + path[len(root):]
        return path

    def _migrate_stub(self, domain, destination, params, flags):
        # Nova's LibvirtMigrationMixin stub (start the guest on the
        # destination's fake libvirt, complete the job), plus the
        # destination's own paths and a record of what it was given.
        dest = urllib.parse.urlparse(destination).hostname
        xml = params['destination_xml']
        root = ET.fromstring(xml)
        for source in root.findall('./devices/disk/source'):
            if source.get('file'):
                source.set('file', self.path_on(dest, source.get('file')))
        xml = ET.tostring(root, encoding='unicode')
        self.migrate_params.append(dict(params))
        if self.fail_migration:
            domain.fail_job()
            return
        self.events.append(self.guest_event('migrate', dest, xml))
        self.computes[dest].driver._host.get_connection().createXML(
            xml, 'fake-createXML-doesnt-care-about-flags')
        domain.complete_job()

    # -- what the destination got -----------------------------------------

    def assert_iso_built_there(self, host, since, op='create'):
        """``host`` built the ISO its new guest started on, just before.

        The ISO of the guest ``op`` started on ``host`` after event
        ``since`` was built by ``host``'s driver after ``since`` and before
        that guest started, and nothing rewrote it in between.  Returns
        (ISO path, the build event, the start event).
        """
        evs = self.events[since:]
        starts = [i for i, e in enumerate(evs)
                  if e['op'] == op and e['host'] == host]
        self.assertTrue(starts, 'no guest %s on %s' % (op, host))
        start = evs[starts[0]]
        isos = {p: s for p, s in start['cds'].items()
                if os.path.basename(p) == 'ipxe.iso'}
        self.assertEqual(1, len(isos), start['cds'])
        (path, digest), = isos.items()
        builds = [e for e in evs[:starts[0]]
                  if e['op'] == 'build' and e['path'] == path]
        self.assertTrue(builds, 'nothing built %s before the guest '
                                'started on %s' % (path, host))
        self.assertEqual(host, builds[-1]['host'])
        self.assertEqual(builds[-1]['sha'], digest,
                         'the guest started on other bytes than built')
        return path, builds[-1], start

    def assert_real_iso(self, path, *needles):
        """A raw ISO 9660 file whose iPXE script carries ``needles``."""
        self.assertEqual('raw', qemu_img_info(path)['format'])
        with open(path, 'rb') as f:
            f.seek(0x8001)
            self.assertEqual(b'CD001', f.read(5))
        script = script_of(path)
        for needle in needles:
            self.assertIn(needle, script)
        return script
