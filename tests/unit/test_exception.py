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

"""nova_ipxe.exception: three categories, two one-line messages each."""

import ast
import inspect
import os
import re
import unicodedata

import hypothesis
from hypothesis import strategies as st

import nova_ipxe
from nova_ipxe import exception
from tests import base

FIELD = re.compile(r'%\((\w+)\)([a-z])')
# Arguments a class fills in itself when the caller leaves them out.
DEFAULTS = {'details'} | {'call', 'code'}


def errors():
    return [c for _, c in inspect.getmembers(exception, inspect.isclass)
            if issubclass(c, exception.NovaIpxeError)]


def fields(cls):
    """{name: conversion} of both templates of ``cls``."""
    return dict(FIELD.findall(cls.msg_fmt) + FIELD.findall(cls.safe_fmt))


def raise_sites():
    """Where the package constructs a typed error with keywords only.

    [(file:line, class name, keyword names)]; a message given as text, or
    ``**kwargs`` passed on, is left out.
    """
    top = os.path.dirname(nova_ipxe.__file__)
    names = {c.__name__ for c in errors()}
    sites = []
    for folder, _, files in os.walk(top):
        for name in sorted(f for f in files if f.endswith('.py')):
            path = os.path.join(folder, name)
            with open(path) as f:
                tree = ast.parse(f.read(), path)
            for node in ast.walk(tree):
                if (isinstance(node, ast.Call)
                        and isinstance(node.func, ast.Attribute)
                        and isinstance(node.func.value, ast.Name)
                        and node.func.value.id == 'exception'
                        and node.func.attr in names and not node.args
                        and all(k.arg for k in node.keywords)):
                    sites.append(('%s:%d' % (os.path.relpath(path, top),
                                             node.lineno), node.func.attr,
                                  {k.arg for k in node.keywords}))
    return sites


CATEGORY_BASES = {exception.TenantError: exception.TENANT,
                  exception.OperatorError: exception.OPERATOR,
                  exception.InfrastructureError: exception.INFRASTRUCTURE}


class HierarchyTestCase(base.TestCase):

    def test_every_error_in_one_category(self):
        errors = [cls for _, cls in inspect.getmembers(exception,
                                                       inspect.isclass)
                  if issubclass(cls, exception.NovaIpxeError)
                  and cls is not exception.NovaIpxeError
                  and cls not in CATEGORY_BASES]
        self.assertGreater(len(errors), 10)
        off_base = []
        for cls in errors:
            bases = [b for b in CATEGORY_BASES if issubclass(cls, b)]
            self.assertEqual(1, len(bases), cls.__name__)
            self.assertIn(cls.category, exception.CATEGORIES)
            if CATEGORY_BASES[bases[0]] != cls.category:
                off_base.append(cls)
        # .category is the contract.  The one class whose category is not
        # its base's: the operator's own menu URL, still an InvalidMenuUrl
        # for callers that catch every bad URL.
        self.assertEqual([exception.InvalidConfiguredMenuUrl], off_base)
        self.assertEqual(exception.OPERATOR,
                         exception.InvalidConfiguredMenuUrl.category)


