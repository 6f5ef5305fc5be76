"""Segment limit and type checks on ordinary memory accesses (accel/interp/segcheck.py).

Expected outcomes worked out from the Intel SDM: vol. 3A 5.3 (limit checking; an
access faults when any of its bytes lies past the limit; expand-down segments
3.4.5.1), 5.4 (type checking), 20.1.1 (real mode); vol. 2, the "#GP(0)/#SS(0) If a
memory operand effective address is outside the ... segment limit" lines of each
instruction.  QEMU's TCG (and so Unicorn) does not check data segment limits, so
it cannot be the reference here; the segment caches are set directly, as a loader
or KVM_SET_SREGS would.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from pyqemu.accel.interp.undefined_flags import undefined_flags
from pyqemu.accel.ops import EXCP_HLT
from pyqemu.target.i386.cpu_state import (
    DESC_A_MASK,
    DESC_B_MASK,
    DESC_CS_MASK,
    DESC_E_MASK,
    DESC_G_MASK,
    DESC_P_MASK,
    DESC_R_MASK,
    DESC_S_MASK,
    DESC_W_MASK,
    SegmentCache,
)
from tests.accel.interp.harness import CODE, Guest
from tests.accel.interp.test_sysinsn import frame, guest, run, vector

if TYPE_CHECKING:
    from tests.accel.interp.cpl3_oracle import InterpCpl3, KvmCpl3

DATA = DESC_P_MASK | DESC_S_MASK | DESC_A_MASK | DESC_W_MASK
CODE_XO = DESC_P_MASK | DESC_S_MASK | DESC_A_MASK | DESC_CS_MASK | DESC_B_MASK | DESC_G_MASK
ES, CS, SS, DS = 0, 1, 2, 3
GP, SSF = 13, 12


def with_seg(index: int, limit: int, flags: int, base: int = 0, bits: int = 32) -> Guest:
    g = guest(bits)
    g.env.segs[index] = SegmentCache(0x10 if index != CS else 0x08, base, limit, flags)
    return g


def fault(g: Guest) -> tuple[int | None, int | None, int]:
    """(vector, error code, faulting EIP) of an exception the handler caught."""
    v = vector(g)
    if v is None:
        return None, None, g.env.rip
    err = frame(g, 0) if v in (GP, SSF) else None
    return v, err, frame(g, 1 if err is not None else 0)


@pytest.mark.parametrize("offset, size, faults", [
    (0xFFC, "dword", False), (0xFFD, "dword", True), (0xFFF, "byte", False),
    (0x1000, "byte", True), (0xFFE, "word", False), (0xFFF, "word", True)])
def test_expand_up_limit(offset: int, size: str, faults: bool) -> None:
    g = with_seg(DS, 0xFFF, DATA)
    reg = {"dword": "eax", "word": "ax", "byte": "al"}[size]
    run(g, f"mov {reg}, {size} ptr [{offset:#x}]")
    assert fault(g) == ((GP, 0, CODE) if faults else (None, None, g.env.rip))


def test_store_past_the_limit_leaves_memory_alone() -> None:
    g = with_seg(DS, 0xFFF, DATA, base=0x4000)
    g.mem.write(0x4FFC, 0x11223344, 4)
    g.mem.write(0x5000, 0x55, 1)
    run(g, "mov dword ptr [0xffe], 0xaabbccdd")
    assert fault(g) == (GP, 0, CODE)
    assert g.mem.read(0x4FFC, 4) == 0x11223344 and g.mem.read(0x5000, 1) == 0x55


@pytest.mark.parametrize("big, offset, size, faults", [
    (True, 0x2000, 4, False), (True, 0x1FFF, 1, True), (True, 0x1FFE, 4, True),
    (True, 0xFFFFFFFC, 4, False), (False, 0xFFFC, 4, False), (False, 0xFFFD, 4, True),
    (False, 0x2000, 2, False), (False, 0x1FFF, 2, True)])
def test_expand_down_limit(big: bool, offset: int, size: int, faults: bool) -> None:
    """Expand-down: valid offsets are limit+1 .. FFFFFFFFH (B=1) or FFFFH (B=0)."""
    g = with_seg(DS, 0x1FFF, DATA | DESC_E_MASK | (DESC_B_MASK if big else 0))
    reg = {4: "eax", 2: "ax", 1: "al"}[size]
    g.env.regs[1] = offset
    run(g, f"mov {reg}, [ecx]")
    assert fault(g)[0] == (GP if faults else None)


def test_stack_segment_limit_is_ss_fault() -> None:
    """An access through SS (EBP-based, or a pop) past SS's limit is #SS(0), not #GP."""
    g = with_seg(SS, 0xFFFF, DATA | DESC_B_MASK)
    run(g, "mov eax, [ebp + 0xfffe]", rbp=0)
    assert fault(g) == (SSF, 0, CODE)
    g = with_seg(SS, 0xFFF, DATA | DESC_B_MASK)
    run(g, "mov esp, 0xffe\npop eax")
    v, err, eip = fault(g)
    assert (v, err) == (SSF, 0) and eip == CODE + 5
    assert g.env.regs[0] == 0                # the pop did not happen


