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

"""The Pythons the package says it runs on, and what its code needs.

The supported Nova releases run on Python 3.9 (Nova 31) to 3.13 (Nova
34).  CI runs the unit tier on 3.10 to 3.13; 3.9 is checked here
statically: no syntax or standard library call newer than 3.9 in the
package (nova_ipxe and the shim).
"""

import configparser
import os
import subprocess
import sys

import testtools

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
OLDEST, NEWEST = (3, 9), (3, 13)


class PythonVersionsTestCase(testtools.TestCase):

    def test_code_keeps_to_the_oldest_supported_python(self):
        vermin = os.path.join(os.path.dirname(sys.executable), 'vermin')
        proc = subprocess.run(
            [vermin, '-t=%d.%d-' % OLDEST, '--violations', '--no-tips',
             '--eval-annotations', os.path.join(ROOT, 'nova_ipxe'),
             os.path.join(ROOT, 'nova')],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.assertEqual(0, proc.returncode, proc.stdout)

    def test_metadata_says_the_same(self):
        cfg = configparser.ConfigParser()
        cfg.read(os.path.join(ROOT, 'setup.cfg'))
        meta = cfg['metadata']
        self.assertEqual('>=%d.%d' % OLDEST, meta['python_requires'])
        listed = {line.rsplit(':: ', 1)[1] for line in
                  meta['classifier'].splitlines()
                  if line.startswith('Programming Language :: Python :: 3.')}
        self.assertEqual({'3.%d' % minor for minor in
                          range(OLDEST[1], NEWEST[1] + 1)}, listed)
