#!/bin/bash
# The compute demo: a server from ipxe-boot created through Nova's REST API
# on a real libvirtd and QEMU in a network namespace with no DHCP (Nova's
# own services, compute_driver = ipxe.LibvirtDriver). Installs what is
# missing (Debian packages, the Nova venv, libvirt-python), prints what the
# menu server saw and where the console screenshot is (demo-output/).
# Run as root. Nova 34 (.venv-nova-34).
set -euo pipefail
cd "$(dirname "$0")/.."
tools/install-deps.sh
tools/install-nova.sh 34
venv=.venv-nova-34
"$venv/bin/python" -c 'import libvirt' 2>/dev/null ||
    "$venv/bin/pip" install -q -r tools/realhost-requirements.txt
exec "$venv/bin/python" -m tools.demo_compute "$@"
