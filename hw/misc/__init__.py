"""Miscellaneous devices (QEMU's hw/misc): isa-debug-exit."""
