"""The gate against a baseline (issue 13): a recovery three times slower than the baseline's blocks with the
reason "regression", so does a scenario that went from pass to fail; a flaky scenario blocks as flaky; a
baseline that does not exist, is corrupt or ran on another topology cannot be judged (exit 2, one line)."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner
from test_compare import FAST, PBX, make_run

from harness import gate
from harness.cli import main

SLOW = [3 * t for t in FAST]


def policy(tmp: Path, baseline: str | None, extra: str = "") -> Path:
    p = tmp / "gate.yaml"
    text = "version: 1\nscenarios:\n  - match: 'unplanned#test_failover'\n    recovery: {p95: 10, max: 15}\n"
    if baseline is not None:
        text += f"baseline:\n  run: {baseline}\n{extra}"
    p.write_text(text)
    return p


def test_three_times_slower_than_the_baseline_blocks_as_regression(tmp_path: Path) -> None:
    base = make_run(tmp_path, "20261203T050000Z-base", {PBX: [("passed", FAST)]})
    now = make_run(tmp_path, "20261203T060000Z-now", {PBX: [("passed", SLOW)]})
    results = now / "allure-results"
    assert gate.run_gate(policy(tmp_path, None), results).exit_code == gate.EXIT_SHIP  # within the bounds
    rep = gate.run_gate(policy(tmp_path, str(base)), results)
    assert rep.exit_code == gate.EXIT_NO_SHIP and rep.verdict == gate.NO_SHIP, rep.problems
    s = rep.scenarios[0]
    assert s.verdict == "fail" and s.reasons[0].startswith("regression: recovery p95"), s.reasons
    assert "3.0x the baseline's" in s.reasons[0] and rep.baseline == str(base)
    table = gate.table(rep)
    assert "FAIL" in table and "regression: recovery p95" in table
    # a pinned baseline file (hil baseline RUN --out FILE) is the same baseline
    pinned = tmp_path / "baseline.json"
    r = CliRunner().invoke(main, ["baseline", str(base), "--out", str(pinned)])
    assert r.exit_code == 0, r.output
    rep = gate.run_gate(policy(tmp_path, str(pinned)), results)
    assert rep.exit_code == gate.EXIT_NO_SHIP and rep.scenarios[0].regressions, rep.problems
    # the same speed as the baseline ships; so does a looser ratio
    same = make_run(tmp_path, "20261203T070000Z-same", {PBX: [("passed", FAST[::-1])]})
    assert gate.run_gate(policy(tmp_path, str(pinned)), same / "allure-results").exit_code == gate.EXIT_SHIP
    loose = policy(tmp_path, str(pinned), "  p95: 4\n  max: 4\n")
    assert gate.run_gate(loose, results).exit_code == gate.EXIT_SHIP


def test_pass_to_fail_against_the_baseline_is_a_regression(tmp_path: Path) -> None:
    base = make_run(tmp_path, "20261203T050000Z-base", {PBX: [("passed", FAST)]})
    now = make_run(tmp_path, "20261203T060000Z-now", {PBX: [("failed", FAST)]})
    rep = gate.run_gate(policy(tmp_path, str(base)), now / "allure-results")
    assert rep.exit_code == gate.EXIT_NO_SHIP
    assert rep.scenarios[0].reasons[0] == "regression: the verdict went from pass (baseline) to fail"


def test_flaky_scenario_blocks_as_flaky(tmp_path: Path) -> None:
    now = make_run(
        tmp_path, "20261203T060000Z-now", {PBX: [("passed", FAST), ("failed", FAST), ("passed", FAST)]}
    )
    p = policy(tmp_path, None)
    p.write_text(p.read_text().replace("version: 1\n", "version: 1\nrepeat: 3\n"))
    rep = gate.run_gate(p, now / "allure-results")
    s = rep.scenarios[0]
    assert rep.exit_code == gate.EXIT_NO_SHIP and rep.verdict == gate.NO_SHIP
    assert s.verdict == "flaky" and s.reasons[0] == "flaky: passed 2 of 3 runs, failed 1", s.reasons
    assert "FLAKY" in gate.table(rep) and "<failure" in gate.junit_xml(rep)
    # three passes meet repeat: 3
    ok = make_run(tmp_path, "20261203T070000Z-ok", {PBX: [("passed", FAST)] * 3})
    rep = gate.run_gate(p, ok / "allure-results")
    assert rep.exit_code == gate.EXIT_SHIP and rep.scenarios[0].passes == 3


def _one_error(tmp_path: Path, pol: Path, results: Path) -> str:
    r = CliRunner().invoke(
        main, ["gate", "--policy", str(pol), "--results", str(results), "--out", str(tmp_path)]
    )
    assert r.exit_code == 2, r.output
    errors = [x for x in r.stderr.splitlines() if x.startswith("error:")]
    assert len(errors) == 1, r.stderr
    return errors[0]


def test_bad_baselines_exit_2_with_one_line(tmp_path: Path) -> None:
    now = make_run(tmp_path, "20261203T060000Z-now", {PBX: [("passed", FAST)]})
    res = now / "allure-results"
    line = _one_error(tmp_path, policy(tmp_path, str(tmp_path / "nope.json")), res)
    assert "nope.json" in line and "the baseline does not exist" in line
    bad = tmp_path / "bad.json"
    bad.write_text("{truncated")
    line = _one_error(tmp_path, policy(tmp_path, str(bad)), res)
    assert "bad.json" in line and "not a baseline" in line
    bad.write_text(json.dumps({"schema": "something-else"}))
    assert "schema" in _one_error(tmp_path, policy(tmp_path, str(bad)), res)
    other = make_run(tmp_path, "20261203T050000Z-1k", {PBX: [("passed", FAST)]}, topology="virtual-1k")
    line = _one_error(tmp_path, policy(tmp_path, str(other)), res)
    assert str(other) in line and "topology virtual-1k" in line and "not comparable" in line
    partial = make_run(tmp_path, "20261203T040000Z-partial", {PBX: [("passed", FAST)]}, status="interrupted")
    line = _one_error(tmp_path, policy(tmp_path, str(partial)), res)
    assert str(partial) in line and "partial run" in line
    line = _one_error(tmp_path, policy(tmp_path, str(now), "  p95: 0.5\n"), res)
    assert "baseline.p95" in line
