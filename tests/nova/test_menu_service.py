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

"""The menu service against Nova's own API, and the real Debian
installer booted through it.

Nova is the functional harness (the API served by its fixture, reached
through wsgi-intercept): the server, its port, its metadata and its
tenant's key pair are made through the API, the ISO is the one
ipxe.LibvirtDriver wrote with the signed identity, and the service asks
Nova through a keystoneauth adapter as it would in a cloud (the
harness's API authenticates by headers instead of Keystone tokens).

The installer test boots that ISO in QEMU (TCG) on a namespace with no
DHCP server; the service runs in this process on a socket inside the
namespace; the Debian 12 netboot installer (debian-installer-12-netboot-
amd64) comes up with the static settings and fetches its preseed.
"""

import json
import os
import re
import subprocess
import sys
import time
import urllib.parse
import wsgiref.util

import eventlet
from eventlet import wsgi as eventlet_wsgi
import fixtures
from keystoneauth1 import adapter as ks_adapter
from keystoneauth1 import session as ks_session
from oslo_config import cfg
from testtools import content

from nova_ipxe.menuservice import app
from nova_ipxe.menuservice import conf as menu_conf
from nova_ipxe.menuservice import nova as menu_nova
from tests.nova import libvirt_base
from tests import samples
from tools import bootlab

KEY = 'menu-service-signing-key-0123'
SERVICE = 'http://%s:8090' % libvirt_base.GATEWAY
PUBKEY = ('ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHv7Zk2w3xq1b2N0ZcJ6mVx2bQ0k'
          'E9hOe7m2l3yF5r4c tenant@example')
DI_DIR = ('/usr/lib/debian-installer/images/12/amd64/text/'
          'debian-installer/amd64')
# Power-on to the preseed fetch took 90 to 154 s on a 2-core machine
# (the 40 MB initrd, then the installer's own start); a timeout, not
# an assertion.
INSTALLER_TIMEOUT = 600


