"""Hypervisor integration: the only part of nova_ipxe that imports Nova."""
