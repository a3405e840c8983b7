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

"""Capabilities read from Debian's real iPXE binaries.

What each binary prints at boot is checked against this reading by
tests/functional/test_menus.py; here the reading itself and the build
refusals.
"""

import collections
import dataclasses
import json
import logging
import os
import struct
import subprocess
import sys

import fixtures
import hypothesis
from hypothesis import strategies as st
from testtools import content

from nova_ipxe import builder
from nova_ipxe import capabilities
from nova_ipxe import exception
from nova_ipxe import iso
from nova_ipxe import netdata
from tests import base
from tests import hostile
from tests import samples

BOOKWORM_FEATURES = ('DNS HTTP iSCSI NFS TFTP SRP AoE ELF MBOOT PXE bzImage '
                     'Menu PXEXT').split()
BOOKWORM_EFI_FEATURES = 'DNS HTTP iSCSI NFS TFTP SRP AoE EFI Menu'.split()
TRIXIE_FEATURES = ('VLAN DNS HTTP HTTPS iSCSI NFS SRP TFTP AoE ELF MBOOT PXE '
                   'bzImage Menu PXEXT').split()
TRIXIE_EFI_FEATURES = ('VLAN DNS HTTP HTTPS iSCSI NFS SRP TFTP AoE EFI '
                       'Menu').split()


def _xz_raw(stream):
    """What xz's own LZMA1 decoder makes of a raw iPXE stream.

    iPXE's zbin parameters; xz complains about bytes after the end
    marker, so its output, not its status, is compared.
    """
    return subprocess.run(
        ['xz', '--format=raw', '--lzma1=lc=2,lp=0,pb=0,dict=1MiB', '-dc'],
        input=stream, capture_output=True).stdout


def caps_of(path):
    return iso.BaseIso.from_path(path).capabilities()


