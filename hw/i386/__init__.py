"""The x86 PC (QEMU's hw/i386 and target/i386): board, X86CPU, CPU models, CPUID, loaders."""
