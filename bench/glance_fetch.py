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

"""Fetching base ISOs from a real Glance: download throughput and peak
memory of nova-ipxe against curl, and build latency with a cold and a warm
base-ISO cache.

Run from the repository root with the project's Python::

    python bench/glance_fetch.py [--size-mb N] [--runs N] [--build-runs N]
                                 [--json FILE]

It starts a private Glance on loopback (``tools/glancelab.py``, needs
``.venv-glance``) and removes it and every file it made when done.  See
bench/README.rst for what each figure means.
"""

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import benchlib  # bench/ itself, the script directory

BenchError = benchlib.BenchError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STOCK_ISO = '/usr/lib/ipxe/ipxe.iso'
NETWORK_DATA = os.path.join(REPO, 'tools/demo/network_data.json')
MENU_URL = 'http://192.0.2.1/menu'
INSTANCE_UUID = '6f1e9c2a-4b7d-4e3a-9c1f-2d8e7a6b5c4d'
MIB = 1024 * 1024
MAX_ISO_SIZE = 512 * MIB
CACHE_MAX_SIZE = 4 * 1024 * MIB     # never evicts during the benchmark
RSS_GOAL_MIB = 32
RATIO_GOAL = 0.70

# Download contestants, in the order of the table.
OURS_DOWNLOAD = 'ours download()'
OURS_CACHE = 'ours cache.get() cold'
CURL_SHA = 'curl | sha512sum'
CURL_FILE = 'curl -o FILE'
CONTESTANTS = (OURS_DOWNLOAD, OURS_CACHE, CURL_SHA, CURL_FILE)


def _import_project():
    # Benchmark this checkout (and its tools/) even if another nova_ipxe
    # is installed.
    if REPO not in sys.path:
        sys.path.insert(0, REPO)
    try:
        from nova_ipxe import glance  # noqa: F401
        from tools import glancelab
    except ImportError as e:
        raise BenchError('cannot import nova_ipxe or tools.glancelab (%s); '
                         'run with the project\'s Python from the '
                         'repository root, e.g. /opt/nipxe-venv/bin/python '
                         'bench/glance_fetch.py' % e)
    # One "dropping the UEFI entry" warning per cold build is noise here.
    import logging
    logging.getLogger('nova_ipxe').setLevel(logging.ERROR)
    return glancelab


def _mibps(size, seconds):
    return size / MIB / seconds


# -- child mode: one download in a fresh interpreter, for its memory -------

def child_main(params):
    """Download once; print peak RSS growth and time as JSON on stdout."""
    _import_project()
    from nova_ipxe import cache as ipxe_cache
    from nova_ipxe import glance
    client = glance.GlanceClient(params['url'])
    # The record GET first, so that imports, the connection pool and the
    # JSON parsing are all in the baseline: only the download is measured.
    info = client.get_image(params['image'], MAX_ISO_SIZE)
    rss_base = benchlib.proc_status('VmRSS')
    hwm_before = benchlib.proc_status('VmHWM')
    hwm_reset = benchlib.reset_peak_rss()
    t0 = time.perf_counter()
    if params['mode'] == 'download':
        with open(params['out'], 'wb') as f:
            client.download(info, f)
    else:
        cache = ipxe_cache.BaseIsoCache(params['out'], CACHE_MAX_SIZE)
        with cache.get(client, params['image'], MAX_ISO_SIZE) as entry:
            if not entry.downloaded:
                raise BenchError('a cold cache did not download')
    elapsed = time.perf_counter() - t0
    hwm = benchlib.proc_status('VmHWM')
    json.dump({'mode': params['mode'], 'seconds': elapsed,
               'rss_base_kib': rss_base, 'hwm_before_kib': hwm_before,
               'hwm_reset': hwm_reset, 'hwm_after_kib': hwm,
               # Without the reset this is an upper bound: an earlier peak
               # above the baseline would count as growth.
               'growth_kib': hwm - rss_base}, sys.stdout)


