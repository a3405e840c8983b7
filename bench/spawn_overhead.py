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

"""The time ipxe.LibvirtDriver adds to a spawn, in Nova's functional
harness with real bytes and a warm image cache.

For each source ISO (bookworm's, trixie's) it boots ``--spawns`` servers
one after the other (the first included), deleting each once ACTIVE:

* ours: ``ipxe.LibvirtDriver`` with the flagged ISO; the added time is
  measured inside our code (``_ipxe_disk_info``: network data, script,
  ISO build, the disk_info rewrite; and ``_fetch_base``, Nova's cache
  lookup of the base ISO), per spawn;
* stock: ``libvirt.LibvirtDriver`` with the same ISO (Nova's CD-root
  layout), same harness, same run.

End to end is POST /servers to ACTIVE.  Run from the repository root with
the Nova venv of a release (tools/install-nova.sh 34)::

    .venv-nova-34/bin/python bench/spawn_overhead.py [--spawns 100]

The blank root disk our driver creates (``qemu-img create``) replaces the
qcow2 overlay stock creates (``qemu-img create -b``); it is part of the
end-to-end figures, not of "added".
"""

import argparse
import contextlib
import os
import sys
import time
import unittest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(1, os.path.dirname(os.path.abspath(__file__)))

import benchlib  # noqa: E402  bench/ itself

ISOS = (('bookworm', '/usr/lib/ipxe/ipxe.iso'),
        ('trixie', os.path.join(REPO, '.cache', 'trixie-ipxe', 'usr', 'lib',
                                'ipxe', 'ipxe.iso')))
RESULTS = {}


