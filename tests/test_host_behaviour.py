"""The table of what the tests know about the host (tests/host_behaviour.py), checked.

Every host-dependent behaviour names the manual sections that leave it open, interp's
choice, and tests that compare it and exist; reporting a host that chooses otherwise
records it, prints the host and the manual section in the terminal summary, and does
not fail; a different host answer in the one field left open is accepted, while a
wrong interp answer (or a host answer outside what the manuals allow) still fails.
"""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests import host_behaviour as hb
from tests.accel.interp.cpl3_oracle import Outcome

ROOT = Path(__file__).resolve().parents[1]
FAKE_HOST = hb.Host("Fake CPU @ 1.00GHz", "9.9.9-test", "VMX")
#: A manual is named with its volume and a section (a number, or an instruction's page).
MANUAL = re.compile(r"^(Intel SDM vol\. [1-4][A-D]?|AMD APM vol\. [1-5]|Linux KVM API), ")
SECTION = re.compile(r"\b\d+(\.\d+)+\b|api\.rst|\b[A-Z]{3,}[A-Z0-9/]*\b")


@pytest.fixture
def reports(monkeypatch: pytest.MonkeyPatch) -> list[hb.Report]:
    """A report list of this test's own (the session's reports are left alone)."""
    mine: list[hb.Report] = []
    monkeypatch.setattr(hb, "_reports", mine)
    return mine


@pytest.mark.parametrize("name", list(hb.HOST_BEHAVIOURS))
def test_every_behaviour_names_its_manual_sections_and_interps_choice(name: str) -> None:
    b = hb.HOST_BEHAVIOURS[name]
    assert b.name == name
    assert b.case and b.field and b.interp
    assert b.manuals, f"{name}: no manual section leaves it open"
    for m in b.manuals:
        assert MANUAL.match(m), f"{name}: {m!r} names no manual"
        assert SECTION.search(m[MANUAL.match(m).end():]), f"{name}: {m!r} names no section"
    assert b.tests
    for t in b.tests:
        path, _, func = t.partition("::")
        text = (ROOT / path).read_text()
        assert f"def {func}(" in text, f"{name}: {t} does not exist"
        assert f'"{name}"' in text, f"{name}: {path} never reports it"


def test_known_reference_errors_keep_their_entries_and_meaning() -> None:
    assert set(hb.KNOWN_REFERENCE_ERRORS) == {
        "split-store-emulated", "split-fault-order-emulated", "cmps-order",
        "popcnt-gp-emulated", "cmps-two-faults", "cmps-canonical-edge-emulated"}

    def prog(bits: int, *lines: str, rbx: int = 0) -> SimpleNamespace:
        regs = [0] * 16
        regs[3] = rbx
        return SimpleNamespace(bits=bits, lines=list(lines), regs=regs)
    e = hb.KNOWN_REFERENCE_ERRORS
    assert e["split-store-emulated"](prog(32, "stosd")) and not e["split-store-emulated"](
        prog(64, "stosd"))
    assert e["split-fault-order-emulated"](prog(16, "nop"))
    assert not e["split-fault-order-emulated"](prog(64, "nop"))
    assert e["cmps-order"](prog(32, "cmpsb")) and e["cmps-order"](prog(16, ".byte 0x66, 0xa7"))
    assert not e["cmps-order"](prog(64, "cmpsb")) and not e["cmps-order"](prog(32, "movsb"))
    assert e["popcnt-gp-emulated"](prog(64, "popcnt eax, ecx"))
    assert not e["popcnt-gp-emulated"](prog(64, "bsf eax, ecx"))
    assert e["cmps-two-faults"](prog(64, "repe cmpsb"))
    assert e["cmps-canonical-edge-emulated"](prog(64, "cmpsq", rbx=0x7FFFFFFFFFF8))
    assert not e["cmps-canonical-edge-emulated"](prog(64, "cmpsq", rbx=0x300800))
    assert not e["cmps-canonical-edge-emulated"](prog(32, "cmpsd", rbx=0x800000000000))


