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

"""Functional tests of the boot lab (tools/bootlab/) with real QEMU.

Each test boots stock Debian iPXE (``/boot/ipxe.lkrn`` with an ``#!ipxe``
initrd, or ``/usr/lib/ipxe/ipxe.iso``) under TCG on a private network
namespace with no DHCP server.  Missing packages are an error, not a skip.

Run: ``python -m testtools.run tests.labs.test_bootlab`` (as root).
Timings of every boot are attached to each test as the ``timings`` detail.
"""

import json
import os
import select
import struct
import subprocess
import sys
import zlib

import fixtures
from testtools import content

from tests import base
from tests import samples
from tools import bootlab
BOOT_TIMEOUT = 120  # TCG; a BIOS boot to the menu takes about 2 s here
BRIDGE_V4 = '192.0.2.1/24'
BRIDGE_V6 = '2001:db8::1/64'
VM_V4 = '192.0.2.10'
VM_V6 = '2001:db8::10'


def static_script(menu_url, marker='bootlab: static script'):
    return '\n'.join([
        '#!ipxe',
        'echo %s' % marker,
        'set net0/ip %s' % VM_V4,
        'set net0/netmask 255.255.255.0',
        'set net0/gateway 192.0.2.1',
        'ifopen net0 || goto failed',
        'chain %s?mac=${net0/mac} || goto failed' % menu_url,
        ':failed',
        'echo bootlab: chain failed',
        'sleep 1',
        'reboot',
        '',
    ])


def png_pixels_vary(path):
    """True if the decompressed image data holds more than one value."""
    with open(path, 'rb') as f:
        data = f.read()
    pos, idat = 8, b''
    while pos < len(data):
        length, ctype = struct.unpack('>I4s', data[pos:pos + 8])
        if ctype == b'IDAT':
            idat += data[pos + 8:pos + 8 + length]
        pos += 12 + length
    raw = zlib.decompress(idat)
    return len(set(raw)) > 2


class BootLabTestCase(base.TestCase):

    def setUp(self):
        super().setUp()
        bootlab.check_prerequisites(kernel=True)
        self.timings = {}
        self.addDetail('timings', content.Content(
            content.UTF8_TEXT,
            lambda: [json.dumps(self.timings, indent=1).encode()]))
        self.lab = self.useFixture(bootlab.LabFixture()).lab
        self.bridge = self.lab.add_bridge('br0', ipv4=BRIDGE_V4,
                                          ipv6=BRIDGE_V6)
        self.lab.add_tap('tap0', 'br0')
        self.mac = bootlab.unique_mac()
        self.dhcp = bootlab.DhcpSentinel(self.lab).start()

    def menu(self, bind='192.0.2.1', name='menu', body='#!ipxe\nreboot\n'):
        return bootlab.MenuServer(self.lab, bind, 0, {'/menu': body},
                                  name=name).start()

    def vm(self, script=None, **kw):
        if script is not None:
            kw['kernel'] = bootlab.IPXE_LKRN
            kw['initrd'] = self.lab.write_file('script-%s.ipxe'
                                               % kw.get('name', 'vm'),
                                               script)
        kw.setdefault('nics', [bootlab.Nic('tap0', self.mac)])
        return bootlab.Vm(self.lab, **kw)

    def record(self, name, vm, first_event=None):
        self.timings[name] = {
            'wall_time_s': round(vm.result.wall_time, 3)
            if vm.result else None,
            'first_event_after_s': round(first_event - vm.started_at, 3)
            if first_event else None,
            'exit': vm.describe_exit(),
        }


