#!/bin/bash
# The whole test suite, as CI runs it: install what is missing, check
# style, build the guide and the release notes, then every unit,
# functional and devstack plugin test (QEMU boots and the wheel built and
# installed beside the real Nova included) with stestr. Run as root on
# Debian/Ubuntu. Extra arguments filter tests (stestr regexes), e.g.
# tools/run-tests.sh tests.unit
set -euo pipefail
cd "$(dirname "$0")/.."
tools/install-deps.sh
export PATH="$PWD/.venv/bin:$PATH"

echo "== flake8"
flake8

echo "== docs and release notes (Sphinx, warnings as errors)"
tools/build-docs.sh

echo "== stestr run $*"
# The QEMU boot tests append their power-on-to-menu times here.
NOVA_IPXE_BOOT_TIMINGS=$(mktemp --suffix=.boot-timings.jsonl)
export NOVA_IPXE_BOOT_TIMINGS
trap 'rm -f "$NOVA_IPXE_BOOT_TIMINGS"' EXIT
rc=0
stestr run "$@" || rc=$?
if [ -s "$NOVA_IPXE_BOOT_TIMINGS" ]; then
    echo "== boot times measured by the functional tests (QEMU TCG)"
    python3 - "$NOVA_IPXE_BOOT_TIMINGS" <<'EOF'
import json, sys
for line in open(sys.argv[1]):
    t = json.loads(line)
    what = [k for k in t if k.endswith('_s')][0]
    print('  %-24s %-5s %-22s %6.2f s' % (t['case'], t['firmware'], what,
                                        t[what]))
EOF
fi
# One plain summary line, whatever the runner printed above.
stestr last 2>/dev/null | awk '
    /Passed:/ {p=$NF} /Failed:/ {f=$NF} /Skipped:/ {s=$NF}
    END {printf "%d passed, %d failed, %d skipped\n", p, f, s}'
exit $rc
