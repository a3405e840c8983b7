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

"""Nova's API, conductor, scheduler and placement (Nova's functional
fixtures) with one compute, ``ipxe.LibvirtDriver``, on a real libvirtd.

The compute host (tests/realhost/host.py) is started once per test
process and shared by the tests; each test gets fresh Nova services, its
own instances_path and its own ports, and deletes its servers.  The
process joins the host's network namespace, so the taps Nova's
``vif_type=tap`` plugging creates (Nova 34 has no Linux bridge VIFs)
land there; the port binder puts them on the bridge that holds the
gateway and the menu server.  The menu server is the judge: a boot
counts when it sees a request for the menu from the port's address with
the port's MAC, and the DHCP sentinel must see nothing.

Images come from Nova's GlanceFixture holding the real bytes (the ISOs,
a qcow2 stand-in OS, snapshot uploads); a real Glance is not wired in.

When a check fails, the guest's screen (PNG), domain XML and QEMU log
are saved under $NOVA_IPXE_REALHOST_ARTIFACTS (default
``.realhost-artifacts/`` in the tree) and named in the failure.
"""

import atexit
import copy
import io
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time

import fixtures
import libvirt  # noqa: F401  imported before Nova's import poison
from nova import context as nova_context
from nova.tests import fixtures as nova_fixtures
from nova.tests.functional import integrated_helpers
from nova.virt.libvirt import host as libvirt_host
from oslo_utils.fixture import uuidsentinel as uuids

from nova_ipxe import conf as ipxe_conf  # noqa: F401  registers [ipxe]
from tests.realhost import host as realhost
from tests import samples
from tools import stock

API_PASTE = os.path.join(sys.prefix, 'etc', 'nova', 'api-paste.ini')
TRIXIE_ISO = samples.TRIXIE_ISO
BOOKWORM_ISO = samples.BOOKWORM_ISO
IPXE2_ISO = os.path.join(stock.REPO, '.cache', 'sid-ipxe', 'usr', 'lib',
                         'ipxe', 'ipxe.iso')
ARTIFACTS = os.environ.get('NOVA_IPXE_REALHOST_ARTIFACTS') or os.path.join(
    stock.REPO, '.realhost-artifacts')
# The menu: say so on the console, then stay (the guest keeps running).
MENU = '#!ipxe\necho nova-ipxe realhost menu reached\nsleep 86400\n'
# Boot to the menu: BIOS about 3 s, OVMF about 10 s under TCG here; a
# busy 2-core machine needs more.  A timeout, not an assertion on speed.
BOOT_TIMEOUT = 180

_HOST = None
# The handler whose start() ran libvirt's event loop thread (one per
# process: libvirt runs its default event loop in one thread only).
_EVENT_LOOP = []


def shared_host():
    """The process's RealHost, started on first use, removed at exit."""
    global _HOST
    if _HOST is None:
        _HOST = realhost.RealHost(MENU).start()
        atexit.register(_HOST.cleanup)
        _HOST.enter()
    return _HOST


def marker_disk(path, text):
    """A raw disk whose MBR prints ``text`` on the first serial port.

    Stands for an installed OS: a boot sector (16-bit real mode) that
    writes the text to COM1 (0x3f8) and halts, so the console log Nova
    keeps (os-getConsoleOutput) shows which disk booted.
    """
    msg = text.encode() + b'\r\n\0'
    code = bytes([0xFA, 0x31, 0xC0, 0x8E, 0xD8, 0xFC,   # cli; ds=0; cld
                  0xBE]) + struct.pack('<H', 0x7C00 + 23) + bytes([
                      0xBA, 0xF8, 0x03,                  # mov dx, 0x3f8
                      0xAC, 0x08, 0xC0, 0x74, 0x03,      # lodsb; jz done
                      0xEE, 0xEB, 0xF8,                  # out; loop
                      0xF4, 0xEB, 0xFD])                 # hlt; jmp hlt
    # One Linux partition after the boot sector: an MBR with none is
    # refused by Nova's image format inspector ("no partitions defined").
    partition = struct.pack('<B3BB3BII', 0x80, 0, 2, 0, 0x83, 0, 0, 0,
                            1, 2047)
    sector = ((code + msg).ljust(446, b'\0') + partition.ljust(64, b'\0')
              + b'\x55\xaa')
    with open(path, 'wb') as f:
        f.write(sector.ljust(1024 * 1024, b'\0'))
    return path