class ReadTestCase(base.TestCase):

    def test_bookworm(self):
        caps = caps_of(samples.bookworm_iso())
        bios, uefi = caps['bios'], caps['uefi']
        self.assertEqual((capabilities.LKRN, '/ipxe.krn'),
                         (bios.format, bios.binary))
        self.assertEqual(BOOKWORM_FEATURES, list(bios.features))
        self.assertEqual(capabilities.PE, uefi.format)
        self.assertEqual(BOOKWORM_EFI_FEATURES, list(uefi.features))
        for c in (bios, uefi):
            self.assertEqual({'https': False, 'http': True, 'tftp': True,
                              'dns': True, 'vlan': False, 'ipv6': True},
                             c.summary)
            self.assertNotIn('vcreate', c.commands)
            self.assertNotIn('poweroff', c.commands)  # contributor/ipxe.rst
            self.assertLessEqual({'imgfetch', 'imgexec', 'ifopen', 'ifclose',
                                  'set', 'isset', 'iseq', 'inc', 'goto',
                                  'sanboot', 'reboot', 'exit'}, c.commands)

    def test_trixie(self):
        caps = caps_of(samples.trixie_iso())
        self.assertEqual(TRIXIE_FEATURES, list(caps['bios'].features))
        self.assertEqual(TRIXIE_EFI_FEATURES, list(caps['uefi'].features))
        for c in caps.values():
            self.assertEqual({'https': True, 'http': True, 'tftp': True,
                              'dns': True, 'vlan': True, 'ipv6': True},
                             c.summary)
            self.assertLessEqual({'vcreate', 'poweroff'}, c.commands)

    def test_genfsimg_layout(self):
        caps = caps_of(samples.genfsimg_iso(self.tmp))
        self.assertEqual(('/ipxe.lkrn', TRIXIE_FEATURES),
                         (caps['bios'].binary, list(caps['bios'].features)))
        self.assertEqual('/esp.img:/EFI/BOOT/BOOTX64.EFI',
                         caps['uefi'].binary)
        self.assertEqual(TRIXIE_EFI_FEATURES, list(caps['uefi'].features))

    def test_lzma_offset_found_not_assumed(self):
        # Where the stream starts is checked with an independent decoder
        # (xz), not with numbers read off one build.
        for data in (open(samples.require(samples.BOOKWORM_LKRN),
                          'rb').read(), samples.trixie_file('ipxe.lkrn')):
            offset, image = capabilities.lkrn_payload(data)
            self.assertEqual(image, _xz_raw(data[offset:]))
            self.assertGreater(len(image), len(data))
            # The same bytes behind a longer prefix are still found.
            shifted = data[:offset] + b'\xff' * 100 + data[offset:]
            self.assertEqual((offset + 100, image),
                             capabilities.lkrn_payload(shifted))
            self.assertEqual(capabilities.read(data, 'x').features,
                             capabilities.read(shifted, 'x').features)

    def test_unreadable_is_unknown(self):
        with open(samples.require(samples.BOOKWORM_LKRN), 'rb') as f:
            lkrn = f.read()
        for data in (b'', b'MZ' + b'\0' * 100, lkrn[:4000],
                     lkrn[:4692] + b'\0' * 5000, os.urandom(20000)):
            caps = capabilities.read(data, 'x')
            self.assertFalse(caps.readable)
            self.assertTrue(caps.reason)
            self.assertEqual([], capabilities.problems(
                caps, 'https://h/m', None, 'chain x'))

    def test_pointers_are_whole_aligned_words(self):
        # The search looks for a name without its NUL and for a pointer's
        # non-zero bytes only; what it then finds must still be a whole,
        # aligned word pointing at a NUL-terminated name.
        for ptr, pack in ((8, '<Q'), (4, '<I')):
            base = 0x10000
            strings = b'DNSSEC\0TFTP\0DNS\0'
            tftp, dns = base + 7, base + 12
            words = [
                tftp + 1,                # "FTP": the tail of "TFTP"
                dns,
                dns | (0x7f << 8 * (ptr - 1)),   # dns's low bytes only
                base,                    # "DNSSEC" is not "DNS"
            ]
            image = bytearray(strings + b'\0' * (32 - len(strings)))
            for w in words:
                image += struct.pack(pack, w)
            # dns's bytes once more, unaligned.
            image += b'\0' + struct.pack(pack, dns) + b'\0' * (ptr - 1)
            img = capabilities._Image(bytes(image), base, ptr)
            self.assertEqual([32], img.pointers_to(b'FTP'))
            self.assertEqual([32 + ptr], img.pointers_to(b'DNS'))
            self.assertEqual([32 + 3 * ptr], img.pointers_to(b'DNSSEC'))
            self.assertEqual([], img.pointers_to(b'DNSSE'))

    def test_inspect_shows_each_path(self):
        out = subprocess.run(
            [sys.executable, '-m', 'nova_ipxe.cli', 'inspect', '--json',
             samples.bookworm_iso()], capture_output=True, text=True,
            cwd=samples.REPO, check=True).stdout
        info = json.loads(out)
        self.assertFalse(info['bios']['ipxe']['https'])
        self.assertEqual(BOOKWORM_FEATURES, info['bios']['ipxe']['features'])
        self.assertEqual(BOOKWORM_EFI_FEATURES,
                         info['uefi']['ipxe']['features'])
        text = subprocess.run(
            [sys.executable, '-m', 'nova_ipxe.cli', 'inspect',
             samples.trixie_iso()], capture_output=True, text=True,
            cwd=samples.REPO, check=True).stdout
        self.assertIn('BIOS iPXE: /ipxe.krn (lkrn (LZMA)): features VLAN',
                      text)
        self.assertIn('HTTPS yes, IPv6 yes, DNS yes, VLAN yes', text)


