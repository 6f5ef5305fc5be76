"""The TSS I/O permission bit map (Intel SDM vol. 1, 19.5.1 and 19.5.2; vol. 2A IN, INS,
vol. 2B OUT, OUTS "Operation") on interp: hand-computed cases, and this host's KVM.

Hand-computed cases: one 32-bit protected-mode program per case.  Ring-0 boot code
(using EBX only) loads TR with LTR and IRETs to CPL 3 with the case's IOPL; the CPL-3
snippet does port I/O and ends at a marker address (a breakpoint).  A fault stops the
run at the ring-0 handler of its vector, whose frame gives the faulting EIP and the
error code.  Each case states what the SDM gives: #GP(0) at which instruction, or
none, and the exact port accesses done before.

The map of most cases: I/O map base 68H, 32 bytes for ports 0-FFH, then the all-ones
byte the SDM asks for, so the TSS limit is 88H.  Every port is allowed except 81H
(byte 10H, bit 1) and 0C0H-0C7H (byte 18H all ones).

Reference implementations, measured on this host:

- Unicorn (QEMU's TCG) cannot be one: its translator's ``gen_check_io`` returns at
  once ("allow all I/O instructions"), so a denied ``out 81h, al`` at CPL 3, IOPL 0
  goes through there (tried: no fault, the access hooked).
- KVM with PVM: port I/O at CPL 3 always leaves the guest, and KVM then runs the
  instruction through its own x86 emulator, which does check IOPL and the bit map:
  with cpl3_oracle's image and its TSS limit raised to cover a map, a denied port is
  #GP(0) through the guest IDT, an allowed one an I/O exit, a port past the map
  #GP(0), REP INS with RCX = 0 to a denied port #GP(0).  RFLAGS.IOPL reads 0 there
  whatever KVM_SET_REGS wrote, so only IOPL 0 can be compared.  This is KVM's
  software, not the CPU, but an independent implementation: :func:`test_matches_kvm`
  compares it in 64-bit and compatibility mode.  One difference, measured: KVM's
  emulator only requires the *first* of the two map bytes to lie within the TSS
  limit (a zero byte at the limit lets port 100H through; ``in al, 0feh`` passes
  with the limit at the map's last byte), where the SDM says "the processor reads
  two bytes from the I/O permission bit map for every access" and the extra
  all-ones byte "must be within the segment limit"; QEMU's TCG helper checks both
  bytes too.  That edge is checked against the SDM only
  (:func:`test_two_byte_read_must_fit_in_the_limit`).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest

from pyqemu.accel.interp.errors import Fault
from pyqemu.accel.interp.ioperm import io_check_needed, io_perm_check
from pyqemu.accel.ops import EXCP_DEBUG
from pyqemu.target.i386.cpu_state import CR0_PE, IOPL_MASK, VM_MASK, SegmentCache
from pyqemu.target.i386.descriptors import (
    GATE_INT32,
    TSS16,
    TSS32,
    TssField,
    gate_descriptor,
    segment_descriptor,
)
from tests.accel.interp.harness import Guest, asm

if TYPE_CHECKING:
    from tests.accel.interp.cpl3_oracle import InterpCpl3, KvmCpl3

GDT, IDT, BOOT, USER, HANDLERS, TSS = 0x1000, 0x1800, 0x2000, 0x3000, 0x5000, 0x7000
KSTACK, USTACK, BUF = 0x8000, 0x9000, 0xA000
SEL_CODE0, SEL_DATA0, SEL_DATA3, SEL_CODE3, SEL_TSS = 0x08, 0x10, 0x1B, 0x23, 0x28
MAP = 0x68                                   # I/O map base used by most cases
GP = 13


def _seg_desc(base: int, limit: int, access: int, flags: int) -> int:
    """A segment descriptor (SDM vol. 3A, 3.4.5, Figure 3-8): ``access`` is its byte 5
    (P, DPL, S, type), ``flags`` the G, D/B, L, AVL nibble."""
    return segment_descriptor(base, limit, access << 8 | flags << 20)


def _put(ram: bytearray, base: int, field: TssField, value: int) -> None:
    ram[base + field.offset:base + field.offset + field.size] = value.to_bytes(field.size,
                                                                               "little")


@dataclass
class Tss:
    """The TSS of a case: its descriptor's limit and type, the map base, the map bytes."""

    limit: int = MAP + 0x20
    type: int = 9                            # available 32-bit TSS (1: 16-bit)
    map_base: int = MAP
    bitmap: bytes = b""

    @staticmethod
    def standard(last: int = 0xFF) -> Tss:
        m = bytearray(0x20)
        m[0x81 >> 3] = 1 << (0x81 & 7)
        m[0xC0 >> 3] = 0xFF
        return Tss(bitmap=bytes(m) + bytes([last]))


