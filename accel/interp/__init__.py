"""The interp accelerator: a pure-Python x86 interpreter in the shape of QEMU's TCG.

Importing this package registers ``-accel interp``.  The pieces:

* :mod:`.translate` (capstone decoding, block building), :mod:`.codegen` (Python
  source of a block, registers in locals), :mod:`.flags` (lazy condition codes);
* instruction families as tables: :mod:`.ops_alu`, :mod:`.ops_shift`,
  :mod:`.ops_muldiv`, :mod:`.ops_move`, :mod:`.ops_control`, :mod:`.ops_string`,
  :mod:`.ops_system` (rows registered in :mod:`.table`);
* :mod:`.namespace`: the one table of the names a compiled block reads (the
  generated-code ABI: state, fast paths, helpers);
* the helpers, written against the CPU protocol of :mod:`.state`: :mod:`.mmu`
  (paging, TLB, RAM fast paths), :mod:`.seg` (descriptors, segment loads,
  SYSCALL/SYSENTER), :mod:`.far` (far JMP/CALL/RET), :mod:`.gates` (IDT and call
  gates, returns to an outer level), :mod:`.task` (task switches), :mod:`.vm86`,
  :mod:`.excp` (exception delivery, IRET), :mod:`.eflags` (POPF/IRET flag rules),
  :mod:`.sysregs` (CRn, MSRs, TSC), :mod:`.portio` and :mod:`.ioperm` (port I/O),
  :mod:`.string_rt` (REP strings), :mod:`.debug` (TF, DR0-DR7), :mod:`.segcheck`;
* :mod:`.cpu_exec` (:class:`InterpCore`: the state, the exec loop, the block
  cache) and :mod:`.accel_ops` (the vCPU thread and AccelOps).
"""

from pyqemu.accel.interp.accel_ops import InterpAccelOps, InterpAccelState, interp_accel_factory
from pyqemu.accel.interp.cpu_exec import EXCP_BUDGET, InterpCore
from pyqemu.accel.interp.errors import Fault, InterpError, UnimplementedInstruction
from pyqemu.accel.ops import register_accel

register_accel("interp", "pure-Python x86 interpreter (TCG-style, capstone decoder)",
               interp_accel_factory)

__all__ = ["EXCP_BUDGET", "Fault", "InterpAccelOps", "InterpAccelState", "InterpCore",
           "InterpError", "UnimplementedInstruction", "interp_accel_factory"]
