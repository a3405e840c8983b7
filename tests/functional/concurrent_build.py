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

"""One process of the concurrency test: N threads build per-instance ISOs
for the same Glance image on a shared, cold cache, all at once.

Instance ``n`` (process p, thread t: n = p * threads + t) gets the
address 198.51.100.(n + 1); its ISO is written to OUT/<n>.iso.
"""

import argparse
import os
import sys
import threading
import time

from oslo_config import cfg

from nova_ipxe import builder
from nova_ipxe import cache
from nova_ipxe import conf as ipxe_conf
from nova_ipxe import glance


def network_data(n):
    mac = 'fa:16:3e:00:%02x:%02x' % (n // 256, n % 256)
    return {
        'links': [{'id': 'tap%d' % n, 'type': 'ovs', 'mtu': 1500,
                   'ethernet_mac_address': mac}],
        'networks': [{'id': 'network0', 'type': 'ipv4', 'link': 'tap%d' % n,
                      'ip_address': '198.51.100.%d' % (n + 1),
                      'netmask': '255.255.255.0',
                      'routes': [{'network': '0.0.0.0',
                                  'netmask': '0.0.0.0',
                                  'gateway': '198.51.100.254'}]}],
        'services': []}


def main():
    p = argparse.ArgumentParser()
    for name in ('glance-url', 'image', 'cache-dir', 'out', 'gate'):
        p.add_argument('--' + name, required=True)
    p.add_argument('--process', type=int, required=True)
    p.add_argument('--threads', type=int, default=32)
    args = p.parse_args()

    conf = cfg.ConfigOpts()
    ipxe_conf.register_opts(conf)
    conf([], default_config_files=[])
    conf.set_override('boot_menu_url', 'http://198.51.100.254/menu',
                      group='ipxe')
    base_cache = cache.BaseIsoCache(args.cache_dir, 2 ** 30)
    errors = []

    def build(n):
        try:
            client = glance.GlanceClient(args.glance_url, retry_delay=0.05)
            builder.build_iso_from_image(
                client, base_cache, args.image,
                builder.Instance(network_data=network_data(n)),
                os.path.join(args.out, '%d.iso' % n), conf)
        except Exception as e:  # reported below, fails the process
            errors.append('%d: %s: %s' % (n, type(e).__name__, e))

    while not os.path.exists(args.gate):  # start both processes together
        time.sleep(0.01)
    threads = [threading.Thread(target=build, args=(
        args.process * args.threads + t,)) for t in range(args.threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        print('\n'.join(errors), file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