def build_image(tss: Tss, snippet: bytes, iopl: int) -> bytes:
    ram = bytearray(0x10000)
    gdt = [0,
           _seg_desc(0, 0xFFFFF, 0x9A, 0xC), _seg_desc(0, 0xFFFFF, 0x92, 0xC),
           _seg_desc(0, 0xFFFFF, 0xF2, 0xC), _seg_desc(0, 0xFFFFF, 0xFA, 0xC),
           _seg_desc(TSS, tss.limit, 0x80 | tss.type, 0)]
    struct.pack_into(f"<{len(gdt)}Q", ram, GDT, *gdt)
    for v in range(32):
        target = HANDLERS + 8 * v
        ram[target] = 0xF4                                    # hlt (never reached)
        ram[IDT + 8 * v:IDT + 8 * v + 8] = gate_descriptor(SEL_CODE0, target, GATE_INT32)
    boot = asm(f"""
        mov bx, {SEL_DATA3}
        mov ds, bx
        mov es, bx
        mov bx, {SEL_TSS}
        ltr bx
        push {SEL_DATA3}
        push {USTACK}
        push {0x2 | iopl << 12}
        push {SEL_CODE3}
        push {USER}
        iretd""", 32, BOOT)
    ram[BOOT:BOOT + len(boot)] = boot
    ram[USER:USER + len(snippet)] = snippet
    layout = TSS32 if tss.type & 8 else TSS16       # SS0:ESP0 (7.2.1) or SS0:SP0 (7.6)
    for f, v in zip(layout.stack(0), (KSTACK, SEL_DATA0), strict=True):
        assert f is not None
        ram[TSS + f.offset:TSS + f.offset + f.size] = v.to_bytes(f.size, "little")
    _put(ram, TSS, TSS32["iomap_base"], tss.map_base)
    ram[TSS + tss.map_base:TSS + tss.map_base + len(tss.bitmap)] = tss.bitmap
    ram[BUF:BUF + 16] = bytes(range(0xA0, 0xB0))
    return bytes(ram)


@dataclass(frozen=True)
class Outcome:
    fault: tuple[int, int] | None              # (vector, EIP of the faulting instruction)
    io: tuple[tuple[str, int, int, int], ...]  # ("in"/"out", port, size, value)
    regs: tuple[int, ...]                      # EAX ECX ESI EDI at the end or the fault


IN_VALUE = 0x55                               # what every port read returns, both sides


def run_interp(tss: Tss, code: str, iopl: int, regs: dict[str, int]) -> tuple[Outcome, int]:
    """Returns the outcome and the #GP error code interp pushed (-1 without a fault)."""
    snippet = asm(code, 32, USER)
    g = Guest(32, ram_size=1 << 20)
    g.mem.write_bytes(0, build_image(tss, snippet, iopl))
    env = g.env
    env.gdt = SegmentCache(0, GDT, 6 * 8 - 1, 0)
    env.idt = SegmentCache(0, IDT, 32 * 8 - 1, 0)
    env.rip, env.regs[4] = BOOT, KSTACK
    for name, v in regs.items():
        env.set_reg(name, v)
    g.io_in = {}
    core = g.core
    end = USER + len(snippet)
    core.breakpoints = {end} | {HANDLERS + 8 * v for v in range(32)}
    core.refresh()
    assert core.run(10_000) == EXCP_DEBUG
    log = tuple((d, p, s, v & ((1 << 8 * s) - 1)) for d, p, s, v in g.io_log)
    fault, err = None, -1
    if env.rip != end:
        vector = (env.rip - HANDLERS) // 8
        esp = env.regs[4]
        err = g.mem.read(esp, 4) if vector == GP else -1
        eip = g.mem.read(esp + 4 if vector == GP else esp, 4)
        fault = (vector, eip)
    return Outcome(fault, log, tuple(env.regs[i] & 0xFFFFFFFF for i in (0, 1, 6, 7))), err


