"""Constants and struct layouts of the KVM userspace ABI (x86-64).

Facts only, transcribed from ``<linux/kvm.h>`` and ``<asm/kvm.h>`` (the
uapi headers) and ``Documentation/virt/kvm/api.rst``.  Nothing here opens a
file or issues an ioctl; that is :mod:`pyqemu.accel.kvm.binding`.

Why cffi in ABI mode (``ffi.cdef`` without a compiler step): the layouts are
plain C structs with natural alignment, so cffi computes the same offsets as
gcc does; the project installs without a C toolchain; and
``tests/accel/kvm/test_abi_layout.py`` compiles a probe against the real
header whenever gcc is present and checks every size and offset we declare.

Only the union members of ``struct kvm_run`` that x86 userspace reads are
declared; ``padding`` pins the union at 256 bytes and ``s.padding`` pins the
sync-regs area at 2048 bytes, exactly as the header does, so the overall
size and every declared offset match.
"""

from __future__ import annotations

import cffi

__all__ = ["ffi"]  # plus the constants below, exported by name

ffi = cffi.FFI()
ffi.cdef(
    """
    /* <linux/kvm.h> */
    struct kvm_userspace_memory_region {
        uint32_t slot;
        uint32_t flags;
        uint64_t guest_phys_addr;
        uint64_t memory_size;
        uint64_t userspace_addr;
    };

    struct kvm_irq_level {
        union {
            uint32_t irq;
            int32_t status;
        };
        uint32_t level;
    };

    struct kvm_pit_config {
        uint32_t flags;
        uint32_t pad[15];
    };

    struct kvm_interrupt {
        uint32_t irq;
    };

    struct kvm_mp_state {
        uint32_t mp_state;
    };

    /* <asm/kvm.h> */
    struct kvm_regs {
        uint64_t rax, rbx, rcx, rdx;
        uint64_t rsi, rdi, rsp, rbp;
        uint64_t r8, r9, r10, r11;
        uint64_t r12, r13, r14, r15;
        uint64_t rip, rflags;
    };

    struct kvm_lapic_state {
        char regs[1024];
    };

    struct kvm_segment {
        uint64_t base;
        uint32_t limit;
        uint16_t selector;
        uint8_t type;
        uint8_t present, dpl, db, s, l, g, avl;
        uint8_t unusable;
        uint8_t padding;
    };

    struct kvm_dtable {
        uint64_t base;
        uint16_t limit;
        uint16_t padding[3];
    };

    struct kvm_sregs {
        struct kvm_segment cs, ds, es, fs, gs, ss;
        struct kvm_segment tr, ldt;
        struct kvm_dtable gdt, idt;
        uint64_t cr0, cr2, cr3, cr4, cr8;
        uint64_t efer;
        uint64_t apic_base;
        uint64_t interrupt_bitmap[4];
    };

    struct kvm_fpu {
        uint8_t fpr[8][16];
        uint16_t fcw;
        uint16_t fsw;
        uint8_t ftwx;
        uint8_t pad1;
        uint16_t last_opcode;
        uint64_t last_ip;
        uint64_t last_dp;
        uint8_t xmm[16][16];
        uint32_t mxcsr;
        uint32_t pad2;
    };

    struct kvm_msr_entry {
        uint32_t index;
        uint32_t reserved;
        uint64_t data;
    };

    struct kvm_msrs {
        uint32_t nmsrs;
        uint32_t pad;
        struct kvm_msr_entry entries[];
    };

    struct kvm_msr_list {
        uint32_t nmsrs;
        uint32_t indices[];
    };

    struct kvm_cpuid_entry2 {
        uint32_t function;
        uint32_t index;
        uint32_t flags;
        uint32_t eax;
        uint32_t ebx;
        uint32_t ecx;
        uint32_t edx;
        uint32_t padding[3];
    };

    struct kvm_cpuid2 {
        uint32_t nent;
        uint32_t padding;
        struct kvm_cpuid_entry2 entries[];
    };

    struct kvm_debug_exit_arch {
        uint32_t exception;
        uint32_t pad;
        uint64_t pc;
        uint64_t dr6;
        uint64_t dr7;
    };

    struct kvm_guest_debug_arch {
        uint64_t debugreg[8];
    };

    struct kvm_guest_debug {
        uint32_t control;
        uint32_t pad;
        struct kvm_guest_debug_arch arch;
    };

    struct kvm_run {
        /* in */
        uint8_t request_interrupt_window;
        uint8_t immediate_exit;
        uint8_t padding1[6];
        /* out */
        uint32_t exit_reason;
        uint8_t ready_for_interrupt_injection;
        uint8_t if_flag;
        uint16_t flags;
        /* in (pre_kvm_run), out (post_kvm_run) */
        uint64_t cr8;
        uint64_t apic_base;
        union {
            struct {
                uint64_t hardware_exit_reason;
            } hw;
            struct {
                uint64_t hardware_entry_failure_reason;
                uint32_t cpu;
            } fail_entry;
            struct {
                uint32_t exception;
                uint32_t error_code;
            } ex;
            struct {
                uint8_t direction;
                uint8_t size;
                uint16_t port;
                uint32_t count;
                uint64_t data_offset;
            } io;
            struct {
                struct kvm_debug_exit_arch arch;
            } debug;
            struct {
                uint64_t phys_addr;
                uint8_t data[8];
                uint32_t len;
                uint8_t is_write;
            } mmio;
            struct {
                uint64_t nr;
                uint64_t args[6];
                uint64_t ret;
                uint32_t longmode;
                uint32_t pad;
            } hypercall;
            struct {
                uint32_t suberror;
                uint32_t ndata;
                uint64_t data[16];
            } internal;
            struct {
                uint32_t suberror;
                uint32_t ndata;
                uint64_t flags;
                uint8_t insn_size;
                uint8_t insn_bytes[15];
            } emulation_failure;
            struct {
                uint32_t type;
                uint32_t ndata;
                union {
                    uint64_t flags;
                    uint64_t data[16];
                };
            } system_event;
            struct {
                uint8_t error;
                uint8_t pad[7];
                uint32_t reason;
                uint32_t index;
                uint64_t data;
            } msr;
            struct {
                uint32_t flags;
            } notify;
            char padding[256];
        };
        uint64_t kvm_valid_regs;
        uint64_t kvm_dirty_regs;
        union {
            char padding[2048];
        } s;
    };
    """
)


