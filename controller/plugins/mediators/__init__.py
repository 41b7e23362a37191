"""One module per cell of the primary x backup x hypervisor matrix."""
