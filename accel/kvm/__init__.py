"""The KVM accelerator.

``kvm_abi``  constants and struct layouts of <linux/kvm.h> (cffi, ABI mode)
``binding``  Kvm -> VmFd -> VcpuFd, one class per kernel file descriptor,
             every exit decoded into a typed value; no policy
``errors``   KvmError and friends
``kvm_all``  the accelerator: kvm_init, the vCPU thread and kvm_cpu_exec
"""

# Importing the package registers the "kvm" accelerator (accel.ops._load_builtin_accels).
from pyqemu.accel.kvm import kvm_all as _kvm_all  # noqa: F401
