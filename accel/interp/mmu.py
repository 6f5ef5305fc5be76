"""The softmmu: linear -> physical translation, a software TLB and RAM fast paths.

Translation follows Intel SDM vol. 3A, chapter 4: no paging (CR0.PG=0, linear =
physical), 32-bit paging (4.3, 4 KiB and 4 MiB pages with CR4.PSE), PAE paging
(4.4) and 4-level paging (4.5, 4 KiB / 2 MiB / 1 GiB pages).  Permissions are
those of 4.6 (R/W, U/S, CR0.WP, XD with EFER.NXE); a violation raises #PF with
CR2 and the error code of 4.7.  Accessed and dirty bits are set as 4.8 says.

The TLB is two dicts keyed by virtual page number (one for reads, one for
writes) whose values are ``(memoryview, delta)``: the host offset of linear
address ``la`` is ``la + delta``.  Only RAM pages get entries; MMIO always takes
the slow path through the address space's dispatch.  Pages watched by a guest data
breakpoint (DR0-DR3, :mod:`accel.interp.debug`) get no entry on the side watched.
Pages holding translated code never get a write entry, so a store to them takes the slow path, which
invalidates the blocks of that page (the "one cheap check per store" is free).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

from pyqemu.accel.interp.errors import EXCP_GP, EXCP_PF, Fault
from pyqemu.accel.interp.state import InterpCpu
from pyqemu.target.i386.cpu_state import CR0_PG, EFER_LMA
from pyqemu.target.i386.paging import (
    ACC_EXEC,
    ACC_READ,
    ACC_WRITE,
    access_allowed,
    accessed_dirty_updates,
    page_walk,
    pf_error_code,
)

PAGE = 4096
__all__ = ["ACC_EXEC", "ACC_READ", "ACC_WRITE", "PAGE", "Mmu"]

_STRUCTS = {1: struct.Struct("<B"), 2: struct.Struct("<H"), 4: struct.Struct("<I"),
            8: struct.Struct("<Q")}


class Mmu:
    """Address translation and memory helpers of one CPU (QEMU's softmmu ``cputlb.c``)."""

    def __init__(self, core: InterpCpu) -> None:
        self.core = core
        self.env = core.env
        self.mem = core.mem
        self.tlb_r: dict[int, tuple[memoryview, int]] = {}
        self.tlb_w: dict[int, tuple[memoryview, int]] = {}
        self.w_ppage: dict[int, int] = {}      # vpage -> ppage of each write entry
        self.mem_version = -1
        self.dbg = core.debug       # the guest's data breakpoints (accel/interp/debug.py)
        self.helpers = self._make_helpers()

    # -- the TLB ---------------------------------------------------------------------
    def flush(self) -> None:
        """Drop every entry (CR3/CR0/CR4 writes, CPL changes, a new memory map)."""
        self.tlb_r.clear()
        self.tlb_w.clear()
        self.w_ppage.clear()

    def flush_page(self, la: int) -> None:
        """INVLPG (SDM vol. 2A, INVLPG)."""
        vp = la >> 12
        self.tlb_r.pop(vp, None)
        self.tlb_w.pop(vp, None)
        self.w_ppage.pop(vp, None)

    def check_version(self) -> None:
        if self.mem.version != self.mem_version:
            self.mem_version = self.mem.version
            self.flush()

    def drop_write_entries(self, ppage: int) -> None:
        """``ppage`` now holds translated code: stores to it must take the slow path."""
        for vp in [vp for vp, pp in self.w_ppage.items() if pp == ppage]:
            del self.tlb_w[vp]
            del self.w_ppage[vp]

    # -- translation -------------------------------------------------------------------
    def translate(self, la: int, access: int, supervisor: bool = False) -> int:
        """Linear -> physical address for ``access``; raises #PF/#GP as the SDM says.

        ``supervisor`` marks an implicit supervisor-mode access (the GDT, LDT, IDT or
        TSS read or written while delivering an event or loading a segment): it is
        checked as at CPL0 whatever the CPL (SDM vol. 3A, 4.6 "Access Rights").
        """
        env = self.env
        if env.efer & EFER_LMA:
            top = la >> 47
            if top != 0 and top != 0x1FFFF:
                raise Fault(EXCP_GP, 0, why=f"non-canonical address {la:#x}")
        if not env.cr[0] & CR0_PG:
            # The A20 gate masks physical bit 20 when closed (``env.a20_mask``).
            return (la & 0xFFFFFFFF if not env.efer & EFER_LMA else la) & env.a20_mask
        return self._walk(la, access, supervisor) & env.a20_mask

    def _walk(self, la: int, access: int, supervisor: bool = False) -> int:
        """The page walk (target/i386/paging.py), its permission check and #PF, then the
        accessed and dirty bits it sets (SDM vol. 3A, 4.6-4.8)."""
        env = self.env
        user = env.cpl == 3 and not supervisor
        cr0, cr4, efer = env.cr[0], env.cr[4], env.efer
        walk = page_walk(self.mem.read, cr0, env.cr[3], cr4, efer, la)
        if walk.pa is None:
            self._pf(la, access, user, present=False)
        if not access_allowed(walk, access, user, cr0, efer):
            self._pf(la, access, user, present=True)
        for e in accessed_dirty_updates(walk, access):
            self.mem.write(e.addr, e.value, e.size)
        assert walk.pa is not None
        return walk.pa

    def _pf(self, la: int, access: int, user: bool, present: bool) -> None:
        env = self.env
        code = pf_error_code(present, access, user, env.cr[4], env.efer)
        raise Fault(EXCP_PF, code, cr2=la, why=f"page fault at {la:#x}")

    def fill(self, la: int, access: int) -> int:
        """Translate and, for a RAM page, add a TLB entry; returns the physical address."""
        self.check_version()
        pa = self.translate(la, access)
        vp, pp = la >> 12, pa >> 12
        r = self.mem.lookup(pp << 12)
        if r is not None and r.mr.is_ram and r.end >= (pp + 1) << 12:
            delta = r.offset - r.start + (pp << 12) - (vp << 12)
            # Pages a guest data breakpoint watches stay off the fast paths too, so that
            # every access to them reaches slow_load/slow_store (SDM vol. 3A, 18.3.1.2).
            if access == ACC_WRITE:
                if not r.mr.readonly and pp not in self.core.code_pages \
                        and vp not in self.dbg.pages_w:
                    self.tlb_w[vp] = (r.mr.ram(), delta)
                    self.w_ppage[vp] = pp
            elif vp not in self.dbg.pages_r:
                self.tlb_r[vp] = (r.mr.ram(), delta)
        return pa

    def fill_split(self, la: int, size: int, access: int) -> tuple[int, int, int]:
        """Translate both pages of an access that crosses a page boundary, the lower
        one first, before either is used (all or nothing); returns (pa1, pa2, bytes in the
        first page).  A fault on the first page wins, even when the last byte is
        non-canonical: ``mov rax, [0x7ffffffffff9]`` with the lower page not present is
        that page's #PF, as the processor gives it in 64-bit mode
        (test_access_ending_non_canonical_faults_on_its_first_page compares it)."""
        lo = PAGE - (la & 0xFFF)
        return self.fill(la, access), self.fill(la + lo, access), lo

    # -- slow paths ------------------------------------------------------------------
    def slow_load(self, la: int, size: int) -> int:
        if self.dbg.watches:
            self.dbg.check_data(la, size, False)
        if (la & 0xFFF) + size > PAGE:
            pa1, pa2, lo = self.fill_split(la, size, ACC_READ)
            v = self.mem.read_bytes(pa1, lo) + self.mem.read_bytes(pa2, size - lo)
            return int.from_bytes(v, "little")
        pa = self.fill(la, ACC_READ)
        return self.mem.read(pa, size)

    def slow_store(self, la: int, size: int, value: int) -> None:
        if self.dbg.watches:
            self.dbg.check_data(la, size, True)
        value &= (1 << (8 * size)) - 1
        if (la & 0xFFF) + size > PAGE:
            # Translate both pages before writing anything: the store is all or nothing.
            pa1, pa2, lo = self.fill_split(la, size, ACC_WRITE)
            data = value.to_bytes(size, "little")
            self._phys_store(pa1, data[:lo])
            self._phys_store(pa2, data[lo:])
            return
        pa = self.fill(la, ACC_WRITE)
        self._phys_store(pa, value.to_bytes(size, "little"))

    def _phys_store(self, pa: int, data: bytes) -> None:
        core = self.core
        if pa >> 12 in core.code_pages:
            core.invalidate_page(pa >> 12)
        self.mem.write_bytes(pa, data)

    def read_bytes(self, la: int, n: int) -> bytes:
        """Read guest-linear bytes of a system structure (GDT, LDT, IDT, TSS): implicit
        supervisor-mode accesses, allowed on supervisor pages at CPL3 (SDM vol. 3A, 4.6)."""
        out = bytearray()
        while n > 0:
            chunk = min(n, PAGE - (la & 0xFFF))
            out += self.mem.read_bytes(self.translate(la, ACC_READ, supervisor=True), chunk)
            la += chunk
            n -= chunk
        return bytes(out)

    def write_bytes_linear(self, la: int, data: bytes) -> None:
        """Write guest-linear bytes of a system structure (descriptor accessed and busy
        bits): implicit supervisor-mode writes (SDM vol. 3A, 4.6), so no TLB entry is
        made for them (a user-mode store must not reuse it)."""
        for k, b in enumerate(data):
            self._phys_store(self.translate(la + k, ACC_WRITE, supervisor=True), bytes([b]))

    # -- the helpers generated code calls ------------------------------------------------
    def _make_helpers(self) -> dict[str, Callable[..., Any]]:
        """``ld1..ld8`` / ``st1..st8`` / ``lw1..lw8``: a dict hit and an ``unpack_from``
        on RAM (accel/interp/namespace.py lists them)."""
        helpers: dict[str, Callable[..., Any]] = {}
        for size, st in _STRUCTS.items():
            helpers[f"ld{size}"] = self._make_load(size, st)
            helpers[f"st{size}"] = self._make_store(size, st)
            helpers[f"lw{size}"] = self._make_rmw_load(size, st)
        return helpers

    def _make_load(self, size: int, st: struct.Struct) -> Callable[[int], int]:
        limit = PAGE - size
        get = self.tlb_r.get
        unpack = st.unpack_from
        slow = self.slow_load

        def load(la: int) -> int:
            e = get(la >> 12)
            if e is not None and la & 0xFFF <= limit:
                return unpack(e[0], la + e[1])[0]
            return slow(la, size)
        return load

    def _make_store(self, size: int, st: struct.Struct) -> Callable[[int, int], None]:
        limit = PAGE - size
        get = self.tlb_w.get
        pack = st.pack_into
        slow = self.slow_store
        mask = (1 << (8 * size)) - 1

        def store(la: int, value: int) -> None:
            e = get(la >> 12)
            if e is not None and la & 0xFFF <= limit:
                pack(e[0], la + e[1], value & mask)
            else:
                slow(la, size, value)
        return store

    def _make_rmw_load(self, size: int, st: struct.Struct) -> Callable[[int], int]:
        """``lwN``: the read of a read-modify-write, through the *write* TLB, so that a
        fault reports a write access (SDM vol. 3A, 4.7: the access that caused the
        fault; an RMW instruction's read is checked for write)."""
        get = self.tlb_w.get
        unpack = st.unpack_from
        limit = PAGE - size
        mem, dbg = self.mem, self.dbg
        fill, fill_split = self.fill, self.fill_split

        def load(la: int) -> int:
            e = get(la >> 12)
            if e is not None and la & 0xFFF <= limit:
                return unpack(e[0], la + e[1])[0]
            if dbg.watches:
                dbg.check_data(la, size, True)     # an RMW read counts as a write access
            if (la & 0xFFF) + size > PAGE:
                pa1, pa2, lo = fill_split(la, size, ACC_WRITE)
                raw = mem.read_bytes(pa1, lo) + mem.read_bytes(pa2, size - lo)
                return int.from_bytes(raw, "little")
            return int(mem.read(fill(la, ACC_WRITE), size))
        return load