def check(tss: Tss, code: str, *, iopl: int = 0, fault_at: int | None,
          io: list[tuple[str, int, int, int]], **regs: int) -> Outcome:
    """Run ``code`` at CPL 3; ``fault_at`` is the index of the instruction expected
    to take #GP(0) (None: no fault); ``io`` the accesses expected before."""
    lines = [ln for ln in code.strip().splitlines() if ln.strip()]
    ours, err = run_interp(tss, code, iopl, regs)
    expected_fault = None
    if fault_at is not None:
        expected_fault = (GP, USER + len(asm("\n".join(lines[:fault_at]), 32, USER))
                          if fault_at else USER)
    assert ours.fault == expected_fault, f"interp: {ours}"
    assert ours.io == tuple(io), f"interp: {ours}"
    assert err == (0 if fault_at is not None else -1)
    return ours


# -- IN / OUT with an immediate or DX port ---------------------------------------------------

def test_allowed_ports_go_through_the_bit_map_at_cpl3() -> None:
    check(Tss.standard(), """
        out 0x80, al
        in al, 0x82
        mov dx, 0x3c
        in eax, dx
        out dx, ax""", fault_at=None, eax=0x11223344,
          io=[("out", 0x80, 1, 0x44), ("in", 0x82, 1, IN_VALUE),
              ("in", 0x3C, 4, IN_VALUE), ("out", 0x3C, 2, IN_VALUE)])


@pytest.mark.parametrize("code", ["out 0x81, al", "in al, 0x81", "in ax, 0x80",
                                  "mov dx, 0x81\nin eax, dx", "mov dx, 0xc4\nout dx, al"])
def test_a_set_bit_is_gp0(code: str) -> None:
    n = code.count("\n")
    check(Tss.standard(), code, fault_at=n, io=[])


def test_a_four_byte_access_spanning_two_map_bytes() -> None:
    # Ports 7DH-80H: bits 5-7 of map byte 0FH and bit 0 of byte 10H, all clear.
    check(Tss.standard(), "mov dx, 0x7d\nout dx, eax", fault_at=None, eax=0xCAFEF00D,
          io=[("out", 0x7D, 4, 0xCAFEF00D)])
    # Ports 7EH-81H: the same two bytes, and 81H's bit is set.
    check(Tss.standard(), "mov dx, 0x7e\nout dx, eax", fault_at=1, io=[])


def test_highest_mapped_port_uses_the_all_ones_byte() -> None:
    # Port FFH: bit 7 of the last map byte; the processor's second byte is the all-ones
    # byte at the limit, inside it.  A 2-byte access at FFH reaches port 100H in that byte.
    check(Tss.standard(), "in al, 0xff", fault_at=None, io=[("in", 0xFF, 1, IN_VALUE)])
    check(Tss.standard(), "in ax, 0xff", fault_at=0, io=[])
    check(Tss.standard(), "mov dx, 0x100\nin al, dx", fault_at=1, io=[])   # past the map


def test_two_byte_read_must_fit_in_the_limit() -> None:
    """With a zero byte (not all ones) at the limit, port 100H's bit reads as clear, but
    the second byte the processor reads (89H) is past the limit: #GP(0) (19.5.2).  FFH,
    whose two bytes are 87H-88H, is allowed.  KVM's emulator lets 100H through."""
    tss = Tss.standard(last=0x00)
    check(tss, "mov dx, 0x100\nin al, dx", fault_at=1, io=[])
    check(tss, "in al, 0xff", fault_at=None, io=[("in", 0xFF, 1, IN_VALUE)])
    tss = Tss.standard()
    tss.limit = MAP + 0x1F                # cut the all-ones byte off: FFH's pair sticks out
    check(tss, "in al, 0xfe", fault_at=0, io=[])


def test_io_map_base_at_or_beyond_the_limit_denies_every_port() -> None:
    for base in (MAP + 0x20, 0x1000, 0xDFFF):
        tss = Tss(limit=MAP + 0x20, map_base=base, bitmap=bytes(0x21))
        check(tss, "in al, 0", fault_at=0, io=[])
    # The base read itself (66H-67H) must be inside the TSS: limit 66H is one short.
    tss = Tss(limit=0x66, map_base=0x68, bitmap=bytes(0x21))
    check(tss, "out 0x80, al", fault_at=0, io=[])


def test_a_16bit_tss_denies_every_port() -> None:
    tss = Tss.standard()
    tss.type = 1                          # available 16-bit TSS: no I/O map base field
    check(tss, "out 0x80, al", fault_at=0, io=[])


