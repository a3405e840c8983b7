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

"""Peak memory of ``ipxe.XenAPIDriver`` spawns from a large iPXE ISO.

Nova 21.2.4's own XenAPI test harness (its fake XAPI, fake Glance, fake
DB) spawns servers from an iPXE ISO padded to ``--size-mib`` (default 60)
with the driver loaded through the shim, as tests/nova21 does; only the
HTTP upload into the VDI is replaced, by a function that reads what the
driver sends (bytes, or the file it streams) and drops it.

For each spawn the process's peak RSS is reset (``/proc/self/clear_refs``)
and read back (``VmHWM``) around ``driver.spawn``: the figure is how far
above the RSS before the spawn the process went.  The first spawn fetches
the image, the next ones find it cached.

Run from the repository root with Nova 21's venv (tools/install-nova21.sh)::

    .venv-nova21/bin/python bench/xenapi_spawn_memory.py [--size-mib 60]
"""

import argparse
import hashlib
import io
import os
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from nova import objects  # noqa: E402
from nova.tests.unit.image import fake as fake_image  # noqa: E402
from nova.tests.unit.virt.xenapi import test_xenapi  # noqa: E402
from nova.virt import driver as virt_driver  # noqa: E402
from nova.virt import fake  # noqa: E402
from nova.virt.xenapi import fake as xenapi_fake  # noqa: E402
import testtools  # noqa: E402

from nova_ipxe import conf as ipxe_conf  # noqa: E402
from tests import samples  # noqa: E402

IMAGE = 'a0b1c2d3-e4f5-4a6b-8c7d-9e0f1a2b3c4d'
REAL_DOWNLOAD = fake_image._FakeImageService.download
MiB = 1024 * 1024


def padded_iso(size_mib, directory):
    """The bookworm iPXE ISO with a random file making it ``size_mib``."""
    source = samples.bookworm_iso()
    pad = os.path.join(directory, 'pad.bin')
    with open(pad, 'wb') as f:
        f.write(os.urandom(size_mib * MiB - os.path.getsize(source)
                           - 64 * 1024))
    out = os.path.join(directory, 'big.iso')
    subprocess.run(['xorriso', '-indev', source, '-outdev', out,
                    '-boot_image', 'any', 'replay', '-map', pad, '/PAD.BIN',
                    '-commit'], check=True, capture_output=True)
    with open(out, 'rb') as f:
        return f.read()


def status(field):
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(field + ':'):
                return int(line.split()[1]) * 1024
    raise KeyError(field)


def reset_peak():
    with open('/proc/self/clear_refs', 'w') as f:
        f.write('5')


def _drop_upload(xapi, vdi_ref, data):
    if hasattr(data, 'read'):
        while data.read(MiB):
            pass
    else:
        bytes(data)


def _vbd_insert(self, _session, vbd_ref, vdi_ref):
    # As in tests/nova21: Nova's fake forgets the VDI's back reference.
    vbd = xenapi_fake.get_record('VBD', vbd_ref)
    xenapi_fake.get_record('VDI', vdi_ref)['VBDs'].append(vbd_ref)
    vbd.update(empty=False, VDI=vdi_ref)


class SpawnMemory(test_xenapi.XenAPIVMTestCase):
    """Nova 21's harness around the spawns; not a test of its own."""

    iso = None
    spawns = 3
    results = []

    def setUp(self):
        super().setUp()
        ipxe_conf.register_opts(ipxe_conf.CONF)
        cache_dir = tempfile.mkdtemp(prefix='nipxe-bench-cache-')
        self.addCleanup(subprocess.run, ['rm', '-rf', cache_dir])
        self.flags(boot_menu_url='http://192.0.2.1/menu.ipxe',
                   cache_dir=cache_dir, cache_max_size=4 * 1024 * MiB,
                   max_iso_size=1024 * MiB, group='ipxe')
        self.stub_out('nova.tests.unit.image.fake._FakeImageService.'
                      'download', REAL_DOWNLOAD)
        self.stub_out('nova_ipxe.virt.xenapi.Xapi.upload', _drop_upload)
        self.stub_out('nova.virt.xenapi.fake.SessionBase.VBD_insert',
                      _vbd_insert)
        meta = {'id': IMAGE, 'name': 'ipxe-boot', 'disk_format': 'iso',
                'container_format': 'bare', 'size': len(self.iso),
                'checksum': hashlib.md5(self.iso).hexdigest(),
                'os_hash_algo': 'sha512',
                'os_hash_value': hashlib.sha512(self.iso).hexdigest(),
                'properties': {'hw_ipxe_boot': 'true'}}
        fake_image.FakeImageService().create(None, dict(meta),
                                             data=io.BytesIO(self.iso))
        test_xenapi.IMAGE_FIXTURES[IMAGE] = {'image_meta': dict(meta)}
        self.conn = virt_driver.load_compute_driver(fake.FakeVirtAPI(),
                                                    'ipxe.XenAPIDriver')
        self.conn._session.is_local_connection = False

    def test_spawns(self):
        for n in range(self.spawns):
            before = status('VmRSS')
            reset_peak()
            self._test_spawn(IMAGE, None, None, instance_id=n + 1)
            self.results.append((before, status('VmHWM')))
            instance = objects.Instance.get_by_id(self.context, n + 1)
            self.conn.destroy(self.context, instance, [])
        self.assertEqual([], [r for r in xenapi_fake.get_all_records(
            'VDI').values() if 'nova_ipxe_instance' in (
                r.get('other_config') or {})])


for _name in dir(test_xenapi.XenAPIVMTestCase):
    if _name.startswith('test_') and _name != 'test_spawns':
        setattr(SpawnMemory, _name, None)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--size-mib', type=int, default=60)
    parser.add_argument('--spawns', type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        SpawnMemory.iso = padded_iso(args.size_mib, tmp)
    SpawnMemory.spawns = args.spawns
    result = testtools.TestResult()
    SpawnMemory('test_spawns').run(result)
    for _, error in result.errors + result.failures:
        print(error, file=sys.stderr)
    if not result.wasSuccessful():
        return 1
    print('ISO: %.1f MiB' % (len(SpawnMemory.iso) / MiB))
    for n, (before, peak) in enumerate(SpawnMemory.results, 1):
        print('spawn %d: RSS before %6.1f MiB, peak %6.1f MiB, '
              'peak above before %6.1f MiB' % (
                  n, before / MiB, peak / MiB, (peak - before) / MiB))
    return 0


if __name__ == '__main__':
    sys.exit(main())
