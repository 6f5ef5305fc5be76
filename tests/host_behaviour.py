"""What the tests know about the host they run on, in one place.

Two tables:

* :data:`KNOWN_REFERENCE_ERRORS` (and :data:`DEBUG_REFERENCE_ERRORS`): where the host's
  KVM is *not* the processor (it runs the code through KVM's instruction emulator) and
  is known to answer otherwise than the processor and the manuals; the KVM
  differential (``tests/accel/interp/test_kvm_differential.py``) lets exactly those
  programs through, the debug-trap comparison skips exactly those cases.
* :data:`HOST_BEHAVIOURS`: cases the manuals (Intel SDM, AMD APM, the KVM API) leave to
  the implementation, or where Intel and AMD say different things.  interp makes one
  choice, written here with the sections that leave it open.  A test compares
  everything else exactly, asserts interp's choice, and for the one field the
  manuals leave open accepts the host's answer: a host that chooses otherwise is
  :func:`report`-ed (the host named: CPU model, kernel release, how its KVM
  virtualises) and printed in pytest's terminal summary by ``tests/conftest.py``.
  It does not fail the test.

Anything else a host cannot do is a skip with the probed reason, in the test that
needs it.  No entry here holds a value measured on one host: a host's answer is taken
at run time, and reported when it is not interp's.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

# -- (a) where the host's KVM is not the processor --------------------------------------------
#: Where this host's reference is not the processor, listed with what decides instead.
#: Each entry takes a generated program of the KVM differential (its ``bits``, ``lines``
#: and ``regs``) and says whether the error can apply to it.
#:
#: In 32/16-bit compatibility mode a PVM host's KVM runs guest code through its own
#: instruction emulator, not natively (it answers #UD to POPCNT there), and that
#: emulator reads CMPS's DS:[rSI] before ES:[rDI]; the processor itself, measured in
#: 64-bit mode where the code runs natively, faults on ES:[rDI] first (CR2 = rDI), and
#: interp follows the processor in every mode (test_cmps_faults_on_the_destination_first).
#: And PVM hands a #GP taken at CPL3 to that emulator, which does not know POPCNT: a
#: POPCNT with a non-canonical memory operand gets #UD from this host, where the SDM
#: (vol. 2B, POPCNT, 64-bit mode exceptions) and the processor give #GP(0).  The same
#: #UD comes back for a POPCNT whose operand starts on a not-present page and ends
#: non-canonical, where interp gives the #PF that this host gives for MOV.
#: That emulator also splits a store that crosses into a page it cannot write: it
#: writes the bytes below the boundary, then raises the #PF.  The processor (64-bit
#: mode, native, same store: test_split_store_faulting_on_its_second_page_writes_nothing)
#: writes nothing, as the SDM's fault model requires (vol. 3A, 6.5: a fault is reported
#: with the state before the instruction); interp follows the processor.
#: The same emulator takes the pages of a split access in its own order: a write whose
#: first page is read-only and whose second is not present gets the second page's
#: #PF from it, where the processor (64-bit mode, natively:
#: test_split_write_faults_on_its_first_page_first) reports the first page's.
KNOWN_REFERENCE_ERRORS: dict[str, Callable[[Any], bool]] = {
    "split-store-emulated": lambda prog: prog.bits != 64,
    "split-fault-order-emulated": lambda prog: prog.bits != 64,
    "cmps-order": lambda prog: prog.bits != 64 and any(
        "cmps" in ln or (ln.startswith(".byte") and "0xa7" in ln) for ln in prog.lines),
    "popcnt-gp-emulated": lambda prog: any("popcnt" in ln for ln in prog.lines),
    # Not a reference error but a choice the SDM leaves open: which of CMPS's two
    # memory operands faults first when both would.  The processor here reports
    # ES:[rDI]'s #PF before DS:[rSI]'s, but DS:[rSI]'s #PF before ES:[rDI]'s
    # non-canonical #GP; interp models the first rule only.  Both vectors must still be
    # #GP or #PF.
    "cmps-two-faults": lambda prog: any(
        "cmps" in ln or (ln.startswith(".byte") and "0xa7" in ln) for ln in prog.lines),
    # A 64-bit CMPS whose operands lie at the canonical edge (RBX = 7FFFFFFFFFF8H or
    # 800000000000H, the two fault bases there): one access that runs past it is a #GP
    # at CPL3, which PVM hands to KVM's emulator, and the emulator reads DS:[rSI] first
    # and reports that page's #PF (with P=1 where the guest's tables have no entry:
    # seed 20261123, programs 1352 and 32265).  The processor's own answer cannot be
    # seen here; both sides must still give #GP or #PF.
    "cmps-canonical-edge-emulated": lambda prog: prog.bits == 64
    and prog.regs[3] in (0x7FFFFFFFFFF8, 0x800000000000) and any(
        "cmps" in ln or (ln.startswith(".byte") and "0xa7" in ln) for ln in prog.lines),
}

#: The same for the guest's own single-step traps at CPL3
#: (tests/accel/interp/test_debug_traps.py recognises each by the answer no processor
#: gives, and skips that case there).
DEBUG_REFERENCE_ERRORS: dict[str, str] = {
    "compat-mode REP under TF":
        "A REP string instruction in compatibility mode is run by KVM's instruction "
        "emulator on a PVM host (see the CMPS entries above): with TF it does every "
        "iteration, then reports the single-step #DB with RIP still on the instruction "
        "and RF=1 (REP STOSB, ECX=3 -> ECX=0, EDI advanced by 3).  The processor, in "
        "64-bit mode on the same host, traps after each iteration (SDM vol. 3A, "
        "18.3.1.4): test_rep_stos_under_tf_traps_after_each_iteration.",
    "MOV SS under TF":
        "MOV SS at CPL3 is emulated by KVM on a PVM host (the guest's selector is not the "
        "host's); the emulator takes the single-step trap right after MOV SS, where the "
        "processor holds it until after the next instruction (SDM vol. 3A, 6.8.3; Unicorn "
        "agrees): test_mov_ss_holds_the_single_step_trap_for_one_instruction and the "
        "Unicorn case.",
}


# -- (b) what the manuals leave to the host ---------------------------------------------------
@dataclass(frozen=True)
class HostBehaviour:
    """One case the manuals leave to the implementation, and interp's choice in it."""

    name: str
    case: str                     # the situation, in the manuals' words
    field: str                    # exactly what may differ (a flag, a register): nothing else
    manuals: tuple[str, ...]      # the sections that leave it open, with what they say
    interp: str                   # the choice interp makes
    tests: tuple[str, ...]        # "path::test" that compare it and report a different host


