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


"""The lab's DHCP sentinel and IPv6 router advertiser (the process side is
``menu_server.py dhcp`` and ``menu_server.py ra``)."""

import secrets
import sys

from tools.bootlab import errors
from tools.bootlab import helper


class RouterAdvertiser(helper.Helper):
    """Sends IPv6 router advertisements on the lab's bridges.

    With ``managed=True`` (M flag) iPXE's ``dhcp``/``ifconf`` starts
    DHCPv6; a static-only script must not.  Router lifetime 0: no default
    route is announced.
    """

    mode = 'ra'

    def __init__(self, lab, ifaces=None, managed=True, other=False,
                 prefixes=(), slaac=False, interval=0.5, name='ra'):
        super().__init__(lab, name)
        self.ifaces = list(ifaces if ifaces is not None else lab.bridges)
        if not self.ifaces:
            raise errors.LabError(
                'RouterAdvertiser needs at least one interface')
        self.managed, self.other, self.slaac = managed, other, slaac
        self.prefixes = list(prefixes)
        self.interval = interval

    def _argv(self):
        argv = ['--log', self.log_path, '--interval', str(self.interval)]
        for iface in self.ifaces:
            argv += ['--iface', iface]
        for prefix in self.prefixes:
            argv += ['--prefix', prefix]
        for flag in ('managed', 'other', 'slaac'):
            if getattr(self, flag):
                argv.append('--' + flag)
        return argv

    def sent(self):
        return len([r for r in self.records() if 'error' not in r])


class DhcpSentinel(helper.Helper):
    """Counts DHCPv4 (UDP 67) and DHCPv6 (UDP 547) packets; never answers.

    ``ifaces`` are joined to ff02::1:2 (default: all bridges of the lab at
    construction time).  Start it after the bridges exist.
    """

    mode = 'dhcp'

    def __init__(self, lab, ifaces=None, name='dhcp'):
        super().__init__(lab, name)
        self.ifaces = list(ifaces if ifaces is not None else lab.bridges)
        if not self.ifaces:
            raise errors.LabError('DhcpSentinel needs at least one interface')

    def _argv(self):
        argv = ['--log', self.log_path]
        for iface in self.ifaces:
            argv += ['--iface', iface]
        return argv

    def packets(self, family=None):
        """DHCP packets seen so far (dicts, see menu_server.py)."""
        return [p for p in self.records() if 'sync' not in p
                and (family is None or p['family'] == family)]

    def count(self, family=None):
        """Packets seen so far (family 4, 6 or None for both).

        Call ``sync()`` first for an exact figure after a boot ended.
        """
        return len(self.packets(family))

    def sync(self, timeout=10):
        """Wait until every packet that reached the sentinel is logged.

        Sends a marker over loopback (IPv4 and IPv6) from inside the
        namespace and waits for both to show up in the log.
        """
        token = secrets.token_hex(8)
        self.lab.run([sys.executable, helper.MENU_SERVER, 'sync', token])

        def find(records):
            fams = {r['family'] for r in records if r.get('sync') == token}
            return True if fams == {4, 6} else None
        self._wait('sync marker %s' % token, find, timeout)

    def wait_for_count(self, n=1, timeout=60, family=None, vm=None):
        """Wait until ``n`` packets were seen; return them."""
        def find(records):
            got = [p for p in records if 'sync' not in p
                   and (family is None or p['family'] == family)]
            return got if len(got) >= n else None
        return self._wait('%d DHCP packet(s)' % n, find, timeout, vm)
