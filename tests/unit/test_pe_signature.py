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

"""The Authenticode check Secure Boot relies on: pe_signed and
BaseIso.efi_loader_signed, on PE headers built here from the PE/COFF
specification's offsets (not from the code's own arithmetic)."""

import os
import struct
import subprocess

import fixtures
import pip._vendor.distlib as distlib

from nova_ipxe import capabilities
from nova_ipxe import iso
from tests import base
from tests import samples

PE32_PLUS = 0x20B
PE32 = 0x10B
# From the optional header's start (PE/COFF specification, "Optional
# Header Data Directories"): where NumberOfRvaAndSizes and the
# Certificate Table entry (data directory 5 of 16) are.
COUNT_AT = {PE32_PLUS: 108, PE32: 92}
CERTIFICATE_AT = {PE32_PLUS: 144, PE32: 128}
LFANEW = 0x80       # where this test puts the PE signature


def pe_file(magic=PE32_PLUS, cert=None, directories=16, size=4096,
            tail=b''):
    """A PE file's headers, and ``cert`` (offset, size) as its table."""
    data = bytearray(size)
    data[0:2] = b'MZ'
    struct.pack_into('<I', data, 0x3c, LFANEW)
    data[LFANEW:LFANEW + 4] = b'PE\0\0'
    optional = LFANEW + 4 + 20      # the signature, then the COFF header
    struct.pack_into('<H', data, optional, magic)
    struct.pack_into('<I', data, optional + COUNT_AT[magic], directories)
    if cert is not None:
        struct.pack_into('<II', data, optional + CERTIFICATE_AT[magic],
                         *cert)
    return bytes(data[:size - len(tail)]) + tail if tail else bytes(data)


class PeSignedTestCase(base.TestCase):

    def test_certificate_table_inside_the_file(self):
        for magic in (PE32_PLUS, PE32):
            self.assertTrue(capabilities.pe_signed(
                pe_file(magic, cert=(2048, 1024))), hex(magic))
            self.assertTrue(capabilities.pe_signed(
                pe_file(magic, cert=(2048, 2048))), 'ends at the end')
            self.assertFalse(capabilities.pe_signed(
                pe_file(magic, cert=(2048, 2049))), 'one byte past the end')
            self.assertFalse(capabilities.pe_signed(
                pe_file(magic, cert=(2048, 0))), 'empty table')
            self.assertFalse(capabilities.pe_signed(pe_file(magic)),
                             'no table')

    def test_the_other_format_offsets_are_not_read(self):
        # A PE32+ table written where a PE32 one would be is no table.
        data = bytearray(pe_file(PE32_PLUS))
        struct.pack_into('<II', data, LFANEW + 24 + CERTIFICATE_AT[PE32],
                         2048, 1024)
        self.assertFalse(capabilities.pe_signed(bytes(data)))

    def test_directory_count_must_reach_the_table(self):
        self.assertFalse(capabilities.pe_signed(
            pe_file(cert=(2048, 1024), directories=4)))
        self.assertTrue(capabilities.pe_signed(
            pe_file(cert=(2048, 1024), directories=5)))

    def test_not_a_pe(self):
        signed = pe_file(cert=(2048, 1024))
        self.assertFalse(capabilities.pe_signed(b'ZM' + signed[2:]))
        broken = bytearray(signed)
        broken[LFANEW:LFANEW + 4] = b'NE\0\0'
        self.assertFalse(capabilities.pe_signed(bytes(broken)))
        far = bytearray(signed)
        struct.pack_into('<I', far, 0x3c, 0xfffffff0)
        self.assertFalse(capabilities.pe_signed(bytes(far)))
        self.assertFalse(capabilities.pe_signed(b''))
        self.assertFalse(capabilities.pe_signed(b'MZ' + b'\0' * 10))

    def test_every_truncation_is_unsigned_never_an_error(self):
        signed = pe_file(cert=(300, 100), size=400)
        self.assertTrue(capabilities.pe_signed(signed))
        for end in range(len(signed)):
            self.assertFalse(capabilities.pe_signed(signed[:end]), end)

    def test_stock_trixie_loader_is_unsigned(self):
        self.assertFalse(capabilities.pe_signed(
            samples.trixie_file('ipxe.efi')))

    def test_real_authenticode_signatures(self):
        # Real Authenticode signatures, made by osslsigncode (not by the
        # layout the code reads), on a PE32+ (trixie's x86_64 ipxe.efi)
        # and a PE32 (pip's 32-bit Windows launcher): the two optional
        # header sizes the certificate table is found behind.
        tmp = self.useFixture(fixtures.TempDir()).path
        cert, key = samples.self_signed_cert(tmp)
        pe32 = os.path.join(os.path.dirname(distlib.__file__), 't32.exe')
        with open(pe32, 'rb') as f:
            pe32 = f.read()
        for name, data in (('PE32+', samples.trixie_file('ipxe.efi')),
                           ('PE32', pe32)):
            unsigned = os.path.join(tmp, name + '.unsigned')
            signed = os.path.join(tmp, name + '.signed')
            with open(unsigned, 'wb') as f:
                f.write(data)
            subprocess.run([samples.require_tool('osslsigncode'), 'sign',
                            '-certs', cert, '-key', key, '-in', unsigned,
                            '-out', signed], check=True,
                           capture_output=True)
            with open(signed, 'rb') as f:
                signed = f.read()
            self.assertFalse(capabilities.pe_signed(data), name)
            self.assertTrue(capabilities.pe_signed(signed), name)
            # A table that runs past the end of the file is no signature.
            self.assertFalse(capabilities.pe_signed(signed[:-16]), name)
        self.assertFalse(capabilities.pe_signed(b'MZ' + b'\0' * 10))


class EfiLoaderSignedTestCase(base.TestCase):

    def loader_iso(self, loader):
        img = samples.fat_image(os.path.join(self.tmp, 'efi.img'), {
            '/EFI/BOOT/BOOTX64.EFI': loader})
        with open(img, 'rb') as f:
            return iso.BaseIso(samples.boot_iso_bytes(efi=f.read()),
                               'signed.iso')

    def test_signed_loader_in_the_efi_image(self):
        # The layout takes a loader that names iPXE: the marker goes after
        # the certificate table, which covers it.
        loader = pe_file(cert=(2048, 2048), tail=b'iPXE autoexec.ipxe')
        base_iso = self.loader_iso(loader)
        self.assertEqual(iso.EFI_LOADER, base_iso.efi.loader)
        self.assertTrue(base_iso.efi_loader_signed())

    def test_unsigned_loader_in_the_efi_image(self):
        base_iso = self.loader_iso(pe_file(tail=b'iPXE autoexec.ipxe'))
        self.assertEqual(iso.EFI_LOADER, base_iso.efi.loader)
        self.assertFalse(base_iso.efi_loader_signed())

    def test_stock_isos(self):
        self.assertFalse(iso.BaseIso.from_path(
            samples.trixie_iso()).efi_loader_signed())
        self.assertFalse(iso.BaseIso.from_path(
            samples.bookworm_iso()).efi_loader_signed())

    def test_no_efi_entry(self):
        base_iso = iso.BaseIso(samples.boot_iso_bytes(), 'bios-only.iso')
        self.assertIsNone(base_iso.efi)
        self.assertFalse(base_iso.efi_loader_signed())
