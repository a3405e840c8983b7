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

"""XenAPI figures, side by side in one run:

1. "ISO built" (bytes in memory) to "CD attached" over loopback against
   the XAPI stand-in, with the real XenAPI client: VDI.create, task, HTTP
   PUT /import_raw_vdi, task poll, VBD.create, boot order (attach_iso),
   and a re-attach, which also removes the previous CD.
2. The dom0 plugin's rewrite of the ISO (pycdlib, xorriso) against the
   2013 method (extract the tree, then genisoimage), per ISO.

Run from the repository root with the project's Python::

    python bench/xenapi_attach.py [--runs N]
"""

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import xmlrpc.client

import benchlib  # bench/ itself, the script directory

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from nova_ipxe.virt import xenapi  # noqa: E402

ISO = '/usr/lib/ipxe/ipxe.iso'
PLUGIN = os.path.join(REPO, 'xenapi_plugins', 'ipxe.py')
SETTINGS = {'ip': '192.0.2.10', 'netmask': '255.255.255.0',
            'gateway': '192.0.2.1', 'dns': '192.0.2.53',
            'url': 'http://192.0.2.1/menu.ipxe'}


def load_plugin():
    spec = importlib.util.spec_from_file_location('ipxe_plugin', PLUGIN)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def timed(fn, runs):
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return times


def bench_attach(runs, data):
    work = tempfile.mkdtemp(prefix='nipxe-bench-')
    proc = subprocess.Popen(
        [sys.executable, '-m', 'tools.xapi_standin', '--sr-dir', work],
        cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        url = json.loads(proc.stdout.readline())['url']
        control = xmlrpc.client.ServerProxy(url)
        info = control.standin.info()['Value']
        xapi = xenapi.Xapi(xenapi.connect(url, 'root', info['password']),
                           url)
        vm = info['vm']

        def fresh():
            xenapi.attach_iso(xapi, vm, data, 'bench')
            xenapi.detach_iso(xapi, vm)

        results = {'attach + detach': timed(fresh, runs)}
        xenapi.attach_iso(xapi, vm, data, 'bench')
        results['re-attach (replaces CD)'] = timed(
            lambda: xenapi.attach_iso(xapi, vm, data, 'bench'), runs)
        counts = control.standin.counts()['Value']
        if (counts['VDI'], counts['VBD'], counts['task']) != (1, 1, 0):
            raise benchlib.BenchError('objects leaked: %s' % counts)
        return results
    finally:
        proc.stdin.close()
        proc.wait(10)
        shutil.rmtree(work, ignore_errors=True)


def bench_rewrite(runs):
    plugin = load_plugin()
    script = plugin.render_script(SETTINGS)
    work = tempfile.mkdtemp(prefix='nipxe-bench-')
    target = os.path.join(work, 'iso.img')
    results = {}
    try:
        for name, tools in (('plugin, stdlib in place', {'stdlib': True}),
                            ('plugin, pycdlib', {'pycdlib': True}),
                            ('plugin, xorriso',
                             {'xorriso': shutil.which('xorriso')})):
            def one():
                shutil.copy(ISO, target)
                plugin.rewrite(target, script, tools=tools)
            results[name] = timed(one, runs)

        def legacy():
            # 2013: unpack the tree (it loop-mounted; xorriso extracts
            # here, no mount), write the configs, run mkisofs.
            shutil.copy(ISO, target)
            tree = os.path.join(work, 'tree')
            subprocess.run(['xorriso', '-osirrox', 'on', '-indev', target,
                            '-extract', '/', tree],
                           stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, check=True)
            os.chmod(tree, 0o755)
            for d, _, files in os.walk(tree):
                for f in files:
                    os.chmod(os.path.join(d, f), 0o644)
            with open(os.path.join(tree, 'netcfg.ipxe'), 'w') as f:
                f.write(script)
            with open(os.path.join(tree, 'isolinux.cfg'), 'w') as f:
                f.write(plugin.isolinux_cfg('/ipxe.krn'))
            subprocess.run(['genisoimage', '-quiet', '-l', '-o', target,
                            '-c', 'boot.cat', '-b', 'isolinux.bin',
                            '-no-emul-boot', '-boot-load-size', '4',
                            '-boot-info-table', '.'], cwd=tree,
                           check=True)
            shutil.rmtree(tree)
        results['2013 (extract + genisoimage)'] = timed(legacy, runs)
        return results
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--runs', type=int, default=20)
    args = parser.parse_args()
    for tool in ('xorriso', 'genisoimage'):
        if not shutil.which(tool):
            raise benchlib.BenchError('%s is not installed' % tool)
    with open(ISO, 'rb') as f:
        data = f.read()
    print('XenAPI bench, %d runs each, %s (%d bytes), %s' % (
        args.runs, ISO, len(data), benchlib.cpu_model()))
    print('%-32s %9s %9s' % ('', 'median ms', 'p95 ms'))
    print('ISO built -> CD attached (stand-in over loopback)')
    for name, times in bench_attach(args.runs, data).items():
        print('  %-30s %9.1f %9.1f' % (name, benchlib.median(times),
                                       benchlib.p95(times)))
    print('rewrite of the ISO in the SR (dom0 side)')
    for name, times in bench_rewrite(args.runs).items():
        print('  %-30s %9.1f %9.1f' % (name, benchlib.median(times),
                                       benchlib.p95(times)))
    return 0


if __name__ == '__main__':
    benchlib.run_main(main, 'xenapi_attach')
