"""Run the benchmark suite on the interp and kvm accelerators and print the figures.

    python -m benchmarks.run [--accel interp,kvm] [--json FILE] [--scale S] [--only NAME[,NAME]]

Each workload (``benchmarks/workloads/*.s``) runs first on interp, whose own
instruction counter gives the guest instruction count (without interp, the
count comes from the workload's loop structure, :mod:`benchmarks.suite`), then
the same program with the same size on kvm.  Only ``Machine.run`` is timed;
building the machine (accelerator, board, vCPU thread) is timed and reported
apart, and so is loading (assembling) the program.  Every run's result register
must equal the value Python computes for the workload, on every accelerator,
or the run fails (exit status 1): a benchmark never passes with a wrong answer.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import math
import os
import platform
import re
import sys
import time
from collections.abc import Iterator, Sequence
from typing import Any

from benchmarks.suite import (
    DEBUG_EXIT,
    EXIT_CODE,
    EXIT_VALUE,
    LOAD_ADDR,
    STACK_TOP,
    WORKLOADS,
    Workload,
)

ACCELS = ("interp", "kvm")
#: Attribute names an interpreter may keep its executed-instruction count under.
COUNTER_NAMES = ("icount", "insn_count", "instructions", "executed")


class BenchmarkError(Exception):
    """A workload did not run to its end or gave a wrong answer."""


@dataclasses.dataclass
class RunOutcome:
    accel: str
    n: int
    result: int | None = None
    seconds: float = 0.0              # Machine.run only
    construct_seconds: float = 0.0    # Machine(...) only
    load_seconds: float = 0.0         # load_asm (keystone) only
    counted_insns: int | None = None  # the interpreter's own count, when it keeps one
    counter: str | None = None        # where that count was read
    reason: str = ""
    exit_code: int | None = None


def accel_unavailable_reason(name: str) -> str | None:
    """Why accelerator ``name`` cannot be used here (None when it can)."""
    from pyqemu.accel.ops import accel_list
    for accel, _, why in accel_list():
        if accel == name:
            return why
    return f"the {name} accelerator is not registered (not built yet?)"


# --- the interpreter's instruction counter ----------------------------------------------------
def _counter_candidates(cpu: Any) -> list[tuple[str, Any]]:
    """Objects hanging off a vCPU (two levels) that may hold an instruction counter."""
    seen: set[int] = set()
    out: list[tuple[str, Any]] = []
    todo: list[tuple[str, Any, int]] = [("cpu", cpu, 0)]
    while todo:
        path, obj, depth = todo.pop(0)
        if id(obj) in seen or obj is None or isinstance(obj, (int, float, str, bytes)):
            continue
        seen.add(id(obj))
        out.append((path, obj))
        if depth >= 2:
            continue
        try:
            attrs = vars(obj)
        except TypeError:
            attrs = {s: getattr(obj, s, None) for s in getattr(type(obj), "__slots__", ())}
        for key, value in attrs.items():
            if key in ("parent", "machine", "_parent") or isinstance(value, (list, dict, tuple)):
                continue
            todo.append((f"{path}.{key}", value, depth + 1))
    return out


def read_insn_counter(cpu: Any) -> tuple[str, int] | None:
    """(where, value) of the interpreter's executed-instruction counter on ``cpu``, if any.

    The interp accelerator keeps it as ``cpu.accel.icount`` (its per-vCPU
    ``InterpCore``); other places a counter could live are searched after that."""
    core_count = getattr(getattr(cpu, "accel", None), "icount", None)
    if isinstance(core_count, int) and not isinstance(core_count, bool):
        return "cpu.accel.icount", core_count
    for path, obj in _counter_candidates(cpu):
        for name in COUNTER_NAMES:
            value = getattr(obj, name, None) if not isinstance(obj, type) else None
            if isinstance(value, int) and not isinstance(value, bool):
                return f"{path}.{name}", value
    return None


#: Warnings printed while building machines (the CPU model's features an accelerator
#: lacks, once per machine), kept to be shown once at the end instead of per run.
MACHINE_WARNINGS: dict[str, None] = {}


@contextlib.contextmanager
def _captured_warnings() -> Iterator[None]:
    """Collect the warnings building a machine logs (on the ``pyqemu`` logger), once each."""
    lines: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(f"pyqemu: warning: {record.getMessage()}")

    logger = logging.getLogger("pyqemu")
    handler = Keep(logging.WARNING)
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        for line in lines:
            MACHINE_WARNINGS.setdefault(line)


# --- one run ----------------------------------------------------------------------------------
def run_workload(w: Workload, accel: str, n: int, timeout: float = 600.0) -> RunOutcome:
    """Build a machine on ``accel``, load ``w`` at size ``n``, run it, read its result.

    Raises :class:`BenchmarkError` when the guest does not end through
    isa-debug-exit with the expected status (a fault, a timeout, a triple fault).
    """
    from pyqemu import Machine
    out = RunOutcome(accel, n)
    source = w.source(n)
    t0 = time.perf_counter()
    with _captured_warnings():
        m = Machine(accel=accel, memory=w.memory(n), devices=[DEBUG_EXIT], no_reboot=True,
                    serial="none")
    try:
        t1 = time.perf_counter()
        m.load_asm(source, LOAD_ADDR, mode=w.mode, stack=STACK_TOP, user=w.user)
        t2 = time.perf_counter()
        before = read_insn_counter(m.cpu(0)) if accel == "interp" else None
        t3 = time.perf_counter()
        result = m.run(timeout=timeout)
        t4 = time.perf_counter()
        out.construct_seconds, out.load_seconds, out.seconds = t1 - t0, t2 - t1, t4 - t3
        out.reason, out.exit_code = result.reason, result.exit_code
        if result.reason != "shutdown" or result.exit_code != EXIT_CODE:
            env = m.env()
            raise BenchmarkError(
                f"{w.name} on {accel} (n={n}) did not reach its end: {result.reason}"
                f" (exit code {result.exit_code}, cause {result.cause}, expected the"
                f" isa-debug-exit status {EXIT_CODE}) at rip={env.rip:#x}")
        out.result = m.reg_read(w.result_reg) & w.result_mask
        after = read_insn_counter(m.cpu(0)) if before is not None else None
        if before is not None and after is not None:
            out.counter = after[0]
            out.counted_insns = after[1] - before[1]
    finally:
        m.close()
    return out


def run_overhead(accel: str, tries: int = 3) -> float:
    """Seconds ``Machine.run`` takes for a guest that exits at once (long64, CPL 3):
    the fixed cost (resume the vCPU thread, enter, exit, pause) inside every time.
    The best of ``tries`` fresh machines."""
    return min(_empty_run(accel) for _ in range(tries))


def _empty_run(accel: str) -> float:
    from pyqemu import Machine
    with _captured_warnings():
        m = Machine(accel=accel, memory="32M", devices=[DEBUG_EXIT], no_reboot=True,
                    serial="none")
    try:
        m.load_asm(f"mov al, {EXIT_VALUE:#x}\nout 0xf4, al", LOAD_ADDR, mode="long64",
                   stack=STACK_TOP, user=True)
        t0 = time.perf_counter()
        result = m.run(timeout=60)
        seconds = time.perf_counter() - t0
    finally:
        m.close()
    if result.reason != "shutdown" or result.exit_code != EXIT_CODE:
        raise BenchmarkError(f"the empty guest on {accel} did not exit: {result}")
    return seconds


def probe(w: Workload, accel: str) -> str | None:
    """For a workload whose mode the host may refuse: None if a tiny run works, else why."""
    try:
        out = run_workload(w, accel, w.min_n, timeout=60)
    except Exception as e:
        return f"{accel} cannot run {w.may_be_unsupported} here: {type(e).__name__}: {e}"
    expected, _ = w.model(w.min_n)
    if out.result != expected:
        return (f"{accel} gives a wrong answer in {w.may_be_unsupported} "
                f"({out.result:#x} != {expected:#x})")
    return None


# --- the suite --------------------------------------------------------------------------------
def _ips(insns: int, seconds: float) -> float | None:
    return insns / seconds if seconds > 0 else None


def run_suite(workloads: Sequence[Workload], accels: Sequence[str], scale: float,
              timeout: float, log: Any = sys.stdout) -> dict[str, Any]:
    """Run ``workloads`` on ``accels``; return the report (see :func:`format_table`)."""
    rows: list[dict[str, Any]] = []
    errors: list[str] = []
    notes: list[str] = []
    construct: dict[str, list[float]] = {a: [] for a in accels}
    overhead: dict[str, float | None] = {}
    for accel in accels:
        try:
            overhead[accel] = run_overhead(accel)
        except Exception as e:
            overhead[accel] = None
            errors.append(f"empty guest on {accel}: {type(e).__name__}: {e}")
    for w in workloads:
        n = w.size(scale)
        expected, analytic = w.model(n)
        row: dict[str, Any] = {"workload": w.name, "title": w.title, "mode": w.mode,
                               "cpl": 3 if w.user else 0, "n": n, "expected": expected,
                               "analytic_insns": analytic, "insns": analytic,
                               "insn_source": "analytic", "runs": {}}
        print(f"  {w.name:<10} n={n:<9} ({w.title}) ...", file=log, flush=True)
        for accel in accels:
            if w.may_be_unsupported:
                why = probe(w, accel)
                if why is not None:
                    row["runs"][accel] = {"skipped": why}
                    print(f"    {accel}: skipped: {why}", file=log, flush=True)
                    continue
            try:
                out = run_workload(w, accel, n, timeout)
            except Exception as e:
                msg = f"{w.name} on {accel}: {type(e).__name__}: {e}"
                errors.append(msg)
                row["runs"][accel] = {"error": msg}
                print(f"    ERROR: {msg}", file=log, flush=True)
                continue
            construct[accel].append(out.construct_seconds)
            run: dict[str, Any] = {"seconds": out.seconds, "result": out.result,
                                   "construct_seconds": out.construct_seconds,
                                   "load_seconds": out.load_seconds}
            row["runs"][accel] = run
            if out.result != expected:
                msg = (f"{w.name} on {accel}: WRONG RESULT {w.result_reg}={out.result:#x},"
                       f" expected {expected:#x}")
                errors.append(msg)
                run["error"] = msg
                print(f"    ERROR: {msg}", file=log, flush=True)
                continue
            if out.counted_insns is not None:
                run["counted_insns"], run["counter"] = out.counted_insns, out.counter
                row["insns"], row["insn_source"] = out.counted_insns, out.counter
                rep_extra = w.rep_extra(n)
                if out.counted_insns != analytic and rep_extra and \
                        out.counted_insns == analytic + rep_extra:
                    notes.append(f"{w.name}: the interpreter counts each REP iteration as "
                                 f"an instruction (as QEMU's icount does): "
                                 f"{out.counted_insns}; counting each REP instruction "
                                 f"once gives {analytic}")
                elif out.counted_insns != analytic:
                    notes.append(f"{w.name}: the interpreter counted {out.counted_insns} "
                                 f"instructions, the loop structure gives {analytic} "
                                 f"(difference {out.counted_insns - analytic:+d})")
            print(f"    {accel}: {out.seconds:.3f} s (machine built in "
                  f"{out.construct_seconds:.3f} s)", file=log, flush=True)
        # Agreement between accelerators (each already matched the model).
        results = {a: r.get("result") for a, r in row["runs"].items()
                   if "result" in r and "error" not in r}
        if len(set(results.values())) > 1:
            msg = f"{w.name}: the accelerators disagree: {results}"
            errors.append(msg)
            print(f"    ERROR: {msg}", file=log, flush=True)
        for r in row["runs"].values():
            if "seconds" in r and "error" not in r:
                r["ips"] = _ips(row["insns"], r["seconds"])
        i, k = row["runs"].get("interp", {}), row["runs"].get("kvm", {})
        row["ratio_kvm_interp"] = (k["ips"] / i["ips"]
                                   if i.get("ips") and k.get("ips") else None)
        rows.append(row)
    interp_ips = [r["runs"]["interp"]["ips"] for r in rows
                  if r["runs"].get("interp", {}).get("ips")]
    geomean = (math.exp(sum(math.log(x) for x in interp_ips) / len(interp_ips))
               if interp_ips else None)
    return {
        "scale": scale,
        "accels": list(accels),
        "host": {"python": platform.python_version(), "machine": platform.machine(),
                 "cpus": os.cpu_count(), "kvm_pvm": os.path.exists("/sys/module/kvm_pvm")},
        "insn_count_convention": "the analytic count (without an interpreter counter) "
                                 "counts a REP-prefixed instruction once and the final "
                                 "out to isa-debug-exit",
        "workloads": rows,
        "geomean_interp_ips": geomean,
        "run_overhead_seconds": overhead,
        "construct_seconds": {a: (sum(v) / len(v) if v else None)
                              for a, v in construct.items()},
        "notes": notes,
        "machine_warnings": _warning_summary(),
        "errors": errors,
    }


def _warning_summary() -> list[str]:
    """The captured machine warnings, one line per accelerator (the features it lacks)."""
    lacks: dict[str, list[str]] = {}
    other: list[str] = []
    for line in MACHINE_WARNINGS:
        m = re.match(r"pyqemu: warning: (\S+) doesn't support requested feature: "
                     r"CPUID\.\S+?\.(\S+) ", line)
        if m:
            lacks.setdefault(m.group(1), []).append(m.group(2))
        else:
            other.append(line.removeprefix("pyqemu: warning: "))
    return [f"{who} lacks CPU-model features: {' '.join(feats)}"
            for who, feats in lacks.items()] + other


def _fmt_s(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def _fmt_rate(x: float | None) -> str:
    if x is None:
        return "-"
    for div, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if x >= div:
            return f"{x / div:.2f}{unit}"
    return f"{x:.0f}"


def format_table(report: dict[str, Any]) -> str:
    """The report as a text table (the same figures as the JSON)."""
    head = ("workload", "mode", "guest insns", "interp s", "interp insn/s", "kvm s",
            "kvm insn/s", "kvm/interp")
    lines = []
    body = []
    for row in report["workloads"]:
        cells = [row["workload"], f"{row['mode']}/cpl{row['cpl']}", str(row["insns"])]
        for accel in ("interp", "kvm"):
            r = row["runs"].get(accel)
            if r is None:
                cells += ["n/a", "n/a"]
            elif "skipped" in r:
                cells += ["skip", "skip"]
            elif "error" in r:
                cells += ["ERROR", "ERROR"]
            else:
                cells += [_fmt_s(r["seconds"]), _fmt_rate(r.get("ips"))]
        ratio = row.get("ratio_kvm_interp")
        cells.append("-" if ratio is None else f"{ratio:.0f}x" if ratio >= 10
                     else f"{ratio:.2f}x")
        body.append(cells)
    widths = [max(len(c) for c in col) for col in zip(head, *body, strict=True)]
    fmt = "  ".join(f"{{:<{w}}}" if i < 2 else f"{{:>{w}}}" for i, w in enumerate(widths))
    lines.append(fmt.format(*head))
    lines.append("  ".join("-" * w for w in widths))
    lines += [fmt.format(*cells) for cells in body]
    lines.append("")
    lines.append(f"geometric mean of interp instructions/s: "
                 f"{_fmt_rate(report['geomean_interp_ips'])}")
    cons = ", ".join(f"{a} {_fmt_s(s)} s" for a, s in report["construct_seconds"].items())
    lines.append(f"machine construction (mean per run, not in the times above): {cons}")
    over = ", ".join(f"{a} {1000 * s:.1f} ms" if s is not None else f"{a} -"
                     for a, s in report["run_overhead_seconds"].items())
    lines.append(f"run() of a guest that exits at once (included in every time above): {over}")
    sources = {row["insn_source"] for row in report["workloads"]}
    if sources == {"analytic"}:
        why = ("interp was not run" if "interp" not in report["accels"]
               else "the interpreter keeps no instruction counter")
        lines.append(f"guest instructions: counted from each workload's loop structure ({why})")
    else:
        lines.append(f"guest instructions: the interpreter's counter "
                     f"({', '.join(sorted(s for s in sources if s != 'analytic'))})")
    if sources == {"analytic"}:
        lines.append(f"convention: {report['insn_count_convention']}")
    for warning in report.get("machine_warnings", []):
        lines.append(f"warning (machine construction): {warning}")
    for note in report["notes"]:
        lines.append(f"note: {note}")
    for skip in [f"{row['workload']} on {a}: {r['skipped']}" for row in report["workloads"]
                 for a, r in row["runs"].items() if "skipped" in r]:
        lines.append(f"skipped: {skip}")
    for err in report["errors"]:
        lines.append(f"ERROR: {err}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split(
        "\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--accel", default="interp,kvm",
                   help="comma-separated accelerators (default: interp,kvm)")
    p.add_argument("--json", metavar="FILE", help="also write the report as JSON to FILE")
    p.add_argument("--scale", type=float, default=1.0,
                   help="multiply every workload's size (default 1: about a minute of "
                        "interp at 0.5 M instructions/s)")
    p.add_argument("--only", metavar="NAME", help="comma-separated workloads: " + ", ".join(
        w.name for w in WORKLOADS))
    p.add_argument("--timeout", type=float, default=600.0,
                   help="seconds allowed to each run (default 600)")
    args = p.parse_args(argv)
    if args.scale <= 0:
        p.error("--scale must be positive")
    wanted = [a.strip() for a in args.accel.split(",") if a.strip()]
    bad = [a for a in wanted if a not in ACCELS]
    if bad or not wanted:
        p.error(f"--accel: unknown accelerator {bad or wanted!r} (interp, kvm)")
    workloads = list(WORKLOADS)
    if args.only:
        names = [s.strip() for s in args.only.split(",") if s.strip()]
        unknown = [s for s in names if s not in {w.name for w in WORKLOADS}]
        if unknown:
            p.error(f"--only: unknown workload {', '.join(unknown)} "
                    f"({', '.join(w.name for w in WORKLOADS)})")
        workloads = [w for w in WORKLOADS if w.name in names]
    accels = []
    for a in wanted:
        why = accel_unavailable_reason(a)
        if why is None:
            accels.append(a)
        else:
            print(f"{a} unavailable: {why}; running without it", flush=True)
    if not accels:
        print("error: no usable accelerator", file=sys.stderr)
        return 2
    print(f"pyqemu benchmarks: {', '.join(accels)}, scale {args.scale:g}", flush=True)
    report = run_suite(workloads, accels, args.scale, args.timeout)
    print()
    print(format_table(report))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
            f.write("\n")
        print(f"JSON report written to {args.json}")
    if report["errors"]:
        print(f"error: {len(report['errors'])} workload run(s) failed or gave a wrong "
              "answer (see above)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