class TestStaticBoot(BootLabTestCase):

    def test_static_ipv4_script_reaches_menu_without_dhcp(self):
        menu = self.menu()
        vm = self.vm(static_script(menu.url_for('/menu')))
        self.assertIn('-accel', vm.command())
        vm.start()
        request = menu.wait_for('/menu', timeout=BOOT_TIMEOUT, vm=vm)
        result = vm.wait(BOOT_TIMEOUT)
        self.record('static_ipv4', vm, request['time'])

        self.assertEqual(VM_V4, request['client'])
        self.assertEqual(self.mac, request['query']['mac'])
        self.assertTrue(request['headers']['User-Agent'].startswith('iPXE/'))
        self.assertEqual(200, request['status'])
        self.assertFalse(result.timed_out)
        self.assertEqual(0, result.returncode, result.stderr)
        self.assertTrue(result.ok)
        self.assertGreater(request['time'], result.started_at)
        self.assertLess(request['time'], result.ended_at)
        # SeaBIOS mirrors the iPXE console to serial (etc/sercon-port).
        self.assertIn('bootlab: static script', result.serial_clean)
        self.assertIn('iPXE', result.serial_clean)
        self.dhcp.sync()
        self.assertEqual(0, self.dhcp.count())
        self.assertEqual([request], menu.requests())

    def test_static_ipv6_script_ignores_managed_ra(self):
        # A router advertising M (use DHCPv6) is on the link; a static
        # script must still not send any DHCP.
        ra = bootlab.RouterAdvertiser(self.lab, managed=True, other=True,
                                      prefixes=['2001:db8::/64']).start()
        menu6 = self.menu(bind='2001:db8::1', name='menu6')
        script = '\n'.join([
            '#!ipxe',
            'set net0/ip6 %s' % VM_V6,
            'set net0/len6 64',
            'set net0/gateway6 2001:db8::1',
            'ifopen net0 || goto failed',
            'chain %s || goto failed' % menu6.url_for('/menu'),
            ':failed',
            'sleep 1',
            'reboot',
            '',
        ])
        vm = self.vm(script).start()
        request = menu6.wait_for('/menu', timeout=BOOT_TIMEOUT, vm=vm)
        result = vm.wait(BOOT_TIMEOUT)
        self.record('static_ipv6', vm, request['time'])

        self.assertEqual(VM_V6, request['client'])
        self.assertEqual(0, result.returncode)
        self.assertGreater(ra.sent(), 0)
        self.dhcp.sync()
        self.assertEqual(0, self.dhcp.count())


class TestDhcpSentinel(BootLabTestCase):

    def dhcp_boot(self, family):
        """Boot a guest that runs dhcp; its first DHCPv``family`` packets."""
        vm = self.vm('#!ipxe\ndhcp || echo bootlab: dhcp failed\nreboot\n')
        vm.start()
        packets = self.dhcp.wait_for_count(1, timeout=BOOT_TIMEOUT,
                                           family=family, vm=vm)
        vm.stop()
        self.record('dhcpv%d' % family, vm, packets[0]['time'])
        return packets

    def test_sentinel_sees_dhcpv4_discover(self):
        packets = self.dhcp_boot(4)
        self.assertEqual('DHCPDISCOVER', packets[0]['msg_type'])
        self.assertEqual(self.mac, packets[0]['chaddr'])
        self.assertEqual('0.0.0.0', packets[0]['src'])
        self.assertGreater(self.dhcp.count(), 0)

    def test_sentinel_sees_dhcpv6_solicit(self):
        # iPXE starts DHCPv6 only when a router advertisement says so.
        bootlab.RouterAdvertiser(self.lab, managed=True).start()
        packets = self.dhcp_boot(6)
        self.assertEqual('SOLICIT', packets[0]['msg_type'])
        self.assertTrue(packets[0]['src'].startswith('fe80::'))
        self.assertGreater(self.dhcp.count(6), 0)

    def test_stock_iso_bios_autoboots_with_dhcp(self):
        bootlab.check_prerequisites(iso=True)
        vm = self.vm(cdrom=bootlab.IPXE_ISO, name='iso-bios').start()
        packets = self.dhcp.wait_for_count(1, timeout=BOOT_TIMEOUT, vm=vm)
        vm.stop()
        self.record('stock_iso_bios', vm, packets[0]['time'])
        self.assertIn('ISOLINUX', vm.serial_text(clean=True))

    def test_stock_iso_uefi_autoboots_with_dhcp(self):
        bootlab.check_prerequisites(iso=True, uefi=True)
        vm = self.vm(cdrom=bootlab.IPXE_ISO, firmware='uefi',
                     name='iso-uefi').start()
        packets = self.dhcp.wait_for_count(1, timeout=BOOT_TIMEOUT, vm=vm)
        result = vm.stop()
        self.record('stock_iso_uefi', vm, packets[0]['time'])
        self.assertTrue(result.stopped)
        self.assertFalse(result.ok)
        self.assertIn('iPXE', result.serial_clean)
        argv = result.argv
        self.assertIn('if=pflash,format=raw,unit=0,readonly=on,file=%s'
                      % bootlab.OVMF_CODE, argv)
        # The variable store is a private copy in the lab.
        self.assertTrue(os.path.exists(
            self.lab.path('ovmf-vars-iso-uefi.fd')))