class MenuServiceNovaTestCase(libvirt_base.IpxeLifecycleBase):

    def setUp(self):
        super().setUp()
        self.flags(boot_menu_url=SERVICE + '/menu.ipxe', menu_identity=True,
                   menu_signing_key=KEY, menu_signing_key_id='k1',
                   group='ipxe')
        self.api.post_keypair({'keypair': {'name': 'tenant-key',
                                           'public_key': PUBKEY}})
        self.log = self.useFixture(fixtures.FakeLogger(
            name='nova_ipxe.menuservice', level='INFO',
            format='%(asctime)s %(message)s'))

    def make_service(self, **opts):
        conf = cfg.ConfigOpts()
        menu_conf.register_opts(conf)
        conf([], default_config_files=[])
        conf.set_override('signing_keys', {'k1': KEY}, 'menu_service')
        for name, value in opts.items():
            conf.set_override(name, value, 'menu_service')
        admin = self.admin_api
        # The harness's API takes the identity from these headers where
        # a cloud's keystonemiddleware would validate a token.
        adapter = ks_adapter.Adapter(
            ks_session.Session(), endpoint_override=admin.base_url,
            additional_headers={
                'X-Auth-User': 'menu-service', 'X-User-Id': 'menu-service',
                'X-Auth-Project-Id': admin.project_id,
                'X-Roles': 'admin'})
        return app.MenuService(conf, menu_nova.Nova(adapter, ttl=0))

    def create(self, metadata):
        body = self._build_server(name='debian-vm', image_uuid=self.image_id,
                                  flavor_id=self.flavor,
                                  networks=[{'port': self.lab_port()['id']}])
        body.update(key_name='tenant-key', metadata=metadata)
        server = self._wait_for_state_change(
            self.api.post_server({'server': body}), 'ACTIVE')
        self.refresh_nw_cache(server)
        return server

    def chain_url(self, server):
        script = libvirt_base.script_of(self.iso(server))
        return re.search(r'imgfetch --name \S+ --timeout \d+ (\S+)',
                         script).group(1)

    def get(self, service, url, source=libvirt_base.PORT_IP):
        parts = urllib.parse.urlsplit(url)
        environ = {'REQUEST_METHOD': 'GET', 'PATH_INFO': parts.path,
                   'QUERY_STRING': parts.query, 'REMOTE_ADDR': source,
                   'HTTP_HOST': parts.netloc}
        wsgiref.util.setup_testing_defaults(environ)
        seen = {}

        def start_response(status, headers):
            seen['status'] = int(status.split()[0])
        body = b''.join(service(environ, start_response)).decode()
        return seen['status'], body

    def kernel_args(self, script):
        return dict(w.split('=', 1) for w in script.split() if '=' in w)

    # -- through Nova's API, no VM ----------------------------------------
    def test_debian_install_preseed_key_done_then_local_disk(self):
        server = self.create({'ipxe_profile': 'debian-12'})
        service = self.make_service()
        url = self.chain_url(server)
        status, script = self.get(service, url)
        self.assertEqual(200, status, script)
        self.assertIn('installing Debian 12 on %s' % libvirt_base.PORT_IP,
                      script)
        args = self.kernel_args(script)
        self.assertEqual(libvirt_base.PORT_IP, args['netcfg/get_ipaddress'])
        self.assertEqual('debian-vm', args['hostname'])
        token = urllib.parse.urlsplit(args['url']).path.split('/', 2)[2]
        status, preseed = self.get(service, args['url'])
        self.assertEqual(200, status)
        self.assertIn('d-i netcfg/get_hostname string debian-vm\n', preseed)
        # The tenant's key, read from Nova by the service user.
        self.assertEqual((200, PUBKEY + '\n'),
                         self.get(service, SERVICE + '/key/' + token))
        self.assertEqual(200, self.get(service,
                                       SERVICE + '/done/' + token)[0])
        self.assertEqual('false', self.api.get_server(
            server['id'])['metadata']['ipxe_boot'])
        status, script = self.get(service, url)
        self.assertIn('booting the local disk', script)
        # The tenant deletes the key to install again.
        self.api.delete_server_metadata(server['id'], 'ipxe_boot')
        self.assertIn('installing Debian 12', self.get(service, url)[1])

    def test_no_profile_is_the_default_menu(self):
        server = self.create({})
        service = self.make_service(
            default_menu_url='http://boot.example.org/menu.ipxe')
        self.assertIn('chain --autofree http://boot.example.org/menu.ipxe',
                      self.get(service, self.chain_url(server))[1])

    def assertRefused(self, answer, why):
        status, text = answer
        self.assertEqual(200, status)
        self.assertTrue(text.startswith('#!ipxe\necho nova-ipxe-menu: '
                                        'refused: '), text)
        self.assertIn(why, text)
        self.assertTrue(text.endswith('exit 1\n'))

    def test_refusals(self):
        server = self.create({'ipxe_profile': 'debian-12'})
        service = self.make_service()
        url = self.chain_url(server)
        # Replayed from another address.
        self.assertRefused(self.get(service, url, source='192.0.2.77'),
                           'signed for 192.0.2.10, asked from 192.0.2.77')
        # Unsigned, and forged.
        unsigned = url.split('&ts=')[0]
        self.assertRefused(self.get(service, unsigned), 'no sig parameter')
        self.assertRefused(self.get(service, url.replace(
            'hostname=debian-vm', 'hostname=debian-vn')),
            'signature mismatch')
        # Expired: the service's clock a day and a second later.
        ts = int(urllib.parse.parse_qs(urllib.parse.urlsplit(
            url).query)['ts'][0])
        service.clock = lambda: ts + 86401
        self.assertRefused(self.get(service, url), 'signed 86401 seconds ago')
        service.clock = time.time
        # Hostile metadata, set through the API by the tenant.
        for name in ('../../etc/passwd', 'debian-12;reboot', '${x}'):
            self.api.post_server_metadata(server['id'],
                                          {'ipxe_profile': name})
            self.assertRefused(self.get(service, url),
                               'server metadata ipxe_profile')
        # Unknown server: deleted in Nova.
        self._delete_server(server)
        self.assertRefused(self.get(service, url),
                           'Nova has no server %s' % server['id'])

    # -- the real installer ---------------------------------------------
    def serve_in(self, lab, service):
        sock = lab.listen(libvirt_base.GATEWAY, 8090)
        self.addCleanup(sock.close)
        thread = eventlet.spawn(eventlet_wsgi.server, sock, service,
                                log_output=False)
        self.addCleanup(thread.kill)

    def test_the_debian_installer_fetches_its_preseed(self):
        # tools/run-tests.sh runs this boot once, in the Nova 34 suite; a
        # missing installer package (bindep.txt) is an error, not a skip.
        bootlab.check_prerequisites(iso=True)
        samples.require(os.path.join(DI_DIR, 'initrd.gz'))
        self.flags(chain_timeout=30, chain_retry_delay=1, group='ipxe')
        server = self.create({'ipxe_profile': 'debian-12'})
        lab = self.useFixture(bootlab.LabFixture()).lab
        lab.add_bridge('br0', ipv4=libvirt_base.GATEWAY + '/24')
        lab.add_tap('tap0', 'br0')
        dhcp = bootlab.DhcpSentinel(lab).start()
        # The installer's kernel and initrd, as a mirror would serve them.
        files = lab.popen([sys.executable, '-m', 'http.server', '--bind',
                           libvirt_base.GATEWAY, '--directory', DI_DIR,
                           '8081'], stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
        self.addCleanup(files.kill)
        service = self.make_service(
            debian_netboot_url='http://%s:8081/' % libvirt_base.GATEWAY)
        self.serve_in(lab, service)
        disk = os.path.join(self.tmp_dir(), 'blank.qcow2')
        subprocess.run(['qemu-img', 'create', '-q', '-f', 'qcow2', disk,
                        '4G'], check=True)
        vm = bootlab.Vm(lab, cdrom=self.iso(server), memory=1024,
                        nics=[bootlab.Nic('tap0', libvirt_base.PORT_MAC)],
                        extra_args=['-drive', 'file=%s,if=virtio,'
                                    'format=qcow2' % disk])
        vm.start()
        self.addCleanup(vm.stop)
        deadline = time.monotonic() + INSTALLER_TIMEOUT
        while ('/preseed/' not in self.log.output
               and time.monotonic() < deadline and not vm.exited):
            time.sleep(1)
        took = time.time() - vm.started_at
        self.addDetail('power-on-to-preseed', content.text_content(
            '%.1f s' % took))
        self.addDetail('service-log', content.text_content(self.log.output))
        if os.environ.get('NOVA_IPXE_BOOT_TIMINGS'):
            # tools/run-tests.sh prints it with the other boot times.
            with open(os.environ['NOVA_IPXE_BOOT_TIMINGS'], 'a') as f:
                f.write(json.dumps({'case': 'nova-debian-installer',
                                    'firmware': 'bios',
                                    'power_on_to_preseed_s': round(took, 1)})
                        + '\n')
        lines = self.log.output.splitlines()
        self.assertEqual(2, len(lines), vm.serial_tail(40))
        self.assertRegex(lines[0], r"GET '/menu.ipxe' from 192\.0\.2\.10: "
                         r"200 profile debian-12 for %s$" % server['id'])
        self.assertRegex(lines[1], r"GET '/preseed/%s/k1/.*' from "
                         r"192\.0\.2\.10: 200 preseed debian-12 for %s$"
                         % (server['id'], server['id']))
        serial = vm.serial_text(clean=True)
        # The kernel got the static settings from the service's script
        # and the nova-ipxe script's settings.
        self.assertIn('netcfg/get_ipaddress=192.0.2.10 netcfg/get_netmask='
                      '255.255.255.0 netcfg/get_gateway=192.0.2.1 '
                      'netcfg/get_nameservers=192.0.2.53', serial)
        dhcp.sync()
        self.assertEqual([], dhcp.packets())
