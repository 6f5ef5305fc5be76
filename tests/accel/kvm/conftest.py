"""Fixtures of the KVM tests live in kvm_support.py, importable by the test modules too."""

from tests.accel.kvm.kvm_support import bad_fd, kvm, ram, vm  # noqa: F401  (fixtures)