class TestScreenshot(BootLabTestCase):

    def test_screenshot_is_a_png(self):
        vm = self.vm('#!ipxe\necho bootlab: ready for screenshot\n'
                     'sleep 60\nreboot\n').start()
        vm.wait_serial('bootlab: ready for screenshot', timeout=BOOT_TIMEOUT)
        path = self.lab.path('screen.png')
        width, height = vm.screenshot(path)
        vm.stop()
        self.record('screenshot', vm)
        with open(path, 'rb') as f:
            head = f.read(33)
        self.assertEqual(b'\x89PNG\r\n\x1a\n', head[:8])
        self.assertEqual(b'IHDR', head[12:16])
        self.assertEqual((width, height), struct.unpack('>II', head[16:24]))
        self.assertEqual((720, 400), (width, height))  # VGA text mode
        self.assertTrue(png_pixels_vary(path), 'screenshot is blank')


class TestTimeout(BootLabTestCase):

    def test_wait_kills_after_timeout(self):
        # The script sleeps for an hour: only the kill ends it.
        vm = self.vm('#!ipxe\nsleep 3600\n').start()
        result = vm.wait(timeout=3)
        self.assertTrue(result.timed_out)
        self.assertFalse(result.ok)
        self.assertFalse(vm.proc.poll() is None)

    def test_wait_for_fails_fast_when_vm_ends(self):
        menu = self.menu()
        vm = self.vm('#!ipxe\nreboot\n').start()
        # An error that says the VM ended, not that the wait timed out
        # (LabTimeout): it was not waited out.
        e = self.assertRaises(bootlab.LabError, menu.wait_for, '/menu',
                              timeout=BOOT_TIMEOUT, vm=vm)
        self.assertNotIsInstance(e, bootlab.LabTimeout)
        self.assertIsNotNone(vm.proc.poll())
        self.assertIn('ended', str(e))
        self.assertIn('requests seen: none', str(e))


