#!/bin/bash
# Make .venv-nova21: Nova 21.2.4 (Ussuri, the last Nova with the XenAPI
# driver) with os-xenapi 0.3.4 on this Python 3.11, for the tests in
# tests/nova21 (the XenAPI driver and the legacy 2013 chain). Safe to
# run again. Pins found by trial here (2026-12):
#   oslo.db 10.0.0 + SQLAlchemy 1.3.24: nova.virt.xenapi imports;
#   oslo.service 2.1.2: nova.monkey_patch needs oslo_service.service_hub,
#     gone in later releases; installed in a second step because the
#     os-brick that pip picks asks for oslo.service>=2.8 (Nova's XenAPI
#     code never imports os-brick);
#   wsgi-intercept, osprofiler, mock, ddt, requests-mock, oslotest:
#     Nova 21's test fixtures.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${NOVA21_VENV:-.venv-nova21}
log() { echo "install-nova21: $*" >&2; }

stamp=$venv/.nova21.sha256
want=$(cat "$0" requirements.txt setup.cfg | sha256sum)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    exit 0
fi
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
log "pip install nova==21.2.4 os-xenapi==0.3.4 and test tools into $venv"
"$venv/bin/pip" install -q --upgrade pip >/dev/null
"$venv/bin/pip" install -q \
    'nova==21.2.4' 'os-xenapi==0.3.4' 'oslo.db==10.0.0' \
    'SQLAlchemy==1.3.24' -r requirements.txt \
    'stestr>=4' 'testtools>=2.5' 'fixtures>=4' oslotest ddt mock \
    requests-mock wsgi-intercept osprofiler 2>&1 |
    grep -v -e '^WARNING: Location' -e 'dependency conflicts' \
        -e 'requires oslo.service' >&2 || true
"$venv/bin/pip" install -q 'oslo.service==2.1.2' 2>&1 |
    grep -v -e '^WARNING: Location' -e 'dependency resolver' \
        -e 'requires oslo.service' >&2 || true
"$venv/bin/pip" install -q --no-deps -e . >/dev/null 2>&1
# The shim lives inside Nova's own package (doc/source/contributor/
# nova.rst); an editable install
# does not put it there, so link this checkout's copy in.
site=$("$venv/bin/python" -c 'import nova.virt, os; print(os.path.dirname(nova.virt.__file__))')
ln -sfn "$PWD/nova/virt/ipxe" "$site/ipxe"
"$venv/bin/python" -c 'import nova.virt.xenapi.driver, os_xenapi, nova_ipxe
import nova.virt.ipxe'
echo "$want" > "$stamp"
log "done: $("$venv/bin/python" -c 'import nova.version as v; print("nova", v.version_string())')"