def test_cpl_at_most_iopl_skips_the_bit_map() -> None:
    check(Tss.standard(), "out 0x81, al\nin al, 0xc0", iopl=3, fault_at=None,
          io=[("out", 0x81, 1, 0), ("in", 0xC0, 1, IN_VALUE)])
    check(Tss.standard(), "out 0x81, al", iopl=2, fault_at=0, io=[])   # CPL 3 > IOPL 2


# -- INS / OUTS ----------------------------------------------------------------------------

def test_rep_outs_to_an_allowed_port_does_every_element() -> None:
    o = check(Tss.standard(), "mov dx, 0x80\nrep outsb", fault_at=None, ecx=3, esi=BUF,
              io=[("out", 0x80, 1, 0xA0), ("out", 0x80, 1, 0xA1), ("out", 0x80, 1, 0xA2)])
    assert o.regs[1:3] == (0, BUF + 3)


def test_rep_ins_to_a_denied_port_faults_before_the_first_element() -> None:
    o = check(Tss.standard(), "mov dx, 0x81\nrep insb", fault_at=1, ecx=3, edi=BUF + 8,
              io=[])
    assert o.regs[1] == 3 and o.regs[3] == BUF + 8      # nothing done, restartable


def test_ins_outs_size_covers_consecutive_ports() -> None:
    check(Tss.standard(), "mov dx, 0x80\ninsw", fault_at=1, edi=BUF, io=[])
    o = check(Tss.standard(), "mov dx, 0x7d\noutsd\nmov dx, 0x7c\ninsd", fault_at=None,
              esi=BUF, edi=BUF + 8,
              io=[("out", 0x7D, 4, 0xA3A2A1A0), ("in", 0x7C, 4, IN_VALUE)])
    assert o.regs[2:] == (BUF + 4, BUF + 12)


def test_rep_ins_with_zero_count_still_checks_the_port() -> None:
    """The check comes before the count test, as in KVM's emulator (measured: see
    test_matches_kvm) and QEMU's translator (which emits it ahead of its REP loop).
    Read literally, the SDM's Operation, which checks inside each iteration, would
    skip it with RCX = 0; no bare CPU was available here to settle that."""
    check(Tss.standard(), "mov dx, 0x81\nrep insb", fault_at=1, ecx=0, edi=BUF, io=[])
    check(Tss.standard(), "mov dx, 0x80\nrep insb", fault_at=None, ecx=0, edi=BUF, io=[])


# -- the rule itself -------------------------------------------------------------------------

def test_the_bit_map_is_consulted_only_for_cpl_above_iopl_or_v8086() -> None:
    pe = CR0_PE
    assert not io_check_needed(3 << 12, 0, 3)          # real mode: never
    assert not io_check_needed(3 << 12, pe, 3)         # CPL 3 <= IOPL 3
    assert not io_check_needed(0, pe, 0)
    assert io_check_needed(0, pe, 1)
    assert io_check_needed(IOPL_MASK | VM_MASK, pe, 3)  # virtual-8086: whatever IOPL


def _cpl3_core_with_tr(tr: SegmentCache) -> Guest:
    g = Guest(32, ram_size=1 << 20)
    g.mem.write_bytes(0, build_image(Tss.standard(), b"", 0))
    g.env.segs[1] = SegmentCache(SEL_CODE3, 0, 0xFFFFFFFF, g.env.segs[1].flags | 3 << 13)
    g.env.segs[2] = SegmentCache(SEL_DATA3, 0, 0xFFFFFFFF, g.env.segs[2].flags | 3 << 13)
    g.env.tr = tr
    g.core.refresh()
    assert g.env.cpl == 3
    return g


@pytest.mark.parametrize("why,tr", [
    ("null (never loaded)", SegmentCache(0, 0, 0, 0)),
    ("not present", SegmentCache(SEL_TSS, TSS, MAP + 0x20, 0x0B00)),
    ("busy 16-bit TSS", SegmentCache(SEL_TSS, TSS, MAP + 0x20, 0x8300)),
    ("an LDT, not a TSS", SegmentCache(SEL_TSS, TSS, MAP + 0x20, 0x8200)),
])
def test_a_tr_without_a_32_or_64bit_tss_denies_every_port(why: str, tr: SegmentCache) -> None:
    g = _cpl3_core_with_tr(tr)
    with pytest.raises(Fault) as e:
        io_perm_check(g.core, 0x80, 1)
    assert (e.value.vector, e.value.error_code) == (GP, 0), why