HOST_BEHAVIOURS: dict[str, HostBehaviour] = {b.name: b for b in (
    HostBehaviour(
        name="rep-single-step-rf",
        case="the RFLAGS image pushed for the single-step trap (#DB, EFLAGS.TF) taken "
             "between two iterations of a REP string instruction (RIP still on the "
             "instruction, the count not exhausted)",
        field="RFLAGS.RF (bit 16) in the #DB frame",
        manuals=(
            "Intel SDM vol. 3B, 18.3.1.1 'Instruction-Breakpoint Exception Condition' "
            "(17.3.1.1 in older editions): 'For any trap-class exception generated by any "
            "iteration of a repeated string instruction but the last iteration, the value "
            "pushed for RF is 1'",
            "AMD APM vol. 2, 3.1.6 'RFLAGS Register', Resume Flag: 'When an exception "
            "occurs (or when a string instruction is interrupted), the processor normally "
            "sets RF=1 in the RFLAGS image saved on the interrupt stack' -- 'normally', "
            "with no rule of its own for a single-step trap between iterations",
            "Intel SDM vol. 2B, REP/REPE/REPZ/REPNE/REPNZ: a suspended repeating string "
            "operation resumes with EIP on the string instruction and ECX as after the "
            "last iteration done (defined, and compared exactly)",
        ),
        interp="RF=1 in the image (Intel's rule), so that returning to the instruction "
               "does not re-trigger an instruction breakpoint on it "
               "(accel/interp/debug.py, rep_partial)",
        tests=("tests/accel/interp/test_debug_traps.py::test_single_step_matches_the_host_cpu",),
    ),
    HostBehaviour(
        name="rep-cmps-scas-flags-between-iterations",
        case="the status flags in the RFLAGS image pushed for a trap or interrupt taken "
             "between two iterations of REPE/REPNE CMPS or SCAS (the instruction not done)",
        field="CF, PF, AF, ZF, SF, OF in that image: either as before the instruction or "
              "as the last iteration done left them (anything else still fails)",
        manuals=(
            "Intel SDM vol. 2B, REP/REPE/REPZ/REPNE/REPNZ: 'When a fault occurs during the "
            "execution of a CMPS or SCAS instruction that is prefixed with REPE or REPNE, "
            "the EFLAGS value is restored to the state prior to the execution of the "
            "instruction' -- for a fault only; for an interrupt or trap between iterations "
            "it says the registers are preserved so that the operation resumes (CMPS and "
            "SCAS do not read the flags, so either image resumes correctly), and its "
            "Operation section services interrupts at the top of the loop, after the "
            "previous iteration set ZF",
            "AMD APM vol. 2, 3.1.6 'RFLAGS Register': a string instruction may be "
            "interrupted; the status flags of the saved image are not specified there",
        ),
        interp="the flags of before the instruction, as for a fault inside it "
               "(accel/interp/string_rt.py, _one_iteration and _suspend: every stop between "
               "iterations)",
        tests=("tests/accel/interp/test_debug_traps.py::test_single_step_matches_the_host_cpu",),
    ),
    HostBehaviour(
        name="cmps-operand-fault-order",
        case="a 64-bit CMPS (REP or not) both of whose memory operands, DS:[rSI] and "
             "ES:[rDI], would take a page fault (either may cross into a second page): "
             "which one's #PF is reported",
        field="CR2 and the #PF error code (each must be one of the two operands' own); "
              "the vector, the frame, the registers and memory are compared exactly",
        manuals=(
            "Intel SDM vol. 2A, CMPS/CMPSB/CMPSW/CMPSD/CMPSQ: compares the byte at DS:rSI "
            "with the byte at ES:rDI; the order in which the two operands are read is not "
            "specified",
            "Intel SDM vol. 3A, 6.9 'Priority Among Concurrent Exceptions and Interrupts' "
            "ranks classes of events, not two page faults of one instruction",
            "AMD APM vol. 3, CMPS: the same, with no order for the two reads",
        ),
        interp="ES:[rDI]'s #PF first: what the processor of the development host "
               "reported for two not-present pages in 2026-11 "
               "(test_cmps_faults_on_the_destination_first pins interp's choice); the "
               "AMD EPYC host of 2026-12 (Linux 6.18, PVM) reports DS:[rSI]'s in some cases "
               "(seed 20261124, program 4295)",
        tests=("tests/accel/interp/test_kvm_differential.py::test_deep_random_programs",
               "tests/accel/interp/test_kvm_differential.py::test_host_choice_of_cmps_fault_is_reported"),
    ),
    HostBehaviour(
        name="rep-cmps-scas-flags-on-a-fault",
        case="the status flags in the RFLAGS image of a fault (#PF, #GP) taken by "
             "REPE/REPNE CMPS or SCAS after at least one iteration was done",
        field="CF, PF, AF, ZF, SF, OF in the fault frame: as before the instruction, or "
              "exactly as the last iteration's compare left them (recomputed from its "
              "operands); RIP, RCX, RSI, RDI and every other bit are compared",
        manuals=(
            "Intel SDM vol. 2B, REP/REPE/REPZ/REPNE/REPNZ: 'When a fault occurs during the "
            "execution of a CMPS or SCAS instruction that is prefixed with REPE or REPNE, "
            "the EFLAGS value is restored to the state prior to the execution of the "
            "instruction'",
            "AMD APM vol. 3, REPE/REPNE and CMPS/SCAS: no such rule; the status flags of "
            "an interrupted or faulting repeated compare are not specified (AMD EPYC under "
            "PVM, Linux 6.18, keeps the last iteration's: seed 20261124, program 29964)",
        ),
        interp="Intel's rule: the flags of before the instruction "
               "(test_rep_cmps_fault_keeps_the_flags_from_before_the_instruction)",
        tests=("tests/accel/interp/test_kvm_differential.py::test_deep_random_programs",
               "tests/accel/interp/test_kvm_differential.py::"
               "test_host_choice_of_rep_compare_fault_flags_is_reported"),
    ),
    HostBehaviour(
        name="cpuid-not-from-set-cpuid2",
        case="what the guest's CPUID instruction returns under kvm, for a leaf and "
             "register where the host does not answer from the KVM_SET_CPUID2 table",
        field="the registers of the (leaf, subleaf) named in the report, and only those",
        manuals=(
            "Linux KVM API, Documentation/virt/kvm/api.rst, KVM_SET_CPUID/KVM_SET_CPUID2: "
            "'Defines the vcpu responses to the cpuid instruction' (KVM itself rewrites "
            "only dynamic bits: OSXSAVE, OSPKE, CPUID.0DH.0/1 EBX; KVM_GET_CPUID2 reads "
            "the table back)",
            "Intel SDM vol. 2A, CPUID: what each leaf returns is the processor's "
            "(implementation-specific); under a hypervisor it is whatever the hypervisor "
            "presents -- a host that answers some leaves from the hardware instead of "
            "the table (KVM's PVM module does, for some leaves) chooses so itself",
        ),
        interp="answers from cpu_x86_cpuid, the CPU model's table: the same table pyqemu "
               "gives KVM_SET_CPUID2 (target/i386/cpuid.py)",
        tests=("tests/hw/i386/test_cpu_models.py::"
               "test_guest_cpuid_instruction_matches_cpu_x86_cpuid",
               "tests/test_conformance.py::test_interp_matches_kvm"),
    ),
)}


