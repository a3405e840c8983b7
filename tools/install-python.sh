#!/bin/bash
# A venv for the unit tier on another Python:
#
#   tools/install-python.sh 3.12        -> .venv-py312
#
# with requirements.txt, test-requirements.txt and this project
# (editable), on the pyenv interpreter of that version (the
# shim needs PYENV_VERSION). The core supports every Python of the Nova
# releases it runs with; CI runs tests/unit on 3.10 to 3.13. Safe to run
# again; re-installs when a requirement or setup.cfg changes.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { echo "install-python: $*" >&2; }

VERSION=${1:?usage: tools/install-python.sh 3.N}
VENV=.venv-py${VERSION//./}
if [ ! -x "$VENV/bin/python" ]; then
    if command -v pyenv >/dev/null; then
        PYENV_VERSION=$(pyenv versions --bare | grep "^$VERSION\." | tail -1)
        export PYENV_VERSION
    fi
    log "creating $VENV with Python ${PYENV_VERSION:-$VERSION}"
    "python$VERSION" -m venv "$VENV"
fi
stamp=$VENV/.requirements.sha256
want=$(cat requirements.txt test-requirements.txt setup.cfg | sha256sum)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    log "installing Python requirements into $VENV"
    start=$(date +%s)
    "$VENV/bin/pip" install -q --upgrade pip >/dev/null
    "$VENV/bin/pip" install -q -r requirements.txt -r test-requirements.txt
    "$VENV/bin/pip" install -q --no-deps -e .
    log "done in $(( $(date +%s) - start )) s"
    echo "$want" > "$stamp"
fi
