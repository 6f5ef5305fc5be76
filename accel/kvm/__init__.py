"""The KVM accelerator.

``kvm_abi``   constants and struct layouts of <linux/kvm.h> (cffi, ABI mode)
``binding``   Kvm -> VmFd -> VcpuFd, one class per kernel file descriptor,
              every exit decoded into a typed value; no policy
``errors``    KvmError, KvmExitError and friends
``kvm_i386``  the x86 half (QEMU's target/i386/kvm/kvm.c): registers, segments,
              FPU and MSRs to and from CPUX86State, CPUID, x86's exits
``kvm_all``   the generic half (QEMU's accel/kvm/kvm-all.c): kvm_init, memory
              slots, the vCPU thread, kvm_cpu_exec and the exit dispatch
"""

# Importing the package registers the "kvm" accelerator (accel.ops._load_builtin_accels).
from pyqemu.accel.kvm import kvm_all as _kvm_all  # noqa: F401
