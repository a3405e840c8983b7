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

"""Per-instance ISO build time and peak memory: nova-ipxe against the
2013 Nova XenAPI way (extract + genisoimage) and ``xorriso`` replay.

Run from the repository root with the project's Python::

    python bench/build_iso.py [--runs N] [--iso [NAME=]PATH] [--json FILE]

See bench/README.rst for what each figure means.
"""

import argparse
import gc
import json
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import tracemalloc

import benchlib  # bench/ itself, the script directory

BenchError = benchlib.BenchError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_ISOS = (
    ('bookworm', '/usr/lib/ipxe/ipxe.iso'),
    ('trixie', os.path.join(REPO, '.cache/trixie-ipxe/usr/lib/ipxe/'
                                  'ipxe.iso')),
)
FETCH_HINT = {
    'bookworm': 'install the Debian package ipxe',
    'trixie': 'run tools/fetch-trixie-ipxe.sh',
}
TOOLS = {'xorriso': 'xorriso', 'genisoimage': 'genisoimage'}
NETWORK_DATA = os.path.join(REPO, 'tools/demo/network_data.json')
MENU_URL = 'http://192.0.2.1/menu'
INSTANCE_UUID = '6f1e9c2a-4b7d-4e3a-9c1f-2d8e7a6b5c4d'
SCRIPT_PATH = '/nipxe.ipx'
MIB = 1024.0 * 1024.0

CONTESTANTS = ('ours cold', 'ours warm', '2013 way', 'xorriso replay')
GNU_TIME = None     # set in main(): measures the tools' peak RSS


def _import_nova_ipxe():
    # Benchmark this checkout even if another nova_ipxe is installed.
    if REPO not in sys.path:
        sys.path.insert(0, REPO)
    try:
        from nova_ipxe import iso
    except ImportError as e:
        raise BenchError('cannot import nova_ipxe (%s); run with the '
                         'project\'s Python, e.g. /opt/nipxe-venv/bin/python '
                         'bench/build_iso.py' % e)
    # The "dropping the UEFI entry" warning would repeat once per build.
    import logging
    logging.getLogger('nova_ipxe').setLevel(logging.ERROR)
    return iso


def _maxrss_kib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


# -- child mode: one of our contestants in a fresh interpreter -------------

def child_main(params):
    """Time one in-process contestant; print a JSON result on stdout."""
    t0 = time.perf_counter()
    iso = _import_nova_ipxe()
    import_ms = (time.perf_counter() - t0) * 1e3
    src, out, script = params['src'], params['out'], params['script']
    mode, runs, warmup = params['mode'], params['runs'], params['warmup']
    # Not ru_maxrss: across fork+exec it keeps the parent's peak, which
    # here is the bigger parent benchmark.  VmHWM belongs to this image.
    rss_base = benchlib.proc_status('VmRSS')
    hwm_reset = benchlib.reset_peak_rss()
    maxrss_base = _maxrss_kib()
    if mode == 'warm':
        base = iso.BaseIso.from_path(src)
        rss_parsed = benchlib.proc_status('VmHWM')

        def one():
            return base.build(script, out)
    else:
        rss_parsed = None

        def one():
            return iso.BaseIso.from_path(src).build(script, out)

    for _ in range(warmup):
        benchlib.unlink(out)
        one()
    times, cpu = [], []
    for _ in range(runs):
        # A fresh path, as for a new instance: on ext4, renaming over an
        # existing file forces writeback (auto_da_alloc) and costs more.
        benchlib.unlink(out)
        c0 = time.process_time()
        t0 = time.perf_counter()
        result = one()
        times.append((time.perf_counter() - t0) * 1e3)
        cpu.append((time.process_time() - c0) * 1e3)
    rss_loop = benchlib.proc_status('VmHWM')
    maxrss_loop = _maxrss_kib()
    # Traced separately: tracemalloc slows allocation several-fold.
    benchlib.unlink(out)
    gc.collect()
    tracemalloc.start()
    one()
    left, heap_peak = tracemalloc.get_traced_memory()
    # What one build leaves for the cyclic GC rather than freeing at once:
    # it piles up between full collections and drives the RSS figure.
    gc.collect()
    garbage = left - tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    json.dump({'times_ms': times, 'cpu_ms': cpu, 'import_ms': import_ms,
               'rss_base_kib': rss_base, 'rss_parsed_kib': rss_parsed,
               'rss_peak_kib': rss_loop, 'hwm_reset': hwm_reset,
               'ru_maxrss_base_kib': maxrss_base,
               'ru_maxrss_peak_kib': maxrss_loop,
               'heap_peak_bytes': heap_peak, 'cyclic_garbage_bytes': garbage,
               'gc_collections': [g['collections'] for g in gc.get_stats()],
               'result': {'bios': result.bios, 'uefi': result.uefi,
                          'size': result.size}}, sys.stdout)


