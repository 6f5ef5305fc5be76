"""The ISA bus (QEMU's hw/isa): how ISA devices claim their I/O ports."""
