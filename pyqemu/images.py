"""Guest images built from assembly source: BIOS ROMs and multiboot kernels.

Guest programs in pyqemu are assembly source assembled by keystone at load time,
never binary blobs.  A source file may carry metadata in ``#!`` comment lines::

    #! mode: bios            (bios | real | prot32 | long64 | multiboot)
    #! load: 0x7c00          (real/prot32/long64: where to load and enter)
    #! exit: 0x21            (the value the guest writes to isa-debug-exit)
    #! serial: Hello         (text the guest prints on the UART)
    #! include: lib/uart32.inc  (routines appended to the source; several allowed)

``bios`` sources are 16-bit code placed at the start of a 64 KiB ROM whose
reset vector (offset 0xFFF0, executed at 0xFFFFFFF0 after reset: Intel SDM
vol. 3A, 9.1.4) far-jumps to F000:0000, i.e. the ROM's alias below 1 MiB.
``multiboot`` sources are 32-bit code assembled at 1 MiB; they begin with a
Multiboot header using the a.out kludge (Multiboot Specification 0.6.96, 3.1.1),
which :func:`multiboot_header` writes for them.

The example images the README boots are built from ``pyqemu/guests/hello.s`` (a
BIOS ROM) and ``pyqemu/guests/kernel.s`` (a multiboot kernel) by one command::

    pyqemu images DIR            # or: python -m pyqemu.images DIR

which writes ``DIR/hello.rom`` and ``DIR/kernel.mb`` (:func:`write_example_images`).
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from pyqemu.hw.core.errors import LoaderError
from pyqemu.hw.i386 import loader_asm

__all__ = ["BIOS_SIZE", "EXAMPLES", "GUESTS", "MULTIBOOT_BASE", "GuestProgram", "assemble",
           "bios_image", "example_image", "images_main", "multiboot_header", "multiboot_image",
           "write_example_images"]

BIOS_SIZE = 64 * 1024
MULTIBOOT_BASE = 0x100000
MULTIBOOT_MAGIC = 0x1BADB002
MULTIBOOT_AOUT_KLUDGE = 1 << 16

_ASM_MODE = {"bios": "real", "real": "real", "prot32": "prot32", "multiboot": "prot32",
             "long64": "long64"}


def assemble(source: str, mode: str, addr: int) -> bytes:
    """Assemble ``source`` (Intel syntax) for a guest ``mode`` as if loaded at ``addr``."""
    if mode not in _ASM_MODE:
        raise LoaderError(f"unknown guest mode '{mode}' (bios, real, prot32, long64, multiboot)")
    return loader_asm.assemble(source, _ASM_MODE[mode], addr)


def bios_image(source: str) -> bytes:
    """A 64 KiB ROM: ``source`` (16-bit, CS=0xF000, IP from 0) and a reset vector jumping to it."""
    code = assemble(source, "bios", 0)
    if len(code) > 0xFFF0:
        raise LoaderError(f"BIOS code is {len(code)} bytes; at most 0xfff0 fit before the "
                          "reset vector")
    rom = bytearray(b"\xff" * BIOS_SIZE)  # erased flash reads as ones
    rom[:len(code)] = code
    # 0xFFF0: jmp far 0xF000:0x0000 (EA iw iw), then hlt as a backstop.
    rom[0xFFF0:0xFFF6] = b"\xea\x00\x00\x00\xf0"+b"\xf4"
    return bytes(rom)


def multiboot_header(entry_label: str = "entry", end_label: str = "image_end") -> str:
    """Assembly for a Multiboot v1 header with the a.out kludge (Multiboot spec 3.1.1/3.1.3).

    The loader finds it in the first 8 KiB; its address fields tell where the image
    goes and where to enter, so the kernel needs no ELF headers.
    """
    flags = MULTIBOOT_AOUT_KLUDGE
    checksum = (-(MULTIBOOT_MAGIC + flags)) & 0xFFFFFFFF
    return (f".align 4\nmultiboot_header:\n.long {MULTIBOOT_MAGIC:#x}\n.long {flags:#x}\n"
            f".long {checksum:#x}\n.long multiboot_header\n.long {MULTIBOOT_BASE:#x}\n"
            f".long {end_label}\n.long {end_label}\n.long {entry_label}\n")


def multiboot_image(source: str) -> bytes:
    """A multiboot kernel: ``jmp entry`` then the header then ``source`` (which defines
    ``entry``), assembled at 1 MiB, with an ``image_end`` label appended."""
    full = f"jmp entry\n{multiboot_header()}\n{source}\nimage_end:\n"
    return assemble(full, "multiboot", MULTIBOOT_BASE)


#: The guest sources and routines shipped in the package (pyqemu/guests).
GUESTS = Path(__file__).resolve().parent / "guests"


@dataclass
class GuestProgram:
    """A guest program of ``tests/guests`` or the demo, with its metadata."""

    name: str
    source: str
    mode: str
    load: int = 0x7C00
    exit: int | None = None
    serial: str | None = None
    meta: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_file(cls, path: str | Path) -> GuestProgram:
        p = Path(path)
        try:
            text = p.read_text()
        except OSError as e:
            raise LoaderError(f"cannot read guest program '{p}': {e.strerror}") from None
        pairs = [(m[1], m[2]) for m in re.finditer(r"^#!\s*([\w-]+):\s*(.*?)\s*$", text, re.M)]
        meta: dict[str, str] = dict(pairs)
        for key, name in pairs:
            if key == "include":
                # Shared routines (the UART output code, say) live once: beside the guest,
                # else in the packaged library (pyqemu/guests/lib), which the README's
                # example images and the test guests share.
                inc = p.parent / name
                if not inc.exists():
                    inc = GUESTS / name
                try:
                    text += "\n" + inc.read_text()
                except OSError as e:
                    raise LoaderError(f"guest program '{p}': cannot include '{name}': "
                                      f"{e.strerror}") from None
        if "mode" not in meta:
            raise LoaderError(f"guest program '{p}' has no '#! mode:' line")
        return cls(name=p.stem, source=text, mode=meta["mode"],
                   load=int(meta.get("load", "0x7c00"), 0),
                   exit=int(meta["exit"], 0) if "exit" in meta else None,
                   serial=meta.get("serial", "").encode().decode("unicode_escape") or None,
                   meta=meta)

    def image(self) -> bytes:
        """The bytes to load: a ROM for bios, a kernel for multiboot, else the code."""
        if self.mode == "bios":
            return bios_image(self.source)
        if self.mode == "multiboot":
            return multiboot_image(self.source)
        return assemble(self.source, self.mode, self.load)


#: The README's example images: file name -> the guest source in ``pyqemu/guests``.
EXAMPLES: dict[str, str] = {"hello.rom": "hello.s", "kernel.mb": "kernel.s"}


def example_image(name: str) -> bytes:
    """The bytes of example image ``name`` (a key of :data:`EXAMPLES`), built from its
    source shipped in the package."""
    if name not in EXAMPLES:
        raise LoaderError(f"no example image '{name}' (there are {', '.join(EXAMPLES)})")
    return GuestProgram.from_file(GUESTS / EXAMPLES[name]).image()


def write_example_images(directory: str | os.PathLike[str]) -> list[Path]:
    """Build every example image into ``directory`` (created if missing); each file is
    written whole or not at all (a temporary file renamed into place)."""
    out = Path(directory)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise LoaderError(f"cannot create the directory '{out}': {e.strerror}") from None
    written = []
    for name in EXAMPLES:
        data = example_image(name)
        target = out / name
        try:
            fd, tmp = tempfile.mkstemp(dir=out, prefix=f".{name}.")
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                os.chmod(tmp, 0o644)
                os.replace(tmp, target)
            except BaseException:
                os.unlink(tmp)
                raise
        except OSError as e:
            raise LoaderError(f"cannot write '{target}': {e.strerror}") from None
        written.append(target)
    return written


def images_main(argv: list[str]) -> int:
    """``pyqemu images DIR``: write DIR/hello.rom and DIR/kernel.mb, say what they are."""
    from pyqemu.cli import UsageError
    if len(argv) != 1 or argv[0].startswith("-"):
        raise UsageError("usage: pyqemu images DIR (writes DIR/hello.rom and DIR/kernel.mb)")
    what = {"hello.rom": "a 64 KiB BIOS ROM: -bios", "kernel.mb": "a multiboot kernel: -kernel"}
    for path in write_example_images(argv[0]):
        print(f"{path}  ({path.stat().st_size} bytes, {what.get(path.name, 'an image')})")
    return 0


if __name__ == "__main__":  # python -m pyqemu.images DIR
    from pyqemu.cli import main
    sys.exit(main(["images", *sys.argv[1:]]))