class TestLabCleanup(base.TestCase):

    def setUp(self):
        super().setUp()
        bootlab.check_prerequisites()

    def test_namespace_gone_after_with_block(self):
        with bootlab.Lab() as lab:
            name = lab.name
            lab.add_bridge('br0', ipv4=BRIDGE_V4)
            lab.add_tap('tap0', 'br0')
            self.assertTrue(lab.exists)
            self.assertIn('192.0.2.1/24',
                          lab.run(['ip', '-4', 'addr', 'show', 'br0']).stdout)
            workdir = lab.workdir
        self.assertFalse(os.path.exists('/run/netns/' + name))
        self.assertFalse(os.path.exists(workdir))
        # Taps and bridges went with the namespace, not to the host.
        host_links = subprocess.run(['ip', '-o', 'link'], capture_output=True,
                                    text=True).stdout
        self.assertNotIn(' tap0:', host_links)
        lab.cleanup()  # a second cleanup is harmless

    def test_namespace_gone_after_exception(self):
        holder = {}

        def body():
            with bootlab.Lab() as lab:
                holder['lab'] = lab
                lab.add_bridge('br0', ipv4=BRIDGE_V4)
                holder['proc'] = lab.popen(['sleep', '300'])
                raise RuntimeError('boom')
        self.assertRaises(RuntimeError, body)
        lab = holder['lab']
        self.assertFalse(lab.exists)
        self.assertIsNotNone(holder['proc'].poll())
        self.assertRaises(bootlab.LabError, lab.run, ['true'])

    def test_fixture_cleanup_removes_namespace(self):
        fixture = bootlab.LabFixture()
        fixture.setUp()
        try:
            name = fixture.lab.name
            self.assertTrue(fixture.lab.exists)
            self.assertIn('bootlab-logs', fixture.getDetails())
        finally:
            fixture.cleanUp()
        self.assertFalse(os.path.exists('/run/netns/' + name))

    def lab_owner(self, code):
        """A lab owner process: returns it and the words it printed.

        ``code`` sets up a Lab, starts a sleep in it and prints one line;
        then the owner sleeps until the test signals it.
        """
        code = ('import time\n'
                'from tools import bootlab\n' + code +
                'time.sleep(300)\n')
        proc = subprocess.Popen([sys.executable, '-c', code], cwd=samples.REPO,
                                stdout=subprocess.PIPE, text=True)
        self.addCleanup(proc.kill)
        return proc, proc.stdout.readline().split()

    def test_namespace_gone_after_sigterm(self):
        proc, (name,) = self.lab_owner(
            'lab = bootlab.Lab().setup()\n'
            'lab.add_bridge("br0", ipv4="192.0.2.1/24")\n'
            'lab.popen(["sleep", "300"])\n'
            'print(lab.name, flush=True)\n')
        self.assertTrue(name.startswith('nipxe-'), name)
        self.assertTrue(os.path.exists('/run/netns/' + name))
        proc.terminate()
        self.assertEqual(128 + 15, proc.wait(timeout=30))
        self.assertFalse(os.path.exists('/run/netns/' + name))

    def test_reap_stale_after_sigkill(self):
        proc, (name, child, workdir) = self.lab_owner(
            'lab = bootlab.Lab(keep_workdir=False).setup()\n'
            'child = lab.popen(["sleep", "300"])\n'
            'print(lab.name, child.pid, lab.workdir, flush=True)\n')
        proc.kill()
        proc.wait(timeout=30)
        self.assertTrue(os.path.exists('/run/netns/' + name))
        # The lab's processes die with their owner (PR_SET_PDEATHSIG):
        # the kernel says so through a pidfd, which becomes readable when
        # the process ends (reaped or not).
        try:
            pidfd = os.pidfd_open(int(child))
        except ProcessLookupError:
            pidfd = None    # already gone and reaped
        if pidfd is not None:
            self.addCleanup(os.close, pidfd)
            # A bound for a test gone wrong (the sleep lasts 300 s).
            ready, _, _ = select.select([pidfd], [], [], 60)
            self.assertEqual([pidfd], ready,
                             'pid %s outlived its lab owner' % child)
        bootlab.reap_stale()  # (another lab's setup may have reaped it)
        self.assertFalse(os.path.exists('/run/netns/' + name))
        self.assertFalse(os.path.exists(workdir))


class TestHelpers(base.TestCase):

    def test_prerequisite_error_names_debian_package(self):
        self.useFixture(fixtures.MonkeyPatch('tools.bootlab.vm.OVMF_CODE',
                                             '/nonexistent/OVMF_CODE.fd'))
        e = self.assertRaises(bootlab.PrerequisiteError,
                              bootlab.check_prerequisites, uefi=True)
        self.assertIn('Debian package ovmf', str(e))
        self.assertIn('apt-get install --no-install-recommends ovmf', str(e))

    def test_documentation_addresses_only(self):
        for ok in ('192.0.2.1/24', '198.51.100.7/25', '203.0.113.9/32',
                   '2001:db8::1/64', '2001:db8:1::1/48'):
            bootlab.check_documentation_address(ok)
        for bad in ('10.0.0.1/24', '192.0.2.1/16', 'fd00::1/64',
                    '192.0.2.1', 'nonsense'):
            self.assertRaises(bootlab.LabError,
                              bootlab.check_documentation_address, bad)

    def test_unique_macs(self):
        macs = bootlab.unique_macs(50)
        self.assertEqual(50, len(set(macs)))
        for mac in macs:
            self.assertRegex(mac, r'^fa:16:3e(:[0-9a-f]{2}){3}$')

    def test_clean_serial(self):
        self.assertEqual('Press.net0 X\n', bootlab.clean_serial(
            '\x1b[=3hPress...\x08 \x08\x08 \x08net0 \x1b[0;1mX\x1b[0m\r\n'))