class NeedsTestCase(base.TestCase):

    def setUp(self):
        super().setUp()
        self.trixie = caps_of(samples.trixie_iso())['bios']
        self.v4 = netdata.parse(self.network_data()).nics[0]
        self.v6_only = dataclasses.replace(self.v4, ipv4=None, gateway4=None)
        self.script = builder.render_script(builder.Instance(
            network_data=self.network_data()), self.conf).text

    def test_script_commands(self):
        self.assertEqual(
            {'echo', 'set', 'isset', 'iseq', 'inc', 'goto', 'ifclose',
             'ifopen', 'imgfetch', 'imgexec', 'sleep', 'sanboot', 'exit'},
            capabilities.script_commands(self.script))

    def test_each_need(self):
        no_v6 = dataclasses.replace(self.trixie, ipv6=False)
        no_dns = dataclasses.replace(self.trixie, features=tuple(
            f for f in self.trixie.features if f != 'DNS'))
        no_exec = dataclasses.replace(
            self.trixie, commands=self.trixie.commands - {'imgexec'})
        for caps, url, nic, expected in (
                (no_v6, 'http://[2001:db8::1]/m', self.v4,
                 'the boot menu URL is on the IPv6 address 2001:db8::1 but '
                 'it has no IPv6'),
                (no_v6, 'http://192.0.2.1/m', self.v6_only,
                 'the menu NIC fa:16:3e:12:34:56 has only an IPv6 address '
                 'but it has no IPv6'),
                (no_dns, 'http://boot.example/m', self.v4,
                 'the boot menu URL names the host boot.example but it has '
                 'no DNS'),
                (no_exec, 'http://192.0.2.1/m', self.v4,
                 'the script runs imgexec, which it lacks')):
            problems = capabilities.problems(caps, url, nic, self.script)
            self.assertEqual(1, len(problems), problems)
            self.assertIn(expected, problems[0])
        # What it has is not a problem; settings in the host are not known
        # before boot.
        for url in ('https://[2001:db8::1]/m', 'tftp://boot.example/m',
                    'http://${next-server}/m'):
            self.assertEqual([], capabilities.problems(
                self.trixie, url, self.v6_only, self.script))


class BuildRefusalTestCase(base.TestCase):

    def build(self, source, url, **flags):
        self.flags(boot_menu_url=url, **flags)
        out = os.path.join(self.tmp, 'out.iso')
        return out, lambda: builder.build_iso(source, builder.Instance(
            network_data=self.network_data()), out, self.conf)

    def test_https_menu_refused_for_bookworm(self):
        out, build = self.build(samples.bookworm_iso(),
                                'https://boot.example/m')
        e = self.assertRaises(exception.IpxeCapabilityMissing, build)
        self.assertEqual(exception.OPERATOR, e.category)
        self.assertIn('BIOS iPXE (/ipxe.krn)', str(e))
        self.assertIn('is https:// but it has no HTTPS (features: DNS HTTP',
                      str(e))
        self.assertNotIn('boot.example', e.safe_message)
        self.assertEqual([], os.listdir(self.tmp))  # nothing left behind

    def test_https_menu_builds_for_trixie(self):
        out, build = self.build(samples.trixie_iso(), 'https://boot.example/m',
                                uefi='require')
        result, _ = build()
        self.assertTrue(result.uefi)
        self.assertTrue(os.path.isfile(out))

    def test_genfsimg_https(self):
        source = samples.genfsimg_iso(self.tmp)
        _, build = self.build(source, 'https://boot.example/m')
        self.assertTrue(build()[0].bios)


def mixed_iso(tmp):
    """BIOS: trixie's iPXE (HTTPS). UEFI: bookworm's, without HTTPS.

    Bookworm's EFI iPXE ignores autoexec.ipxe; the name is appended so
    that the ISO reader takes it for one that runs the script (it is
    never booted).
    """
    isolinux, ldlinux, _ = samples.bookworm_parts()
    with open(samples.require('/boot/ipxe.efi'), 'rb') as f:
        loader = f.read() + b'autoexec.ipxe\0'
    esp = samples.fat_image(os.path.join(tmp, 'esp.img'), {
        '/EFI/BOOT/BOOTX64.EFI': loader}, size_kib=2048)
    with open(esp, 'rb') as f:
        esp = f.read()
    cfg = b'DEFAULT ipxe.lkrn\nLABEL ipxe.lkrn\n KERNEL ipxe.lkrn\n'
    return samples.write_iso(os.path.join(tmp, 'mixed.iso'), {
        ('/ISOLINUX.BIN;1', '/isolinux.bin'): isolinux,
        ('/LDLINUX.C32;1', '/ldlinux.c32'): ldlinux,
        ('/ISOLINUX.CFG;1', '/isolinux.cfg'): cfg,
        ('/IPXE.LKRN;1', '/ipxe.lkrn'):
            samples.trixie_file('ipxe.lkrn'),
        ('/ESP.IMG;1', '/esp.img'): esp,
    }, bios='/ISOLINUX.BIN;1', efi='/ESP.IMG;1')


