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

"""The one test base class: testtools + fixtures, a private [ipxe] config.

What tests run on (stock ISOs, network data, made-up ISOs) comes from
``tests/samples.py``.
"""

import logging
import os

import fixtures
from oslo_config import cfg
from oslo_config import fixture as config_fixture
import testtools

from nova_ipxe import conf as ipxe_conf
from tests import samples


class TestCase(testtools.TestCase):
    """Each test gets its own ConfigOpts with the [ipxe] options."""

    def setUp(self):
        super().setUp()
        self.useFixture(fixtures.Timeout(int(os.environ.get(
            'OS_TEST_TIMEOUT', 600)), gentle=True))
        # Keep library logging out of the test output (tests that check
        # a message install their own FakeLogger).
        self.useFixture(fixtures.FakeLogger(level=logging.DEBUG))
        conf = cfg.ConfigOpts()
        ipxe_conf.register_opts(conf)
        self.conf_fixture = self.useFixture(config_fixture.Config(conf))
        self.conf = conf
        conf([], default_config_files=[])
        self.flags(boot_menu_url='http://192.0.2.1:8080/menu.ipxe')
        self.tmp = self.useFixture(fixtures.TempDir()).path

    def flags(self, group='ipxe', **kw):
        self.conf_fixture.config(group=group, **kw)

    def load_conf(self, text):
        """A ConfigOpts with the [ipxe] options, read from ``text``."""
        path = os.path.join(self.tmp, 'nova.conf')
        with open(path, 'w') as f:
            f.write(text)
        conf = cfg.ConfigOpts()
        ipxe_conf.register_opts(conf)
        conf([], default_config_files=[path])
        return conf

    @staticmethod
    def network_data():
        """The demo instance's network data (a fresh copy)."""
        return samples.network_data()