def test_the_cached_tr_is_used_busy_or_available() -> None:
    """The check reads through TR's hidden base and limit (SDM vol. 3A, 7.2.4), busy (as
    LTR leaves it) or available alike: port 80H allowed, 81H denied, by the same map."""
    for flags in (0x8B00, 0x8900):
        g = _cpl3_core_with_tr(SegmentCache(SEL_TSS, TSS, MAP + 0x20, flags))
        io_perm_check(g.core, 0x80, 1)
        with pytest.raises(Fault):
            io_perm_check(g.core, 0x81, 1)
        # A cached limit shorter than the GDT descriptor's (88H) is the one that counts:
        # 80H's bytes (78H-79H) are now past it, 08H's (69H-6AH) are not.
        g.env.tr.limit = MAP + 0x0F
        io_perm_check(g.core, 0x08, 1)
        with pytest.raises(Fault):
            io_perm_check(g.core, 0x80, 1)


# -- against KVM (its emulator under PVM), 64-bit and compatibility mode at CPL 3 ----------

KVM_CASES = [
    # (snippet, registers {index: value}, faults?, expected accesses)
    ("out 0x80, al", {0: 0x5A}, False, [("out", 0x80, 1, 0x5A)]),
    ("in al, 0x81", {}, True, []),
    ("mov dx, 0x7d\nout dx, eax", {0: 0xCAFEF00D}, False, [("out", 0x7D, 4, 0xCAFEF00D)]),
    ("mov dx, 0x7e\nout dx, eax", {}, True, []),
    ("in al, 0xff", {}, False, [("in", 0xFF, 1, IN_VALUE)]),
    ("in ax, 0xff", {}, True, []),
    ("mov dx, 0x3f8\nout dx, al", {}, True, []),
    ("mov dx, 0x80\nrep outsb", {1: 3, 6: 0}, False,
     [("out", 0x80, 1, 0xA0), ("out", 0x80, 1, 0xA1), ("out", 0x80, 1, 0xA2)]),
    ("mov dx, 0x7c\ninsd", {7: 8}, False, [("in", 0x7C, 4, IN_VALUE)]),
    ("mov dx, 0x80\ninsw", {7: 8}, True, []),
    ("mov dx, 0x81\nrep insb", {1: 2, 7: 8}, True, []),
    ("mov dx, 0x81\nrep insb", {1: 0, 7: 8}, True, []),
]


class _Recorder:
    """Port space for the interp side: logs every access, reads give IN_VALUE."""

    def __init__(self) -> None:
        self.log: list[tuple[str, int, int, int]] = []

    def read(self, port: int, size: int) -> int:
        self.log.append(("in", port, size, IN_VALUE))
        return IN_VALUE

    def write(self, port: int, value: int, size: int) -> None:
        self.log.append(("out", port, size, value))


_kvm_pair: dict[str, Any] = {}


def _standard_map_into(write: Callable[[int, bytes], object]) -> int:
    """Write the standard map into a cpl3_oracle TSS; returns the TSS limit to use."""
    from tests.accel.interp.cpl3_oracle import TSS
    tss = Tss.standard()
    field = TSS32["iomap_base"]
    write(TSS + field.offset, tss.map_base.to_bytes(field.size, "little"))
    write(TSS + tss.map_base, tss.bitmap)
    return tss.limit


def _pair() -> tuple[KvmCpl3, InterpCpl3, _Recorder]:
    """A KvmCpl3 and an InterpCpl3 of their own (the I/O exits left behind must not
    reach the shared ones of test_kvm_differential), both with the standard map."""
    from tests.accel.interp.cpl3_oracle import InterpCpl3, KvmCpl3
    from tests.accel.kvm.kvm_support import kvm_usable
    ok, why = kvm_usable()
    if not ok:
        pytest.skip(why)
    if not _kvm_pair:
        k = KvmCpl3()

        def kwrite(a: int, b: bytes) -> None:
            k.mm[a:a + len(b)] = b
        limit = _standard_map_into(kwrite)
        for sregs in k.sregs.values():
            sregs.tr.limit = limit
        i = InterpCpl3()
        _standard_map_into(i.mem.write_bytes)
        i.env.tr.limit = limit
        rec = _Recorder()
        i.core.io = rec
        _kvm_pair.update(kvm=k, interp=i, rec=rec)
    return _kvm_pair["kvm"], _kvm_pair["interp"], _kvm_pair["rec"]


