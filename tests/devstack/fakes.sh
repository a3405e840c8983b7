#!/bin/bash
# Stand-ins for the devstack functions devstack/plugin.sh and
# devstack/settings use. Each records its call, one line of shell-quoted
# words, in $NIPXE_CALLS; the ini functions and `openstack` keep their
# state in files (fake_cloud.py) that the tests read back. Sourced by
# run-phase.sh.

NIPXE_FAKES_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# The stand-ins need only the standard library: -I -S starts fastest.
NIPXE_FAKES_PYTHON=${NIPXE_FAKES_PYTHON:-python3}

function record {
    local word line=""
    for word in "$@"; do
        line+=$(printf '%q ' "$word")
    done
    echo "$line" >> "$NIPXE_CALLS"
}

function die {
    local line=$1
    shift
    record die "$@"
    echo "[ERROR] plugin.sh:$line $*" >&2
    exit 1
}

function warn {
    local exitcode=$?
    record warn "${@:2}"
    echo "[WARNING] $2"
    return $exitcode
}

function echo_summary {
    record echo_summary "$@"
}

# devstack's trueorfalse: the named variable's value as True or False.
function trueorfalse {
    local default=$1
    local name=$2
    local value=${!name:-$default}
    case "${value,,}" in
        1|yes|true|on) echo True ;;
        0|no|false|off) echo False ;;
        *) echo "$default" ;;
    esac
}

function is_service_enabled {
    local service
    for service in "$@"; do
        [[ ,${ENABLED_SERVICES}, =~ ,${service}, ]] && return 0
        [[ $service == nova && ,${ENABLED_SERVICES} =~ ,n- ]] && return 0
        [[ $service == glance && ,${ENABLED_SERVICES} =~ ,g- ]] && return 0
        [[ $service == neutron && ,${ENABLED_SERVICES} =~ ,q- ]] && return 0
    done
    return 1
}

function enable_service {
    local service
    for service in "$@"; do
        if [[ ,${DISABLED_SERVICES}, =~ ,${service}, ]]; then
            continue
        fi
        is_service_enabled "$service" || ENABLED_SERVICES+=",$service"
    done
}

function is_fedora {
    [[ "${NIPXE_FAKE_OS:-}" == fedora ]]
}

function is_ubuntu {
    [[ "${NIPXE_FAKE_OS:-}" != fedora ]]
}

function git_clone {
    record git_clone "$@"
}

function setup_develop {
    record setup_develop "$@"
}

function pip_install {
    record pip_install "$@"
}

function pip_uninstall {
    record pip_uninstall "$@"
}

function install_package {
    record install_package "$@"
}

# sudo runs the command as the test user; the paths are all temporary.
function sudo {
    record sudo "$@"
    "$@"
}

function iniset {
    record iniset "$@"
    "$NIPXE_FAKES_PYTHON" -I -S "$NIPXE_FAKES_DIR/fake_cloud.py" ini-set "$@"
}

function iniget {
    "$NIPXE_FAKES_PYTHON" -I -S "$NIPXE_FAKES_DIR/fake_cloud.py" ini-get "$@"
}

function inidelete {
    record inidelete "$@"
    "$NIPXE_FAKES_PYTHON" -I -S "$NIPXE_FAKES_DIR/fake_cloud.py" ini-del "$@"
}

function openstack {
    record openstack "$@"
    "$NIPXE_FAKES_PYTHON" -I -S "$NIPXE_FAKES_DIR/fake_cloud.py" openstack "$@"
}

function apache_site_config_for {
    echo "$NIPXE_FAKE_ROOT/apache/sites-available/$1.conf"
}

function enable_apache_site {
    record enable_apache_site "$@"
    mkdir -p "$NIPXE_FAKE_ROOT/apache/sites-enabled"
    ln -sfn "../sites-available/$1.conf" \
        "$NIPXE_FAKE_ROOT/apache/sites-enabled/$1.conf"
}

function disable_apache_site {
    record disable_apache_site "$@"
    rm -f "$NIPXE_FAKE_ROOT/apache/sites-enabled/$1.conf"
}

function restart_apache_server {
    record restart_apache_server "$@"
}

# devstack's write_uwsgi_config CONF WSGI URL HTTP NAME: the uwsgi ini
# (here only the WSGI file) and the Apache site that proxies URL to it.
function write_uwsgi_config {
    record write_uwsgi_config "$@"
    mkdir -p "$(dirname "$1")"
    printf '[uwsgi]\nwsgi-file = %s\n' "$2" > "$1"
    echo "ProxyPass \"$3\" \"unix:/run/uwsgi/$5.socket|uwsgi://uwsgi-uds-$5\"" \
        > "$(apache_site_config_for "$5")"
    enable_apache_site "$5"
}

function remove_uwsgi_config {
    record remove_uwsgi_config "$@"
    rm -f "$1" "$(apache_site_config_for "$2")"
    disable_apache_site "$2"
}

function run_process {
    record run_process "$@"
}

function stop_process {
    record stop_process "$@"
}
