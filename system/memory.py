"""Memory regions and address spaces (``system/memory.c``, ``include/exec/memory.h``).

A :class:`MemoryRegion` is RAM (anonymous ``mmap`` memory), ROM (the same,
read-only to the guest), I/O (read/write callbacks: a device's registers), an
alias (a window on another region) or a container of subregions at offsets.
An :class:`AddressSpace` is a root region seen from the CPU, flattened into a
sorted list of :class:`FlatRange` each time the topology changes.

Both accelerators use the same objects: KVM registers each RAM flat range as a
memory slot pointing at the very bytes the interpreter reads through
:meth:`MemoryRegion.ram`; KVM reaches :func:`address_space_rw` from
``KVM_EXIT_IO``/``KVM_EXIT_MMIO``, the interpreter from IN/OUT and its memory
helpers.  Device callbacks run under the big lock, and every access that reaches
a device passes the address space's hooks, so a hook sees the same I/O sequence
under both accelerators.
"""

from __future__ import annotations

import bisect
import mmap
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from pyqemu.system.cpus import qemu_global_mutex
from pyqemu.util import trace
from pyqemu.util.error import PyQemuError


class MemoryMapError(PyQemuError, ValueError):
    """A bad memory layout (overlap, size) or an access the dispatch cannot serve."""


class MemoryRegionOps(Protocol):
    """A device's register window (``MemoryRegionOps``): offsets are region-relative."""

    def read(self, offset: int, size: int) -> int: ...

    def write(self, offset: int, value: int, size: int) -> None: ...


class MemoryRegion:
    """``MemoryRegion``."""

    def __init__(self, name: str, size: int, *, ops: MemoryRegionOps | None = None,
                 ram: bool = False, readonly: bool = False,
                 alias: MemoryRegion | None = None, alias_offset: int = 0) -> None:
        if size <= 0:
            raise MemoryMapError(f"memory region '{name}' needs a positive size, not {size}")
        self.name = name
        self.size = size
        self.ops = ops
        self.readonly = readonly
        self.alias = alias
        self.alias_offset = alias_offset
        self.subregions: list[tuple[int, int, MemoryRegion]] = []  # (addr, priority, mr)
        self.container: MemoryRegion | None = None
        self._mmap: mmap.mmap | None = None
        self._view: memoryview | None = None
        self.is_ram = ram or (readonly and ops is None and alias is None)
        if self.is_ram:
            # Anonymous shared memory, page aligned: what KVM_SET_USER_MEMORY_REGION needs.
            self._mmap = mmap.mmap(-1, size, mmap.MAP_SHARED | mmap.MAP_ANONYMOUS,
                                   mmap.PROT_READ | mmap.PROT_WRITE)
            self._view = memoryview(self._mmap)
        self._address_spaces: list[AddressSpace] = []

    # -- RAM ------------------------------------------------------------------------
    @classmethod
    def ram_new(cls, name: str, size: int) -> MemoryRegion:
        """``memory_region_init_ram``."""
        return cls(name, size, ram=True)

    @classmethod
    def rom_new(cls, name: str, size: int) -> MemoryRegion:
        """``memory_region_init_rom``: RAM the guest cannot write."""
        return cls(name, size, ram=True, readonly=True)

    @classmethod
    def io_new(cls, name: str, size: int, ops: MemoryRegionOps) -> MemoryRegion:
        """``memory_region_init_io``."""
        return cls(name, size, ops=ops)

    @classmethod
    def alias_new(cls, name: str, target: MemoryRegion, offset: int, size: int) -> MemoryRegion:
        """``memory_region_init_alias``: ``size`` bytes of ``target`` from ``offset``."""
        if offset + size > target.size:
            raise MemoryMapError(f"alias '{name}' runs past the end of '{target.name}'")
        return cls(name, size, alias=target, alias_offset=offset)

    @classmethod
    def container_new(cls, name: str, size: int) -> MemoryRegion:
        return cls(name, size)

    def ram(self) -> memoryview:
        """The region's bytes (RAM/ROM only): the same memory KVM maps into the guest."""
        if self._view is None:
            raise MemoryMapError(f"memory region '{self.name}' is not RAM")
        return self._view

    def host_address(self) -> int:
        """The host virtual address of the RAM (for ``KVM_SET_USER_MEMORY_REGION``)."""
        import ctypes
        if self._mmap is None:
            raise MemoryMapError(f"memory region '{self.name}' is not RAM")
        buf = (ctypes.c_char * 1).from_buffer(self._mmap)
        addr = ctypes.addressof(buf)
        del buf
        return addr

    # -- topology ----------------------------------------------------------------------
    def add_subregion(self, addr: int, sub: MemoryRegion, priority: int = 0) -> None:
        """``memory_region_add_subregion(_overlap)``; a higher priority wins an overlap."""
        if sub.container is not None:
            raise MemoryMapError(f"memory region '{sub.name}' is already mapped")
        if addr < 0 or addr + sub.size > self.size:
            raise MemoryMapError(
                f"memory region '{sub.name}' at {addr:#x} does not fit in '{self.name}'")
        sub.container = self
        self.subregions.append((addr, priority, sub))
        self._changed()

    def del_subregion(self, sub: MemoryRegion) -> None:
        self.subregions = [s for s in self.subregions if s[2] is not sub]
        sub.container = None
        self._changed()

    def _changed(self) -> None:
        mr: MemoryRegion | None = self
        while mr is not None:
            for asp in mr._address_spaces:
                asp.update_topology()
            mr = mr.container

    def close(self) -> None:
        """Release the RAM mapping (once nothing maps it any more)."""
        if self._view is not None:
            self._view.release()
            self._view = None
        if self._mmap is not None:
            self._mmap.close()
            self._mmap = None
        for _, _, sub in self.subregions:
            sub.close()

    def __repr__(self) -> str:
        kind = ("ram" if self.is_ram else "alias" if self.alias else "io" if self.ops
                else "container")
        return f"<MemoryRegion {self.name} {kind} size={self.size:#x}>"


