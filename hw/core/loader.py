"""Reading guest image files with a bound (QEMU's ``hw/core/loader.c``: ``get_image_size``,
``load_image_size``).

A loader reads at most what the guest can hold: :func:`read_image_file` opens
the file without blocking (a FIFO must not hang the command line), refuses
anything but a regular file (a directory, ``/dev/zero``, a FIFO, a socket),
refuses a file larger than ``max_size`` from its size before reading, and
never reads more than ``max_size + 1`` bytes (a file that grows, or a
``/proc`` file whose size reads as 0, is still bounded).
"""

from __future__ import annotations

import os
import stat

from pyqemu.hw.core.errors import LoaderError

__all__ = ["ImageFileError", "format_size", "read_image_file"]

_CHUNK = 1 << 20


class ImageFileError(LoaderError):
    """An image file that cannot be read or is too large; the message is the reason
    only, for the loader to prefix with the option and the file's name."""


def format_size(size: int) -> str:
    """``5368709120`` -> ``"5368709120 bytes (5.0 GiB)"``."""
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if size >= 1 << shift:
            return f"{size} bytes ({size / (1 << shift):.1f} {unit})"
    return f"{size} bytes"


def _kind(mode: int) -> str | None:
    """What a non-regular file is, for the message (None: a regular file)."""
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def read_image_file(path: str | os.PathLike[str], max_size: int, limit_why: str) -> bytearray:
    """The contents of the regular file ``path``, at most ``max_size`` bytes.

    ``limit_why`` names the limit with its size, for the message (``"the guest's
    128.0 MiB of RAM (-m)"``).  Raises :class:`ImageFileError` with the reason: the OS
    error, the kind of a non-regular file, or the size against the limit.
    """
    name = os.fspath(path)
    try:
        # O_NONBLOCK: opening a FIFO with no writer returns at once instead of waiting.
        fd = os.open(name, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as e:
        raise ImageFileError(e.strerror or str(e)) from None
    try:
        st = os.fstat(fd)
        kind = _kind(st.st_mode)
        if kind is not None:
            raise ImageFileError(f"{kind}, not a regular file")
        if st.st_size > max_size:
            raise ImageFileError(f"the file is {format_size(st.st_size)}, more than "
                                 f"{limit_why}")
        # One buffer of the size the file claims (+1 to notice growth), filled in place:
        # the contents are held once.  A file larger than it claimed grows the buffer
        # chunk by chunk, never past max_size + 1.
        buf = bytearray(min(st.st_size, max_size) + 1)
        total = 0
        while total <= max_size:
            if total == len(buf):
                buf.extend(bytes(min(_CHUNK, max_size + 1 - total)))
            try:
                n = os.readv(fd, [memoryview(buf)[total:]])
            except OSError as e:
                raise ImageFileError(e.strerror or str(e)) from None
            if n == 0:
                break
            total += n
        if total > max_size:
            raise ImageFileError(f"the file is larger than {limit_why}")
        del buf[total:]
        return buf
    finally:
        os.close(fd)
