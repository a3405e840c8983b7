#!/bin/bash
# Run devstack/plugin.sh the way devstack does, with the stand-ins of
# fakes.sh:
#   run-phase.sh stack     stack.sh: settings, then every stack phase in
#                          one shell, with errexit (and nounset) as
#                          stack.sh sets them
#   run-phase.sh unstack   unstack.sh: settings, then the unstack phase
#   run-phase.sh clean     clean.sh: unstack.sh first, then settings and
#                          the clean phase
# The test sets the environment: NIPXE_CALLS, NIPXE_FAKE_CLOUD,
# NIPXE_FAKE_ROOT, and devstack's variables (DEST, DATA_DIR, NOVA_CONF,
# PYTHON, ENABLED_SERVICES, ... and any localrc setting).

NIPXE_TESTS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
mode=$1

# devstack's load_plugin_settings, then run_plugins MODE PHASE.
function run_plugin {
    # shellcheck source=devstack/settings
    source "$DEST/nova-ipxe/devstack/settings"
    local phase
    for phase in "$@"; do
        # shellcheck disable=SC2086  # devstack passes an empty phase so
        # shellcheck source=devstack/plugin.sh
        source "$DEST/nova-ipxe/devstack/plugin.sh" $phase
    done
}

# shellcheck source=tests/devstack/fakes.sh
source "$NIPXE_TESTS_DIR/fakes.sh"
case "$mode" in
    stack)
        set -o errexit
        set -o nounset
        run_plugin "stack pre-install" "stack install" "stack post-config" \
            "stack extra" "stack test-config"
        ;;
    unstack)
        run_plugin "unstack"
        ;;
    clean)
        "$0" unstack
        run_plugin "clean"
        ;;
    *)
        echo "usage: $0 stack|unstack|clean" >&2
        exit 2
        ;;
esac
