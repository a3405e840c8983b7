"""nova-ipxe's tests.

The core suites (every sub-package here but those in ``NOVA_SUITES``) run
in the core venv, without Nova.  The suites in ``NOVA_SUITES`` need the
real Nova package and run in their own venvs and tox envs, started with
their own ``--test-path`` (see tox.ini and tools/run-tests.sh).
"""

import os

NOVA_SUITES = ('nova', 'nova21', 'nova_upstream', 'realhost')


def load_tests(loader, standard_tests, pattern):
    # Called when discovery starts at tests/ (the core run): discover the
    # core sub-packages and leave the Nova suites to their own runs.
    here = os.path.dirname(os.path.abspath(__file__))
    for name in sorted(os.listdir(here)):
        path = os.path.join(here, name)
        if name in NOVA_SUITES or not os.path.isfile(
                os.path.join(path, '__init__.py')):
            continue
        standard_tests.addTests(loader.discover(
            start_dir=path, pattern=pattern or 'test*.py',
            top_level_dir=os.path.dirname(here)))
    return standard_tests
