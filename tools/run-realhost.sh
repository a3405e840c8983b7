#!/bin/bash
# tests/realhost: Nova's API, conductor, scheduler and placement with
# ipxe.LibvirtDriver as the compute driver on a real libvirtd and QEMU in
# a network namespace (see tests/realhost/base.py). Run as root after
# tools/install-deps.sh. The Nova venv is a parameter, so the tier runs on
# any installed Nova release: REALHOST_VENV (default .venv-nova, made by
# tools/install-nova.sh). Extra arguments go to stestr run (a filter).
# One test process: the tests share one host (libvirtd, namespace).
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${REALHOST_VENV:-.venv-nova}
if [ ! -x "$venv/bin/python" ]; then
    echo "run-realhost: no Nova venv at $venv (tools/install-nova.sh)" >&2
    exit 1
fi
if ! "$venv/bin/python" -c 'import libvirt' 2>/dev/null; then
    echo "run-realhost: installing libvirt-python into $venv" >&2
    "$venv/bin/pip" install -q -r tools/realhost-requirements.txt
fi
exec "$venv/bin/stestr" --test-path ./tests/realhost --top-dir ./ run \
    --concurrency 1 "$@"