def run_child(mode, src, out, script, runs, warmup):
    params = {'mode': mode, 'src': src, 'out': out, 'script': script,
              'runs': runs, 'warmup': warmup}
    proc = subprocess.run(
        [sys.executable, os.path.abspath(__file__), '--child',
         json.dumps(params)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise BenchError('ours %s on %s failed:\n%s' % (
            mode, src, proc.stderr.strip()[-2000:]))
    return json.loads(proc.stdout)


# -- external tools ------------------------------------------------------

def gnu_time():
    path = shutil.which('time') or '/usr/bin/time'
    if os.path.isfile(path):
        version = benchlib.first_line([path, '--version']) or ''
        if 'GNU' in version:
            return path
    return None


def run_tool(argv, cwd=None, rss_file=None):
    """Run one tool; return its CPU time and, given rss_file, peak RSS.

    CPU time comes from os.wait4, but not the memory: a process started
    from Python keeps Python's peak RSS (ru_maxrss) across exec, so every
    tool would show the benchmark's own size.  GNU time forks the tool
    from a small process, so its figure is the tool's own; it is only
    used on untimed runs.
    """
    full = argv
    if rss_file:
        full = [GNU_TIME, '-f', '%M', '-o', rss_file, '--'] + argv
    proc = subprocess.Popen(full, cwd=cwd, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    output = proc.stdout.read()
    proc.stdout.close()
    # wait4 rather than proc.wait(): it returns this process's own rusage.
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise BenchError('%s exited with %d:\n%s' % (
            ' '.join(argv), proc.returncode,
            output.decode('utf-8', 'replace').strip()[-2000:]))
    rss = None
    if rss_file:
        with open(rss_file) as f:
            rss = int(f.read().split()[-1])
    return {'tool': os.path.basename(argv[0]), 'maxrss_kib': rss,
            'wait4_maxrss_kib': usage.ru_maxrss,
            'cpu_ms': (usage.ru_utime + usage.ru_stime) * 1e3,
            'output': output.decode('utf-8', 'replace')}


def _make_writable(tree):
    # Extracted files keep the ISO's read-only modes; the 2013 plugin ran
    # as root, and genisoimage patches isolinux.bin in place.
    for dirpath, dirnames, filenames in os.walk(tree):
        os.chmod(dirpath, 0o755)
        for name in filenames:
            os.chmod(os.path.join(dirpath, name), 0o644)


def _write(path, data):
    with open(path, 'wb') as f:
        f.write(data)


def way_2013(src, out, tree, script, cfg_path, cfg, boot_image,
             rss_file=None):
    """Extract, write script and isolinux.cfg, genisoimage, clean up."""
    tools = []
    t0 = time.perf_counter()
    tools.append(run_tool(['xorriso', '-no_rc', '-osirrox', 'on',
                           '-indev', src, '-extract', '/', tree],
                          rss_file=rss_file))
    t1 = time.perf_counter()
    _make_writable(tree)
    _write(os.path.join(tree, SCRIPT_PATH.lstrip('/')), script)
    _write(os.path.join(tree, cfg_path.lstrip('/')), cfg)
    t2 = time.perf_counter()
    # The flags the 2013 plugin gave mkisofs: BIOS only, no Rock Ridge.
    tools.append(run_tool(['genisoimage', '-quiet', '-l', '-o', out,
                           '-c', 'boot.cat', '-b', boot_image,
                           '-no-emul-boot', '-boot-load-size', '4',
                           '-boot-info-table', tree],
                          rss_file=rss_file))
    t3 = time.perf_counter()
    shutil.rmtree(tree)
    t4 = time.perf_counter()
    steps = {'extract': t1 - t0, 'write': t2 - t1, 'genisoimage': t3 - t2,
             'cleanup': t4 - t3}
    return t4 - t0, {k: v * 1e3 for k, v in steps.items()}, tools


def xorriso_replay(src, out, workdir, script, cfg_path, cfg,
                   rss_file=None):
    """Load the source, map the two files, write with its boot setup."""
    script_file = os.path.join(workdir, 'replay-script')
    cfg_file = os.path.join(workdir, 'replay-cfg')
    t0 = time.perf_counter()
    # A real caller writes each instance's script to a file for xorriso.
    _write(script_file, script)
    _write(cfg_file, cfg)
    tool = run_tool(['xorriso', '-no_rc', '-indev', src, '-outdev', out,
                     '-boot_image', 'any', 'replay',
                     '-map', script_file, SCRIPT_PATH,
                     '-map', cfg_file, cfg_path, '-commit'],
                    rss_file=rss_file)
    return time.perf_counter() - t0, None, [tool]


def time_external(fn, runs, warmup, out, rss_file):
    times, cpu, steps, rss = [], [], [], {}
    # Memory is measured on the untimed warm-up runs (at least one).
    probes = max(warmup, 1) if GNU_TIME else warmup
    for i in range(probes + runs):
        # A fresh path, as for a new instance (xorriso refuses an -outdev
        # that holds data); removing the previous one is not timed.
        benchlib.unlink(out)
        elapsed, breakdown, tools = fn(rss_file if i < probes else None)
        for t in tools:
            if t['maxrss_kib'] is not None:
                rss[t['tool']] = max(rss.get(t['tool'], 0), t['maxrss_kib'])
        if i < probes:
            continue
        times.append(elapsed * 1e3)
        cpu.append(sum(t['cpu_ms'] for t in tools))
        if breakdown:
            steps.append(breakdown)
    return {'times_ms': times, 'cpu_ms': cpu, 'tool_maxrss_kib': rss,
            'steps_ms': steps}


# -- checking what each contestant wrote ---------------------------------

ELTORITO_IMG = re.compile(r'^El Torito boot img :\s+(\d+)\s+(\S+)\s+(\S+)\s+'
                          r'(\S+)\s+(\S+)\s+(\S+)\s+(\d+)\s+(\d+)')
ELTORITO_PATH = re.compile(r'^El Torito img path :\s+(\d+)\s+(\S.*)$')


def eltorito(path):
    """The El Torito entries as xorriso reports them."""
    report = run_tool(['xorriso', '-no_rc', '-indev', path,
                       '-report_el_torito', 'plain'])['output']
    entries = {}
    for line in report.splitlines():
        m = ELTORITO_IMG.match(line)
        if m:
            entries.setdefault(m.group(1), {}).update(
                platform=m.group(2), emul=m.group(4),
                load_size=int(m.group(7)))
        m = ELTORITO_PATH.match(line)
        if m:
            entries.setdefault(m.group(1), {})['path'] = m.group(2).strip()
    return [entries[k] for k in sorted(entries, key=int)]


def _fat_file(image, name, esp):
    # mtools is an independent reader; fall back to our own.
    if shutil.which('mtype'):
        proc = subprocess.run(['mtype', '-i', image, '::/' + name],
                              capture_output=True,
                              env=dict(os.environ, MTOOLS_SKIP_CHECK='1'))
        return proc.stdout if proc.returncode == 0 else None
    with open(image, 'rb') as f:
        return esp.FatImage(f.read(), image).read_file('/' + name)


def verify(out, workdir, script, cfg_path, cfg, src_entries, efi_reads,
           esp):
    """What the output really boots, read back with xorriso and mtools."""
    entries = eltorito(out)
    tree = tempfile.mkdtemp(dir=workdir, prefix='verify-')
    try:
        dest = os.path.join(tree, 'x')
        run_tool(['xorriso', '-no_rc', '-osirrox', 'on', '-indev', out,
                  '-extract', '/', dest])
        # Case-insensitive: the 2013 way writes upper-case ISO 9660 names.
        files = {}
        for dirpath, _, filenames in os.walk(dest):
            for name in filenames:
                full = os.path.join(dirpath, name)
                files[os.path.relpath(full, dest).lower()] = full

        def read(path):
            full = files.get(path.lstrip('/').lower())
            if full is None:
                return None
            with open(full, 'rb') as f:
                return f.read()

        bios = next((e for e in entries if e['platform'] == 'BIOS'), None)
        uefi = next((e for e in entries if e['platform'] == 'UEFI'), None)
        script_ok = read(SCRIPT_PATH) == script
        cfg_ok = read(cfg_path) == cfg
        efi_script = None
        if uefi and uefi.get('path'):
            image = files.get(uefi['path'].lstrip('/').lower())
            if image:
                efi_script = _fat_file(image, 'autoexec.ipxe', esp) == script
    finally:
        shutil.rmtree(tree)
    bios_ok = bool(bios) and script_ok and cfg_ok
    uefi_ok = bool(uefi) and bool(efi_script) and efi_reads
    if bios_ok and uefi_ok:
        coverage = 'BIOS+UEFI'
    elif bios_ok and uefi:
        coverage = 'BIOS; UEFI w/o script'
    elif bios_ok:
        coverage = 'BIOS only'
    elif uefi_ok:
        coverage = 'UEFI only'
    else:
        coverage = 'NO SCRIPT (check)'

    def shape(es):
        return [(e['platform'], os.path.basename(e.get('path', '')).lower(),
                 e['emul']) for e in es]
    return {'eltorito': entries, 'script_ok': script_ok, 'cfg_ok': cfg_ok,
            'efi_autoexec_ok': efi_script, 'coverage': coverage,
            'same_entries_as_source': shape(entries) == shape(src_entries)}


# -- one source ISO ------------------------------------------------------

def render_timing(runs, warmup):
    from oslo_config import cfg

    from nova_ipxe import builder
    from nova_ipxe import conf as ipxe_conf
    conf = cfg.ConfigOpts()
    ipxe_conf.register_opts(conf)
    conf([], default_config_files=[])
    conf.set_override('boot_menu_url', MENU_URL, group='ipxe')
    with open(NETWORK_DATA) as f:
        network_data = json.load(f)
    instance = builder.Instance(network_data=network_data,
                                uuid=INSTANCE_UUID, hostname='bench-vm')
    times = []
    for i in range(warmup + runs):
        t0 = time.perf_counter()
        text = builder.render_script(instance, conf).text
        if i >= warmup:
            times.append((time.perf_counter() - t0) * 1e3)
    return text, times


def bench_iso(name, path, args, workdir, iso):
    from nova_ipxe import esp
    from nova_ipxe import exception
    try:
        base = iso.BaseIso.from_path(path)
    except exception.NovaIpxeError as e:
        raise BenchError('%s: %s' % (name, e))
    script_text, render_ms = render_timing(args.runs, args.warmup)
    script = script_text.encode('ascii')
    src_entries = eltorito(path)
    efi_reads = bool(base.efi and base.efi.autoexec)
    cfg_path = cfg = None
    if base.bios:
        cfg_path = base.bios.config.path
        # The exact kernel reference our own build writes.
        cfg = base.bios.config_text().encode()
    entry = {'name': name, 'path': path, 'size': os.path.getsize(path),
             'source_eltorito': src_entries,
             'efi_loader_reads_autoexec': efi_reads,
             'efi_reason': base.efi.reason if base.efi else None,
             'render_ms': render_ms, 'contestants': {}}
    d = os.path.join(workdir, name)
    os.mkdir(d)
    rss_file = os.path.join(d, 'gnu-time.out')
    for contestant in args.contestants:
        out = os.path.join(d, contestant.replace(' ', '-') + '.iso')
        benchlib.progress('%s: %s' % (name, contestant))
        if contestant.startswith('ours'):
            res = run_child(contestant.split()[1], path, out, script_text,
                            args.runs, args.warmup)
        elif base.bios is None:
            entry['contestants'][contestant] = {
                'skipped': 'the source has no BIOS (ISOLINUX) entry'}
            continue
        elif contestant == '2013 way':
            tree = os.path.join(d, 'tree')
            res = time_external(lambda rss: way_2013(
                path, out, tree, script, cfg_path, cfg,
                base.bios.image.path.lstrip('/'), rss), args.runs,
                args.warmup, out, rss_file)
        else:
            res = time_external(lambda rss: xorriso_replay(
                path, out, d, script, cfg_path, cfg, rss), args.runs,
                args.warmup, out, rss_file)
        res['verify'] = verify(out, d, script, cfg_path or '/isolinux.cfg',
                               cfg, src_entries, efi_reads, esp)
        entry['contestants'][contestant] = res
    shutil.rmtree(d)
    return entry


# -- report --------------------------------------------------------------

def _mib(kib):
    return kib / 1024.0


def memory_text(res):
    if 'rss_base_kib' in res:
        return 'RSS +%.1f MiB (child %.0f); heap %.1f MiB' % (
            _mib(res['rss_peak_kib'] - res['rss_base_kib']),
            _mib(res['rss_peak_kib']), res['heap_peak_bytes'] / MIB)
    rss = res['tool_maxrss_kib']
    if not rss:
        return 'n/a (needs GNU time)'
    top = max(rss, key=rss.get)
    return 'RSS %.1f MiB (%s)' % (_mib(rss[top]), top)


def print_block(entry, out):
    src = entry['source_eltorito']
    shown = ', '.join('%s %s' % (e['platform'], e.get('path', '?'))
                      for e in src)
    print('%s: %s (%.1f MiB; El Torito: %s; EFI iPXE runs autoexec.ipxe: '
          '%s)' % (entry['name'], entry['path'], entry['size'] / MIB, shown,
                   'yes' if entry['efi_loader_reads_autoexec'] else 'no'),
          file=out)
    header = ('contestant', 'script boots via', 'median ms', 'p95 ms',
              'cpu ms', 'vs cold', 'peak memory')
    fmt = '  %-15s %-22s %9s %8s %7s %7s  %s'
    print(fmt % header, file=out)
    cold = entry['contestants'].get('ours cold', {})
    cold_median = benchlib.median(cold.get('times_ms', []))
    for name, res in entry['contestants'].items():
        if 'skipped' in res:
            print('  %-15s skipped: %s' % (name, res['skipped']), file=out)
            continue
        med = benchlib.median(res['times_ms'])
        ratio = '%.2fx' % (med / cold_median) if cold_median else '-'
        print(fmt % (name, res['verify']['coverage'], '%.2f' % med,
                     '%.2f' % benchlib.p95(res['times_ms']),
                     '%.2f' % benchlib.median(res['cpu_ms']), ratio,
                     memory_text(res)), file=out)
    r = entry['render_ms']
    print('  render script (once per instance, not in the rows above): '
          'median %.3f ms, p95 %.3f ms'
          % (benchlib.median(r), benchlib.p95(r)), file=out)
    for note in block_notes(entry):
        print('  - ' + note, file=out)
    print(file=out)


def block_notes(entry):
    notes = []
    cs = entry['contestants']
    ours = cs.get('ours cold') or cs.get('ours warm')
    if ours:
        notes.append('ours: import of nova_ipxe.iso took %.0f ms in the '
                     'child (once per process, not per build)'
                     % ours['import_ms'])
        if not ours['result']['uefi'] and entry['efi_reason']:
            notes.append('ours drops the UEFI entry: %s'
                         % entry['efi_reason'])
    for name in ('ours cold', 'ours warm'):
        res = cs.get(name)
        if res and res['cyclic_garbage_bytes'] > MIB:
            notes.append('%s: one build leaves %.1f MiB as cyclic garbage, '
                         'freed only when Python\'s cyclic GC runs; it piles '
                         'up between full collections, so RSS +X grows with '
                         '--runs' % (name, res['cyclic_garbage_bytes'] / MIB))
    warm = cs.get('ours warm')
    if warm and warm.get('rss_parsed_kib'):
        notes.append('ours warm: peak RSS +%.1f MiB after parsing the base '
                     'once, +%.1f MiB after the builds' % (
                         _mib(warm['rss_parsed_kib'] - warm['rss_base_kib']),
                         _mib(warm['rss_peak_kib'] - warm['rss_base_kib'])))
    w13 = cs.get('2013 way', {})
    if w13.get('steps_ms'):
        steps = w13['steps_ms']
        parts = ', '.join('%s %.2f' % (k, benchlib.median([s[k] for s in
                                                           steps]))
                          for k in steps[0])
        notes.append('2013 way, median ms per step: %s; extraction runs '
                     'for every instance, as it did in 2013' % parts)
    xr = cs.get('xorriso replay', {})
    if xr.get('times_ms'):
        v = xr['verify']
        note = ('xorriso replay keeps the source\'s El Torito entries (%s)'
                % ('verified the same' if v['same_entries_as_source']
                   else 'DIFFERENT from the source, check'))
        if any(e['platform'] == 'UEFI' for e in entry['source_eltorito']):
            note += (' but does NOT put autoexec.ipxe into the EFI image: '
                     'UEFI boots the stock iPXE without the script')
        notes.append(note)
        med = benchlib.median(xr['times_ms'])
        cpu = benchlib.median(xr['cpu_ms'])
        if med > 3 * cpu and med > 50:
            notes.append('xorriso replay: wall %.0f ms vs %.0f ms CPU: it '
                         'mostly waits (see bench/README.rst)' % (med, cpu))
    for name, res in cs.items():
        v = res.get('verify')
        if v and not (v['script_ok'] or v['efi_autoexec_ok']):
            notes.append('%s: the output does NOT carry the script' % name)
    return notes


LEGEND = """\
Legend:
  script boots via  firmware that boots iPXE with the instance script, read
                    back from the last output of each contestant (xorriso
                    -report_el_torito, extracted files, mtype for efi.img).
                    ours cold/warm and the 2013 way put the script only where
                    it runs; "BIOS; UEFI w/o script" = the UEFI entry boots
                    stock iPXE. The 2013 way is BIOS only by design.
  median/p95 ms     wall time per instance build, {runs} runs after {warmup}
                    untimed warm-ups; p95 by nearest rank. ours cold = parse
                    the source file + build; ours warm = build from a base
                    parsed once; 2013 way = xorriso extract + write files +
                    genisoimage + rm -r of the tree; xorriso replay = write
                    script/cfg files + one xorriso run.
  cpu ms            median user+sys CPU per build: our child's process_time;
                    for tools the wait4 rusage of their processes.
  vs cold           median / median of "ours cold".
  peak memory       ours: RSS +X = peak RSS (VmHWM, reset right after the
                    imports) minus the RSS then, i.e. what parsing and the
                    builds added (warm includes the parsed base); child =
                    that peak, interpreter and imports included; heap =
                    tracemalloc peak of one build (Python allocations only).
                    Tools: highest peak RSS of any one tool process (GNU
                    time %M on the untimed warm-up runs), whole process,
                    named in brackets. ru_maxrss from os.wait4 is in the
                    JSON only: it carries this script's own peak RSS across
                    fork+exec, so it is not the tool's.
"""


# -- machine and main ------------------------------------------------------

def machine(workdir):
    from importlib import metadata
    try:
        pycdlib_version = metadata.version('pycdlib')
    except metadata.PackageNotFoundError:
        pycdlib_version = '?'
    return {
        'nproc': os.cpu_count(),
        'usable_cpus': len(os.sched_getaffinity(0)),
        'cpu': benchlib.cpu_model(),
        'kernel': platform.release(),
        'python': platform.python_version(),
        'pycdlib': pycdlib_version,
        'xorriso': benchlib.first_line(['xorriso', '-no_rc', '-version']),
        'genisoimage': benchlib.first_line(['genisoimage', '-version']),
        'mtools': benchlib.first_line(['mtype', '--version']),
        'tmp_fs': benchlib.fs_type(workdir),
        'gnu_time': GNU_TIME,
        'loadavg': os.getloadavg(),
    }


def print_machine(m, out):
    print('Machine: nproc %d (usable %d), %s, Linux %s' % (
        m['nproc'], m['usable_cpus'], m['cpu'], m['kernel']), file=out)
    print('Python %s, pycdlib %s; %s; %s' % (
        m['python'], m['pycdlib'], m['xorriso'], m['genisoimage']), file=out)
    print('Outputs on /tmp (%s); load average at start %.2f %.2f %.2f; '
          'tool memory by %s' % (m['tmp_fs'], *m['loadavg'],
                                 m['gnu_time'] or 'nothing (no GNU time, '
                                 'Debian package time)'), file=out)
    print(file=out)


def parse_args(argv):
    p = argparse.ArgumentParser(
        description='Per-instance ISO build time and peak memory: '
                    'nova-ipxe vs the 2013 way vs xorriso replay.')
    p.add_argument('--runs', type=int, default=50,
                   help='timed runs per contestant (default 50)')
    p.add_argument('--warmup', type=int, default=2,
                   help='untimed runs first (default 2)')
    p.add_argument('--iso', action='append', default=[],
                   metavar='[NAME=]PATH',
                   help='a source ISO; NAME bookworm or trixie replaces '
                        'that default, other names add one (repeatable)')
    p.add_argument('--only-given', action='store_true',
                   help='benchmark only the --iso ones, not the defaults')
    p.add_argument('--json', metavar='FILE',
                   help='also write the raw numbers to FILE')
    p.add_argument('--child', help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        return args
    if args.runs < 1 or args.warmup < 0:
        p.error('--runs must be at least 1 and --warmup at least 0')
    isos = {} if args.only_given else dict(DEFAULT_ISOS)
    for spec in args.iso:
        name, sep, path = spec.partition('=')
        if not sep:
            name, path = os.path.splitext(os.path.basename(spec))[0], spec
            while name in isos:
                name += '+'
        isos[name] = path
    if not isos:
        p.error('no source ISO: give --iso or drop --only-given')
    args.isos = isos
    args.contestants = CONTESTANTS
    return args


def check_inputs(args):
    for tool, package in TOOLS.items():
        if shutil.which(tool) is None:
            raise BenchError('%s not found on PATH; install the Debian '
                             'package %s' % (tool, package))
    for name, path in args.isos.items():
        if not os.path.isfile(path):
            hint = 'check the path'
            if (name, path) in DEFAULT_ISOS:
                hint = ('%s, or pass --iso %s=PATH (or --only-given)'
                        % (FETCH_HINT[name], name))
            raise BenchError('source ISO %s not found at %s: %s'
                             % (name, path, hint))
        if not os.access(path, os.R_OK):
            raise BenchError('source ISO %s at %s is not readable'
                             % (name, path))
    if not os.path.isfile(NETWORK_DATA):
        raise BenchError('sample network data %s is missing' % NETWORK_DATA)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.child:
        child_main(json.loads(args.child))
        return 0
    check_inputs(args)
    iso = _import_nova_ipxe()
    global GNU_TIME
    GNU_TIME = gnu_time()
    workdir = tempfile.mkdtemp(prefix='nipxe-bench-', dir='/tmp')
    try:
        m = machine(workdir)
        print_machine(m, sys.stdout)
        results = []
        for name, path in args.isos.items():
            entry = bench_iso(name, path, args, workdir, iso)
            results.append(entry)
            print_block(entry, sys.stdout)
            sys.stdout.flush()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(LEGEND.format(runs=args.runs, warmup=args.warmup), end='')
    if args.json:
        with open(args.json, 'w') as f:
            json.dump({'machine': m, 'runs': args.runs,
                       'warmup': args.warmup, 'isos': results}, f, indent=1)
    return 0


if __name__ == '__main__':
    benchlib.run_main(main, 'build_iso.py')
