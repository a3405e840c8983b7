#!/bin/bash
# Install a real Glance API (and gunicorn to serve it) into its own
# virtualenv, .venv-glance, for tools/glancelab.py: the functional tests
# and the demo talk to it over loopback. Glance pins half of OpenStack, so
# it never shares a venv with nova-ipxe. Safe to run again: a stamp file
# records what was installed and a second run does nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { echo "install-glance: $*" >&2; }
die() { log "error: $*"; exit 1; }

venv=.venv-glance
# Glance 33 (2025.2) is what tools/glancelab.py's config is written for.
specs=("glance>=33,<34" "gunicorn>=23,<28")
python=${PYTHON:-python3}

command -v "$python" >/dev/null 2>&1 ||
    die "$python not found; install Python 3.10+ (apt-get install python3)"
"$python" -m venv --help >/dev/null 2>&1 ||
    die "$python has no venv module; apt-get install python3-venv"

stamp=$venv/.glance-installed
want="${specs[*]} $("$python" -c 'import sys; print(sys.version)' |
    head -1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] &&
        [ -x "$venv/bin/gunicorn" ] && [ -x "$venv/bin/glance-manage" ]; then
    exit 0
fi

if [ ! -x "$venv/bin/python" ]; then
    log "creating $venv"
    "$python" -m venv "$venv" || die "could not create $venv"
fi
log "pip install ${specs[*]} into $venv (about half a minute)"
pip_log=$(mktemp)
trap 'rm -f "$pip_log"' EXIT
if ! "$venv/bin/pip" install -q "${specs[@]}" >"$pip_log" 2>&1; then
    tail -n 30 "$pip_log" >&2
    die "pip install failed (output above); PyPI must be reachable"
fi
for tool in gunicorn glance-manage; do
    [ -x "$venv/bin/$tool" ] || die "$venv/bin/$tool missing after install"
done
paste=$(find "$venv" -path '*etc/glance/glance-api-paste.ini' -print -quit)
[ -n "$paste" ] || die "no etc/glance/glance-api-paste.ini in $venv"
echo "$want" >"$stamp"
log "done: $("$venv/bin/python" -c \
    'import importlib.metadata as m; print("glance", m.version("glance"),
        "gunicorn", m.version("gunicorn"))')"
