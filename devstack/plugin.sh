#!/bin/bash
# devstack/plugin.sh: the nova-ipxe devstack plugin.
#
# devstack sources this file as "plugin.sh MODE PHASE" (stack pre-install,
# install, post-config, extra; unstack; clean) after devstack/settings. It
# installs nova-ipxe into devstack's Python, sets compute_driver and the
# [ipxe] options in nova.conf, serves a demo menu from devstack's Apache,
# uploads the distribution's iPXE ISO to Glance as an iPXE boot image and
# creates a network whose subnet has no DHCP. unstack and clean undo it.

# Save trace setting
_XTRACE_NOVA_IPXE=$(set +o | grep xtrace)
set -o xtrace

# The Apache site (a file in Apache's configuration) that serves the menu.
NOVA_IPXE_APACHE_SITE=nova-ipxe
# The [ipxe] options the plugin may write (each from NOVA_IPXE_<OPTION>).
NOVA_IPXE_OPTIONS="boot_menu_url on_chain_failure on_build_failure uefi
    menu_network allow_menu_url_override dhcp_subnets menu_signing_key
    menu_signing_key_id allow_untested_nova"

# The menu URL written to [ipxe] boot_menu_url.
function nova_ipxe_menu_url {
    if [[ -n "$NOVA_IPXE_BOOT_MENU_URL" ]]; then
        echo "$NOVA_IPXE_BOOT_MENU_URL"
        return
    fi
    local host=$NOVA_IPXE_MENU_HOST
    if [[ "$host" == *:* ]]; then
        host="[$host]"
    fi
    echo "http://$host/nova-ipxe/menu.ipxe"
}

# Nova's own nova/virt directory. nova is a regular package, so the shim
# nova/virt/ipxe only loads from inside it: an editable install of
# nova-ipxe cannot add to it (a wheel install into Nova's site-packages
# can; devstack installs Nova from git).
function nova_ipxe_nova_virt_dir {
    "$PYTHON" -c 'import os, nova.virt; print(os.path.dirname(nova.virt.__file__))'
}

function install_nova_ipxe {
    # The stock iPXE ISO (NOVA_IPXE_ISO).
    if [[ "$NOVA_IPXE_UPLOAD_IMAGE" == "True" ]]; then
        if is_fedora; then
            install_package ipxe-bootimgs-x86
        else
            install_package ipxe
        fi
    fi
    setup_develop "$NOVA_IPXE_DIR"
    local virt_dir
    if ! virt_dir=$(nova_ipxe_nova_virt_dir) || [[ -z "$virt_dir" ]]; then
        die $LINENO "nova-ipxe: cannot import nova.virt with $PYTHON"
    fi
    if [[ -e "$virt_dir/ipxe" && ! -L "$virt_dir/ipxe" ]]; then
        die $LINENO "nova-ipxe: $virt_dir/ipxe exists and is not our link; remove it first"
    fi
    ln -sfn "$NOVA_IPXE_DIR/nova/virt/ipxe" "$virt_dir/ipxe"
    check_nova_ipxe_nova_release
}

# Whatever branch devstack runs (a stable branch or master), the Nova it
# installed must be a release ipxe.LibvirtDriver was tested with, or
# nova-compute would refuse to start: say so now, naming the releases.
function check_nova_ipxe_nova_release {
    local allow=() out
    if [[ "$(trueorfalse False NOVA_IPXE_ALLOW_UNTESTED_NOVA)" == "True" ]]; then
        allow=(--allow-untested)
    fi
    if ! out=$("$PYTHON" -m nova_ipxe.virt.release "${allow[@]}"); then
        die $LINENO "$out (NOVA_IPXE_ALLOW_UNTESTED_NOVA=True overrides)"
    fi
    echo "$out"
}