@dataclass(frozen=True)
class FlatRange:
    """One piece of the flattened view: [start, start+size) maps ``mr`` from ``offset``."""

    start: int
    size: int
    mr: MemoryRegion
    offset: int

    @property
    def end(self) -> int:
        return self.start + self.size


IoHook = Callable[[str, int, int, int, bool], None]  # (space, addr, size, value, is_write)


class IoReplay(Protocol):
    """Stands in for the devices of an :class:`AddressSpace` (``AddressSpace.replay``).

    Cross-checking (:mod:`pyqemu.lockstep`) runs one guest on two machines; only the
    first one's devices see the accesses.  The second one's reads return what the
    first one's returned and its writes are checked against the first one's, never
    sent to a device again (a device must see each access once).
    """

    def read(self, space: str, addr: int, size: int) -> int: ...

    def write(self, space: str, addr: int, size: int, value: int) -> None: ...


class AddressSpace:
    """``AddressSpace``: a root region flattened for lookups; dispatch to devices."""

    def __init__(self, name: str, root: MemoryRegion, *, io: bool = False) -> None:
        self.name = name
        self.root = root
        self.is_io = io
        self.flat: list[FlatRange] = []
        self._starts: list[int] = []
        self.version = 0
        self.hooks: list[IoHook] = []
        #: when set, consulted instead of the devices for every port/MMIO access (the
        #: hooks still see the access, with the replayed value); see :class:`IoReplay`.
        self.replay: IoReplay | None = None
        self.listeners: list[Callable[[AddressSpace], None]] = []
        root._address_spaces.append(self)
        self.update_topology()

    def update_topology(self) -> None:
        """Flatten the region tree (``generate_memory_topology``) and tell the listeners."""
        ranges: list[FlatRange] = []
        self._render(self.root, 0, 0, self.root.size, ranges)
        ranges.sort(key=lambda r: r.start)
        self.flat = ranges
        self._starts = [r.start for r in ranges]
        self.version += 1
        for listener in list(self.listeners):
            listener(self)

    def _render(self, mr: MemoryRegion, base: int, clip_lo: int, clip_hi: int,
                out: list[FlatRange], offset: int = 0) -> None:
        # Subregions are painted highest priority first (later additions win ties,
        # as in QEMU); a lower one only fills the holes the higher ones leave.
        if mr.alias is not None:
            self._render(mr.alias, base - mr.alias_offset, max(clip_lo, base),
                         min(clip_hi, base + mr.size), out)
            return
        lo, hi = max(clip_lo, base), min(clip_hi, base + mr.size)
        if lo >= hi:
            return
        subs = sorted(enumerate(mr.subregions), key=lambda e: (-e[1][1], -e[0]))
        holes = [(lo, hi)]
        for _, (addr, _, sub) in subs:
            s_lo, s_hi = base + addr, base + addr + sub.size
            new_holes = []
            for h_lo, h_hi in holes:
                a, b = max(h_lo, s_lo), min(h_hi, s_hi)
                if a >= b:
                    new_holes.append((h_lo, h_hi))
                    continue
                self._render(sub, s_lo, a, b, out)
                if h_lo < a:
                    new_holes.append((h_lo, a))
                if b < h_hi:
                    new_holes.append((b, h_hi))
            holes = new_holes
        if mr.is_ram or mr.ops is not None:
            for h_lo, h_hi in holes:
                out.append(FlatRange(h_lo, h_hi - h_lo, mr, h_lo - base))

    def lookup(self, addr: int) -> FlatRange | None:
        """The flat range holding ``addr``, or None (unassigned)."""
        i = bisect.bisect_right(self._starts, addr) - 1
        if i >= 0:
            r = self.flat[i]
            if addr < r.end:
                return r
        return None

    def ram_ranges(self) -> list[FlatRange]:
        return [r for r in self.flat if r.mr.is_ram]

    # -- dispatch ---------------------------------------------------------------------
    def read(self, addr: int, size: int) -> int:
        """Read ``size`` bytes (1, 2, 4 or 8) little-endian as an integer."""
        return int.from_bytes(self.read_bytes(addr, size), "little")

    def write(self, addr: int, value: int, size: int) -> None:
        self.write_bytes(addr, (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little"))

    def read_bytes(self, addr: int, length: int) -> bytes:
        out = bytearray()
        while length > 0:
            r = self.lookup(addr)
            n = min(length, r.end - addr) if r is not None else 1
            if r is not None and r.mr.is_ram:
                off = r.offset + addr - r.start
                out += r.mr.ram()[off:off + n]
            else:
                n = self._io_chunk(r, addr, length)
                out += self._dispatch_read(r, addr, n).to_bytes(n, "little")
            addr += n
            length -= n
        return bytes(out)

    def write_bytes(self, addr: int, data: bytes, *, force: bool = False) -> None:
        """Write ``data``; ``force`` also writes ROM (loaders use it, the guest cannot)."""
        pos = 0
        while pos < len(data):
            r = self.lookup(addr)
            n = min(len(data) - pos, r.end - addr) if r is not None else 1
            if r is not None and r.mr.is_ram:
                if not r.mr.readonly or force:
                    off = r.offset + addr - r.start
                    r.mr.ram()[off:off + n] = data[pos:pos + n]
            else:
                n = self._io_chunk(r, addr, len(data) - pos)
                self._dispatch_write(r, addr, int.from_bytes(data[pos:pos + n], "little"), n)
            addr += n
            pos += n

    @staticmethod
    def _io_chunk(r: FlatRange | None, addr: int, length: int) -> int:
        n = 1
        for size in (8, 4, 2):
            if length >= size:
                n = size
                break
        if r is not None:
            n = min(n, r.end - addr)
        while n & (n - 1):
            n -= 1
        return max(n, 1)

    def _dispatch_read(self, r: FlatRange | None, addr: int, size: int) -> int:
        with qemu_global_mutex:
            if self.replay is not None:
                value = self.replay.read(self.name, addr, size) & ((1 << (8 * size)) - 1)
            elif r is None or r.mr.ops is None:
                # Unassigned: ports float high (unassigned_io_read), memory reads 0.
                value = (1 << (8 * size)) - 1 if self.is_io else 0
            else:
                value = r.mr.ops.read(addr - r.start + r.offset, size) & ((1 << (8 * size)) - 1)
            for hook in self.hooks:
                hook(self.name, addr, size, value, False)
            if trace.enabled("ioport"):
                trace.event(f"{self.name} read  {addr:#06x}/{size} -> {value:#x}", "ioport")
            return value

    def _dispatch_write(self, r: FlatRange | None, addr: int, value: int, size: int) -> None:
        with qemu_global_mutex:
            for hook in self.hooks:
                hook(self.name, addr, size, value, True)
            if trace.enabled("ioport"):
                trace.event(f"{self.name} write {addr:#06x}/{size} <- {value:#x}", "ioport")
            if self.replay is not None:
                self.replay.write(self.name, addr, size, value)
            elif r is not None and r.mr.ops is not None:
                r.mr.ops.write(addr - r.start + r.offset, value, size)


def address_space_rw(asp: AddressSpace, addr: int, data: bytearray | memoryview,
                     is_write: bool) -> None:
    """``address_space_rw``: move ``data`` to or from ``addr`` through the dispatch."""
    if is_write:
        asp.write_bytes(addr, bytes(data))
    else:
        data[:] = asp.read_bytes(addr, len(data))
