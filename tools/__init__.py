"""Helper scripts for nova-ipxe: the demo and the labs (not installed)."""
