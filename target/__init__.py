"""Target architectures (QEMU's ``target/``): what a CPU *is*, apart from the board it sits on."""