class PerBootPathTestCase(base.TestCase):

    build = BuildRefusalTestCase.build

    def setUp(self):
        super().setUp()
        self.source = mixed_iso(self.tmp)
        caps = caps_of(self.source)
        self.assertTrue(caps['bios'].has('HTTPS'))
        self.assertFalse(caps['uefi'].has('HTTPS'))

    def test_auto_drops_the_unfit_uefi_entry(self):
        logger = self.useFixture(fixtures.FakeLogger(level=logging.WARNING))
        _, build = self.build(self.source, 'https://boot.example/m')
        result, _ = build()
        self.assertEqual((True, False), (result.bios, result.uefi))
        self.assertIn('its UEFI iPXE (/esp.img:/EFI/BOOT/BOOTX64.EFI) '
                      'cannot boot the menu', logger.output)
        self.assertIn('Dropping the UEFI boot entry', logger.output)

    def test_require_refuses(self):
        _, build = self.build(self.source, 'https://boot.example/m',
                              uefi='require')
        e = self.assertRaises(exception.IpxeCapabilityMissing, build)
        self.assertIn('UEFI iPXE', str(e))

    def test_http_keeps_both(self):
        _, build = self.build(self.source, 'http://boot.example/m',
                              uefi='require')
        self.assertTrue(build()[0].uefi)


class WorkBudgetTestCase(base.TestCase):
    """Reading a hostile binary costs a bounded amount of work.

    The work is counted by the budget itself (bytes decoded, occurrences
    examined, bytes scanned and copied), not timed.
    """

    # How far one step may go past a limit before the budget sees it.
    STEP = {'decoded': 1, 'occurrences': 1,
            'scanned': capabilities.MAX_IMAGE,
            'copied': capabilities.MAX_IMAGE}

    def assertWithin(self, budget):
        for kind, spent in budget.spent.items():
            self.assertLessEqual(spent, budget.limits[kind] + self.STEP[kind],
                                 kind)

    def test_hostile_binaries_end_unknown_within_the_budget(self):
        for name, (make, what) in hostile.CASES.items():
            budget = capabilities.WorkBudget()
            caps = capabilities.read(make(), name, budget)
            self.assertFalse(caps.readable, name)
            self.assertTrue(caps.reason, name)
            self.assertWithin(budget)
            # Unknown is harmless: no build is refused on its account.
            self.assertEqual([], capabilities.problems(
                caps, 'https://h/m', None, 'chain x'))

    def test_real_builds_need_a_small_part_of_it(self):
        for path in (samples.BOOKWORM_LKRN, samples.BOOKWORM_EFI,
                     samples.trixie_file('ipxe.lkrn'),
                     samples.trixie_file('ipxe.efi')):
            data = (open(samples.require(path), 'rb').read()
                    if isinstance(path, str) else path)
            budget = capabilities.WorkBudget()
            self.assertTrue(capabilities.read(data, 'x', budget).readable)
            for kind, spent in budget.spent.items():
                self.assertLess(spent, budget.limits[kind] / 10, kind)

    def test_every_probe_is_counted(self):
        # 12 KiB of zeros where a stream may start: each probe decodes
        # zeros; the probes together stop at the limit, not per probe.
        budget = capabilities.WorkBudget({'decoded': 1 << 20})
        caps = capabilities.read(hostile.zero_run(), 'x', budget)
        self.assertIn('bytes of LZMA output', caps.reason)
        self.assertEqual(1 << 20, budget.spent['decoded'] - 1)

    def test_each_table_walked_once(self):
        # A command table of n entries all naming "chain": n pointers to
        # the name, one table.  Walking it once per pointer read n * n
        # words; once in all, about 2 n.
        n = 3000
        names = b'\0chain\0'
        image = names + b'\0' * (16 - len(names))
        image += struct.pack('<II', 1, 0) * n + b'\0' * 64
        budget = capabilities.WorkBudget()
        img = capabilities._Image(image, 0, 4, budget)
        self.assertEqual(frozenset({'chain'}), img.commands())
        self.assertLess(budget.spent['occurrences'], 4 * n)

    def test_pe_sections_bounded(self):
        caps = capabilities.read(hostile.pe_sections(20000), 'x')
        self.assertIn('20000 PE sections, more than 96', caps.reason)
        budget = capabilities.WorkBudget()
        caps = capabilities.read(hostile.pe_overlapping(), 'x', budget)
        self.assertIn('bytes of PE sections', caps.reason)
        self.assertWithin(budget)


