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

"""Profiles: the operator's templates, rendered in a Jinja2 sandbox.

A profile NAME is ``NAME.ipxe.j2`` (the boot script the server runs) and
optionally ``NAME.preseed.j2`` (what its installer fetches).  Built-in
ones live beside this module; ``[menu_service] profiles_dir`` adds and
replaces them.

Neither output kind can quote: iPXE splits a line on whitespace and
expands ``${...}``, and a preseed line ends at a newline and its
``late_command`` runs in a shell.  So every value a template outputs
(``{{ ... }}``) goes through the output kind's check, the ``finalize``
hook of the environment, and a value that is not safe as it stands
refuses the whole rendering: iPXE values must pass
:func:`nova_ipxe.script.check_token`, preseed values must hold no
control, format or line-separator character and none of a shell's
special characters.  The tenant's SSH key never reaches a template's
shell line: the installer fetches it from the service (``key_url``).
"""

import os
import re
import unicodedata

import jinja2
from jinja2 import sandbox

from nova_ipxe import exception
from nova_ipxe import script

NAME_RE = re.compile(r'[a-z0-9][a-z0-9._-]{0,63}', re.ASCII)
BUILTIN_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                           'profiles')
BUILTIN = ('default', 'local', 'debian-12')
KINDS = ('ipxe', 'preseed')
_HIDDEN = frozenset(('Cc', 'Cf', 'Zl', 'Zp'))
_SHELL_SPECIAL = frozenset('`$\\"\';&|<>(){}*?[]!#~')


class ProfileError(Exception):
    """A profile cannot be used: unknown, or its output would be unsafe."""


class OperatorValue(str):
    """Operator configuration that may hold iPXE settings (``${...}``)."""


def _ipxe_value(value):
    text = str(value)
    try:
        return script.check_token(text, 'template value',
                                  allow_settings=isinstance(
                                      value, OperatorValue))
    except exception.InvalidScriptValue as e:
        raise ProfileError(str(e))


def _preseed_value(value):
    text = str(value)
    for ch in text:
        if unicodedata.category(ch) in _HIDDEN or ch in _SHELL_SPECIAL:
            raise ProfileError('refusing %s for the preseed: it holds %r'
                               % (exception.show(text), ch))
    return text


_FINALIZE = {'ipxe': _ipxe_value, 'preseed': _preseed_value}


class Profiles:
    """Finds and renders profiles; one sandbox per output kind."""

    def __init__(self, profiles_dir=None):
        dirs = [profiles_dir] if profiles_dir else []
        loader = jinja2.FileSystemLoader(dirs + [BUILTIN_DIR])
        self._envs = {
            kind: sandbox.SandboxedEnvironment(
                loader=loader, undefined=jinja2.StrictUndefined,
                finalize=_FINALIZE[kind], autoescape=False,
                trim_blocks=True, lstrip_blocks=True,
                keep_trailing_newline=True)
            for kind in KINDS}

    @staticmethod
    def check_name(name):
        if not isinstance(name, str) or not NAME_RE.fullmatch(name):
            raise ProfileError('%s is not a profile name (a-z 0-9 . _ -, '
                               'at most 64)' % exception.show(name))
        return name

    def has(self, name, kind='ipxe'):
        try:
            self._envs[kind].get_template('%s.%s.j2' % (name, kind))
            return True
        except jinja2.TemplateNotFound:
            return False

    def render(self, name, kind, values):
        """The text of profile ``name``'s ``kind`` output for ``values``."""
        self.check_name(name)
        try:
            template = self._envs[kind].get_template('%s.%s.j2'
                                                     % (name, kind))
        except jinja2.TemplateNotFound:
            raise ProfileError('there is no %s profile %s' % (kind, name))
        try:
            text = template.render(**values)
        except ProfileError:
            raise
        except (jinja2.TemplateError, sandbox.SecurityError) as e:
            raise ProfileError('profile %s (%s) failed: %s: %s'
                               % (name, kind, type(e).__name__,
                                  exception.show(str(e), 200)))
        if kind == 'ipxe' and not text.startswith('#!ipxe'):
            raise ProfileError('profile %s does not start with #!ipxe' % name)
        return text
