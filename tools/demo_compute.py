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

"""The compute demo: a server from ``ipxe-boot`` through Nova's REST API
on a real libvirtd.

Sets up the host of tests/realhost on this machine (libvirtd and QEMU in
a network namespace with no DHCP server, a bridge holding the gateway
and a menu server), starts Nova's API, conductor, scheduler, placement
and one compute with ``compute_driver = ipxe.LibvirtDriver`` (Nova's
functional fixtures), uploads Debian trixie's iPXE ISO as ``ipxe-boot``
with ``hw_ipxe_boot=true``, creates a server from it with a REST call,
and prints what the menu server saw and where the screenshot of the
guest's console is.  Everything but ``demo-output/`` is removed at the
end.  Run it through ``tools/demo-compute.sh``.
"""

import json
import os
import sys
import unittest

from tests.realhost import base
from tools import stock

OUT = os.path.join(stock.REPO, 'demo-output')


def say(*words):
    print(*words, file=sys.__stdout__, flush=True)


class ComputeDemo(base.RealHostTestBase):

    def test_demo(self):
        image = self.add_ipxe_image(base.TRIXIE_ISO, name='ipxe-boot')
        say('demo: Nova is up; compute driver ipxe.LibvirtDriver on',
            self.host.uri)
        since = self.mark()
        port = self.port(1)
        # The REST call a tenant makes: POST /v2.1/servers.
        server = self.api.post_server({'server': {
            'name': 'demo', 'imageRef': image, 'flavorRef': self.flavor(),
            'networks': [{'port': port['id']}]}})
        say('demo: POST /v2.1/servers -> server', server['id'])
        server = self._wait_for_state_change(server, 'ACTIVE')
        server['port'] = port
        request = self.wait_for_menu(server, since)
        os.makedirs(OUT, exist_ok=True)
        png = self.host.screenshot(self.domain_name(server),
                                   os.path.join(OUT, 'compute-console.png'))
        say('demo: server', server['id'], 'is', server['status'],
            'on a real libvirtd; its disks:')
        for disk in self.disks(server):
            say('demo:   %(device)-5s %(dev)s boot order %(boot)s  '
                '%(source)s' % disk)
        say('demo: the menu server saw GET', request['raw_path'])
        say('demo:   from', request['client'], 'with',
            request['headers'].get('User-Agent'))
        say('demo:   identity:', json.dumps(request['query'], sort_keys=True))
        say('demo: DHCP packets on the network:',
            len(self.host.dhcp.packets()))
        say('demo: console screenshot:', png)
        self._delete_server(server)
        say('demo: server deleted; the host is removed on exit')


def main():
    result = unittest.TextTestRunner(stream=sys.__stderr__).run(
        unittest.TestSuite([ComputeDemo('test_demo')]))
    return 0 if result.wasSuccessful() else 1


if __name__ == '__main__':
    sys.exit(main())