class TruncatedAndMutatedTestCase(base.TestCase):
    """No parser of tenant bytes raises an untyped error."""

    def setUp(self):
        super().setUp()
        self.counts = collections.Counter()

    def summarise(self):
        summary = ', '.join('%s %d' % kv for kv in sorted(
            self.counts.items()))
        self.addDetail('property-counts', content.text_content(summary))
        name = self.id().rsplit('.', 1)[-1]
        sys.stderr.write('%s: %s\n' % (name, summary))

    @hypothesis.settings(max_examples=60, deadline=None,
                         suppress_health_check=list(hypothesis.HealthCheck))
    @hypothesis.given(st.data())
    def _zero_runs(self, data):
        # Zero runs of any length at any place in the probe window, and
        # a tail of zeros or not: every reading ends within its budget,
        # readable or unknown.  A small budget, so that the examples
        # reach it.
        with open(samples.require(samples.BOOKWORM_LKRN), 'rb') as f:
            lkrn = f.read()
        at = data.draw(st.integers(0x280, 16 * 1024))
        run = data.draw(st.integers(1, 16 * 1024))
        tail = data.draw(st.sampled_from([b'', b'\0' * (256 * 1024)]))
        budget = capabilities.WorkBudget({'decoded': 4 << 20})
        caps = capabilities.read(lkrn[:at] + b'\0' * run + lkrn[at:] +
                                 tail, 'x', budget)
        self.assertLessEqual(budget.spent['decoded'], (4 << 20) + 1)
        if caps.readable:
            self.counts['read'] += 1
        elif 'bytes of LZMA output' in caps.reason:
            self.counts['stopped by the budget'] += 1
        else:
            self.counts['unknown otherwise'] += 1

    def test_zero_runs_reach_the_budget(self):
        self._zero_runs()
        self.summarise()
        self.assertGreater(self.counts['stopped by the budget'], 0)

    def test_every_truncated_pe_header_is_unknown(self):
        for data in hostile.pe_truncations():
            caps = capabilities.read(data, 'x')
            self.assertFalse(caps.readable, len(data))

    @hypothesis.settings(max_examples=300, deadline=None,
                         suppress_health_check=list(hypothesis.HealthCheck))
    @hypothesis.given(st.data())
    def test_mutated_headers_never_raise(self, data):
        with open(samples.require(samples.BOOKWORM_EFI), 'rb') as f:
            efi = bytearray(f.read(4096))
        pe = struct.unpack_from('<I', efi, 0x3c)[0]
        for _ in range(data.draw(st.integers(1, 8))):
            at = data.draw(st.integers(0, pe + 24 + 240 + 40 * 6))
            efi[at] = data.draw(st.integers(0, 255))
        cut = data.draw(st.integers(0, len(efi)))
        budget = capabilities.WorkBudget()
        caps = capabilities.read(bytes(efi[:cut]), 'x', budget)
        self.assertIsInstance(caps, capabilities.Capabilities)
