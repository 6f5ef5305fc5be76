"""System emulation core (QEMU's system/): memory, vCPU bookkeeping, run state."""
