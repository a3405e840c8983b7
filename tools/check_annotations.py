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

"""The public functions of the typed modules carry full annotations.

mypy checks what is annotated; this says what must be: every public
function and method (and ``__init__``) of a public class in the files
``mypy-files.txt`` lists, every parameter but ``self``/``cls``, and the
return.  Read with ``ast``, so it needs neither Nova nor an import.

    python tools/check_annotations.py [mypy-files.txt]
"""

import ast
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def typed_files(listing=os.path.join(REPO, 'mypy-files.txt')):
    with open(listing) as f:
        return [line.strip() for line in f
                if line.strip() and not line.startswith('#')]


def _public(name):
    return not name.startswith('_') or name == '__init__'


def _missing(func):
    """What ``func`` leaves unannotated: parameter names and 'return'."""
    args = func.args
    params = args.posonlyargs + args.args + args.kwonlyargs
    if params and params[0].arg in ('self', 'cls'):
        params = params[1:]
    params += [a for a in (args.vararg, args.kwarg) if a is not None]
    missing = [p.arg for p in params if p.annotation is None]
    if func.returns is None:
        missing.append('return')
    return missing


def unannotated(path):
    """[(qualified name, [what is missing])] of ``path``'s public API."""
    with open(os.path.join(REPO, path)) as f:
        tree = ast.parse(f.read(), path)
    found = []

    def visit(body, prefix):
        for node in body:
            if isinstance(node, ast.ClassDef) and not node.name.startswith(
                    '_'):
                visit(node.body, prefix + node.name + '.')
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) \
                    and _public(node.name):
                missing = _missing(node)
                if missing:
                    found.append((prefix + node.name, missing))
    visit(tree.body, '')
    return found


def main(argv):
    listing = argv[1] if len(argv) > 1 else os.path.join(REPO,
                                                         'mypy-files.txt')
    bad = 0
    for path in typed_files(listing):
        for name, missing in unannotated(path):
            print('%s: %s lacks annotations: %s' % (path, name,
                                                    ', '.join(missing)))
            bad += 1
    return 1 if bad else 0


if __name__ == '__main__':
    sys.exit(main(sys.argv))