@pytest.fixture(scope="module", autouse=True)
def _close_kvm() -> object:
    yield
    k = _kvm_pair.pop("kvm", None)
    if k is not None:
        k.close()
    _kvm_pair.clear()


def _kvm_run(k: KvmCpl3, bits: int, code: bytes, regs: list[int],
             data: bytes) -> tuple[tuple[int, int | None] | None, int, list, list[int]]:
    """Run on KVM until the end marker or a fault stub, answering every port exit:
    (fault, faulting RIP, accesses, registers)."""
    from pyqemu.accel.kvm.binding import IoIn, IoOut
    from tests.accel.interp.cpl3_oracle import (
        _GPRS,
        CODE,
        DATA,
        END,
        END_PORT,
        FAULT_PORT,
        NVEC,
        _fault_from_stack,
        entry_ip,
    )
    mm, vcpu = k.mm, k.vcpu
    mm[CODE:CODE + len(code) + 2] = code + END
    mm[DATA:DATA + len(data)] = data
    vcpu.set_sregs(k.sregs[bits])
    r = vcpu.get_regs()
    for name, v in zip(_GPRS, regs, strict=False):     # regs may be the first 8
        setattr(r, name, v)
    r.rip, r.rflags = entry_ip(bits), 2
    vcpu.set_regs(r)
    io: list[tuple[str, int, int, int]] = []
    for _ in range(64):
        ex = vcpu.run()
        if isinstance(ex, IoOut) and ex.port == END_PORT:
            fault, rip = None, 0
            break
        if isinstance(ex, IoOut) and FAULT_PORT <= ex.port < FAULT_PORT + NVEC:
            rsp = vcpu.get_regs().rsp
            fault, frame = _fault_from_stack(ex.port - FAULT_PORT, rsp,
                                             lambda a, n: bytes(mm[a:a + n]))
            rip = frame[0]
            break
        if isinstance(ex, IoOut):
            io += [("out", ex.port, ex.size,
                    int.from_bytes(ex.data[j * ex.size:(j + 1) * ex.size], "little"))
                   for j in range(ex.count)]
        elif isinstance(ex, IoIn):
            io += [("in", ex.port, ex.size, IN_VALUE)] * ex.count
            vcpu.set_io_in_data(IN_VALUE.to_bytes(ex.size, "little") * ex.count)
        else:
            pytest.fail(f"KVM: unexpected exit {ex!r}")
    else:
        raise AssertionError("KVM: no end after 64 exits")
    r = vcpu.get_regs()
    return fault, rip, io, [getattr(r, n) for n in _GPRS]


@pytest.mark.parametrize("bits", [64, 32])
@pytest.mark.parametrize("text,init,faults,expected_io", KVM_CASES)
def test_matches_kvm(bits: int, text: str, init: dict[int, int], faults: bool,
                     expected_io: list[tuple[str, int, int, int]]) -> None:
    from tests.accel.interp.cpl3_oracle import CODE, DATA, DATA_SIZE, entry_ip
    k, interp, rec = _pair()
    code = asm(text, bits, CODE)
    regs = [0] * 16
    for idx, v in init.items():
        regs[idx] = DATA + v if idx in (6, 7) else v
    data = bytes(range(0xA0, 0xB0)) + bytes(DATA_SIZE - 16)
    kfault, krip, kio, kregs = _kvm_run(k, bits, code, regs, data)
    rec.log.clear()
    o = interp.run(bits, code, list(regs), 2, data)
    assert not o.other, o.other
    iio = [(d, p, s, v & ((1 << 8 * s) - 1)) for d, p, s, v in rec.log]
    # Both as the SDM says (worked out by hand in KVM_CASES) ...
    assert kfault == ((GP, 0) if faults else None), f"KVM: {kfault} {kio}"
    assert kio == expected_io
    # ... and interp as KVM, to the faulting RIP and the registers (RCX/RDI untouched by a
    # REP INS that faults before its first element).
    assert o.fault == kfault and iio == kio
    if faults:
        before = text.rsplit("\n", 1)[0] if "\n" in text else ""
        assert o.frame[0] == krip == entry_ip(bits) + len(asm(before, bits, CODE) if before
                                                          else b"")
    assert o.regs == kregs
