"""Hardware models (QEMU's hw/): the device core, the PC board, its CPUs and devices."""
