"""Runtime of repeated string instructions and of INS/OUTS (Intel SDM vol. 2B, REP prefixes).

One iteration at a time, exactly as the SDM's "Operation": do the element,
step rSI/rDI by +-size (DF), decrement rCX (address size), and for REPE/REPNE
stop on the ZF condition after CMPS/SCAS.  Registers live in ``env.regs`` here
(the block wrote them back), so a fault in the middle leaves a restartable state:
RIP still points at the instruction, rCX counts what is left.  The exit request
is polled every :data:`POLL` iterations (DESIGN.md: "inside long blocks' loops").
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pyqemu.accel.interp.codegen import MASK
from pyqemu.accel.interp.ioperm import io_perm_check
from pyqemu.accel.interp.segcheck import check_access
from pyqemu.target.i386.cpu_state import DF_MASK, R_ES, R_FS, R_GS

if TYPE_CHECKING:
    from pyqemu.accel.interp.cpu_exec import InterpCore

POLL = 4096


def rep_string(core: InterpCore, kind: str, size: int, adsize: int, seg: int, rep: str,
               next_ip: int) -> None:
    """REP string instructions, one element at a time (with bulk paths), restartable.

    A fault in a later iteration leaves RCX/RSI/RDI at the progress made, as the SDM
    says, and EFLAGS as they were before the instruction: the processor does not
    commit the comparison flags of REPE/REPNE CMPS/SCAS iterations before a fault
    (measured on hardware by test_kvm_differential's deep profile).
    """
    cc0 = core.cc
    try:
        _rep_string(core, kind, size, adsize, seg, rep, next_ip)
    except BaseException:
        if kind in ("cmps", "scas"):
            core.cc = cc0
        raise


def _rep_string(core: InterpCore, kind: str, size: int, adsize: int, seg: int, rep: str,
                next_ip: int) -> None:
    env = core.env
    R = env.regs
    am = MASK[adsize]
    step = -size if env.eflags & DF_MASK else size
    code64 = core.mode.code == 64
    src_base = 0 if code64 and seg not in (R_FS, R_GS) else core.segbase[seg]
    dst_base = 0 if code64 else core.segbase[R_ES]
    lam = core.la_mask
    ld, st = core.ld[size], core.st[size]
    amask = MASK[size]
    count = R[1] & am if rep else 1
    kick = core.kick
    done = 0
    if kind in ("ins", "outs"):
        # I/O permission (SDM vol. 2A INS, vol. 2B OUTS "Operation"; vol. 1, 19.5): the
        # SDM checks it inside each iteration, but the port (DX) and the size are the
        # same in every iteration, so one check before the first is equivalent.  It is
        # made even when rCX is 0, before any memory access, as KVM's instruction
        # emulator does (measured by tests/accel/interp/test_ioperm.py) and QEMU's
        # translator does (it emits the check ahead of its REP loop).
        io_perm_check(core, R[2] & 0xFFFF, size)

    def put(i: int, v: int) -> None:
        R[i] = v if adsize >= 4 else (R[i] & ~0xFFFF) | v

    checks = core.mode.checks
    # A segment with a limit or type to check: element by element, each access checked
    # before it is made (accel/interp/segcheck.py), so that a fault leaves the progress
    # up to the element that faulted; the bulk paths do not check.
    checked = bool(checks) and bool(checks[seg] or checks[R_ES])
    bulk = rep and step > 0 and not checked

    while count:
        if bulk and kind in ("movs", "stos") and count > 1:
            n = _bulk(core, kind, size, count, (src_base + (R[6] & am)) & lam,
                      (dst_base + (R[7] & am)) & lam, R[0] & amask)
            if n:
                if kind == "movs":
                    put(6, ((R[6] & am) + n * size) & am)
                put(7, ((R[7] & am) + n * size) & am)
                count -= n
                put(1, count)
                done += n
                if count and kick.exit_request:
                    core.icount += done
                    return
                continue
        if bulk and rep == "repne" and kind == "scas" and size == 1 and count > 1:
            n, equal = _bulk_scasb(core, count, dst_base, R[7] & am, am, R[0] & 0xFF)
            if n:
                put(7, ((R[7] & am) + n) & am)
                count -= n
                put(1, count)
                done += n
                if equal:
                    break                # REPNE stops on "equal"
                if count and kick.exit_request:
                    core.icount += done
                    return
                continue
        si, di = R[6] & am, R[7] & am
        if checked:
            if kind in ("cmps", "scas"):
                check_access(core, R_ES, di, size, False)
            if kind in ("movs", "lods", "cmps", "outs"):
                check_access(core, seg, si, size, False)
            if kind in ("movs", "stos", "ins"):
                check_access(core, R_ES, di, size, True)
        if kind == "movs":
            st((dst_base + di) & lam, ld((src_base + si) & lam))
            put(6, (si + step) & am)
            put(7, (di + step) & am)
        elif kind == "stos":
            st((dst_base + di) & lam, R[0] & amask)
            put(7, (di + step) & am)
        elif kind == "lods":
            v = ld((src_base + si) & lam)
            R[0] = v if size >= 4 else (R[0] & ~amask) | v
            put(6, (si + step) & am)
        elif kind in ("cmps", "scas"):
            if kind == "cmps":
                b = ld((dst_base + di) & lam)   # ES:[rDI] first, as the hardware faults
                a = ld((src_base + si) & lam)
                put(6, (si + step) & am)
            else:
                a = R[0] & amask
                b = ld((dst_base + di) & lam)
            put(7, (di + step) & am)
            r = (a - b) & amask
            core.cc = (core.lazy.eval["SUB", size * 8], a, b, r, None)
        elif kind == "ins":
            v = core.io_read(R[2] & 0xFFFF, size)
            st((dst_base + di) & lam, v)
            put(7, (di + step) & am)
        elif kind == "outs":
            core.io_write(R[2] & 0xFFFF, ld((src_base + si) & lam), size)
            put(6, (si + step) & am)
        done += 1
        if not rep:
            break
        count -= 1
        put(1, count)
        if kind in ("cmps", "scas") and (rep == "rep") != (a == b):
            break                        # REPE stops on "not equal", REPNE on "equal"
        if not done % POLL and count and kick.exit_request:
            core.icount += done
            return                       # RIP stays on the instruction: it resumes
    core.icount += max(done - 1, 0)
    env.rip = next_ip


def _bulk(core: InterpCore, kind: str, size: int, count: int, src: int, dst: int,
          acc: int) -> int:
    """Forward REP MOVS/STOS over RAM pages already in the TLB, as one slice copy.

    Returns how many elements were done (0: take the one-at-a-time path, which also
    fills the TLB).  Limited to what stays inside one source and one destination page,
    and for MOVS to non-overlapping ranges (an overlapping forward REP MOVSB replicates
    bytes, which a slice copy would not).  Pages holding translated code have no write
    entry, so stores to code still go through the invalidating slow path.
    """
    wt = core.mmu.tlb_w.get(dst >> 12)
    if wt is None:
        return 0
    room = (4096 - (dst & 0xFFF)) // size
    if kind == "movs":
        rt = core.mmu.tlb_r.get(src >> 12)
        if rt is None:
            return 0
        room = min(room, (4096 - (src & 0xFFF)) // size)
    n = min(count, room, POLL)
    if n < 2:
        return 0
    nbytes = n * size
    d = dst + wt[1]
    if kind == "stos":
        wt[0][d:d + nbytes] = acc.to_bytes(size, "little") * n
        return n
    if src < dst + nbytes and dst < src + nbytes:
        return 0
    s = src + rt[1]
    wt[0][d:d + nbytes] = rt[0][s:s + nbytes]
    return n


def _bulk_scasb(core: InterpCore, count: int, base: int, di: int, am: int,
                al: int) -> tuple[int, bool]:
    """Forward REPNE SCASB over a RAM page already in the TLB: one ``bytes.find``.

    Returns (elements done, whether the last one compared equal); (0, False) takes
    the one-at-a-time path (which also fills the TLB).  Stays inside one page and
    below the address-size wrap of rDI; leaves the flags of the last comparison
    pending, as the iteration-by-iteration path does.
    """
    la = (base + di) & core.la_mask
    rt = core.mmu.tlb_r.get(la >> 12)
    if rt is None:
        return 0, False
    n = min(count, 4096 - (la & 0xFFF), am + 1 - di, POLL)
    if n < 2:
        return 0, False
    s = la + rt[1]
    j = bytes(rt[0][s:s + n]).find(al)
    if j >= 0:
        n, last = j + 1, al
    else:
        last = rt[0][s + n - 1]
    core.cc = (core.lazy.eval["SUB", 8], al, last, (al - last) & 0xFF, None)
    return n, j >= 0