class RealHostTestBase(integrated_helpers._IntegratedTestBase):

    ADMIN_API = True
    microversion = 'latest'
    CAST_AS_CALL = False

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.host = shared_host()

    def setUp(self):
        # A real host: Nova's poison on host inspection (os.uname, /sys,
        # interfaces) is for tests on fake drivers.
        for name in ('GenericPoisonFixture', 'SysFsPoisonFixture',
                     'PoisonFunctions'):
            self.useFixture(fixtures.MonkeyPatch(
                'nova.tests.fixtures.%s.setUp' % name,
                lambda fixture: fixtures.Fixture.setUp(fixture)))
        self.instances_path = tempfile.mkdtemp(
            prefix='instances-', dir=self.host.lab.workdir)
        os.chmod(self.instances_path, 0o755)
        self.addCleanup(shutil.rmtree, self.instances_path, True)
        self.menu_seen = len(self.host.menu.requests())
        self.dhcp_seen = self.host.dhcp.count()
        self._events_per_test()
        super().setUp()
        self.useFixture(nova_fixtures.PrivsepFixture())
        self.ctxt = nova_context.get_admin_context()
        self._store_uploads()
        self.addCleanup(self._destroy_leftovers)
        self.addOnException(self._save_artifacts)

    def _events_per_test(self):
        """libvirt's events, as nova-compute gets them, test by test.

        Nova's Host starts two endless loops in its thread pool (event and
        connection-event dispatch), which the pool's shutdown at the end
        of a test would wait for forever, and libvirt's event loop thread,
        which may run only once per process: run the loops as green
        threads killed with the test, and the event loop thread once.
        """
        real_init = libvirt_host.Host._init_events
        real_start = libvirt_host._EventletLibvirtEventHandler.start
        # Nova's functional tests run eventlet-patched (nova.tests.
        # functional), 33 and 34 alike.
        import eventlet

        def spawn(fn, *args, **kwargs):
            thread = eventlet.spawn(fn, *args, **kwargs)
            self.addCleanup(thread.kill)
            return thread

        def start(handler):
            if _EVENT_LOOP:
                spawn(handler._dispatch_thread)
                return
            _EVENT_LOOP.append(handler)
            real_start(handler)

        # Nova 34 spawns through thread_pool_factory, Nova 33 through
        # nova.utils.
        spawner = ('nova.virt.libvirt.host.thread_pool_factory.spawn'
                   if hasattr(libvirt_host, 'thread_pool_factory')
                   else 'nova.virt.libvirt.host.utils.spawn')

        def init_events(host):
            with fixtures.MonkeyPatch(spawner, spawn), fixtures.MonkeyPatch(
                    'nova.virt.libvirt.host._EventletLibvirtEventHandler.'
                    'start', start):
                return real_init(host)
        self.useFixture(fixtures.MonkeyPatch(
            'nova.virt.libvirt.host.Host._init_events', init_events))

    def _setup_services(self):
        self.flags(api_paste_config=API_PASTE)
        self.flags(compute_driver='ipxe.LibvirtDriver',
                   instances_path=self.instances_path,
                   allow_resize_to_same_host=True,
                   # iPXE and the stand-in OS ignore ACPI: Nova powers
                   # them off after this (stop, rescue, resize, shelve).
                   shutdown_timeout=3)
        # ... and turns a soft reboot into a hard one after this.
        self.flags(virt_type='qemu', connection_uri=self.host.uri,
                   wait_soft_reboot_seconds=3, group='libvirt')
        self.flags(boot_menu_url=self.host.menu.url_for('/menu'),
                   group='ipxe')
        super()._setup_services()

    def _wait_for_server_parameter(self, server, expected_params,
                                   max_retries=None, **kw):
        # Real guests on a busy 2-core machine: wait up to 3 minutes (a
        # timeout, not a timing assertion), and stop at once on ERROR.
        deadline = time.monotonic() + BOOT_TIMEOUT
        while True:
            found = self.api.get_server(server['id'])
            if all(found.get(k) == v for k, v in expected_params.items()):
                return found
            if (found.get('status') == 'ERROR'
                    and expected_params.get('status') != 'ERROR'):
                self.fail('server %s went to ERROR waiting for %s: %s' % (
                    server['id'], expected_params, found.get('fault')))
            if time.monotonic() > deadline:
                self.fail('server %s: no %s within %d s (now %s/%s)' % (
                    server['id'], expected_params, BOOT_TIMEOUT,
                    found.get('status'), found.get('OS-EXT-STS:task_state')))
            time.sleep(0.5)

    def _store_uploads(self):
        samples.keep_image_uploads(self.glance)

    # -- images and ports ------------------------------------------------

    def add_image(self, path, disk_format='iso', name='ipxe-boot',
                  **props):
        with open(samples.require(path), 'rb') as f:
            data = f.read()
        image_id = getattr(uuids, 'image_%s_%s' % (name, len(data)))
        image = {'id': image_id, 'name': name, 'status': 'active',
                 'visibility': 'public', 'disk_format': disk_format,
                 'container_format': 'bare', 'size': len(data),
                 'min_ram': 0, 'min_disk': 0, 'properties': props}
        self.glance.create(None, image, data=io.BytesIO(data))
        return image_id

    def add_ipxe_image(self, path, name='ipxe-boot', **props):
        props.setdefault('hw_ipxe_boot', 'true')
        return self.add_image(path, name=name, **props)

    def add_disk_image(self, text, disk_format='qcow2'):
        """An image of a disk whose MBR prints ``text`` (see marker_disk)."""
        tmp = self.useFixture(fixtures.TempDir()).path
        raw = marker_disk(os.path.join(tmp, 'disk.raw'), text)
        path = raw
        if disk_format == 'qcow2':
            path = os.path.join(tmp, 'disk.qcow2')
            subprocess.run(['qemu-img', 'convert', '-q', '-O', 'qcow2', raw,
                            path], check=True)
        return self.add_image(path, disk_format=disk_format,
                              name='disk-' + text)

    def port(self, n):
        """A port on 192.0.2.0/24 (the host's bridge), vif_type tap."""
        ip = '192.0.2.%d' % (10 + n)
        mac = 'fa:16:3e:18:00:%02x' % n
        sub = copy.deepcopy(self.neutron.subnet_1)
        sub.update(cidr='192.0.2.0/24', gateway_ip=realhost.GATEWAY,
                   dns_nameservers=['192.0.2.53'], enable_dhcp=False,
                   allocation_pools=[{'start': '192.0.2.2',
                                      'end': '192.0.2.254'}])
        # The fixture's list_subnets ignores filters: rewrite its subnet.
        self.neutron._subnets[sub['id']] = sub
        port = copy.deepcopy(self.neutron.port_1)
        port.update(id=getattr(uuids, 'realhost_port_%d' % n),
                    mac_address=mac, fixed_ips=[
                        {'ip_address': ip, 'subnet_id': sub['id']}])
        port['binding:vif_type'] = 'tap'
        self.neutron._ports[port['id']] = port
        return port

    def boot(self, image_id, n=1, flavor=None, wait='ACTIVE', **kw):
        port = self.port(n)
        server = self._create_server(
            image_uuid=image_id, flavor_id=flavor or self.flavor(),
            networks=[{'port': port['id']}], expected_state=wait, **kw)
        server['port'] = port
        self.refresh_nw_cache(server)
        return server

    def refresh_nw_cache(self, server):
        """Fill the instance's network info cache from Neutron.

        The fixture Neutron leaves it empty after a boot, and Nova reads
        it to unplug (delete), hard reboot and rescue; a real cloud fills
        it while allocating the ports.
        """
        from nova.network import neutron
        from nova import objects
        inst = objects.Instance.get_by_uuid(self.ctxt, server['id'])
        neutron.API().get_instance_nw_info(self.ctxt, inst,
                                           force_refresh=True)

    def flavor(self, disk=1, name='m1.realhost'):
        key = '_flavor_%s_%d' % (name, disk)
        if not hasattr(self, key):
            setattr(self, key, self._create_flavor(
                memory_mb=256, vcpu=1, disk=disk, ephemeral=0, name=name))
        return getattr(self, key)

    # -- the judge ----------------------------------------------------------

    def menu_requests(self, server, since=0):
        ip = server['port']['fixed_ips'][0]['ip_address']
        return [r for r in self.host.menu.requests()[since:]
                if r['path'] == '/menu' and r['client'] == ip]

    def mark(self):
        """Where the menu server's log stands now."""
        return len(self.host.menu.requests())

    def wait_for_menu(self, server, since):
        """The first menu request of ``server``'s guest after ``since``.

        From the port's address, with the port's MAC; no DHCP sent.
        """
        deadline = time.monotonic() + BOOT_TIMEOUT
        while not self.menu_requests(server, since):
            if time.monotonic() > deadline:
                self.fail('the menu server saw no request from %s after '
                          'event %d (all: %s)' % (
                              server['port']['fixed_ips'][0]['ip_address'],
                              since, self.host.menu.requests()[since:]))
            time.sleep(0.5)
        first = self.menu_requests(server, since)[0]
        self.assertEqual(server['port']['mac_address'],
                         first['query'].get('mac'))
        self.assertEqual(server['id'], first['query'].get('uuid'))
        self.assert_no_dhcp()
        return first

    def assert_no_dhcp(self):
        self.host.dhcp.sync()
        self.assertEqual([], self.host.dhcp.packets()[self.dhcp_seen:],
                         'DHCP was sent on the host\'s network')

    # -- what the host holds ----------------------------------------------

    def domain_name(self, server):
        return self.admin_api.get_server(server['id'])[
            'OS-EXT-SRV-ATTR:instance_name']

    def domain_xml(self, server, inactive=False):
        import xml.etree.ElementTree as ET
        args = ['dumpxml', self.domain_name(server)]
        if inactive:
            args.append('--inactive')
        return ET.fromstring(self.host.virsh(*args).stdout)

    def disks(self, server):
        out = []
        for d in self.domain_xml(server).findall('./devices/disk'):
            src = d.find('source')
            boot = d.find('boot')
            out.append({'device': d.get('device'),
                        'dev': d.find('target').get('dev'),
                        'bus': d.find('target').get('bus'),
                        'source': src is not None and src.get('file'),
                        'boot': boot is not None and boot.get('order')})
        return out

    def inst_dir(self, server):
        return os.path.join(self.instances_path, server['id'])

    def console(self, server):
        return self.api.post_server_action(
            server['id'], {'os-getConsoleOutput': {}})['output']

    def wait_for_console(self, server, text):
        deadline = time.monotonic() + BOOT_TIMEOUT
        while text not in self.console(server):
            if time.monotonic() > deadline:
                self.fail('%r never appeared on the console of %s: %r' % (
                    text, server['id'], self.console(server)[-2000:]))
            time.sleep(1)

    def delete_and_check(self, server):
        """Delete ``server``; no domain, file, tap or bridge port left."""
        name = self.domain_name(server)
        tap = ('tap' + server['port']['id'])[:14]
        self._delete_server(server)
        self.assertNotIn(name, self.host.domains())
        self.assertFalse(os.path.exists(self.inst_dir(server)),
                         os.listdir(self.inst_dir(server))
                         if os.path.exists(self.inst_dir(server)) else '')
        self.assertNotIn(tap, self.host.links())
        self.assertNotIn(tap, self.host.bridge_ports())

    def _destroy_leftovers(self):
        # A failed test must not leave guests for the next one.
        for name in self.host.domains():
            self.host.virsh('destroy', name, check=False)
            self.host.virsh('undefine', '--nvram', name, check=False)
        self.host.delete_taps()

    def _save_artifacts(self, exc_info):
        os.makedirs(ARTIFACTS, exist_ok=True)
        saved = []
        for name in self.host.domains():
            stem = os.path.join(ARTIFACTS, '%s-%s' % (self.id().rsplit(
                '.', 1)[-1], name))
            try:
                saved.append(self.host.screenshot(name, stem + '.png'))
            except Exception as e:
                saved.append('%s.png: %s' % (stem, e))
            xml = self.host.virsh('dumpxml', name, check=False).stdout
            with open(stem + '.xml', 'w') as f:
                f.write(xml)
            with open(stem + '.log', 'w') as f:
                f.write(self.host.domain_log(name))
            saved += [stem + '.xml', stem + '.log']
        from testtools import content
        self.addDetail('realhost-artifacts', content.text_content(
            '\n'.join(saved) or '(no domains)'))
        self.addDetail('libvirtd-log', content.text_content(
            _tail(self.host.libvirtd_log)))


def qemu_img_info(path):
    import json
    return json.loads(subprocess.run(
        ['qemu-img', 'info', '-U', '--output=json', path], check=True,
        capture_output=True, text=True).stdout)


def _tail(path, limit=6000):
    try:
        with open(path, errors='replace') as f:
            return f.read()[-limit:]
    except OSError as e:
        return str(e)
