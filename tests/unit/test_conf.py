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

import os

import fixtures
from oslo_config import cfg
from oslo_config import generator

from nova_ipxe import builder
from nova_ipxe import conf as ipxe_conf
from nova_ipxe import exception
from tests import base
from tests import samples

GENERATOR_CONF = os.path.join(samples.REPO, 'etc', 'nova-ipxe',
                              'nova-ipxe-config-generator.conf')
SAMPLE = os.path.join(samples.REPO, 'etc', 'nova-ipxe',
                      'nova-ipxe.conf.sample')


class ConfTestCase(base.TestCase):

    def test_sample_is_current(self):
        out = os.path.join(self.tmp, 'sample')
        generator.main(['--config-file', GENERATOR_CONF,
                        '--output-file', out])
        with open(SAMPLE) as f, open(out) as g:
            self.assertEqual(f.read(), g.read(),
                             'etc/nova-ipxe/nova-ipxe.conf.sample is stale: '
                             'run tox -e genconfig')

    def test_list_opts(self):
        groups = dict((str(g), [o.name for o in opts])
                      for g, opts in ipxe_conf.list_opts())
        for name in ('boot_menu_url', 'menu_network', 'chain_retries',
                     'chain_timeout', 'on_chain_failure', 'uefi',
                     'max_iso_size', 'menu_identity'):
            self.assertIn(name, groups['ipxe'])
        self.assertEqual(['ipxe_mkisofs_cmd'], groups['xenserver'])

    def test_2013_names_are_aliases(self):
        conf = self.load_conf('[xenserver]\n'
                              'ipxe_boot_menu_url = http://old.example/menu\n'
                              'ipxe_network_name = boot-net\n')
        self.assertEqual('http://old.example/menu', conf.ipxe.boot_menu_url)
        self.assertEqual('boot-net', conf.ipxe.menu_network)

    def test_mkisofs_cmd_reported_and_ignored(self):
        logger = self.useFixture(fixtures.FakeLogger())
        conf = self.load_conf(
            '[xenserver]\nipxe_mkisofs_cmd = /usr/bin/mkisofs\n')
        self.assertEqual(['xenserver.ipxe_mkisofs_cmd'],
                         ipxe_conf.report_obsolete(conf))
        self.assertIn('ipxe_mkisofs_cmd = /usr/bin/mkisofs is obsolete and '
                      'ignored', logger.output)
        self.assertEqual([], ipxe_conf.report_obsolete(self.conf))

    def test_choices_enforced(self):
        conf = self.load_conf('[ipxe]\non_chain_failure = poweroff\n')
        self.assertRaises(cfg.ConfigFileValueError,
                          lambda: conf.ipxe.on_chain_failure)

    def test_dollar_in_menu_url(self):
        conf = self.load_conf('[ipxe]\nboot_menu_url = http://b/m?ip=${ip}\n')
        e = self.assertRaises(exception.ConfigError,
                              builder.configured_menu_url, conf)
        self.assertIn('$${name}', str(e))
        conf = self.load_conf(
            '[ipxe]\nboot_menu_url = http://b/m?g=${grp.opt}\n')
        self.assertRaises(exception.ConfigError,
                          builder.configured_menu_url, conf)
        conf = self.load_conf('[ipxe]\nboot_menu_url = http://b/m?ip=$${ip}\n')
        self.assertEqual('http://b/m?ip=${ip}',
                         builder.configured_menu_url(conf))
