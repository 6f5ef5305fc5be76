"""Character backends: file, memory, null, stdio (with a pipe as stdin), -serial specs."""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

import pytest

_ROOT = Path(__file__).resolve().parents[2]
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

from pyqemu.system.chardev import (  # noqa: E402
    ChardevError,
    FileChardev,
    MemoryChardev,
    NullChardev,
    StdioChardev,
    qemu_chr_find,
    qemu_chr_new,
)


def test_file_backend_writes_bytes_unbuffered(tmp_path):
    path = tmp_path / "out.txt"
    chr = qemu_chr_new(f"file:{path}")
    assert isinstance(chr, FileChardev)
    chr.write(b"abc")
    assert path.read_bytes() == b"abc"        # visible before close
    chr.close()
    chr.close()                                # idempotent


def test_file_backend_bad_path_names_it(tmp_path):
    bad = tmp_path / "missing" / "out.txt"
    with pytest.raises(ChardevError, match=f"could not open '{bad}'"):
        qemu_chr_new(f"file:{bad}")


def test_memory_backend_collects_output_from_threads():
    chr = MemoryChardev()
    threads = [threading.Thread(target=lambda: [chr.write(b"x") for _ in range(500)])
               for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert chr.getvalue() == b"x" * 2000
    assert chr.take() == b"x" * 2000 and chr.getvalue() == b""
    assert not chr.wait_for(b"never", timeout=0.01)


def test_memory_backend_feed_respects_can_receive():
    chr = MemoryChardev()
    got = bytearray()
    room = [2]

    def receive(data: bytes) -> None:
        got.extend(data)
        room[0] -= len(data)

    chr.set_handlers(receive, lambda: room[0])
    chr.feed(b"hello")
    assert bytes(got) == b"he" and chr.pending_input == 3
    room[0] = 10
    chr.accept_input()
    assert bytes(got) == b"hello" and chr.pending_input == 0


def test_null_backend_discards_and_none_means_no_backend():
    chr = qemu_chr_new("null")
    assert isinstance(chr, NullChardev) and chr.write(b"gone") == 4
    chr.close()
    assert qemu_chr_new("none") is None
    with pytest.raises(ChardevError, match="closed"):
        chr.write(b"x")


def test_unknown_spec_is_an_error_naming_it():
    with pytest.raises(ChardevError, match=r"'tcp:1234'.*unsupported chardev 'tcp'"):
        qemu_chr_new("tcp:1234")
    with pytest.raises(ChardevError, match="needs a path"):
        qemu_chr_new("file:")


def test_labelled_backend_is_registered_until_closed():
    chr = qemu_chr_new("memory", label="serial0-test")
    assert qemu_chr_find("serial0-test") is chr
    with pytest.raises(ChardevError, match="duplicate id"):
        qemu_chr_new("null", label="serial0-test")
    chr.close()
    assert qemu_chr_find("serial0-test") is None


def test_stdio_writes_to_its_fd_and_mon_stdio_is_stdio():
    r, w = os.pipe()
    try:
        chr = StdioChardev(stdout=w)
        chr.write(b"to stdout")
        chr.close()
        assert os.read(r, 100) == b"to stdout"
    finally:
        os.close(r)
        os.close(w)
    chr2 = qemu_chr_new("mon:stdio")
    assert isinstance(chr2, StdioChardev) and not chr2.reader_alive
    chr2.close()


def test_stdio_reader_thread_delivers_input_and_stops_on_close():
    r, w = os.pipe()
    got = bytearray()
    arrived = threading.Event()

    def receive(data: bytes) -> None:
        got.extend(data)
        arrived.set()

    try:
        chr = StdioChardev(read_input=True, stdin=r, stdout=os.open(os.devnull, os.O_WRONLY))
        chr.set_handlers(receive)
        assert chr.reader_alive
        os.write(w, b"typed")
        assert arrived.wait(timeout=5)
        # The pipe stays open with nothing to read: close() must still return.
        chr.close()
        assert not chr.reader_alive
        assert bytes(got) == b"typed"
    finally:
        os.close(r)
        os.close(w)
    assert not any(t.name == "chardev stdio" for t in threading.enumerate())
