#!/bin/bash
# Install what the demo, the tests and the bench need on a fresh
# Debian/Ubuntu machine, as root: the Debian packages in bindep.txt
# (always --no-install-recommends), a virtualenv in .venv with the Python
# requirements, a real Glance in .venv-glance (tools/install-glance.sh)
# for the functional tests and the demo, and Debian trixie's iPXE (a newer build whose UEFI loader
# runs autoexec.ipxe) unpacked under .cache/. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { echo "install-deps: $*" >&2; }

if [ "$(id -u)" != 0 ]; then
    log "run me as root (apt-get, network namespaces and QEMU taps need it)"
    exit 1
fi

packages=$(sed -n 's/^\([a-z0-9][a-z0-9.+-]*\) \[.*platform:dpkg.*/\1/p' \
    bindep.txt)
python3 -m venv --help >/dev/null 2>&1 || packages="$packages python3-venv"
missing=()
for p in $packages; do
    dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null |
        grep -q '^install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    log "apt-get install ${missing[*]}"
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
        --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
    log "creating .venv"
    python3 -m venv .venv
fi
stamp=.venv/.requirements.sha256
want=$(cat requirements.txt test-requirements.txt setup.cfg | sha256sum)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    log "installing Python requirements into .venv"
    .venv/bin/pip install -q --upgrade pip >/dev/null
    .venv/bin/pip install -q -r requirements.txt -r test-requirements.txt
    .venv/bin/pip install -q --no-deps -e .
    echo "$want" > "$stamp"
fi

# The user and group Debian's libvirtd is built to run QEMU as (what
# libvirt-daemon-system would create; tests/realhost runs libvirtd).
getent group libvirt-qemu >/dev/null || groupadd -r libvirt-qemu
getent passwd libvirt-qemu >/dev/null ||
    useradd -r -g libvirt-qemu -d /var/lib/libvirt -s /usr/sbin/nologin \
        libvirt-qemu

tools/install-glance.sh
tools/fetch-trixie-ipxe.sh .cache/trixie-ipxe
# iPXE 2.0 (Debian sid's ipxe 2.0.0+dfsg): tests/realhost boots it.
tools/fetch-trixie-ipxe.sh .cache/sid-ipxe sid