function configure_nova_ipxe {
    if [[ "$VIRT_DRIVER" != "libvirt" ]]; then
        die $LINENO "nova-ipxe needs VIRT_DRIVER=libvirt (VIRT_DRIVER=$VIRT_DRIVER)"
    fi
    if [[ "$NOVA_IPXE_COMPUTE_DRIVER" != "ipxe.LibvirtDriver" ]]; then
        die $LINENO "nova-ipxe: NOVA_IPXE_COMPUTE_DRIVER must be ipxe.LibvirtDriver on a libvirt host (got $NOVA_IPXE_COMPUTE_DRIVER)"
    fi
    if [[ "$NOVA_IPXE_DEMO_MENU" != "True" && -z "$NOVA_IPXE_BOOT_MENU_URL" ]]; then
        die $LINENO "nova-ipxe: set NOVA_IPXE_BOOT_MENU_URL when NOVA_IPXE_DEMO_MENU=False"
    fi
    # start_nova_compute copies nova.conf into nova-cpu.conf, so this
    # reaches the compute service too.
    iniset "$NOVA_CONF" DEFAULT compute_driver "$NOVA_IPXE_COMPUTE_DRIVER"
    iniset "$NOVA_CONF" ipxe boot_menu_url "$(nova_ipxe_menu_url)"
    local option variable
    for option in $NOVA_IPXE_OPTIONS; do
        [[ "$option" != boot_menu_url ]] || continue
        variable=NOVA_IPXE_${option^^}
        if [[ -n "${!variable}" ]]; then
            iniset "$NOVA_CONF" ipxe "$option" "${!variable}"
        fi
    done
    if [[ "$NOVA_IPXE_DEMO_MENU" == "True" ]]; then
        configure_nova_ipxe_menu
    fi
}

# The demo menu: devstack/files/menu.ipxe under /nova-ipxe/ on Apache.
function configure_nova_ipxe_menu {
    local www=$NOVA_IPXE_DATA_DIR/www
    mkdir -p "$www"
    install -m 0644 "$NOVA_IPXE_DIR/devstack/files/menu.ipxe" "$www/menu.ipxe"
    # Apache's user may not be the stack user.
    chmod 0755 "$NOVA_IPXE_DATA_DIR" "$www"
    local site
    site=$(apache_site_config_for "$NOVA_IPXE_APACHE_SITE")
    sudo tee "$site" >/dev/null <<EOF
# nova-ipxe demo boot menu (devstack plugin nova-ipxe)
Alias /nova-ipxe $www
<Directory $www>
    Options None
    AllowOverride None
    Require all granted
</Directory>
EOF
    enable_apache_site "$NOVA_IPXE_APACHE_SITE"
    restart_apache_server
}

function nova_ipxe_image_id {
    openstack --os-cloud devstack-admin --os-region "$REGION_NAME" image list \
        --name "$NOVA_IPXE_IMAGE_NAME" -f value -c ID
}

function upload_nova_ipxe_image {
    [[ -r "$NOVA_IPXE_ISO" ]] || die $LINENO "nova-ipxe: no iPXE ISO at $NOVA_IPXE_ISO (NOVA_IPXE_ISO)"
    if [[ -n "$(nova_ipxe_image_id)" ]]; then
        echo "nova-ipxe: image $NOVA_IPXE_IMAGE_NAME already exists"
        return
    fi
    openstack --os-cloud devstack-admin --os-region "$REGION_NAME" image create \
        "$NOVA_IPXE_IMAGE_NAME" --public --disk-format iso \
        --container-format bare --property hw_ipxe_boot=true \
        --file "$NOVA_IPXE_ISO"
}

function create_nova_ipxe_network {
    local osc=(openstack --os-cloud devstack --os-region "$REGION_NAME")
    if [[ -n "$("${osc[@]}" network list --name "$NOVA_IPXE_NETWORK_NAME" -f value -c ID)" ]]; then
        echo "nova-ipxe: network $NOVA_IPXE_NETWORK_NAME already exists"
        return
    fi
    "${osc[@]}" network create "$NOVA_IPXE_NETWORK_NAME"
    # --no-dhcp: no DHCP server on this subnet; only nova-ipxe's script
    # gives a server its address.
    local dns=()
    if [[ -n "$NOVA_IPXE_DNS_SERVER" ]]; then
        dns=(--dns-nameserver "$NOVA_IPXE_DNS_SERVER")
    fi
    "${osc[@]}" subnet create "$NOVA_IPXE_SUBNET_NAME" \
        --network "$NOVA_IPXE_NETWORK_NAME" --ip-version 4 \
        --subnet-range "$NOVA_IPXE_SUBNET_RANGE" \
        --gateway "$NOVA_IPXE_SUBNET_GATEWAY" --no-dhcp "${dns[@]}"
    # Through devstack's router the guests reach the menu on Apache.
    if [[ -n "$NOVA_IPXE_ROUTER_NAME" ]] && openstack --os-cloud devstack-admin \
            --os-region "$REGION_NAME" router show "$NOVA_IPXE_ROUTER_NAME" >/dev/null; then
        openstack --os-cloud devstack-admin --os-region "$REGION_NAME" \
            router add subnet "$NOVA_IPXE_ROUTER_NAME" "$NOVA_IPXE_SUBNET_NAME"
    else
        warn $LINENO "nova-ipxe: no router $NOVA_IPXE_ROUTER_NAME; servers on $NOVA_IPXE_NETWORK_NAME may not reach the menu" || true
    fi
}