def test_a_host_that_chooses_otherwise_is_reported_with_the_host_and_the_manual(
        reports: list[hb.Report]) -> None:
    r = hb.report("rep-single-step-rf", "64-bit `rep stosb` RCX=3", host=0, interp=0x10000)
    hb.report("rep-single-step-rf", "64-bit `rep stosb` RCX=3", host=0, interp=0x10000)
    assert reports == [r]                                    # once, however often seen
    assert (r.host, r.interp) == ("0x0", "0x10000")
    assert "test_a_host_that_chooses_otherwise" in r.where   # the test that saw it
    text = "\n".join(hb.summary_lines(host=FAKE_HOST))
    for part in ("Fake CPU @ 1.00GHz", "Linux 9.9.9-test", "KVM: VMX", "rep-single-step-rf",
                 "64-bit `rep stosb` RCX=3: host 0x0, interp 0x10000", "18.3.1.1",
                 "AMD APM vol. 2, 3.1.6", "interp: RF=1", "RFLAGS.RF (bit 16)"):
        assert part in text, part
    assert hb.summary_lines([], host=FAKE_HOST) == []


def test_accept_reports_only_a_difference(reports: list[hb.Report]) -> None:
    assert hb.accept("cpuid-not-from-set-cpuid2", "CPUID.0x7.0 a", host=0, interp=0)
    assert reports == []
    assert not hb.accept("cpuid-not-from-set-cpuid2", "CPUID.0x7.0 a", host=1, interp=0)
    assert [(x.case, x.host, x.interp) for x in reports] == [("CPUID.0x7.0 a", "0x1", "0x0")]


def test_only_a_listed_behaviour_can_be_reported(reports: list[hb.Report]) -> None:
    with pytest.raises(KeyError, match="not a listed host-dependent behaviour"):
        hb.report("anything-goes", "a case", host=1, interp=0)
    assert reports == []


def test_the_terminal_summary_prints_the_reports(reports: list[hb.Report],
                                                 request: pytest.FixtureRequest) -> None:
    """tests/conftest.py's pytest_terminal_summary, as registered with this run."""
    conftest = next(p for p in request.config.pluginmanager.get_plugins()
                    if str(getattr(p, "__file__", "")).endswith("tests/conftest.py"))

    class Terminal:
        def __init__(self) -> None:
            self.lines: list[str] = []

        def write_sep(self, sep: str, title: str) -> None:
            self.lines.append(f"{sep * 3} {title}")

        def write_line(self, line: str) -> None:
            self.lines.append(line)
    quiet = Terminal()
    conftest.pytest_terminal_summary(quiet, 0, request.config)
    assert quiet.lines == []                                  # nothing reported: silent
    hb.report("cpuid-not-from-set-cpuid2", "qemu64: CPUID.0x7.0 a", host=1, interp=0)
    term = Terminal()
    conftest.pytest_terminal_summary(term, 0, request.config)
    assert term.lines[0] == "=== host-dependent behaviours (reported, not failed)"
    assert term.lines[1] == f"host: {hb.this_host()}"
    assert any("qemu64: CPUID.0x7.0 a: host 0x1, interp 0x0" in ln for ln in term.lines)
    assert any("api.rst" in ln for ln in term.lines)


def test_the_host_is_named() -> None:
    h = hb.this_host()
    assert h.cpu and h.kernel
    assert h.kvm in ("PVM (no VMX/SVM)", "VMX", "SVM", "none", "unknown")
    assert hb.is_pvm() == h.kvm.startswith("PVM")
    assert str(FAKE_HOST) == "Fake CPU @ 1.00GHz, Linux 9.9.9-test, KVM: VMX"


# -- the trap-frame comparison, with fake host answers -----------------------------------------
def _frame_outcomes(host_image: int, interp_image: int, rip: int = 0x200000,
                    rcx: int = 2) -> tuple[Outcome, Outcome]:
    def one(image: int) -> Outcome:
        regs = [0] * 16
        regs[1] = rcx
        return Outcome(regs, 0x7008, 0, fault=(1, None),
                       frame=(rip, 0x23, image, 0x3F0000, 0x1B))
    return one(host_image), one(interp_image)


