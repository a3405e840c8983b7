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

"""A model of how iPXE splits a script into commands (core/exec.c,
core/parseopt.c, hci/shell.c), used to check what a script does."""

OPERATORS = ('||', '&&', ';')


def logical_lines(text):
    """Join backslash continuations, as iPXE's script reader does."""
    lines, pending = [], ''
    for line in text.split('\n'):
        line = line.rstrip('\r')
        if line.endswith('\\'):
            pending += line[:-1]
            continue
        lines.append(pending + line)
        pending = ''
    if pending:
        lines.append(pending)
    return lines


def commands(text):
    """Return a list of ('label', name) and ('cmd', tokens, op) items."""
    items = []
    for line in logical_lines(text):
        stripped = line.lstrip(' \t')
        if stripped.startswith(':'):
            items.append(('label', stripped[1:].split()[0]
                          if stripped[1:].split() else ''))
            continue
        tokens = []
        for token in line.split():
            if token.startswith('#'):
                break  # the rest of the line is a comment
            tokens.append(token)
        current = []
        for token in tokens:
            if token in OPERATORS:
                items.append(('cmd', tuple(current), token))
                current = []
            else:
                current.append(token)
        if current:
            items.append(('cmd', tuple(current), None))
    return items


def skeleton(text):
    """The command structure with argument values blanked out.

    Tokens that expand iPXE settings stay visible.
    """
    shape = []
    for item in commands(text):
        if item[0] == 'label':
            shape.append(item)
        else:
            _, tokens, op = item
            shape.append(('cmd', tokens[0], len(tokens), op,
                          tuple(t for t in tokens if '${' in t)))
    return shape


def command_lines(text, name):
    """Token tuples of every command called ``name``."""
    return [item[1] for item in commands(text)
            if item[0] == 'cmd' and item[1] and item[1][0] == name]