def run_child(mode, url, image_id, out):
    params = {'mode': mode, 'url': url, 'image': image_id, 'out': out}
    proc = subprocess.run(
        [sys.executable, os.path.abspath(__file__), '--child',
         json.dumps(params)], capture_output=True, text=True, cwd=REPO)
    if proc.returncode != 0:
        raise BenchError('the %s child failed:\n%s' % (
            mode, proc.stderr.strip()[-2000:]))
    return json.loads(proc.stdout)


# -- the test image ------------------------------------------------------

def make_iso(path, size_mb, workdir):
    """The stock iPXE ISO plus random bytes, about size_mb MiB in all.

    Built with pycdlib from the stock ISO, so it keeps its El Torito
    entries (BIOS and UEFI) and isohybrid MBR: Glance accepts it as an
    iso, and nova-ipxe can build from it.  Random bytes, so that nothing
    on the way can compress them.
    """
    import pycdlib
    from pycdlib import pycdlibexception
    payload = os.path.join(workdir, 'payload.bin')
    # The isohybrid MBR pads the image to a whole MiB, so this lands on
    # size_mb exactly while the stock files fit in the 2 MiB left.
    length = max(1, size_mb - 2) * MIB
    with open(payload, 'wb') as f:
        for _ in range(length // MIB):
            f.write(os.urandom(MIB))
    iso = pycdlib.PyCdlib()
    try:
        iso.open(STOCK_ISO)
        catalog = iso.eltorito_boot_catalog
        efi = catalog is not None and 0xef in (
            [catalog.validation_entry.platform_id] +
            [s.platform_id for s in catalog.sections])
        # pycdlib cannot move an EFI isohybrid MBR it has read (it raises
        # "Attempted to set EFI lba on a non-EFI ISO"): drop and redo it.
        hybrid = iso.isohybrid_mbr is not None
        if hybrid:
            iso.rm_isohybrid()
        names = {}
        if iso.has_rock_ridge():
            names['rr_name'] = 'payload.bin'
        if iso.has_joliet():
            names['joliet_path'] = '/payload.bin'
        with open(payload, 'rb') as f:
            iso.add_fp(f, length, '/PAYLOAD.BIN;1', **names)
            if hybrid:
                iso.add_isohybrid(efi=efi)
            iso.write(path)
    except (pycdlibexception.PyCdlibException, OSError) as e:
        raise BenchError('cannot build the %d MiB test ISO from %s: %s'
                         % (size_mb, STOCK_ISO, e))
    finally:
        iso.close()
        benchlib.unlink(payload)
    return os.path.getsize(path)


# -- download throughput -------------------------------------------------

def _run(argv):
    """Run a command; return wall time, CPU seconds and stdout."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    # Both outputs are a line at most, so reading one after the other
    # cannot block.
    out = proc.stdout.read()
    err = proc.stderr.read()
    proc.stdout.close()
    proc.stderr.close()
    # wait4 rather than proc.wait(): it returns the rusage of bash and the
    # pipeline it waited for.
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise BenchError('%s exited with %d: %s' % (
            ' '.join(argv), proc.returncode,
            err.decode('utf-8', 'replace').strip()))
    return elapsed, usage.ru_utime + usage.ru_stime, out


def download_once(name, client, info, url, workdir):
    """One timed download by one contestant: (seconds, CPU seconds)."""
    from nova_ipxe import cache as ipxe_cache
    out = os.path.join(workdir, 'download.out')
    try:
        if name == OURS_DOWNLOAD:
            c0 = time.process_time()
            t0 = time.perf_counter()
            with open(out, 'wb') as f:
                client.download(info, f)
            return time.perf_counter() - t0, time.process_time() - c0
        if name == OURS_CACHE:
            directory = tempfile.mkdtemp(dir=workdir, prefix='cache-')
            try:
                c0 = time.process_time()
                t0 = time.perf_counter()
                cache = ipxe_cache.BaseIsoCache(directory, CACHE_MAX_SIZE)
                with cache.get(client, info.id, MAX_ISO_SIZE) as entry:
                    pass
                elapsed = time.perf_counter() - t0
                cpu = time.process_time() - c0
            finally:
                shutil.rmtree(directory)
            if not entry.downloaded:
                raise BenchError('a cold cache did not download')
            return elapsed, cpu
        if name == CURL_SHA:
            # pipefail: a failed curl must not pass as sha512sum's success.
            elapsed, cpu, stdout = _run([
                'bash', '-c', 'set -o pipefail; curl -sS --fail "$1" | '
                'sha512sum', 'bash', url])
            if stdout.split()[0].decode() != info.hash_value:
                raise BenchError('curl | sha512sum: hash mismatch')
            return elapsed, cpu
        elapsed, cpu, _ = _run(['curl', '-sS', '--fail', '-o', out, url])
        if os.path.getsize(out) != info.size:
            raise BenchError('curl -o wrote %d bytes, not %d'
                             % (os.path.getsize(out), info.size))
        return elapsed, cpu
    finally:
        benchlib.unlink(out)


def bench_download(client, info, url, args, workdir):
    res = {name: {'seconds': [], 'cpu_seconds': []} for name in CONTESTANTS}
    for i in range(args.warmup + args.runs):
        # Rotate the order so that no contestant always follows the same
        # one (page cache, writeback of the previous file).
        k = i % len(CONTESTANTS)
        for name in CONTESTANTS[k:] + CONTESTANTS[:k]:
            benchlib.progress('download %d/%d: %s' % (
                i + 1, args.warmup + args.runs, name))
            elapsed, cpu = download_once(name, client, info, url, workdir)
            if i >= args.warmup:
                res[name]['seconds'].append(elapsed)
                res[name]['cpu_seconds'].append(cpu)
    for name, r in res.items():
        rates = [_mibps(info.size, s) for s in r['seconds']]
        r['mibps'] = rates
        r['median_mibps'] = benchlib.median(rates)
        r['best_mibps'] = max(rates)
    return res


# -- build latency -------------------------------------------------------

def make_conf():
    from oslo_config import cfg

    from nova_ipxe import conf as ipxe_conf
    conf = cfg.ConfigOpts()
    ipxe_conf.register_opts(conf)
    conf([], default_config_files=[])
    conf.set_override('boot_menu_url', MENU_URL, group='ipxe')
    conf.set_override('max_iso_size', MAX_ISO_SIZE, group='ipxe')
    return conf


def bench_build(name, image_id, url, runs, workdir, conf, instance):
    from nova_ipxe import builder
    from nova_ipxe import cache as ipxe_cache
    from nova_ipxe import glance
    d = tempfile.mkdtemp(dir=workdir, prefix='build-')
    out = os.path.join(d, 'instance.iso')
    res = {'cold_ms': [], 'warm_ms': [], 'warm_cache_get_ms': []}

    def build(client, cache, expect_download):
        benchlib.unlink(out)  # a fresh path, as for a new instance
        t0 = time.perf_counter()
        result, _, entry = builder.build_iso_from_image(
            client, cache, image_id, instance, out, conf)
        elapsed = (time.perf_counter() - t0) * 1e3
        if entry.downloaded != expect_download or not result.bios:
            raise BenchError('%s: unexpected build (downloaded %s, BIOS %s)'
                             % (name, entry.downloaded, result.bios))
        res['output_size'] = result.size
        return elapsed

    try:
        for i in range(runs):
            benchlib.progress('%s cold build %d/%d' % (name, i + 1, runs))
            # What a freshly started nova-compute meets: no cache entry, no
            # parsed base, no open connection to Glance.
            builder.PARSED_BASES = builder.ParsedBases()
            client = glance.GlanceClient(url)
            cdir = tempfile.mkdtemp(dir=d, prefix='cache-')
            try:
                cache = ipxe_cache.BaseIsoCache(cdir, CACHE_MAX_SIZE)
                res['cold_ms'].append(build(client, cache, True))
            finally:
                client.session.close()
                shutil.rmtree(cdir)
        # Warm: one untimed build fills the cache and PARSED_BASES.
        builder.PARSED_BASES = builder.ParsedBases()
        client = glance.GlanceClient(url)
        cache = ipxe_cache.BaseIsoCache(os.path.join(d, 'warm-cache'),
                                        CACHE_MAX_SIZE)
        build(client, cache, True)
        for i in range(runs):
            benchlib.progress('%s warm build %d/%d' % (name, i + 1, runs))
            res['warm_ms'].append(build(client, cache, False))
        # What of a warm build is the cache itself: the record GET and
        # the re-hash of the entry, which the cache does before every use.
        for _ in range(runs):
            t0 = time.perf_counter()
            with cache.get(client, image_id, MAX_ISO_SIZE):
                pass
            res['warm_cache_get_ms'].append(
                (time.perf_counter() - t0) * 1e3)
        client.session.close()
    finally:
        builder.PARSED_BASES = builder.ParsedBases()
        shutil.rmtree(d, ignore_errors=True)
    return res


# -- report --------------------------------------------------------------

def print_download(size, dl, rss, args, out):
    print('Download of the %.1f MiB image (sha512), %d runs after %d '
          'warm-up, MiB/s' % (size / MIB, args.runs, args.warmup), file=out)
    fmt = '  %-24s %9s %9s %10s %8s %12s'
    print(fmt % ('contestant', 'median', 'best', 'median s', 'cpu s',
                 'vs curl|sha'), file=out)
    ref = dl[CURL_SHA]['median_mibps']
    for name in CONTESTANTS:
        r = dl[name]
        print(fmt % (name, '%.0f' % r['median_mibps'],
                     '%.0f' % r['best_mibps'],
                     '%.3f' % benchlib.median(r['seconds']),
                     '%.3f' % benchlib.median(r['cpu_seconds']),
                     '%.2fx' % (r['median_mibps'] / ref)), file=out)
    for name in (OURS_DOWNLOAD, OURS_CACHE):
        ratio = dl[name]['median_mibps'] / ref
        print('  %s / curl | sha512sum = %.0f%% (goal >= %.0f%%: %s)' % (
            name, 100 * ratio, 100 * RATIO_GOAL,
            'met' if ratio >= RATIO_GOAL else 'NOT MET'), file=out)
    for r in rss:
        growth = r['growth_kib'] / 1024.0
        print('  peak RSS growth, %s in a fresh process: +%.1f MiB (%s; '
              'goal < %d MiB: %s)' % (
                  'download()' if r['mode'] == 'download'
                  else 'cache.get() cold', growth,
                  'VmHWM reset before' if r['hwm_reset']
                  else 'no VmHWM reset: an upper bound', RSS_GOAL_MIB,
                  'met' if growth < RSS_GOAL_MIB else 'NOT MET'), file=out)
    print(file=out)


def print_build(builds, runs, out):
    print('build_iso_from_image() latency, %d runs each, ms' % runs,
          file=out)
    fmt = '  %-22s %9s %6s %9s %9s %9s'
    print(fmt % ('image', 'size MiB', 'cache', 'median', 'p95',
                 'output MiB'), file=out)
    for b in builds:
        r = b['result']
        for mode in ('cold', 'warm'):
            times = r[mode + '_ms']
            print(fmt % (b['name'] if mode == 'cold' else '',
                         '%.1f' % (b['size'] / MIB) if mode == 'cold'
                         else '', mode, '%.1f' % benchlib.median(times),
                         '%.1f' % benchlib.p95(times),
                         '%.1f' % (r['output_size'] / MIB)), file=out)
    for b in builds:
        r = b['result']
        print('  - %s warm: cache.get() alone (record GET + re-hash of the '
              'entry) median %.1f ms of the %.1f ms' % (
                  b['name'], benchlib.median(r['warm_cache_get_ms']),
                  benchlib.median(r['warm_ms'])), file=out)
    print(file=out)


LEGEND = """\
Legend:
  ours download()   GlanceClient.download(info, file) into a new file on
                    the same disk: streams and verifies sha512 (no fsync).
  ours cache.get()  BaseIsoCache.get() on an empty cache directory: record
   cold             GET, download to .part, fsync, rename, fsync of the
                    directory, then the re-hash of the entry before use.
  curl | sha512sum  bash -c 'set -o pipefail; curl -s URL | sha512sum',
                    timed as a whole (process starts included); also
                    verifies, in two processes.
  curl -o FILE      curl -s -o FILE URL: no verification, the ceiling.
  cpu s             ours: process_time of this process; curl: wait4 rusage
                    of bash and its pipeline.
  peak RSS growth   a fresh child of this script does the record GET, then
                    resets VmHWM (clear_refs 5) and downloads: VmHWM after
                    minus VmRSS before.  Page cache is not RSS.
  cold build        new cache directory, builder.PARSED_BASES emptied, new
                    GlanceClient: record GET + download + verify + fsync +
                    re-hash + parse + build.
  warm build        cache entry and parsed base kept: record GET + re-hash
                    of the entry + build.  p95 by nearest rank.
"""


# -- machine and main ------------------------------------------------------

def _venv_version(venv, name):
    # Read the Glance venv's metadata without starting its interpreter.
    import glob
    from importlib import metadata
    paths = glob.glob(os.path.join(venv, 'lib', 'python*', 'site-packages'))
    for dist in metadata.distributions(name=name, path=paths):
        return dist.version
    return '?'


def machine(workdir, glancelab):
    import requests
    import urllib3
    curl = (benchlib.first_line(['curl', '--version']) or '?').split()
    return {
        'nproc': os.cpu_count(),
        'usable_cpus': len(os.sched_getaffinity(0)),
        'cpu': benchlib.cpu_model(),
        'kernel': platform.release(),
        'python': platform.python_version(),
        'requests': requests.__version__,
        'urllib3': urllib3.__version__,
        'curl': ' '.join(curl[:2]),
        'curl_tls': next((w for w in curl if w.startswith('OpenSSL')), '?'),
        'glance': _venv_version(glancelab.VENV, 'glance'),
        'gunicorn': _venv_version(glancelab.VENV, 'gunicorn'),
        'tmp_fs': benchlib.fs_type(workdir),
        'loadavg': os.getloadavg(),
    }


def print_machine(m, glance, iso_seconds, out):
    print('Machine: nproc %d (usable %d), %s, Linux %s' % (
        m['nproc'], m['usable_cpus'], m['cpu'], m['kernel']), file=out)
    print('Python %s, requests %s, urllib3 %s; %s (%s); glance %s on '
          'gunicorn %s (1 worker, 4 threads), loopback' % (
              m['python'], m['requests'], m['urllib3'], m['curl'],
              m['curl_tls'], m['glance'], m['gunicorn']), file=out)
    print('Files on /tmp (%s); load average at start %.2f %.2f %.2f; '
          'Glance started in %.1f s, test ISO built in %.1f s' % (
              m['tmp_fs'], *m['loadavg'], glance.start_seconds,
              iso_seconds), file=out)
    print(file=out)


def parse_args(argv):
    p = argparse.ArgumentParser(
        description='Base-ISO download throughput and memory against curl, '
                    'and build latency with a cold and a warm cache, on a '
                    'private Glance.')
    p.add_argument('--size-mb', type=int, default=100,
                   help='size of the test image in MiB (default 100)')
    p.add_argument('--runs', type=int, default=5,
                   help='timed downloads per contestant (default 5)')
    p.add_argument('--warmup', type=int, default=1,
                   help='untimed downloads per contestant first '
                        '(default 1)')
    p.add_argument('--build-runs', type=int, default=20,
                   help='timed builds per image and cache state '
                        '(default 20)')
    p.add_argument('--json', metavar='FILE',
                   help='also write the raw numbers to FILE')
    p.add_argument('--child', help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        return args
    if args.runs < 1 or args.build_runs < 1 or args.warmup < 0:
        p.error('--runs and --build-runs must be at least 1, --warmup at '
                'least 0')
    if not 3 <= args.size_mb <= MAX_ISO_SIZE // MIB - 12:
        p.error('--size-mb must be between 3 and %d (max_iso_size is %d '
                'MiB)' % (MAX_ISO_SIZE // MIB - 12, MAX_ISO_SIZE // MIB))
    return args


def check_inputs(glancelab):
    for tool, package in (('curl', 'curl'), ('sha512sum', 'coreutils'),
                          ('bash', 'bash')):
        if shutil.which(tool) is None:
            raise BenchError('%s not found on PATH; install the Debian '
                             'package %s' % (tool, package))
    try:
        glancelab.check_prerequisites()
    except glancelab.PrerequisiteError as e:
        raise BenchError(str(e))
    for path, hint in ((STOCK_ISO, 'install the Debian package ipxe'),
                       (NETWORK_DATA, 'check the checkout')):
        if not os.path.isfile(path):
            raise BenchError('%s not found: %s' % (path, hint))


def run(args, glancelab, workdir):
    from nova_ipxe import builder
    from nova_ipxe import glance as ipxe_glance
    t0 = time.perf_counter()
    big = os.path.join(workdir, 'bench.iso')
    make_iso(big, args.size_mb, workdir)
    iso_seconds = time.perf_counter() - t0
    with glancelab.GlanceServer() as glance:
        benchlib.progress('uploading the images to %s' % glance.url)
        big_name = 'bench-%dmib' % args.size_mb
        props = {'hw_ipxe_boot': 'true'}
        images = [
            (big_name, glance.create_image(big_name, big, properties=props),
             os.path.getsize(big)),
            ('bookworm', glance.create_image('bookworm', STOCK_ISO,
                                             properties=props),
             os.path.getsize(STOCK_ISO))]
        benchlib.unlink(big)  # Glance has its own copy
        m = machine(workdir, glancelab)
        print_machine(m, glance, iso_seconds, sys.stdout)
        sys.stdout.flush()

        big_id = images[0][1]
        client = ipxe_glance.GlanceClient(glance.url)
        info = client.get_image(big_id, MAX_ISO_SIZE)
        url = '%s/v2/images/%s/file' % (glance.url, big_id)
        dl = bench_download(client, info, url, args, workdir)
        client.session.close()
        rss = []
        for mode in ('download', 'cache'):
            benchlib.progress('peak RSS: %s' % mode)
            out = os.path.join(workdir, 'child-' + mode)
            rss.append(run_child(mode, glance.url, big_id, out))
            if mode == 'download':
                benchlib.unlink(out)
            else:
                shutil.rmtree(out, ignore_errors=True)
        print_download(info.size, dl, rss, args, sys.stdout)
        sys.stdout.flush()

        conf = make_conf()
        with open(NETWORK_DATA) as f:
            instance = builder.Instance(network_data=json.load(f),
                                        uuid=INSTANCE_UUID,
                                        hostname='bench-vm')
        builds = []
        for name, image_id, size in images:
            builds.append({'name': name, 'image': image_id, 'size': size,
                           'result': bench_build(name, image_id, glance.url,
                                                 args.build_runs, workdir,
                                                 conf, instance)})
        print_build(builds, args.build_runs, sys.stdout)
    print(LEGEND, end='')
    return {'machine': m, 'size_mb': args.size_mb, 'image_size': info.size,
            'runs': args.runs, 'warmup': args.warmup,
            'build_runs': args.build_runs, 'download': dl, 'rss': rss,
            'builds': builds}


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    glancelab = _import_project()
    if args.child:
        child_main(json.loads(args.child))
        return 0
    check_inputs(glancelab)

    def terminated(signum, frame):
        raise KeyboardInterrupt()

    # Leave through the finally blocks, which stop Glance and clean up.
    signal.signal(signal.SIGTERM, terminated)
    workdir = tempfile.mkdtemp(prefix='nipxe-bench-glance-', dir='/tmp')
    try:
        results = run(args, glancelab, workdir)
    except glancelab.GlanceLabError as e:
        raise BenchError('Glance: %s' % e)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == '__main__':
    benchlib.run_main(main, 'glance_fetch.py')
