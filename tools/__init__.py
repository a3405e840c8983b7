"""Helper scripts for nova-ipxe: demo and boot lab (not installed)."""