# --- ioctl number encoding (<asm-generic/ioctl.h>) --------------------------
# The helpers keep the header's macro names, so each ioctl below reads as the header's.

_IOC_NRBITS = 8
_IOC_TYPEBITS = 8
_IOC_SIZEBITS = 14
_IOC_NRSHIFT = 0
_IOC_TYPESHIFT = _IOC_NRSHIFT + _IOC_NRBITS
_IOC_SIZESHIFT = _IOC_TYPESHIFT + _IOC_TYPEBITS
_IOC_DIRSHIFT = _IOC_SIZESHIFT + _IOC_SIZEBITS
_IOC_NONE = 0
_IOC_WRITE = 1
_IOC_READ = 2


def _IOC(direction: int, type_: int, nr: int, size: int) -> int:  # noqa: N802
    return (
        (direction << _IOC_DIRSHIFT)
        | (type_ << _IOC_TYPESHIFT)
        | (nr << _IOC_NRSHIFT)
        | (size << _IOC_SIZESHIFT)
    )


def _size(ctype: str | int) -> int:
    return ctype if isinstance(ctype, int) else ffi.sizeof(ctype)


def _IO(type_: int, nr: int) -> int:  # noqa: N802
    return _IOC(_IOC_NONE, type_, nr, 0)


def _IOR(type_: int, nr: int, ctype: str | int) -> int:  # noqa: N802
    return _IOC(_IOC_READ, type_, nr, _size(ctype))


def _IOW(type_: int, nr: int, ctype: str | int) -> int:  # noqa: N802
    return _IOC(_IOC_WRITE, type_, nr, _size(ctype))


def _IOWR(type_: int, nr: int, ctype: str | int) -> int:  # noqa: N802
    return _IOC(_IOC_READ | _IOC_WRITE, type_, nr, _size(ctype))


KVMIO = 0xAE
KVM_API_VERSION = 12

# System ioctls (on the /dev/kvm fd).
KVM_GET_API_VERSION = _IO(KVMIO, 0x00)
KVM_CREATE_VM = _IO(KVMIO, 0x01)
KVM_GET_MSR_INDEX_LIST = _IOWR(KVMIO, 0x02, "struct kvm_msr_list")
KVM_CHECK_EXTENSION = _IO(KVMIO, 0x03)
KVM_GET_VCPU_MMAP_SIZE = _IO(KVMIO, 0x04)
KVM_GET_SUPPORTED_CPUID = _IOWR(KVMIO, 0x05, "struct kvm_cpuid2")
KVM_GET_EMULATED_CPUID = _IOWR(KVMIO, 0x09, "struct kvm_cpuid2")

# VM ioctls.
KVM_CREATE_VCPU = _IO(KVMIO, 0x41)
KVM_SET_USER_MEMORY_REGION = _IOW(KVMIO, 0x46, "struct kvm_userspace_memory_region")
KVM_SET_TSS_ADDR = _IO(KVMIO, 0x47)
KVM_SET_IDENTITY_MAP_ADDR = _IOW(KVMIO, 0x48, 8)  # __u64
KVM_CREATE_IRQCHIP = _IO(KVMIO, 0x60)
KVM_IRQ_LINE = _IOW(KVMIO, 0x61, "struct kvm_irq_level")
KVM_IRQ_LINE_STATUS = _IOWR(KVMIO, 0x67, "struct kvm_irq_level")
KVM_CREATE_PIT2 = _IOW(KVMIO, 0x77, "struct kvm_pit_config")

