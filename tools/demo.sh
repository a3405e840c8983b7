#!/bin/bash
# The nova-ipxe demo (quick-start command one): install what is missing,
# then build a per-instance ISO for a sample instance and boot it in QEMU
# on a network with no DHCP. Run as root. --uefi boots under OVMF with
# Debian trixie's iPXE. Output goes to demo-output/.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/install-deps.sh
exec .venv/bin/python -m tools.demo "$@"