def test_push_below_an_expand_down_stack_limit() -> None:
    """A push whose slot reaches the limit of an expand-down stack is #SS(0); ESP stays.
    At CPL 3, so that the #SS is delivered on the ring-0 stack from the TSS (at the same
    level its own frame would not fit either: #DF, then a triple fault)."""
    from tests.accel.interp.test_sysinsn import user
    g = with_seg(SS, 0x0FFF, DATA | DESC_E_MASK | DESC_B_MASK)
    user(g)
    g.load("push eax\nhlt")
    g.env.regs[4] = 0x1002
    assert g.run() == EXCP_HLT
    assert fault(g) == (SSF, 0, CODE) and frame(g, 4) == 0x1002


def test_read_only_data_segment() -> None:
    g = with_seg(DS, 0xFFFFFFFF, DESC_P_MASK | DESC_S_MASK | DESC_A_MASK | DESC_B_MASK
                 | DESC_G_MASK)
    g.mem.write(0x100, 0x1234, 4)
    run(g, "mov eax, [0x100]")
    assert fault(g)[0] is None and g.env.regs[0] == 0x1234
    for text in ("mov [0x100], eax", "add [0x100], eax", "inc byte ptr [0x100]",
                 "lock xadd [0x100], eax", "setz byte ptr [0x100]"):
        g = with_seg(DS, 0xFFFFFFFF, DESC_P_MASK | DESC_S_MASK | DESC_A_MASK | DESC_B_MASK
                     | DESC_G_MASK)
        g.mem.write(0x100, 0x1234, 4)
        run(g, text)
        assert fault(g) == (GP, 0, CODE), text
        assert g.mem.read(0x100, 4) == 0x1234, text


def test_code_segment_reads_and_writes() -> None:
    """Through CS: readable code can be read, never written; execute-only not even read."""
    g = guest(32)
    g.mem.write(0x100, 0x5678, 4)
    run(g, "mov eax, cs:[0x100]")
    assert fault(g)[0] is None and g.env.regs[0] == 0x5678
    g = guest(32)
    run(g, "mov cs:[0x100], eax")
    assert fault(g) == (GP, 0, CODE)
    g = with_seg(CS, 0xFFFFFFFF, CODE_XO)
    run(g, "mov eax, cs:[0x100]")
    assert fault(g) == (GP, 0, CODE)


def test_null_segment_access() -> None:
    """A null selector in ES: loading it is allowed, using it is #GP(0) (also for STOS)."""
    for text in ("mov eax, es:[0x100]", "mov edi, 0x100\nstosb"):
        g = guest(32)
        run(g, "xor eax, eax\nmov es, ax\n" + text)
        assert fault(g)[:2] == (GP, 0), text
    g = guest(32)
    run(g, "xor eax, eax\nmov es, ax\nmov eax, [0x100]")     # DS untouched
    assert fault(g)[0] is None


def test_bt_register_offset_checks_the_byte_it_reaches() -> None:
    """BT m, r: the bit offset selects a byte past the operand; that byte's offset is
    what the limit applies to (SDM vol. 2A, BT; vol. 3A 5.3)."""
    g = with_seg(DS, 0xFFF, DATA)
    run(g, "bt dword ptr [0xff0], ecx", rcx=8 * 12)          # dword at 0xFFC: inside
    assert fault(g)[0] is None
    g = with_seg(DS, 0xFFF, DATA)
    run(g, "bt dword ptr [0xff0], ecx", rcx=8 * 16)          # dword at 0x1000: past
    assert fault(g) == (GP, 0, CODE)


