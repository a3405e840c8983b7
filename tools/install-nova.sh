#!/bin/bash
# The Nova venv for the libvirt driver's tests and bench: .venv-nova with
# the real nova 34.x and what its own functional tests import, plus this
# project installed as a regular (non-editable) package, because the shim
# nova/virt/ipxe only works inside Nova's own site-packages
# (doc/source/contributor/nova.rst).
# Tests then run from the source tree, whose nova_ipxe comes first on
# sys.path. qemu-img (qemu-utils, in bindep.txt) is needed for real image
# backends. Safe to run again; re-installs when a pin or setup.cfg changes.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { echo "install-nova: $*" >&2; }

VENV=${NOVA_VENV:-.venv-nova}
REQS=tools/nova-requirements.txt

if [ ! -x "$VENV/bin/python" ]; then
    log "creating $VENV"
    python3 -m venv "$VENV"
fi
stamp=$VENV/.nova-requirements.sha256
want=$( (cat "$REQS" requirements.txt setup.cfg
    find nova -name '*.py' -print0 | sort -z | xargs -0 cat) | sha256sum)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    log "installing nova and its test requirements into $VENV"
    start=$(date +%s)
    "$VENV/bin/pip" install -q -r "$REQS" -r requirements.txt
    # Non-editable: the shim must land in Nova's site-packages.
    "$VENV/bin/pip" install -q --no-deps --force-reinstall .
    log "done in $(( $(date +%s) - start )) s"
    echo "$want" > "$stamp"
fi
# pip puts Nova's etc/ (api-paste.ini) under the venv prefix; Nova's test
# ConfFixture looks for it next to the package, as in a source tree.
site=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
if [ ! -e "$site/etc/nova/api-paste.ini" ]; then
    mkdir -p "$site/etc"
    ln -sfn "$(cd "$VENV" && pwd)/etc/nova" "$site/etc/nova"
fi
