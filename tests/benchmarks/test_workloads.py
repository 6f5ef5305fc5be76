"""The benchmark workloads give the right answer on every accelerator, at a tiny size.

No timing is asserted anywhere: the runner's figures are printed, not tested.
What is tested is that a benchmark cannot pass with a wrong answer: each workload's
result register matches its Python model on interp and kvm, the models'
instruction counts match an independent count (Unicorn, QEMU's TCG core, when it
is installed), and the runner prints its table and writes its JSON.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import run as bench_run
from benchmarks import suite
from benchmarks.suite import DATA_BASE, LOAD_ADDR, STACK_TOP, WORKLOADS, Workload

IDS = [w.name for w in WORKLOADS]


@pytest.mark.parametrize("w", WORKLOADS, ids=IDS)
def test_workload_gives_the_expected_result(accel: str, w: Workload) -> None:
    if w.may_be_unsupported:
        why = bench_run.probe(w, accel)
        if why is not None:
            pytest.skip(why)
    n = w.min_n
    expected, insns = w.model(n)
    out = bench_run.run_workload(w, accel, n, timeout=60)
    assert out.reason == "shutdown" and out.exit_code == suite.EXIT_CODE
    assert out.result == expected, f"{w.result_reg}={out.result:#x}, expected {expected:#x}"
    if out.counted_insns is not None:
        # The interpreter's own count is the suite's instruction count: it must be the
        # program's, with each REP instruction counted once or per iteration.
        assert out.counted_insns in (insns, insns + w.rep_extra(n)), (
            f"interp counted {out.counted_insns}, the program executes {insns} "
            f"({insns + w.rep_extra(n)} counting every REP iteration)")


def test_sources_have_no_unfilled_placeholder() -> None:
    for w in WORKLOADS:
        text = w.source(w.min_n)
        assert "{" not in text and "}" not in text, w.name


def test_sizes_scale_and_never_fall_below_the_minimum() -> None:
    for w in WORKLOADS:
        assert w.size(1.0) == w.default_n
        assert w.size(1e-9) == w.min_n
        assert w.size(2.0) >= 2 * w.default_n - 1


# --- an independent instruction count --------------------------------------------------------
def _unicorn_run(w: Workload, n: int) -> tuple[int, int]:
    """(result register, instructions with each REP instruction counted once) under Unicorn."""
    unicorn = pytest.importorskip("unicorn")
    from unicorn import x86_const as X

    from pyqemu.hw.i386.loader_asm import assemble
    code = assemble(w.source(n), w.mode, LOAD_ADDR)
    mode = unicorn.UC_MODE_64 if w.mode == "long64" else unicorn.UC_MODE_32
    uc = unicorn.Uc(unicorn.UC_ARCH_X86, mode)
    size = DATA_BASE + ((w.data_bytes(n) + 0xFFFFF) & ~0xFFFFF) + (1 << 20)
    uc.mem_map(0, size)
    uc.mem_write(LOAD_ADDR, code)
    uc.reg_write(X.UC_X86_REG_RSP if w.mode == "long64" else X.UC_X86_REG_ESP, STACK_TOP)
    state = {"count": 0, "last": None}

    def on_code(uc_: object, address: int, length: int, _: object) -> None:
        if address != state["last"]:          # a REP instruction fires once per iteration
            state["count"] += 1
        state["last"] = address
        if bytes(uc.mem_read(address, length)) == b"\xe6\xf4":   # out 0xf4, al: the end
            uc.emu_stop()

    uc.hook_add(unicorn.UC_HOOK_CODE, on_code)
    uc.emu_start(LOAD_ADDR, LOAD_ADDR + len(code), count=10_000_000)
    reg = X.UC_X86_REG_RBX if w.result_reg == "rbx" else X.UC_X86_REG_EBX
    return uc.reg_read(reg) & w.result_mask, state["count"]


@pytest.mark.parametrize("w", WORKLOADS, ids=IDS)
def test_models_match_unicorn(w: Workload) -> None:
    n = w.min_n * 3 + 1
    expected, insns = w.model(n)
    try:
        result, count = _unicorn_run(w, n)
    except Exception as e:
        if w.may_be_unsupported:
            pytest.skip(f"unicorn cannot run {w.may_be_unsupported}: {e}")
        raise
    assert result == expected, f"unicorn {result:#x}, model {expected:#x}"
    assert count == insns


# --- the runner -------------------------------------------------------------------------------
def test_runner_prints_the_table_and_writes_json(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    out_file = tmp_path / "bench.json"
    rc = bench_run.main(["--scale", "1e-9", "--json", str(out_file)])
    text = capsys.readouterr().out
    assert rc == 0, text
    for column in ("workload", "guest insns", "interp s", "interp insn/s", "kvm s",
                   "kvm insn/s", "kvm/interp"):
        assert column in text
    assert "geometric mean of interp instructions/s" in text
    assert "machine construction" in text
    report = json.loads(out_file.read_text())
    assert [r["workload"] for r in report["workloads"]] == IDS
    assert report["errors"] == []
    assert report["geomean_interp_ips"] is not None
    assert set(report["construct_seconds"]) == set(report["accels"])
    for row in report["workloads"]:
        assert row["n"] == suite.BY_NAME[row["workload"]].min_n
        assert row["insns"] > 0
        for accel, r in row["runs"].items():
            assert accel in ("interp", "kvm")
            if "skipped" in r:
                continue
            assert r["result"] == row["expected"]
            assert r["seconds"] >= 0 and r["construct_seconds"] >= 0 and r["ips"] > 0


def test_runner_fails_on_a_wrong_answer(monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    def wrong(n: int) -> tuple[int, int]:
        result, insns = suite.model_loop(n)
        return result ^ 1, insns

    monkeypatch.setitem(suite._MODELS, "loop", wrong)
    suite._cached_model.cache_clear()
    try:
        rc = bench_run.main(["--accel", "interp", "--only", "loop", "--scale", "1e-9"])
    finally:
        suite._cached_model.cache_clear()
    captured = capsys.readouterr()
    assert rc == 1
    assert "WRONG RESULT" in captured.out
    assert "gave a wrong answer" in captured.err


def test_runner_rejects_unknown_names(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        bench_run.main(["--only", "nosuch"])
    assert exc.value.code == 2
    with pytest.raises(SystemExit):
        bench_run.main(["--accel", "tcg9"])
    capsys.readouterr()


def test_runner_without_kvm_says_why_and_runs_interp(monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]
                                                     ) -> None:
    real = bench_run.accel_unavailable_reason
    monkeypatch.setattr(bench_run, "accel_unavailable_reason",
                        lambda a: "no /dev/kvm (test)" if a == "kvm" else real(a))
    rc = bench_run.main(["--only", "loop", "--scale", "1e-9"])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "kvm unavailable: no /dev/kvm (test); running without it" in text
    assert "loop" in text and "n/a" in text