def test_far_pointer_and_descriptor_table_operands_check_their_whole_size() -> None:
    """LGDT's 6-byte and LDS's 6-byte operands fault when their last byte is past the
    limit, though their first bytes are inside."""
    g = with_seg(DS, 0xFFF, DATA)
    run(g, "lgdt [0xffc]")
    assert fault(g) == (GP, 0, CODE)
    g = with_seg(DS, 0xFFF, DATA)
    run(g, "lds eax, [0xffc]")
    assert fault(g) == (GP, 0, CODE)


def test_real_mode_word_at_offset_ffff_faults() -> None:
    """Real mode: a word at DS:FFFF crosses the 64 KiB limit: #GP, delivered through IVT[13]
    (SDM vol. 3A, 20.1.1, 20.1.4); a byte there is fine."""
    g = Guest(16)
    g.mem.write(13 * 4, 0x0000_2000, 4)                      # IVT[13] -> 0000:2000
    g.load("mov dx, 0x6666\nhlt", addr=0x2000)
    g.load("mov sp, 0x7000\nmov al, [0xffff]\nmov bx, 1\nmov ax, [0xffff]\nmov bx, 2\nhlt")
    assert g.run() == EXCP_HLT
    assert g.env.regs[2] & 0xFFFF == 0x6666 and g.env.regs[3] & 0xFFFF == 1
    assert g.mem.read(0x7000 - 6, 2) == CODE + 9             # IP of the faulting MOV


def test_unreal_mode_limit_allows_32_bit_offsets() -> None:
    """A 4 GiB limit left in DS's cache from protected mode ("unreal mode")."""
    g = Guest(16)
    g.env.segs[DS] = SegmentCache(0, 0, 0xFFFFFFFF, DATA | DESC_G_MASK)
    g.mem.write(0x12345, 0x99, 1)
    g.load("mov sp, 0x7000\nmov ebx, 0x12345\nmov al, [ebx]\nhlt")
    assert g.run() == EXCP_HLT
    assert g.env.regs[0] & 0xFF == 0x99


def test_flat_and_64_bit_blocks_carry_no_checks() -> None:
    """The common case costs nothing: flat 4 GiB segments, and 64-bit mode whatever the
    caches say (SDM vol. 3A, 5.3.1), give a block key without check kinds."""
    g = guest(32)
    g.env.segs[CS].flags &= ~DESC_R_MASK | DESC_R_MASK      # readable code: only CS: writes
    run(g, "mov eax, [0x100]")
    assert all(k == 0 for i, k in enumerate(g.core.mode.checks) if i != CS)
    g = with_seg(DS, 0xFFF, DATA, bits=64)
    run(g, "mov rax, [0x2000]")
    assert fault(g)[0] is None and g.core.mode.checks == ()


def test_rep_stos_stops_at_the_element_that_crosses_the_limit() -> None:
    """REP STOSB with ES limit 0xFFF from EDI=0xFFC, ECX=8: four bytes are stored, the fifth
    faults with EDI=0x1000 and ECX=4 left, RIP on the instruction (SDM vol. 2B, REP:
    a fault leaves the registers at the progress made)."""
    g = with_seg(ES, 0xFFF, DATA, base=0x4000)
    run(g, "mov edi, 0xffc\nmov ecx, 8\nmov al, 0xab\nrep stosb")
    assert fault(g) == (GP, 0, CODE + 12)
    assert g.mem.read(0x4FFC, 4) == 0xABABABAB and g.mem.read(0x5000, 1) == 0
    assert g.env.regs[1] == 4              # (EDI holds the vector: the handler's mark)


def test_rep_movs_into_a_read_only_es_faults_before_any_store() -> None:
    g = with_seg(ES, 0xFFFFFFFF, DESC_P_MASK | DESC_S_MASK | DESC_A_MASK | DESC_B_MASK
                 | DESC_G_MASK)
    g.mem.write(0x100, 0x12345678, 4)
    run(g, "mov esi, 0x100\nmov edi, 0x200\nmov ecx, 3\n.byte 0xf3, 0xa5")    # rep movsd
    assert fault(g) == (GP, 0, CODE + 15)
    assert g.env.regs[1] == 3 and g.env.regs[6] == 0x100 and g.mem.read(0x200, 4) == 0


