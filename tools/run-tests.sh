#!/bin/bash
# The whole test suite, as CI runs it: install what is missing, check
# style, build the guide and the release notes, then every suite with
# stestr: the core suites (unit, functional with QEMU boots and the wheel
# built and installed beside the real Nova, the devstack plugin, ...) in
# .venv, and each Nova suite in its own venv.
# Run as root on Debian/Ubuntu. Extra arguments filter the core run
# (stestr regexes), e.g. tools/run-tests.sh tests.unit; NOVA_IPXE_SUITES
# picks suites (default: all), e.g. NOVA_IPXE_SUITES=core or "core docs".
set -euo pipefail
cd "$(dirname "$0")/.."
tools/install-deps.sh
export PATH="$PWD/.venv/bin:$PATH"
suites=${NOVA_IPXE_SUITES:-all}

wanted() { [ "$suites" = all ] || [[ " $suites " == *" $1 "* ]]; }

echo "== flake8"
flake8

# The guide and the release notes, warnings as errors (tox -e docs,
# releasenotes), in .venv-docs.
if wanted docs; then
    echo "== docs and release notes"
    tools/build-docs.sh
fi

# The QEMU boot tests append their power-on-to-menu times here.
NOVA_IPXE_BOOT_TIMINGS=$(mktemp --suffix=.boot-timings.jsonl)
export NOVA_IPXE_BOOT_TIMINGS
trap 'rm -f "$NOVA_IPXE_BOOT_TIMINGS"' EXIT

rc=0
passed=0 failed=0 skipped=0
# suite NAME VENV TEST_PATH [stestr run arguments]: run one stestr suite
# with that venv's stestr and add its counts to the totals.
suite() {
    local name=$1 venv=$2 path=$3 src=0 p f s
    shift 3
    echo "== $name: stestr --test-path $path run $*"
    "$venv/bin/stestr" --test-path "$path" --top-dir ./ run "$@" || src=$?
    read -r p f s < <("$venv/bin/stestr" last 2>/dev/null | awk '
        /Passed:/ {p=$NF} /Failed:/ {f=$NF} /Skipped:/ {s=$NF}
        END {print p+0, f+0, s+0}')
    echo "== $name: $p passed, $f failed, $s skipped"
    passed=$((passed + p)) failed=$((failed + f)) skipped=$((skipped + s))
    [ "$src" = 0 ] || rc=1
}

# The core suites: every sub-package of tests/ but the Nova ones (see
# tests/__init__.py).
wanted core && suite core .venv ./tests "$@"

# Nova 21 (XenAPI driver era) in .venv-nova21: the legacy 2013 chain.
if wanted nova21; then
    tools/install-nova21.sh
    suite nova21 .venv-nova21 ./tests/nova21
fi

# ipxe.LibvirtDriver on the real Nova 34, in its own venv (.venv-nova):
# our tests through Nova's functional harness (tests/nova), then a
# representative subset of Nova's own functional libvirt tests with every
# compute as ipxe.LibvirtDriver (tests/nova_upstream; the whole directory
# with NOVA_UPSTREAM_TESTS=all). The subset includes the tests that wrap
# _get_guest_config onto Nova's class (machine type, stateless firmware,
# device bus migration).
if wanted nova; then
    tools/install-nova.sh
    suite nova .venv-nova ./tests/nova --concurrency 2
    upstream=${NOVA_UPSTREAM_TESTS:-'test_(machine_type|stateless_firmware|device_bus_migration|rescue_deleted_base|uefi|vif_model)\.'}
    [ "$upstream" = all ] && upstream=
    # That one fails with Nova's stock driver too (7 != 6 verified image
    # properties in _assert_guest_config), here as with ours.
    suite nova-upstream .venv-nova ./tests/nova_upstream --concurrency 2 \
        --exclude-regex 'test_machine_type_and_bus_and_model_migration' \
        $upstream
fi

# A real compute host: Nova's services with ipxe.LibvirtDriver on a real
# libvirtd and QEMU in a network namespace (tests/realhost). One test
# process (the tests share the host). REALHOST_VENV picks the Nova venv.
if wanted realhost; then
    tools/install-nova.sh
    venv=${REALHOST_VENV:-.venv-nova}
    "$venv/bin/python" -c 'import libvirt' 2>/dev/null ||
        "$venv/bin/pip" install -q -r tools/realhost-requirements.txt
    suite realhost "$venv" ./tests/realhost --concurrency 1
fi

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
# One plain summary line over every suite, whatever the runners printed.
echo "$passed passed, $failed failed, $skipped skipped"
exit $rc
