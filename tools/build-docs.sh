#!/bin/bash
# Build the guide (doc/) and the release notes (releasenotes/) with
# warnings as errors: the commands of tox -e docs,releasenotes, in a
# virtualenv of their own, .venv-docs (doc/requirements.txt plus this
# project, whose options the guide documents). Safe to run again. Output:
# doc/build/html, releasenotes/build/html.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { echo "build-docs: $*" >&2; }

VENV=.venv-docs
if [ ! -x "$VENV/bin/python" ]; then
    log "creating $VENV"
    python3 -m venv "$VENV"
fi
stamp=$VENV/.requirements.sha256
want=$(cat doc/requirements.txt requirements.txt setup.cfg | sha256sum)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    log "installing doc/requirements.txt into $VENV"
    "$VENV/bin/pip" install -q -r doc/requirements.txt -r requirements.txt \
        wheel
    # Editable, for the oslo.config.opts entry point the option reference
    # reads; with the venv's own setuptools and pbr (quicker than an
    # isolated build).
    "$VENV/bin/pip" install -q --no-deps --no-build-isolation -e .
    echo "$want" > "$stamp"
fi

rm -rf doc/build releasenotes/build
"$VENV/bin/sphinx-build" -W --keep-going -q -b html -d doc/build/doctrees \
    doc/source doc/build/html
"$VENV/bin/sphinx-build" -W --keep-going -q -a -E -b html \
    -d releasenotes/build/doctrees releasenotes/source \
    releasenotes/build/html
log "guide in doc/build/html, release notes in releasenotes/build/html"