def test_repe_cmps_and_lods_check_their_source_segment() -> None:
    """REP LODS through an FS override with a small limit, REPE CMPSB with DS past its limit
    on the third element (the bytes compare equal up to there)."""
    g = with_seg(4, 0x103, DATA)                               # FS limit 0x103
    run(g, "mov esi, 0x100\nmov ecx, 8\n.byte 0xf3, 0x64, 0xac")     # rep lods fs:[esi]
    assert fault(g)[0] == GP and g.env.regs[1] == 4 and g.env.regs[6] == 0x104
    g = with_seg(DS, 0x301, DATA)
    run(g, "mov esi, 0x2ff\nmov edi, 0x2ff\nmov ecx, 8\nrepe cmpsb")
    assert fault(g)[0] == GP and g.env.regs[1] == 5 and g.env.regs[6] == 0x302


# -- against this host's KVM: compatibility mode at CPL3 -----------------------------------
# The CPL3 harness of the KVM differential (cpl3_oracle) with four more DPL3 data
# descriptors; the snippet loads one into DS, ES or SS and accesses memory through it.
# In compatibility mode this host's KVM (PVM) runs guest code through KVM's instruction
# emulator, which checks limits and types, so it answers these questions independently
# of interp (it is not the processor: see KNOWN_REFERENCE_ERRORS in
# tests/host_behaviour.py for where it is known to differ); a host that runs
# compatibility mode natively answers with the processor itself.
SEL_LIMITED, SEL_DOWN_BIG, SEL_READONLY, SEL_DOWN_SMALL = 0x4B, 0x53, 0x5B, 0x63
_kvm_pair: dict[str, Any] = {}


def _extra_gdt() -> bytes:
    from tests.accel.interp.cpl3_oracle import DATA, FLAG_DATA, _desc
    big = DESC_B_MASK | DESC_G_MASK
    descs = [SegmentCache(0, DATA, 0xFFF, FLAG_DATA | DESC_B_MASK),
             SegmentCache(0, 0, 0xFFF, FLAG_DATA | DESC_E_MASK | DESC_B_MASK),
             SegmentCache(0, 0, 0xFFFFFFFF, (FLAG_DATA & ~DESC_W_MASK) | big),
             SegmentCache(0, DATA, 0xFFF, FLAG_DATA | DESC_E_MASK)]
    return b"".join(_desc(d, 3).to_bytes(8, "little") for d in descs)


def _pair() -> tuple[KvmCpl3, InterpCpl3]:
    """A KvmCpl3 and an InterpCpl3 of their own, with the extra descriptors."""
    from tests.accel.interp.cpl3_oracle import GDT, InterpCpl3, KvmCpl3
    from tests.accel.kvm.kvm_support import kvm_usable
    ok, why = kvm_usable()
    if not ok:
        pytest.skip(why)
    if not _kvm_pair:
        extra, at, limit = _extra_gdt(), GDT + 9 * 8, 13 * 8 - 1
        k = KvmCpl3()
        k.mm[at:at + len(extra)] = extra
        for sregs in k.sregs.values():
            sregs.gdt.limit = limit
        i = InterpCpl3()
        i.mem.write_bytes(at, extra)
        i.env.gdt.limit = limit
        _kvm_pair.update(kvm=k, interp=i)
    return _kvm_pair["kvm"], _kvm_pair["interp"]


