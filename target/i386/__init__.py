"""The x86 architecture (QEMU's ``target/i386``), each fact in one place.

``hw/i386`` is the PC board and the X86CPU device; this package is what the
architecture defines, shared by both accelerators, the loaders and the tests:

* :mod:`.cpu_state`: the register file ``CPUX86State`` and the bit definitions
  (EFLAGS, CR0/CR4, EFER, MSR numbers, segment attributes);
* :mod:`.cpu_features`, :mod:`.cpu_models`, :mod:`.cpuid`: feature words and
  their names, the builtin CPU models, and ``cpu_x86_cpuid``, the one CPUID
  function both accelerators answer with (one :class:`~.cpuid.CpuidEntry`);
* :mod:`.descriptors`: segment and gate descriptors and the TSS layouts as
  named structures (Intel SDM vol. 3A, figures 3-8, 5-8, 7-2, 7-10, 8-11);
* :mod:`.paging`: the one side-effect-free page walk (SDM vol. 3A, chapter 4);
* :mod:`.asm`: the one keystone wrapper that assembles guest code;
* :mod:`.errors`: the x86 CPU configuration errors.
"""
