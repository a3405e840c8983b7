#!/bin/bash
# tests/realhost: Nova's API, conductor, scheduler and placement with
# ipxe.LibvirtDriver as the compute driver on a real libvirtd and QEMU in
# a network namespace (see tests/realhost/base.py). Run as root after
# tools/install-deps.sh:
#
#   tools/run-realhost.sh [RELEASE] [stestr run arguments]
#
# RELEASE is a Nova release (31 to 34, default 34), run in its venv
# .venv-nova-RELEASE (tools/install-nova.sh RELEASE, run here if needed);
# REALHOST_VENV names another venv. The rest goes to stestr run (a
# filter). One test process: the tests share one host.
set -euo pipefail
cd "$(dirname "$0")/.."
release=34
if [[ "${1:-}" =~ ^[0-9]+$ ]]; then
    release=$1
    shift
fi
venv=${REALHOST_VENV:-.venv-nova-$release}
if [ -z "${REALHOST_VENV:-}" ]; then
    tools/install-nova.sh "$release"
elif [ ! -x "$venv/bin/python" ]; then
    echo "run-realhost: no Nova venv at $venv" >&2
    exit 1
fi
if ! "$venv/bin/python" -c 'import libvirt' 2>/dev/null; then
    echo "run-realhost: installing libvirt-python into $venv" >&2
    "$venv/bin/pip" install -q -r tools/realhost-requirements.txt
fi
exec "$venv/bin/stestr" --test-path ./tests/realhost --top-dir ./ run \
    --concurrency 1 "$@"
