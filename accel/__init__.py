"""Accelerators: the AccelOps interface and its kvm and interp implementations."""