def pct(values, p):
    ordered = sorted(values)
    rank = max(1, -(-p * len(ordered) // 100))
    return ordered[rank - 1]


def make_case(driver_name, iso, spawns):
    from nova_ipxe.virt import libvirt as ipxe_libvirt
    from tests.nova import libvirt_base

    class Bench(libvirt_base.IpxeLifecycleBase):

        def _setup_compute_service(self):
            self.flags(compute_driver=driver_name)

        def setUp(self):
            self.added = []
            super().setUp()
            self.useFixture(benchlib_timer(
                ipxe_libvirt.LibvirtDriver, '_ipxe_disk_info', self.added))
            self.useFixture(benchlib_timer(
                ipxe_libvirt.LibvirtDriver, '_fetch_base', self.added))

        def test_spawns(self):
            image = self.add_ipxe_image(iso, image_id=self.uuid())
            self.warm_image_cache(image)
            flavor = self._create_flavor(memory_mb=64, vcpu=1, disk=1,
                                         ephemeral=0, name='bench')
            e2e, added = [], []
            for i in range(spawns):
                # Deleting a server deletes its port in this harness.
                port = self.lab_port(mac='fa:16:3e:00:2c:%02x' % (i % 200),
                                     ip='192.0.2.%d' % (20 + i % 200))
                self.added.clear()
                start = time.perf_counter()
                server = self._create_server(
                    image_uuid=image, flavor_id=flavor,
                    networks=[{'port': port['id']}])
                e2e.append(time.perf_counter() - start)
                added.append(sum(self.added))
                self._delete_server(server)
            RESULTS[(driver_name, iso)] = (e2e, added)

        @staticmethod
        def warm_image_cache(image_id):
            """Nova's own fetch into _base, as an earlier spawn left it.

            Only Nova's cache is warmed: our in-process caches (parsed
            base, capabilities, templates) start cold, so the first
            spawn pays them.
            """
            from nova import context
            from nova.virt.libvirt import utils as libvirt_utils
            path = ipxe_libvirt.LibvirtDriver._base_path(image_id)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            libvirt_utils.fetch_image(context.get_admin_context(), path,
                                      image_id)

        @staticmethod
        def uuid():
            import uuid
            return str(uuid.uuid4())

    return Bench('test_spawns')


def benchlib_timer(cls, name, sink):
    """A fixture adding each call's duration to ``sink``."""
    import fixtures
    real = getattr(cls, name)

    def timed(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return real(self, *args, **kwargs)
        finally:
            sink.append(time.perf_counter() - start)
    return fixtures.MonkeyPatch('%s.%s.%s' % (cls.__module__, cls.__name__,
                                              name), timed)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--spawns', type=int, default=100)
    args = parser.parse_args()
    if args.spawns < 1:
        raise benchlib.BenchError('--spawns must be at least 1')
    for name, iso in ISOS:
        if not os.path.exists(iso):
            raise benchlib.BenchError('%s ISO %s is missing (%s)' % (
                name, iso, 'tools/fetch-trixie-ipxe.sh'
                if name == 'trixie' else 'apt-get install ipxe'))
    os.chdir(REPO)
    for name, iso in ISOS:
        for driver_name in ('libvirt.LibvirtDriver', 'ipxe.LibvirtDriver'):
            benchlib.progress('%s, %s: %d spawns' % (name, driver_name,
                                                     args.spawns))
            # The harness logs its thread pools' shutdown to stdout after
            # the test's own log capture ends; the table stays clean.
            with open(os.devnull, 'w') as devnull, \
                    contextlib.redirect_stdout(devnull):
                result = unittest.TextTestRunner(
                    stream=devnull, verbosity=0).run(
                    make_case(driver_name, iso, args.spawns))
            if not result.wasSuccessful():
                problems = result.errors + result.failures
                raise benchlib.BenchError('%s on %s failed: %s' % (
                    driver_name, name, problems[0][1][-2000:]))
            e2e, added = RESULTS[(driver_name, iso)]
            # Partial figures as they come (a run takes minutes).
            print('# %s %s: e2e p50 %.1f ms p99 %.1f ms, added p50 %.1f '
                  'ms p99 %.1f ms 1st %.1f ms' % (
                      name, driver_name, pct(e2e, 50) * 1e3,
                      pct(e2e, 99) * 1e3, pct(added, 50) * 1e3,
                      pct(added, 99) * 1e3, added[0] * 1e3),
                  file=sys.stderr, flush=True)
    print('spawn overhead of ipxe.LibvirtDriver, %d spawns each (first '
          'included), warm image cache, Nova functional harness' %
          args.spawns)
    print('CPU: %s, Python %s' % (benchlib.cpu_model(),
                                  sys.version.split()[0]))
    # p99 is nearest-rank: with 100 spawns the 99th, so the slowest (the
    # first, cold caches) is shown on its own as "added 1st".
    print('%-9s %-22s %10s %10s %10s %12s %12s' % (
        'ISO', 'driver', 'added p50', 'added p99', 'added 1st', 'e2e p50',
        'e2e p99'))
    for name, iso in ISOS:
        stock_e2e, _ = RESULTS[('libvirt.LibvirtDriver', iso)]
        ours_e2e, added = RESULTS[('ipxe.LibvirtDriver', iso)]
        for driver_name, e2e, add in (
                ('libvirt.LibvirtDriver', stock_e2e, None),
                ('ipxe.LibvirtDriver', ours_e2e, added)):
            print('%-9s %-22s %10s %10s %10s %9.1f ms %9.1f ms' % (
                name, driver_name,
                '-' if add is None else '%.1f ms' % (pct(add, 50) * 1e3),
                '-' if add is None else '%.1f ms' % (pct(add, 99) * 1e3),
                '-' if add is None else '%.1f ms' % (add[0] * 1e3),
                pct(e2e, 50) * 1e3, pct(e2e, 99) * 1e3))
        print('%-9s %-22s %10s %10s %10s %9.1f ms %9.1f ms' % (
            name, 'difference (ours-stock)', '', '', '',
            (pct(ours_e2e, 50) - pct(stock_e2e, 50)) * 1e3,
            (pct(ours_e2e, 99) - pct(stock_e2e, 99)) * 1e3))
    return 0


if __name__ == '__main__':
    benchlib.run_main(main, 'spawn_overhead')