def _compare(src: str, host_image: int, interp_image: int, after_one: int = 0x346) -> None:
    from tests.accel.interp.test_debug_traps import compare_trap_frames
    regs = [0] * 16
    regs[1] = 3
    want, got = _frame_outcomes(host_image, interp_image)
    compare_trap_frames(64, src, regs, 0x302, want, got, 0x200000,
                        lambda text: Outcome([0] * 16, 0x200001, after_one))


def test_a_host_pushing_rf_0_between_rep_iterations_is_reported_not_failed(
        reports: list[hb.Report]) -> None:
    _compare("rep stosb; nop", 0x302, 0x10302)
    assert [r.behaviour for r in reports] == ["rep-single-step-rf"]
    reports.clear()
    _compare("rep stosb; nop", 0x10302, 0x10302)             # the same choice: no report
    assert reports == []


def test_a_host_showing_the_iterations_flags_is_reported_not_failed(
        reports: list[hb.Report]) -> None:
    _compare("repe cmpsb; nop", 0x346, 0x10302)
    assert [r.behaviour for r in reports] == ["rep-single-step-rf",
                                              "rep-cmps-scas-flags-between-iterations"]


@pytest.mark.parametrize("src, host_image, interp_image", [
    ("repe cmpsb; nop", 0x10302, 0x302),       # interp's RF=1 is asserted
    ("repe cmpsb; nop", 0x10302, 0x10346),     # ... and its flags of before the instruction
    ("repe cmpsb; nop", 0x10303, 0x10302),     # a host CF that neither choice gives
    ("repe cmpsb; nop", 0x10102, 0x10302),     # IF differs: not left open
    ("rep stosb; nop", 0x10346, 0x10302),      # STOS's flags are not left open
], ids=["interp-rf", "interp-flags", "host-flags", "other-bit", "stos-flags"])
def test_a_wrong_answer_still_fails(src: str, host_image: int, interp_image: int,
                                    reports: list[hb.Report]) -> None:
    with pytest.raises(AssertionError):
        _compare(src, host_image, interp_image)


def test_outside_rep_iterations_rf_is_compared_exactly(reports: list[hb.Report]) -> None:
    """After the last iteration (RIP past the instruction) RF is defined: 0 on both."""
    from tests.accel.interp.test_debug_traps import compare_trap_frames
    want, got = _frame_outcomes(0x302, 0x10302, rip=0x200002, rcx=0)
    regs = [0] * 16
    regs[1] = 1
    with pytest.raises(AssertionError):
        compare_trap_frames(64, "rep stosb; nop", regs, 0x302, want, got, 0x200000,
                            lambda text: pytest.fail("no iteration is asked for"))
    assert reports == []


def test_a_cpu_lacking_an_optional_instruction_is_not_asked_about_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The KVM differential compares no program that uses an instruction the host CPU
    was probed to lack (#UD), and every other program."""
    from tests.accel.interp import test_kvm_differential as kd
    monkeypatch.setattr(kd, "_host_lacks", {"popcnt"})
    prog = SimpleNamespace(bits=64, lines=["mov eax, 0x1", "popcnt ecx, eax"])
    assert kd.host_cannot_run(prog) == "popcnt"
    assert kd.host_cannot_run(SimpleNamespace(bits=32, lines=prog.lines)) is None
    assert kd.host_cannot_run(SimpleNamespace(bits=64, lines=["lahf"])) is None


def test_debug_reference_errors_name_the_sdm_and_the_test_that_checks_interp() -> None:
    assert set(hb.DEBUG_REFERENCE_ERRORS) == {"compat-mode REP under TF", "MOV SS under TF"}
    traps = (ROOT / "tests/accel/interp/test_debug_traps.py").read_text()
    for name, why in hb.DEBUG_REFERENCE_ERRORS.items():
        assert re.search(r"SDM vol\. 3A, \d+\.\d+", why), name
        checked = re.findall(r"(test_\w+)", why)
        assert checked and all(f"def {t}(" in traps for t in checked), name
        assert f'"{name}"' in traps, f"{name}: never recognised in test_debug_traps.py"
