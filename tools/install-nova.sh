#!/bin/bash
# A Nova venv for the libvirt driver's tests and bench:
#
#   tools/install-nova.sh [RELEASE]      (31, 32, 33 or 34; default 34)
#
# makes .venv-nova-RELEASE with the real Nova of that release and what its
# own functional tests import (tools/nova-requirements/RELEASE.txt), plus
# this project installed as a regular (non-editable) package, because the
# shim nova/virt/ipxe only works inside Nova's own site-packages (doc/source/contributor/nova.rst). Tests then run from the source tree, whose nova_ipxe comes first on
# sys.path. NOVA_PYTHON picks the interpreter (default python3), e.g.
# NOVA_PYTHON=python3.13 for .venv-nova-34-py313 (the venv is named after
# a non-default interpreter); NOVA_VENV overrides the name. .venv-nova is
# kept as a link to .venv-nova-34 for older commands. qemu-img
# (qemu-utils, in bindep.txt) is needed for real image backends. Safe to
# run again; re-installs when a pin, setup.cfg or the shim changes.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { echo "install-nova: $*" >&2; }

RELEASE=${1:-34}
REQS=tools/nova-requirements/$RELEASE.txt
if [ ! -f "$REQS" ]; then
    log "no Nova release '$RELEASE' (supported: $(cd tools/nova-requirements &&
        ls [0-9]*.txt | sed 's/\.txt$//' | tr '\n' ' '))"
    exit 2
fi
PY=${NOVA_PYTHON:-python3}
suffix=
if [ "$PY" != python3 ]; then
    # python3.13 -> py313
    suffix=-py$(echo "${PY##*/}" | tr -dc 0-9)
fi
VENV=${NOVA_VENV:-.venv-nova-$RELEASE$suffix}

if [ ! -x "$VENV/bin/python" ]; then
    log "creating $VENV with $PY"
    if [[ "$PY" == python3.* ]] && command -v pyenv >/dev/null; then
        # pyenv's shim needs the version named: python3.13
        # runs 3.13.x.
        PYENV_VERSION=$(pyenv versions --bare | grep "^${PY#python}\." |
            tail -1)
        export PYENV_VERSION
    fi
    "$PY" -m venv "$VENV"
fi
stamp=$VENV/.nova-requirements.sha256
want=$( (cat "$REQS" tools/nova-requirements/common.txt requirements.txt \
    setup.cfg
    find nova -name '*.py' -print0 | sort -z | xargs -0 cat) | sha256sum)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    log "installing Nova $RELEASE and its test requirements into $VENV"
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
if [ "$VENV" = .venv-nova-34 ] && { [ -L .venv-nova ] || [ ! -e .venv-nova ]; }
then
    ln -sfn .venv-nova-34 .venv-nova
fi
"$VENV/bin/python" -c 'import importlib.metadata as m, sys
print("install-nova: %s: nova %s, Python %d.%d" % (sys.argv[1],
      m.version("nova"), *sys.version_info[:2]))' "$VENV" >&2
