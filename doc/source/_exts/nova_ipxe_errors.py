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

"""``.. nova-ipxe-errors:: CATEGORY``: the errors of one category.

Lists every class of ``nova_ipxe.exception`` whose ``category`` is
CATEGORY (tenant, operator, infrastructure), read from the code, with its
log message, the message a tenant sees and what Nova does with a build
that fails with it.  The directive's content gives
the advice, one ``ClassName: what to do`` paragraph per class; a class
without advice gets its category's general advice, and advice for a class
that does not exist is a warning (so a rename fails the -W build).
"""

import inspect
import re

from docutils import nodes
from docutils.parsers.rst import Directive
from docutils.statemachine import StringList

from nova_ipxe import exception

GENERAL = {
    exception.TENANT: 'The tenant can fix this: the fault names what to '
                      'change in the image, the server or its network.',
    exception.OPERATOR: 'Fix the configuration, the host or the ISO as the '
                        'log message says, then rebuild or hard reboot the '
                        'server.',
    exception.INFRASTRUCTURE: 'Usually transient: check the service named '
                              '(Glance, the disk), then try again.',
}
# What Nova does with a failed build, by category: the rule of
# nova_ipxe/virt/errors.py (doc/source/contributor/errors.rst), which
# imports Nova and so cannot be imported by the docs build.
NOVA = {
    exception.TENANT: 'the build is aborted (not rescheduled); the '
                      'instance fault shows the tenant message.',
    exception.OPERATOR: 'the build is aborted (not rescheduled); the '
                        'instance fault shows the tenant message.',
    exception.INFRASTRUCTURE: 'the build is rescheduled to another host.',
}
_FIELD = re.compile(r'%\((\w+)\)[a-z]')


def _classes(category):
    found = []
    for name, cls in vars(exception).items():
        if (inspect.isclass(cls) and issubclass(cls, exception.NovaIpxeError)
                and cls.__name__ == name and cls.category == category
                and cls not in (exception.TenantError,
                                exception.OperatorError,
                                exception.InfrastructureError)):
            found.append(cls)
    return sorted(found, key=lambda c: c.__name__)


def _template(text):
    return _FIELD.sub(lambda m: '<%s>' % m.group(1), text)


class ErrorsDirective(Directive):
    required_arguments = 1
    has_content = True

    def _advice(self):
        advice, name = {}, None
        for line in self.content:
            m = re.match(r'^([A-Z]\w+):\s*(.*)$', line)
            if m:
                name = m.group(1)
                advice[name] = [m.group(2)]
            elif name is not None:
                advice[name].append(line)
        return {k: ' '.join(v).strip() for k, v in advice.items()}

    def run(self):
        category = self.arguments[0]
        if category not in exception.CATEGORIES:
            raise self.error('unknown category %r (one of %s)'
                             % (category, ', '.join(exception.CATEGORIES)))
        classes = _classes(category)
        advice = self._advice()
        names = {c.__name__ for c in classes}
        for name in sorted(set(advice) - names):
            self.state.document.reporter.warning(
                'advice for %s, which is not an error of category %s in '
                'nova_ipxe.exception' % (name, category), line=self.lineno)
        rst = []
        for cls in classes:
            parent = cls.__mro__[1].__name__
            rst += ['``%s`` (%s)' % (cls.__name__, parent),
                    '    *Log:* %s' % _escape(_template(cls.msg_fmt)),
                    '',
                    '    *Tenant sees:* %s'
                    % _escape(_template(cls.safe_fmt)),
                    '',
                    '    *What to do:* %s'
                    % advice.get(cls.__name__, GENERAL[category]),
                    '',
                    '    *Nova:* %s' % NOVA[category],
                    '']
        container = nodes.container()
        self.state.nested_parse(StringList(rst, source='nova_ipxe.exception'),
                                self.content_offset, container)
        return [container]


def _escape(text):
    # Messages are literal text, not reStructuredText.
    return text.replace('\\', '\\\\').replace('*', '\\*').replace(
        '`', '\\`').replace('_', '\\_').replace('|', '\\|')


def setup(app):
    app.add_directive('nova-ipxe-errors', ErrorsDirective)
    return {'parallel_read_safe': True, 'parallel_write_safe': True}
