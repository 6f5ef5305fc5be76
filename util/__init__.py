"""Lowest layer: the pieces every other package may use (QEMU's util/ and trace/)."""
