"""The one page walk (target/i386/paging.py) on page tables built by hand from the SDM."""

from __future__ import annotations

import pytest

from pyqemu.target.i386.cpu_state import (
    CR0_PE,
    CR0_PG,
    CR0_WP,
    CR4_PAE,
    CR4_PSE,
    CR4_SMEP,
    EFER_LMA,
    EFER_LME,
    EFER_NXE,
)
from pyqemu.target.i386.paging import (
    ACC_EXEC,
    ACC_READ,
    ACC_WRITE,
    PFEC_I,
    PFEC_P,
    PFEC_U,
    PFEC_W,
    PTE_A,
    PTE_D,
    PTE_P,
    PTE_PS,
    PTE_RW,
    PTE_US,
    PTE_XD,
    access_allowed,
    accessed_dirty_updates,
    page_walk,
    pf_error_code,
)

PG = CR0_PE | CR0_PG


class Phys(dict[int, int]):
    """Sparse physical memory of entries: address -> value; reads are logged."""

    def __init__(self) -> None:
        super().__init__()
        self.reads: list[int] = []

    def read(self, addr: int, size: int) -> int | None:
        self.reads.append(addr)
        return self.get(addr, 0)


def four_level(leaf_flags: int, pde_flags: int = PTE_P | PTE_RW | PTE_US) -> Phys:
    """0x7f_c040_3000 -> 0x5000 through PML4 0x1000, PDPT 0x2000, PD 0x3000, PT 0x4000."""
    m = Phys()
    la = 0x7F_C040_3000
    m[0x1000 + ((la >> 39) & 0x1FF) * 8] = 0x2000 | PTE_P | PTE_RW | PTE_US
    m[0x2000 + ((la >> 30) & 0x1FF) * 8] = 0x3000 | PTE_P | PTE_RW | PTE_US
    m[0x3000 + ((la >> 21) & 0x1FF) * 8] = 0x4000 | pde_flags
    m[0x4000 + ((la >> 12) & 0x1FF) * 8] = 0x5000 | leaf_flags
    return m


def test_no_paging_is_identity_truncated_outside_long_mode() -> None:
    m = Phys()
    assert page_walk(m.read, CR0_PE, 0, 0, 0, 0x1_2345_6789).pa == 0x2345_6789
    assert page_walk(m.read, CR0_PE, 0, 0, EFER_LMA, 0x1_2345_6789).pa == 0x1_2345_6789
    assert m.reads == []


def test_four_level_4k_page_and_permissions() -> None:
    m = four_level(PTE_P | PTE_US)           # user, read-only leaf
    w = page_walk(m.read, PG, 0x1000, CR4_PAE, EFER_LME | EFER_LMA, 0x7F_C040_3ABC)
    assert w.pa == 0x5ABC and w.page_size == 4096 and len(w.entries) == 4
    assert w.user and not w.writable
    assert access_allowed(w, ACC_READ, True, PG, EFER_LMA)
    assert not access_allowed(w, ACC_WRITE, True, PG, EFER_LMA)
    # A supervisor write to a read-only page: allowed unless CR0.WP (SDM 4.6).
    assert access_allowed(w, ACC_WRITE, False, PG, EFER_LMA)
    assert not access_allowed(w, ACC_WRITE, False, PG | CR0_WP, EFER_LMA)
    # The walk itself writes nothing; the A/D updates are data.
    ups = accessed_dirty_updates(w, ACC_WRITE)
    assert [e.value & (PTE_A | PTE_D) for e in ups] == [PTE_A, PTE_A, PTE_A, PTE_A | PTE_D]


def test_four_level_stops_at_the_first_not_present_level() -> None:
    m = four_level(PTE_P, pde_flags=0)
    w = page_walk(m.read, PG, 0x1000, CR4_PAE, EFER_LMA, 0x7F_C040_3000)
    assert w.pa is None and len(w.entries) == 3
    assert pf_error_code(False, ACC_READ, True, CR4_PAE, EFER_LMA) == PFEC_U


def test_two_mib_page_and_xd() -> None:
    m = four_level(0, pde_flags=PTE_P | PTE_RW | PTE_PS | PTE_XD | 0x200000)
    m[0x3000 + ((0x7F_C040_3000 >> 21) & 0x1FF) * 8] = 0x600000 | PTE_P | PTE_RW | PTE_PS | PTE_XD
    w = page_walk(m.read, PG, 0x1000, CR4_PAE, EFER_LMA, 0x7F_C045_4321)
    assert w.pa == 0x600000 | 0x54321 and w.page_size == 2 << 20
    assert access_allowed(w, ACC_EXEC, False, PG, EFER_LMA)            # NXE clear: XD ignored
    assert not access_allowed(w, ACC_EXEC, False, PG, EFER_LMA | EFER_NXE)
    assert not access_allowed(w, ACC_READ, True, PG, EFER_LMA)         # supervisor page


def test_pae_pdptes_carry_no_permissions_or_accessed_bit() -> None:
    m = Phys()
    m[0x1000 + 8 * 1] = 0x2000 | PTE_P                     # PDPTE 1: no R/W, no U/S
    m[0x2000 + 8 * 2] = 0x3000 | PTE_P | PTE_RW | PTE_US
    m[0x3000 + 8 * 3] = 0x9000 | PTE_P | PTE_RW | PTE_US
    la = (1 << 30) | (2 << 21) | (3 << 12) | 0x10
    w = page_walk(m.read, PG, 0x1000, CR4_PAE, 0, la)
    assert w.pa == 0x9010 and w.user and w.writable and len(w.checked) == 2
    assert [e.addr for e in accessed_dirty_updates(w, ACC_READ)] == [0x2010, 0x3018]


def test_32bit_paging_4k_and_pse36_4m() -> None:
    m = Phys()
    m[0x1000 + 4 * 1] = 0x2000 | PTE_P | PTE_RW
    m[0x2000 + 4 * 2] = 0x7000 | PTE_P
    assert page_walk(m.read, PG, 0x1000, 0, 0, (1 << 22) | (2 << 12) | 5).pa == 0x7005
    # A 4 MiB page (CR4.PSE) with PSE-36 bits 39:32 in PDE bits 20:13 (SDM 4.3, Table 4-4).
    m[0x1000 + 4 * 3] = 0xC00000 | (0x12 << 13) | PTE_P | PTE_PS
    w = page_walk(m.read, PG, 0x1000, CR4_PSE, 0, (3 << 22) | 0x1234)
    assert w.pa == (0x12 << 32) | 0xC01234 and w.page_size == 4 << 20
    # Without CR4.PSE the PS bit is ignored and the PDE points at a page table.
    assert page_walk(m.read, PG, 0x1000, 0, 0, 3 << 22).page_size == 4096


@pytest.mark.parametrize("cr4, efer, fetch_sets_i", [
    (0, EFER_NXE, False),                  # 32-bit paging: never I/D, even with NXE
    (CR4_PAE, 0, False),
    (CR4_PAE, EFER_NXE, True),
    (CR4_SMEP, 0, True),
])
def test_pf_error_code_instruction_fetch_bit(cr4: int, efer: int, fetch_sets_i: bool) -> None:
    code = pf_error_code(True, ACC_EXEC, False, cr4, efer)
    assert code & PFEC_P and bool(code & PFEC_I) == fetch_sets_i
    assert pf_error_code(True, ACC_WRITE, True, cr4, efer) == PFEC_P | PFEC_W | PFEC_U
