"""Exceptions of the interp accelerator (one module per package).

Two kinds live here:

* :class:`InterpError` and its subclasses are pyqemu errors a caller sees: an
  instruction the interpreter does not implement, a bad argument to the core.
* :class:`Fault` is an *architectural* exception of the guest (#DE, #UD, #GP,
  #PF...): generated code and helpers raise it, the exec loop catches it and
  delivers it through the IVT/IDT (Intel SDM vol. 3A, 6.15).  It never reaches
  a caller, so it is deliberately not a :class:`PyQemuError`.
"""

from __future__ import annotations

from pyqemu.util.error import PyQemuError

__all__ = [
    "EXCP_BP",
    "EXCP_BR",
    "EXCP_DB",
    "EXCP_DE",
    "EXCP_DF",
    "EXCP_GP",
    "EXCP_NM",
    "EXCP_NMI",
    "EXCP_NP",
    "EXCP_OF",
    "EXCP_PF",
    "EXCP_SS",
    "EXCP_TS",
    "EXCP_UD",
    "HAS_ERROR_CODE",
    "VECTOR_NAMES",
    "CpuStop",
    "Fault",
    "InterpArgumentError",
    "InterpError",
    "TripleFault",
    "UnimplementedInstruction",
]

# Exception vectors (Intel SDM vol. 3A, 6.3.1, Table 6-1).
EXCP_DE, EXCP_DB, EXCP_NMI, EXCP_BP, EXCP_OF, EXCP_BR, EXCP_UD, EXCP_NM = range(8)
EXCP_DF, EXCP_TS, EXCP_NP, EXCP_SS, EXCP_GP, EXCP_PF = 8, 10, 11, 12, 13, 14
VECTOR_NAMES = {0: "#DE", 1: "#DB", 2: "NMI", 3: "#BP", 4: "#OF", 5: "#BR", 6: "#UD",
                7: "#NM", 8: "#DF", 10: "#TS", 11: "#NP", 12: "#SS", 13: "#GP", 14: "#PF"}
#: Vectors that push an error code (SDM vol. 3A, 6.13 and Table 6-1).
HAS_ERROR_CODE = frozenset({8, 10, 11, 12, 13, 14, 17, 21})


class InterpError(PyQemuError, RuntimeError):
    """The interpreter cannot go on (the message says why)."""


class InterpArgumentError(PyQemuError, ValueError):
    """A bad argument to the interpreter's API (the message names it)."""


class UnimplementedInstruction(PyQemuError, NotImplementedError):  # noqa: N818  (public name)
    """The guest reached an instruction the interpreter does not implement.

    Never a silent skip: the VM stops and this names the instruction, its bytes
    and its address, e.g. ``interp: unimplemented instruction 'fsin' (d9 fe) at
    0x1000 (cs:ip 0000:1000)``.
    """

    def __init__(self, text: str, code: bytes, linear: int, cs: int, ip: int) -> None:
        self.text = text
        self.code = bytes(code)
        self.linear = linear
        self.cs = cs
        self.ip = ip
        width = 4 if ip <= 0xFFFF else 8 if ip <= 0xFFFFFFFF else 16
        super().__init__(
            f"interp: unimplemented instruction '{text}' ({code.hex(' ')}) at {linear:#x} "
            f"(cs:ip {cs:04x}:{ip:0{width}x})")


class Fault(Exception):  # noqa: N818  (a guest exception, named as the SDM names them)
    """An architectural exception raised while executing guest code.

    ``vector`` is the exception number, ``error_code`` the code pushed for the
    vectors that have one (None otherwise), ``cr2`` the faulting linear address
    of a #PF (SDM vol. 3A, 4.7).  ``trap`` marks a trap-class event whose saved
    RIP is the next instruction (SDM vol. 3A, 6.5).
    """

    def __init__(self, vector: int, error_code: int | None = None, cr2: int | None = None,
                 why: str = "") -> None:
        self.vector = vector
        self.error_code = error_code
        self.cr2 = cr2
        self.why = why
        name = VECTOR_NAMES.get(vector, f"vector {vector}")
        super().__init__(f"{name}{'' if error_code is None else f'({error_code:#x})'}"
                         f"{': ' + why if why else ''}")


class CpuStop(Exception):  # noqa: N818  (control flow, not an error)
    """Internal: generated code asks the exec loop to return ``reason`` (HLT, debug...).

    Raised only after the block has written back its state, so the loop just returns.
    """

    def __init__(self, reason: int) -> None:
        self.reason = reason
        super().__init__(reason)


class TripleFault(Exception):  # noqa: N818  (the SDM's name for the event)
    """Internal: a fault while delivering #DF (SDM vol. 3A, 6.15, Interrupt 8)."""