# -- the host, named ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Host:
    """How a report names the host: CPU model, kernel release, how its KVM virtualises."""

    cpu: str
    kernel: str
    kvm: str

    def __str__(self) -> str:
        return f"{self.cpu}, Linux {self.kernel}, KVM: {self.kvm}"


#: The vendor module that serves /dev/kvm -> how KVM runs guests (one is loaded at a time).
_KVM_MODULES = (("kvm_pvm", "PVM (no VMX/SVM)"), ("kvm_intel", "VMX"), ("kvm_amd", "SVM"))


@lru_cache(maxsize=1)
def kvm_flavour() -> str:
    """``PVM (no VMX/SVM)``, ``VMX``, ``SVM``, ``none`` (no /dev/kvm) or ``unknown``."""
    for module, flavour in _KVM_MODULES:
        if os.path.isdir(f"/sys/module/{module}"):
            return flavour
    return "none" if not os.path.exists("/dev/kvm") else "unknown"


def is_pvm() -> bool:
    """Whether /dev/kvm is KVM's PVM module (virtualisation without VMX/SVM)."""
    return kvm_flavour().startswith("PVM")


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


@lru_cache(maxsize=1)
def this_host() -> Host:
    return Host(_cpu_model(), platform.release() or "unknown", kvm_flavour())