@pytest.mark.parametrize("bits", [32, 16])
@pytest.mark.parametrize("text, ebx, vector", [
    (f"mov ax, {SEL_LIMITED}\nmov ds, ax\nmov eax, dword ptr [ebx]", 0xFFC, None),
    (f"mov ax, {SEL_LIMITED}\nmov ds, ax\nmov eax, dword ptr [ebx]", 0xFFD, GP),
    (f"mov ax, {SEL_LIMITED}\nmov ds, ax\nmov byte ptr [ebx], 1", 0x1000, GP),
    (f"mov ax, {SEL_LIMITED}\nmov ss, ax\nmov eax, dword ptr [ebp]", 0, SSF),
    (f"mov ax, {SEL_LIMITED}\nmov es, ax\nmov edi, ebx\nmov ecx, 8\nmov al, 0x5a\n"
     f".byte 0x67\nrep stosb", 0xFFC, GP),
    (f"mov ax, {SEL_DOWN_BIG}\nmov ds, ax\nmov eax, dword ptr [ebx]", 0x300010, None),
    (f"mov ax, {SEL_DOWN_BIG}\nmov ds, ax\nmov eax, dword ptr [ebx]", 0xFFE, GP),
    (f"mov ax, {SEL_DOWN_SMALL}\nmov ds, ax\nmov eax, dword ptr [ebx]", 0x1000, None),
    (f"mov ax, {SEL_DOWN_SMALL}\nmov ds, ax\nmov eax, dword ptr [ebx]", 0xFFFD, GP),
    (f"mov ax, {SEL_READONLY}\nmov ds, ax\nmov eax, dword ptr [ebx]", 0x300000, None),
    (f"mov ax, {SEL_READONLY}\nmov ds, ax\nadd dword ptr [ebx], eax", 0x300000, GP),
    ("xor eax, eax\nmov ds, ax\nmov eax, dword ptr [ebx]", 0x300000, GP),
])
def test_segment_checks_match_kvm(bits: int, text: str, ebx: int, vector: int | None) -> None:
    """The vector is the SDM's answer, worked out by hand; KVM and interp must both give
    it, with the same registers, RIP and data afterwards."""
    from tests.accel.interp.cpl3_oracle import DATA_SIZE, STACK, entry_ip
    from tests.accel.interp.harness import asm
    k, i = _pair()
    code = asm(text, bits, entry_ip(bits))
    regs = [0] * 16
    regs[4], regs[3], regs[5] = STACK, ebx, 0xFFE
    data = bytes(j * 5 & 0xFF for j in range(DATA_SIZE))
    hw = k.run(bits, code, regs, 0x202, data)
    ours = i.run(bits, code, regs, 0x202, data)
    assert hw.other == "" and ours.other == ""
    assert (hw.fault[0] if hw.fault else None) == vector, hw
    assert ours.fault == hw.fault
    # The pushed RFLAGS without the flags the snippet leaves undefined (XOR's AF: SDM
    # vol. 2B, XOR), which the fault frame holds as they were.
    undefined = 0
    for line in text.splitlines():
        undefined |= undefined_flags(line.split(" ", 1)[0])
    hf, of = list(hw.frame), list(ours.frame)
    if hf and of:
        hf[2] &= ~undefined
        of[2] &= ~undefined
    assert of == hf and ours.rip == hw.rip
    # (After a fault RSP is the kernel's: the frame holds the user's.)
    assert [r for j, r in enumerate(ours.regs[:8]) if j != 4] == \
        [r for j, r in enumerate(hw.regs[:8]) if j != 4]
    assert ours.data == hw.data


def test_far_call_and_retf_check_the_stack_limit() -> None:
    """Helper-run stack accesses (far CALL's pushes, RETF's pops) are limit-checked too:
    #SS(0) with nothing pushed or popped (SDM vol. 2A CALL: "#SS(0) If pushing the
    return address exceeds the bounds of the stack segment"; vol. 2B RET).  At CPL 3,
    so that the #SS is delivered on the ring-0 stack from the TSS."""
    from tests.accel.interp.test_sysinsn import user
    for text, esp in (("lcall 0x33:0x3000", 0x10004), ("retf", 0xFFFC)):
        g = with_seg(SS, 0xFFFF, DATA | DESC_B_MASK)
        g.mem.write(0x1700 + 0x30, 0x00CFFA000000FFFF, 8)    # code, DPL 3, 4 GiB
        g.env.gdt.limit = 0x37
        user(g)
        g.load(text + "\nhlt")
        g.env.regs[4] = esp
        assert g.run() == EXCP_HLT
        v, err, eip = fault(g)
        assert (v, err, eip) == (SSF, 0, CODE), text
        assert frame(g, 4) == esp, text              # the user ESP, unchanged
