"""Character devices (QEMU's hw/char): the 16550A UART."""
