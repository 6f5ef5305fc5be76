"""The x86 page walk, without side effects (Intel SDM vol. 3A, chapter 4).

One walk serves every reader of a guest's page tables: the interpreter's MMU
(which then checks the access, raises #PF and sets the accessed and dirty bits),
lockstep (which reads the memory an instruction wrote), the loaders' tests and the
Unicorn reference harness.  :func:`page_walk` only reads; what a walk implies is
given back as data:

* :class:`PageWalk` ``.pa`` (None where a level is not present or cannot be read),
  the entries read (root first), and the combined permissions (SDM 4.6.1);
* :func:`access_allowed` says whether an access of a given kind and privilege is
  allowed (4.6: R/W with CR0.WP, U/S, XD with EFER.NXE);
* :func:`pf_error_code` builds the #PF error code (4.7, Figure 4-12);
* :func:`accessed_dirty_updates` lists the entries whose A (and, for a write, the
  leaf's D) bit an access sets (4.8).

Paging modes (4.1.1): none (CR0.PG=0), 32-bit (4.3; 4 MiB pages with CR4.PSE,
PSE-36 address bits 39:32 in PDE bits 20:13), PAE (4.4; the PDPTEs at CR3[31:5]
carry no R/W, U/S or XD) and 4-level (4.5; 1 GiB and 2 MiB pages).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from pyqemu.target.i386.cpu_state import (
    CR0_PG,
    CR0_WP,
    CR4_PAE,
    CR4_PSE,
    CR4_SMEP,
    EFER_LMA,
    EFER_NXE,
)

__all__ = [
    "ACC_EXEC",
    "ACC_READ",
    "ACC_WRITE",
    "ADDR_MASK",
    "PFEC_I",
    "PFEC_P",
    "PFEC_RSVD",
    "PFEC_U",
    "PFEC_W",
    "PTE_A",
    "PTE_D",
    "PTE_P",
    "PTE_PS",
    "PTE_RW",
    "PTE_US",
    "PTE_XD",
    "PageEntry",
    "PageWalk",
    "access_allowed",
    "accessed_dirty_updates",
    "page_walk",
    "pf_error_code",
]

# Paging-structure entry bits (SDM vol. 3A, 4.3 Table 4-4..4-6, 4.5 Tables 4-15..4-20).
PTE_P, PTE_RW, PTE_US, PTE_A, PTE_D, PTE_PS = 1, 2, 4, 0x20, 0x40, 0x80
PTE_XD = 1 << 63
ADDR_MASK = 0x000FFFFFFFFFF000
# #PF error code bits (SDM vol. 3A, 4.7, Figure 4-12).
PFEC_P, PFEC_W, PFEC_U, PFEC_RSVD, PFEC_I = 1, 2, 4, 8, 16
# The kind of an access.
ACC_READ, ACC_WRITE, ACC_EXEC = 0, 1, 2

#: ``read(physical address, size) -> value``, or None where nothing can be read there.
PhysRead = Callable[[int, int], "int | None"]


class PageEntry(NamedTuple):
    """One paging-structure entry read by a walk: where it is, what it held, its width."""

    addr: int
    value: int
    size: int


class PageWalk(NamedTuple):
    """What a walk found.  ``pa`` is None when it stopped at a level that is not
    present (or whose entry could not be read); ``entries`` are the entries read,
    root first, the last one the one that stopped it or mapped the page."""

    pa: int | None
    entries: tuple[PageEntry, ...]
    #: the entries whose R/W, U/S and XD bits count (all but PAE's PDPTE)
    checked: tuple[PageEntry, ...]
    page_size: int

    @property
    def present(self) -> bool:
        return self.pa is not None

    @property
    def writable(self) -> bool:
        """R/W set at every level (SDM 4.6.1)."""
        return all(e.value & PTE_RW for e in self.checked)

    @property
    def user(self) -> bool:
        """U/S set at every level: user-mode accessible (SDM 4.6.1)."""
        return all(e.value & PTE_US for e in self.checked)

    def executable(self, nxe: bool) -> bool:
        """No level has XD set, or EFER.NXE is clear (SDM 4.6.1)."""
        return not nxe or not any(e.value & PTE_XD for e in self.checked)


def _identity(la: int, efer: int) -> PageWalk:
    pa = la if efer & EFER_LMA else la & 0xFFFFFFFF
    return PageWalk(pa, (), (), 1 << 12)


def page_walk(read: PhysRead, cr0: int, cr3: int, cr4: int, efer: int, la: int) -> PageWalk:
    """Translate linear address ``la`` through the page tables ``cr0``/``cr3``/``cr4``/
    ``efer`` select, reading entries with ``read``; writes nothing."""
    if not cr0 & CR0_PG:
        return _identity(la, efer)
    entries: list[PageEntry] = []

    def get(addr: int, size: int) -> int | None:
        value = read(addr, size)
        if value is not None:
            entries.append(PageEntry(addr, value, size))
        return value

    if efer & EFER_LMA or cr4 & CR4_PAE:
        if efer & EFER_LMA:
            addr = (cr3 & ADDR_MASK) + ((la >> 39) & 0x1FF) * 8
            shifts: tuple[int, ...] = (39, 30, 21, 12)
            skip = 0
        else:
            # PAE: the four PDPTEs are at CR3[31:5] (SDM 4.4.1).
            addr = (cr3 & 0xFFFFFFE0) + ((la >> 30) & 3) * 8
            shifts = (30, 21, 12)
            skip = 1
        for shift in shifts:
            value = get(addr, 8)
            if value is None or not value & PTE_P:
                return PageWalk(None, tuple(entries), tuple(entries[skip:]), 1 << shift)
            pdpte = skip and shift == 30
            if shift == 12 or (not pdpte and shift in (30, 21) and value & PTE_PS):
                size_mask = (1 << shift) - 1
                pa = (value & ADDR_MASK & ~size_mask) | (la & size_mask)
                return PageWalk(pa, tuple(entries), tuple(entries[skip:]), 1 << shift)
            addr = (value & ADDR_MASK) + ((la >> (shift - 9)) & 0x1FF) * 8
        raise AssertionError("unreachable: the last level maps a page")
    # 32-bit paging (SDM 4.3): PDE at CR3[31:12], 4 MiB pages with CR4.PSE.
    la &= 0xFFFFFFFF
    pde = get((cr3 & 0xFFFFF000) + ((la >> 22) & 0x3FF) * 4, 4)
    if pde is None or not pde & PTE_P:
        return PageWalk(None, tuple(entries), tuple(entries), 1 << 22)
    if pde & PTE_PS and cr4 & CR4_PSE:
        pa = (pde & 0xFFC00000) | ((pde >> 13 & 0xFF) << 32) | (la & 0x3FFFFF)
        return PageWalk(pa, tuple(entries), tuple(entries), 1 << 22)
    pte = get((pde & 0xFFFFF000) + ((la >> 12) & 0x3FF) * 4, 4)
    if pte is None or not pte & PTE_P:
        return PageWalk(None, tuple(entries), tuple(entries), 1 << 12)
    return PageWalk((pte & 0xFFFFF000) | (la & 0xFFF), tuple(entries), tuple(entries), 1 << 12)


def access_allowed(walk: PageWalk, access: int, user: bool, cr0: int, efer: int) -> bool:
    """Whether a present translation allows ``access`` (SDM vol. 3A, 4.6).

    ``user`` is a user-mode access (CPL 3 and not an implicit supervisor access
    such as a descriptor-table read).  Supervisor writes to read-only pages are
    allowed unless CR0.WP; fetches from XD pages fault when EFER.NXE.  (SMEP and
    SMAP are not modelled.)
    """
    if user and not walk.user:
        return False
    if access == ACC_WRITE and not walk.writable and (user or cr0 & CR0_WP):
        return False
    return not (access == ACC_EXEC and not walk.executable(bool(efer & EFER_NXE)))


def pf_error_code(present: bool, access: int, user: bool, cr4: int, efer: int) -> int:
    """The #PF error code (SDM vol. 3A, 4.7).  I/D is set for a fetch with CR4.SMEP=1,
    or with CR4.PAE=1 and EFER.NXE=1: 32-bit paging never sets it, even with NXE."""
    code = (PFEC_P if present else 0) | (PFEC_W if access == ACC_WRITE else 0) \
        | (PFEC_U if user else 0)
    if access == ACC_EXEC and (cr4 & CR4_SMEP or (cr4 & CR4_PAE and efer & EFER_NXE)):
        code |= PFEC_I
    return code


def accessed_dirty_updates(walk: PageWalk, access: int) -> list[PageEntry]:
    """The entries an allowed access rewrites, with their new values (SDM vol. 3A, 4.8):
    the accessed bit on every level, the dirty bit on the leaf for a write; never in
    PAE PDPTEs, whose bit 5 is reserved (4.4.1, Table 4-8)."""
    out = []
    last = len(walk.checked) - 1
    for i, e in enumerate(walk.checked):
        new = e.value | PTE_A
        if i == last and access == ACC_WRITE:
            new |= PTE_D
        if new != e.value:
            out.append(PageEntry(e.addr, new, e.size))
    return out
