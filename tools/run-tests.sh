#!/bin/bash
# The whole test suite, as CI runs it: install what is missing, check
# style, then every unit and functional test (QEMU boots included) with
# stestr. Run as root on Debian/Ubuntu. Extra arguments filter tests
# (stestr regexes), e.g. tools/run-tests.sh tests.unit
set -euo pipefail
cd "$(dirname "$0")/.."
tools/install-deps.sh
export PATH="$PWD/.venv/bin:$PATH"

echo "== flake8"
flake8

echo "== stestr run $*"
rc=0
stestr run "$@" || rc=$?
# One plain summary line, whatever the runner printed above.
stestr last 2>/dev/null | awk '
    /Passed:/ {p=$NF} /Failed:/ {f=$NF} /Skipped:/ {s=$NF}
    END {printf "%d passed, %d failed, %d skipped\n", p, f, s}'
exit $rc