class MessageTestCase(base.TestCase):

    def test_values_cannot_split_a_message(self):
        e = exception.InvalidIso(source='/var/lib/x.iso\nforged: line',
                                 reason='bad\r\u2028byte')
        for text in (str(e), e.message, e.safe_message):
            self.assertEqual([text], text.splitlines())
        self.assertIn('\\x0a', str(e))
        self.assertIn('\\u2028', e.safe_message)

    @hypothesis.settings(max_examples=300, deadline=None)
    @hypothesis.given(st.text())
    def test_no_hidden_character_survives(self, text):
        shown = exception.one_line(text)
        self.assertEqual([], [c for c in shown if unicodedata.category(c)
                              in exception.HIDDEN_CATEGORIES])
        self.assertLessEqual(len(shown), exception.MAX_MESSAGE)
        self.assertNotIn('\n', shown)

    def test_format_characters_escaped(self):
        # Cf (bidi overrides, zero-width), Zl, Zp, C1: all escaped.
        self.assertEqual('a\\u202eb\\u200bc\\u2029d\\x85e\\u2066f',
                         exception.one_line('a\u202eb\u200bc\u2029d\x85e'
                                            '\u2066f'))
        e = exception.InvalidIso(source='x', reason='name evil\u202etxt.exe')
        self.assertIn('evil\\u202etxt.exe', str(e))
        self.assertIn('evil\\u202etxt.exe', e.safe_message)

    def test_safe_message_leaves_out_the_host_path(self):
        e = exception.InvalidIso(source='/var/lib/nova/x.iso', reason='r')
        self.assertIn('/var/lib/nova/x.iso', str(e))
        self.assertNotIn('/var/lib/nova', e.safe_message)
        self.assertEqual(exception.TENANT, e.category)

    def test_no_safe_message_shows_host_side_values(self):
        # Values only the host knows: paths, option values, tools.
        host_side = ('path', 'source', 'limit', 'tool', 'purpose',
                     'network', 'seconds')
        for cls in [c for _, c in inspect.getmembers(exception,
                                                     inspect.isclass)
                    if issubclass(c, exception.NovaIpxeError)]:
            kwargs = {name: 'SENTINEL-%s' % name
                      for name in ('actual', 'algo', 'binary', 'boot_path',
                                   'expected', 'field', 'image', 'name',
                                   'present', 'reason', 'status', 'url',
                                   'value', 'what') +
                      host_side}
            kwargs.update(size=70000000, needed=1, free=0,
                          limit=67108864, status=403, seconds=600)
            e = cls(**kwargs)
            for name in host_side:
                self.assertNotIn(str(kwargs[name]), e.safe_message,
                                 '%s shows %s' % (cls.__name__, name))
            self.assertNotIn('%(', e.safe_message, cls.__name__)

    def test_every_template_renders_from_its_own_fields(self):
        # A template that does not format (a typo in a field, a missing
        # conversion) would fall back to the raw template in the log.
        for cls in errors():
            kwargs = {name: 7 if conv == 'd' else 'value-of-%s' % name
                      for name, conv in fields(cls).items()}
            e = cls(**kwargs)
            self.assertEqual(exception.one_line(cls.msg_fmt % kwargs),
                             e.message, cls.__name__)
            self.assertEqual(exception.one_line(cls.safe_fmt % kwargs),
                             e.safe_message, cls.__name__)

    def test_every_raise_site_fills_the_templates(self):
        # What a caller passes against what the class's templates use: a
        # field renamed in a template, or a caller that forgets one,
        # fails here rather than in a log line nobody reads.
        sites = raise_sites()
        self.assertGreater(len(sites), 60)
        classes = {c.__name__: c for c in errors()}
        missing = []
        for where, name, given in sites:
            wanted = set(fields(classes[name])) - DEFAULTS
            if wanted - given:
                missing.append('%s: %s without %s' % (
                    where, name, ', '.join(sorted(wanted - given))))
        self.assertEqual([], missing)

    def test_bounded(self):
        text = exception.one_line('x' * 5000)
        self.assertEqual(exception.MAX_MESSAGE, len(text))
        self.assertTrue(text.endswith('...'))

    def test_template_bug_still_says_what(self):
        # A missing argument must not hide the error behind a KeyError.
        e = exception.InvalidIso(source='x.iso')
        self.assertIn('x.iso', str(e))
        self.assertIn('%(source)s', str(e))

    def test_show_untrusted_values(self):
        self.assertEqual('an integer of 16610 bits',
                         exception.show(10 ** 5000))
        self.assertEqual('a list', exception.show([[[]]]))
        self.assertEqual("'%s...'" % ('a' * 64), exception.show('a' * 100))
        self.assertEqual("'a\\nb'", exception.show('a\nb'))
