"""Lockstep: conformance guests run on kvm and interp side by side without a divergence,
a divergence planted on purpose is reported naming the instruction and the field, and
the README's examples give what the README says."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pyqemu.accel.interp.undefined_flags import undefined_flags
from pyqemu.cli import main as cli_main
from pyqemu.images import GuestProgram, assemble
from pyqemu.lockstep import Lockstep, Replay, lockstep
from pyqemu.lockstep.insn import decode
from pyqemu.lockstep.state import undefined_flags_of
from pyqemu.target.i386.cpu_state import R_CS, R_ECX, CPUX86State
from tests.support import GUEST_DIR, require_accel

REPO = Path(__file__).resolve().parents[2]

DEBUG_EXIT = "isa-debug-exit,iobase=0xf4,iosize=0x04"

# Guests whose every instruction this host's KVM can single-step: real mode, flat
# 32-bit protected mode and 64-bit code at CPL0.  (bcd16 is run too: where KVM's
# real-mode emulator lacks DAA the run ends "unsupported", which is a skip.)
GUESTS = ["hello_bios", "arith16", "arith32", "cpuid32", "hello_multiboot", "arith64",
          "bcd16", "sieve32"]


def _guest_kwargs(prog: GuestProgram, tmp_path: Path) -> dict[str, Any]:
    if prog.mode in ("bios", "multiboot"):
        image = tmp_path / f"{prog.name}.img"
        image.write_bytes(prog.image())
        return {"bios" if prog.mode == "bios" else "kernel": str(image)}
    return {"asm": prog.source, "load": prog.load, "mode": prog.mode}


def _small(prog: GuestProgram) -> GuestProgram:
    """sieve32 up to 100 (25 primes) instead of 2000: the same code, a few seconds."""
    if prog.name == "sieve32":
        prog.source = prog.source.replace("2000", "100").replace("cmp edx, 303", "cmp edx, 25")
    return prog


@pytest.fixture(autouse=True)
def _kvm() -> None:
    require_accel("kvm")


@pytest.mark.parametrize("name", GUESTS)
def test_conformance_guest_runs_in_lockstep_without_divergence(name: str, tmp_path: Path) -> None:
    prog = _small(GuestProgram.from_file(GUEST_DIR / f"{name}.s"))
    result = lockstep(memory="32M", devices=[DEBUG_EXIT], max_steps=20_000,
                      **_guest_kwargs(prog, tmp_path))
    print(result.report.splitlines()[-1])
    if result.reason == "unsupported":
        pytest.skip(f"this host's KVM cannot step {name}: {result.report.splitlines()[1]}")
    assert result.divergence is None, result.report
    assert result.reason == "shutdown", result.report
    assert result.exit_code == ((prog.exit or 0) << 1) | 1


def test_leader_devices_see_each_access_once_and_follower_reads_replayed(tmp_path: Path) -> None:
    prog = GuestProgram.from_file(GUEST_DIR / "hello_bios.s")
    with Lockstep(memory="32M", devices=[DEBUG_EXIT], **_guest_kwargs(prog, tmp_path)) as ls:
        result = ls.run(5_000)
        assert result.divergence is None, result.report
        assert ls.leader is not None and ls.follower is not None
        assert ls.leader.serial_output == b"Hello from the reset vector!\r\n"
        assert ls.follower.serial_output == b""     # its writes never reached its UART


def test_planted_register_divergence_names_instruction_and_register() -> None:
    source = """
        mov esp, 0x8000
        mov eax, 0x1
        add eax, 0x2
        mov ebx, eax
        hlt
    """

    def corrupt(ls: Lockstep, step: int) -> None:
        if step == 3:                                   # after "add eax, 0x2"
            assert ls.follower is not None
            env = ls.follower.env()
            env.regs[0] ^= 0x100
            ls.follower.env_changed()

    result = lockstep(asm=source, load=0x10000, mode="prot32", on_step=corrupt, max_steps=100)
    assert result.reason == "divergence"
    div = result.divergence
    assert div is not None
    assert div.step == 3
    assert "add eax, 2" in div.insn
    assert div.fields == ["rax"]
    assert re.search(r"^rax +0x3 +0x103 +<--$", result.report, re.MULTILINE), result.report


def test_planted_flag_divergence_is_caught_at_that_instruction() -> None:
    """A wrong carry after one ADD is reported at the ADD, not later."""
    source = """
        mov esp, 0x8000
        mov eax, 0xffffffff
        add eax, 0x1
        pushfd
        hlt
    """

    def corrupt(ls: Lockstep, step: int) -> None:
        if step == 3:                                   # after "add eax, 1": clear CF
            assert ls.follower is not None
            ls.follower.env().eflags &= ~1
            ls.follower.env_changed()

    result = lockstep(asm=source, load=0x10000, mode="prot32", on_step=corrupt, max_steps=100)
    assert result.divergence is not None
    assert result.divergence.step == 3
    assert result.divergence.fields == ["rflags"]


def test_rdtsc_results_are_copied_from_the_leader() -> None:
    source = """
        rdtsc
        mov ebx, eax
        rdtsc
        sub eax, ebx
        hlt
    """
    result = lockstep(asm=source, load=0x10000, mode="prot32", max_steps=100)
    assert result.divergence is None, result.report
    assert result.reason == "halted"


def test_follower_io_checked_against_the_leaders_in_order() -> None:
    replay = Replay()
    replay.begin([("I/O", 0x3fd, 1, 0x60, False), ("I/O", 0x80, 1, 5, True)])
    assert replay.read("I/O", 0x3fd, 1) == 0x60          # the leader's value
    replay.write("I/O", 0x80, 1, 6)                       # a different value: mismatch
    replay.finish()
    assert replay.mismatches == [
        "follower I/O write 0x80/1 <- 0x6, leader I/O write 0x80/1 <- 0x5"]


def test_max_steps_stops_cleanly() -> None:
    result = lockstep(asm="l: inc eax\njmp l", load=0x10000, mode="prot32", max_steps=50)
    assert (result.reason, result.steps, result.divergence) == ("max-steps", 50, None)


def test_cli_lockstep_exit_status_and_report(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    prog = GuestProgram.from_file(GUEST_DIR / "hello_bios.s")
    image = tmp_path / "hello.rom"
    image.write_bytes(prog.image())
    rc = cli_main(["-lockstep", "-lockstep-max-steps", "100000", "-bios", str(image),
                   "-device", DEBUG_EXIT, "-serial", "none", "-m", "32M"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "no divergence; stopped: shutdown (exit code 33)" in out


def test_cli_lockstep_rejects_accel(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = cli_main(["-lockstep", "-accel", "kvm", "-bios", "x.rom"])
    assert rc == 1
    assert "drop -accel" in capsys.readouterr().err


def test_user_mode_code_runs_in_lockstep_where_kvm_can_step_it() -> None:
    """64-bit CPL3 code: a PVM host's KVM ends single-stepping it in a shutdown, which
    lockstep reports as "unsupported" (a skip here); elsewhere it must agree."""
    source = """
        mov rax, 0x1234
        add rax, rax
        l: jmp l
    """
    result = lockstep(setup=lambda m: m.load_asm(source, 0x10000, mode="long64", user=True),
                      max_steps=3, step_timeout=1.0)
    if result.reason == "unsupported":
        pytest.skip(result.report.splitlines()[1])
    assert result.divergence is None, result.report
    assert result.reason == "max-steps"


def test_memory_written_outside_the_checked_ranges_is_found_by_the_ram_check() -> None:
    def corrupt(ls: Lockstep, step: int) -> None:
        if step == 2:
            assert ls.follower is not None
            ls.follower.mem_write(0x5000, b"\x99")

    result = lockstep(asm="mov eax, 0x1\nmov ebx, 0x2\nmov ecx, 0x3\nhlt", load=0x10000,
                      mode="prot32", on_step=corrupt, max_steps=100)
    assert result.divergence is not None
    assert result.divergence.fields == ["ram[0x5000]"]


# -- OUT then HLT -------------------------------------------------------------------------

#: Where each mode's guest is loaded (and entered).
MODES = {"real": 0x7C00, "prot32": 0x10000, "long64": 0x10000}
OUT_THEN_HLT = {
    "out-imm8": "mov al, 0x41\nout 0x80, al\nhlt",
    "out-dx-uart": "mov dx, 0x3f8\nmov al, 0x41\nout dx, al\nhlt",
    "out-nop-hlt": "mov al, 0x41\nout 0x80, al\nnop\nhlt",
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("source", OUT_THEN_HLT.values(), ids=OUT_THEN_HLT)
def test_out_then_hlt_halts_leader_and_follower_alike(mode: str, source: str) -> None:
    """A KVM that runs on past an OUT before its single-step trap (this host's) executes
    the OUT and the HLT after it in one step; the leader is halted by that step's last
    instruction, as the follower is (was: "differs: halted", all registers equal)."""
    with Lockstep(memory="32M") as ls:
        ls.load_asm(source, MODES[mode], mode)
        result = ls.run(100)
        if result.reason == "unsupported":
            pytest.skip(f"this host's KVM cannot step {mode} code: {result.report.splitlines()[1]}")
        assert result.divergence is None, result.report
        assert (result.reason, result.steps) == ("halted", source.count("\n") + 1), result.report
        assert ls.leader is not None and ls.follower is not None
        le, fe = ls.leader.env(), ls.follower.env()
        assert le.rip == fe.rip
        assert ls.leader.mem_read(le.segs[R_CS].base + le.rip - 1, 1) == b"\xf4"   # after the HLT
        if "0x3f8" in source:
            assert ls.leader.serial_output == b"A"
            assert ls.follower.serial_output == b""


# -- the README's examples ------------------------------------------------------------------

def test_readme_library_example_prints_3_halted_None(capsys: pytest.CaptureFixture[str]) -> None:
    r = lockstep(asm="mov eax, 0x1\nadd eax, 0x2\nhlt", load=0x10000, mode="prot32")
    print(r.steps, r.reason, r.divergence)
    assert capsys.readouterr().out == "3 halted None\n"
    assert r.report.startswith("lockstep: 3 instructions, no divergence; stopped: halted\n")


def test_readme_command_line_bios_example_exits_0(tmp_path: Path,
                                                  capfd: pytest.CaptureFixture[str]) -> None:
    """``pyqemu -lockstep -bios hello.rom -device isa-debug-exit,iobase=0xf4,iosize=0x04``."""
    rom = tmp_path / "hello.rom"
    rom.write_bytes(GuestProgram.from_file(GUEST_DIR / "hello_bios.s").image())
    rc = cli_main(["-lockstep", "-bios", str(rom), "-device", DEBUG_EXIT])
    out = capfd.readouterr().out
    assert rc == 0, out
    assert "Hello from the reset vector!" in out            # the leader's UART, on stdio
    assert "no divergence; stopped: shutdown (exit code 33)" in out


def test_readme_command_line_kernel_example_exits_0(tmp_path: Path) -> None:
    """``pyqemu -lockstep -lockstep-max-steps 50000 -kernel kernel.mb -m 32M -serial none``
    with a multiboot kernel that writes to the UART, then to port 0xf4 (no device there)
    and halts: the OUT;HLT that used to end in "differs: halted" and exit status 2."""
    kernel = tmp_path / "kernel.mb"
    kernel.write_bytes(GuestProgram.from_file(GUEST_DIR / "hello_multiboot.s").image())
    proc = subprocess.run(
        [sys.executable, "-m", "pyqemu.cli", "-lockstep", "-lockstep-max-steps", "50000",
         "-kernel", str(kernel), "-m", "32M", "-serial", "none"],
        cwd=REPO, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "no divergence; stopped: halted" in proc.stdout


# -- what is compared -------------------------------------------------------------------------

@pytest.mark.parametrize(("source", "bits", "cl", "table_args"), [
    ("and eax, ebx", 32, 0, ("and", 32, None)),
    ("shl eax, cl", 32, 33, ("shl", 32, 1)),           # CL masked to 5 bits
    ("shl rax, cl", 64, 33, ("shl", 64, 33)),          # 6 bits with a 64-bit operand
    ("rcl ax, 0x11", 32, 0, ("rcl", 16, 17)),
    ("shrd eax, ebx, 0x4", 32, 0, ("shrd", 32, 4)),
    ("aam", 32, 0, ("aam", 8, None)),
    ("daa", 32, 0, ("daa", 32, None)),
])
def test_undefined_flags_are_the_tables(source: str, bits: int, cl: int,
                                        table_args: tuple[str, int, int | None]) -> None:
    """Lockstep masks what accel/interp/undefined_flags.py says, nothing of its own."""
    code = assemble(source, "long64" if bits == 64 else "prot32", 0x1000)
    insn = decode(code, 0x1000, bits)
    pre = CPUX86State()
    pre.regs[R_ECX] = cl
    assert undefined_flags_of(insn, pre) == undefined_flags(*table_args)


def test_decoded_text_of_a_relative_jump_follows_its_address() -> None:
    first, second = decode(b"\xeb\xfe", 0x1000, 32), decode(b"\xeb\xfe", 0x2000, 32)
    assert first is not None and second is not None
    assert (first.text, second.text) == ("jmp 0x1000", "jmp 0x2000")


def test_a_cpuid_leaf_the_host_answers_itself_is_given_to_the_follower_and_named() -> None:
    """KVM_SET_CPUID2 defines the guest's CPUID; a leaf where the leader's answer is not
    the table's was answered by the host (tests/host_behaviour.py,
    cpuid-not-from-set-cpuid2): the follower gets exactly those registers, and the note
    names them.  Where the leader follows the table nothing is copied, so interp's own
    CPUID is still compared."""
    from pyqemu.lockstep.replay import NondeterministicResults
    from pyqemu.target.i386.cpu_state import CPUX86State

    def table(leaf: int, sub: int) -> tuple[int, int, int, int]:
        return (0x0, 0x11, 0x22, 0x33) if leaf == 7 else (0xA, 0xB, 0xC, 0xD)

    class Cpuid:
        name, op_str = "cpuid", ""

    results = NondeterministicResults(table)
    pre, post = CPUX86State(), CPUX86State()
    pre.regs[0], pre.regs[1] = 7, 0
    post.regs[0], post.regs[3], post.regs[1], post.regs[2] = 0x1, 0x11, 0x99, 0x33
    assert results.registers(Cpuid(), pre, post) == ("rax", "rcx")     # type: ignore[arg-type]
    assert [n.split(" itself")[0] for n in results.notes] == [
        "this host's KVM answered CPUID.0x7.0 eax = 0x1",
        "this host's KVM answered CPUID.0x7.0 ecx = 0x99"]
    pre.regs[0], pre.regs[1] = 1, 0x1234
    post.regs[0], post.regs[3], post.regs[1], post.regs[2] = 0xA, 0xB, 0xC, 0xD
    assert results.registers(Cpuid(), pre, post) == ()               # type: ignore[arg-type]
    assert len(results.notes) == 2