# vCPU ioctls.
KVM_RUN = _IO(KVMIO, 0x80)
KVM_GET_REGS = _IOR(KVMIO, 0x81, "struct kvm_regs")
KVM_SET_REGS = _IOW(KVMIO, 0x82, "struct kvm_regs")
KVM_GET_SREGS = _IOR(KVMIO, 0x83, "struct kvm_sregs")
KVM_SET_SREGS = _IOW(KVMIO, 0x84, "struct kvm_sregs")
KVM_INTERRUPT = _IOW(KVMIO, 0x86, "struct kvm_interrupt")
KVM_GET_MSRS = _IOWR(KVMIO, 0x88, "struct kvm_msrs")
KVM_SET_MSRS = _IOW(KVMIO, 0x89, "struct kvm_msrs")
KVM_GET_FPU = _IOR(KVMIO, 0x8C, "struct kvm_fpu")
KVM_SET_FPU = _IOW(KVMIO, 0x8D, "struct kvm_fpu")
KVM_GET_LAPIC = _IOR(KVMIO, 0x8E, "struct kvm_lapic_state")
KVM_SET_LAPIC = _IOW(KVMIO, 0x8F, "struct kvm_lapic_state")
KVM_SET_CPUID2 = _IOW(KVMIO, 0x90, "struct kvm_cpuid2")
KVM_GET_CPUID2 = _IOWR(KVMIO, 0x91, "struct kvm_cpuid2")
KVM_GET_MP_STATE = _IOR(KVMIO, 0x98, "struct kvm_mp_state")
KVM_SET_MP_STATE = _IOW(KVMIO, 0x99, "struct kvm_mp_state")
KVM_NMI = _IO(KVMIO, 0x9A)
KVM_SET_GUEST_DEBUG = _IOW(KVMIO, 0x9B, "struct kvm_guest_debug")
KVM_SET_TSC_KHZ = _IO(KVMIO, 0xA2)
KVM_GET_TSC_KHZ = _IO(KVMIO, 0xA3)

#: ioctl request number -> name, for error messages.
IOCTL_NAMES: dict[int, str] = {
    value: name
    for name, value in list(globals().items())
    if name.startswith("KVM_") and name != "KVM_API_VERSION" and isinstance(value, int)
}

# --- capabilities (KVM_CHECK_EXTENSION) --------------------------------------

KVM_CAP_IRQCHIP = 0
KVM_CAP_HLT = 1
KVM_CAP_USER_MEMORY = 3
KVM_CAP_SET_TSS_ADDR = 4
KVM_CAP_EXT_CPUID = 7
KVM_CAP_NR_VCPUS = 9
KVM_CAP_NR_MEMSLOTS = 10
KVM_CAP_MP_STATE = 14
KVM_CAP_COALESCED_MMIO = 15
KVM_CAP_DESTROY_MEMORY_REGION_WORKS = 21
KVM_CAP_USER_NMI = 22
KVM_CAP_SET_GUEST_DEBUG = 23
KVM_CAP_IRQ_ROUTING = 25
KVM_CAP_JOIN_MEMORY_REGIONS_WORKS = 30
KVM_CAP_MCE = 31
KVM_CAP_IRQFD = 32
KVM_CAP_PIT2 = 33
KVM_CAP_SET_BOOT_CPU_ID = 34
KVM_CAP_PIT_STATE2 = 35
KVM_CAP_IOEVENTFD = 36
KVM_CAP_SET_IDENTITY_MAP_ADDR = 37
KVM_CAP_ADJUST_CLOCK = 39
KVM_CAP_INTERNAL_ERROR_DATA = 40
KVM_CAP_VCPU_EVENTS = 41
KVM_CAP_DEBUGREGS = 50
KVM_CAP_X86_ROBUST_SINGLESTEP = 51
KVM_CAP_XSAVE = 55
KVM_CAP_XCRS = 56
KVM_CAP_TSC_CONTROL = 60
KVM_CAP_GET_TSC_KHZ = 61
KVM_CAP_MAX_VCPUS = 66
KVM_CAP_TSC_DEADLINE_TIMER = 72
KVM_CAP_SYNC_REGS = 74
KVM_CAP_KVMCLOCK_CTRL = 76
KVM_CAP_READONLY_MEM = 81
KVM_CAP_GUEST_DEBUG_HW_BPS = 119
KVM_CAP_MAX_VCPU_ID = 128
KVM_CAP_IMMEDIATE_EXIT = 136