# -- reporting a host that chooses otherwise -------------------------------------------------
@dataclass(frozen=True)
class Report:
    """One case where the host chose otherwise than interp (not a failure)."""

    behaviour: str
    case: str           # the concrete case: the test's input, the leaf and register, ...
    host: str           # what the host gave
    interp: str         # what interp gave (its choice)
    where: str = ""     # the test that saw it


_reports: list[Report] = []


def report(behaviour: str, case: str, *, host: object, interp: object) -> Report:
    """Record that the host answered ``host`` where interp answers ``interp``, in a
    case of the listed ``behaviour``; the run's summary prints it.  Integers are shown
    in hex.  Raises KeyError for a behaviour the table does not list."""
    if behaviour not in HOST_BEHAVIOURS:
        raise KeyError(f"{behaviour!r} is not a listed host-dependent behaviour "
                       f"(tests/host_behaviour.py: {', '.join(HOST_BEHAVIOURS)})")
    where = os.environ.get("PYTEST_CURRENT_TEST", "").rsplit(" (", 1)[0]
    r = Report(behaviour, case, _show(host), _show(interp), where)
    if r not in _reports:
        _reports.append(r)
    return r


def accept(behaviour: str, case: str, *, host: int, interp: int) -> bool:
    """True if the host and interp agree; otherwise report the host's choice, False."""
    if host == interp:
        return True
    report(behaviour, case, host=host, interp=interp)
    return False


def reports() -> list[Report]:
    return list(_reports)


def clear_reports() -> None:
    _reports.clear()


def _show(value: object) -> str:
    return hex(value) if isinstance(value, int) and not isinstance(value, bool) else str(value)


def summary_lines(reps: list[Report] | None = None, host: Host | None = None) -> list[str]:
    """The lines the terminal summary prints: the host, then per behaviour what the
    manuals say, interp's choice, and each case the host chose otherwise."""
    reps = reports() if reps is None else reps
    if not reps:
        return []
    host = this_host() if host is None else host
    lines = [f"host: {host}",
             f"{len(reps)} case(s) where this host chose otherwise than interp, in what the "
             f"manuals leave open (tests/host_behaviour.py); reported, not failed:"]
    for name in dict.fromkeys(r.behaviour for r in reps):
        b = HOST_BEHAVIOURS[name]
        lines.append(f"* {name}: {b.case}")
        lines.append(f"    field: {b.field}")
        lines += [f"    manual: {m}" for m in b.manuals]
        lines.append(f"    interp: {b.interp}")
        for r in reps:
            if r.behaviour == name:
                at = f" [{r.where}]" if r.where else ""
                lines.append(f"    - {r.case}: host {r.host}, interp {r.interp}{at}")
    return lines