# unstack: remove what stack made while the APIs still run (devstack runs
# this phase before it stops the services). Each step may find nothing.
function unconfigure_nova_ipxe {
    if is_service_enabled neutron && [[ "$NOVA_IPXE_CREATE_NETWORK" == "True" ]]; then
        openstack --os-cloud devstack-admin --os-region "$REGION_NAME" \
            router remove subnet "$NOVA_IPXE_ROUTER_NAME" "$NOVA_IPXE_SUBNET_NAME" || true
        openstack --os-cloud devstack --os-region "$REGION_NAME" \
            network delete "$NOVA_IPXE_NETWORK_NAME" || \
            warn $LINENO "nova-ipxe: network $NOVA_IPXE_NETWORK_NAME not deleted (servers still on it?)" || true
    fi
    if is_service_enabled glance && [[ "$NOVA_IPXE_UPLOAD_IMAGE" == "True" ]]; then
        local id
        for id in $(nova_ipxe_image_id || true); do
            openstack --os-cloud devstack-admin --os-region "$REGION_NAME" \
                image delete "$id" || true
        done
    fi
    # nova-cpu.conf is a copy of nova.conf made when nova-compute started.
    local conf option
    for conf in "$NOVA_CONF" "$NOVA_CPU_CONF"; do
        [[ -f "$conf" ]] || continue
        if [[ "$(iniget "$conf" DEFAULT compute_driver)" == "$NOVA_IPXE_COMPUTE_DRIVER" ]]; then
            iniset "$conf" DEFAULT compute_driver libvirt.LibvirtDriver
        fi
        for option in $NOVA_IPXE_OPTIONS; do
            inidelete "$conf" ipxe "$option"
        done
    done
    local site
    site=$(apache_site_config_for "$NOVA_IPXE_APACHE_SITE")
    if [[ -f "$site" ]]; then
        disable_apache_site "$NOVA_IPXE_APACHE_SITE"
        sudo rm -f "$site"
    fi
    rm -rf "${NOVA_IPXE_DATA_DIR:?}/www"
}

# clean: after unstack, remove the installation itself.
function cleanup_nova_ipxe {
    local virt_dir
    virt_dir=$(nova_ipxe_nova_virt_dir 2>/dev/null || true)
    if [[ -n "$virt_dir" && -L "$virt_dir/ipxe" ]]; then
        rm -f "$virt_dir/ipxe"
    fi
    pip_uninstall nova-ipxe
    rm -rf "${NOVA_IPXE_DATA_DIR:?}"
}

if is_service_enabled nova-ipxe; then
    if [[ "$1" == "stack" && "$2" == "install" ]]; then
        echo_summary "Installing nova-ipxe"
        install_nova_ipxe
    elif [[ "$1" == "stack" && "$2" == "post-config" ]]; then
        echo_summary "Configuring nova-ipxe"
        configure_nova_ipxe
    elif [[ "$1" == "stack" && "$2" == "extra" ]]; then
        if [[ "$NOVA_IPXE_UPLOAD_IMAGE" == "True" ]] && is_service_enabled glance; then
            echo_summary "Uploading the iPXE boot image $NOVA_IPXE_IMAGE_NAME"
            upload_nova_ipxe_image
        fi
        if [[ "$NOVA_IPXE_CREATE_NETWORK" == "True" ]] && is_service_enabled neutron; then
            echo_summary "Creating the DHCP-less network $NOVA_IPXE_NETWORK_NAME"
            create_nova_ipxe_network
        fi
    fi
    if [[ "$1" == "unstack" ]]; then
        unconfigure_nova_ipxe
    fi
    if [[ "$1" == "clean" ]]; then
        cleanup_nova_ipxe
    fi
fi

# Restore xtrace
$_XTRACE_NOVA_IPXE