# --- exit reasons (kvm_run.exit_reason) --------------------------------------

KVM_EXIT_UNKNOWN = 0
KVM_EXIT_EXCEPTION = 1
KVM_EXIT_IO = 2
KVM_EXIT_HYPERCALL = 3
KVM_EXIT_DEBUG = 4
KVM_EXIT_HLT = 5
KVM_EXIT_MMIO = 6
KVM_EXIT_IRQ_WINDOW_OPEN = 7
KVM_EXIT_SHUTDOWN = 8
KVM_EXIT_FAIL_ENTRY = 9
KVM_EXIT_INTR = 10
KVM_EXIT_SET_TPR = 11
KVM_EXIT_TPR_ACCESS = 12
KVM_EXIT_S390_SIEIC = 13
KVM_EXIT_S390_RESET = 14
KVM_EXIT_DCR = 15
KVM_EXIT_NMI = 16
KVM_EXIT_INTERNAL_ERROR = 17
KVM_EXIT_OSI = 18
KVM_EXIT_PAPR_HCALL = 19
KVM_EXIT_S390_UCONTROL = 20
KVM_EXIT_WATCHDOG = 21
KVM_EXIT_S390_TSCH = 22
KVM_EXIT_EPR = 23
KVM_EXIT_SYSTEM_EVENT = 24
KVM_EXIT_S390_STSI = 25
KVM_EXIT_IOAPIC_EOI = 26
KVM_EXIT_HYPERV = 27
KVM_EXIT_ARM_NISV = 28
KVM_EXIT_X86_RDMSR = 29
KVM_EXIT_X86_WRMSR = 30
KVM_EXIT_DIRTY_RING_FULL = 31
KVM_EXIT_AP_RESET_HOLD = 32
KVM_EXIT_X86_BUS_LOCK = 33
KVM_EXIT_XEN = 34
KVM_EXIT_RISCV_SBI = 35
KVM_EXIT_RISCV_CSR = 36
KVM_EXIT_NOTIFY = 37

#: exit reason number -> name (for Unsupported exits and traces).
EXIT_REASON_NAMES: dict[int, str] = {
    value: name
    for name, value in list(globals().items())
    if name.startswith("KVM_EXIT_") and isinstance(value, int)
}

KVM_EXIT_IO_IN = 0
KVM_EXIT_IO_OUT = 1

KVM_INTERNAL_ERROR_EMULATION = 1
KVM_INTERNAL_ERROR_SIMUL_EX = 2
KVM_INTERNAL_ERROR_DELIVERY_EV = 3
KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON = 4

KVM_SYSTEM_EVENT_SHUTDOWN = 1
KVM_SYSTEM_EVENT_RESET = 2
KVM_SYSTEM_EVENT_CRASH = 3
KVM_SYSTEM_EVENT_WAKEUP = 4
KVM_SYSTEM_EVENT_SUSPEND = 5
KVM_SYSTEM_EVENT_SEV_TERM = 6

# --- flags -------------------------------------------------------------------

KVM_MEM_LOG_DIRTY_PAGES = 1 << 0
KVM_MEM_READONLY = 1 << 1

KVM_GUESTDBG_ENABLE = 0x00000001
KVM_GUESTDBG_SINGLESTEP = 0x00000002
KVM_GUESTDBG_USE_SW_BP = 0x00010000
KVM_GUESTDBG_USE_HW_BP = 0x00020000
KVM_GUESTDBG_INJECT_DB = 0x00040000
KVM_GUESTDBG_INJECT_BP = 0x00080000
KVM_GUESTDBG_BLOCKIRQ = 0x00100000

KVM_PIT_SPEAKER_DUMMY = 1

KVM_CPUID_FLAG_SIGNIFCANT_INDEX = 1 << 0  # (sic) the header's spelling
KVM_CPUID_FLAG_SIGNIFICANT_INDEX = KVM_CPUID_FLAG_SIGNIFCANT_INDEX
KVM_CPUID_FLAG_STATEFUL_FUNC = 1 << 1
KVM_CPUID_FLAG_STATE_READ_NEXT = 1 << 2

KVM_MP_STATE_RUNNABLE = 0
KVM_MP_STATE_UNINITIALIZED = 1
KVM_MP_STATE_INIT_RECEIVED = 2
KVM_MP_STATE_HALTED = 3
KVM_MP_STATE_SIPI_RECEIVED = 4

KVM_NR_INTERRUPTS = 256
KVM_APIC_REG_SIZE = 0x400
#: Maximum number of entries KVM accepts in KVM_SET_CPUID2 (arch/x86 KVM_MAX_CPUID_ENTRIES).
KVM_MAX_CPUID_ENTRIES = 256
