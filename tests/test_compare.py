"""`hil compare`: two kept runs, made here from small verdict files (no lab), compared scenario by scenario;
the Mann-Whitney test against known values; bad run directories are exit 2 with one line."""

from __future__ import annotations

import json
import uuid
import warnings
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from harness import checks, gate, report
from harness.checks import Verdict
from harness.cli import main
from harness.history import History
from harness.report import compare

HIST = Path(__file__).parent / "histories" / "valid_pbx_failover.jsonl"
LOGIN = "scenarios.test_login#test_login_local"
PBX = "scenarios.test_unplanned#test_failover_pbx_killed[site=sha]"


def agents(times: list[float]) -> dict[str, float]:
    return {f"a{k:05d}": t for k, t in enumerate(times, 1)}


def make_run(
    reports: Path, name: str, scenarios: dict[str, list[tuple[str, list[float] | None]]], *,
    topology: str = "virtual-two-site", status: str = "complete", git: str = "v0.3",
) -> Path:  # fmt: skip
    """A run directory as `hil run` keeps it: run.json, inputs/, allure-results/ with, per scenario, one
    result per (status, per-agent recovery times) and its verdict file and history attached."""
    d = reports / "runs" / name
    res = d / "allure-results"
    res.mkdir(parents=True)
    (d / "inputs").mkdir()
    (d / "inputs" / "topology-suite.yaml").write_text(f"name: {topology}\nkind: virtual\n")
    manifest = {"name": name, "status": status, "versions": {"git_describe": git, "python": "3.11"}}
    (d / "run.json").write_text(json.dumps(manifest))
    for sid, runs_ in scenarios.items():
        for k, (st, times) in enumerate(runs_):
            vs = [Verdict("single_registration", "valid", "ok", [], {})]
            if times is not None:
                figs: dict[str, Any] = {"per_agent": agents(times), "bound": 30.0, "affected": len(times)}
                figs["per_agent_detection"] = agents([t / 2 for t in times])
                figs.update(compare.distribution(times))
                vs.append(Verdict("recovery_time", "valid", "ok", [], figs))
            if st == "failed":
                vs.append(Verdict("no_lost_call", "invalid", "1 call lost", [{"call": "c1"}], {}))
            payload = report.verdicts_payload(vs, history=HIST, scenario=sid)
            atts = []
            for data, att_name, ext in ((json.dumps(payload).encode(), report.VERDICTS_NAME, "json"),
                                        (HIST.read_bytes(), report.HISTORY_NAME, "jsonl")):  # fmt: skip
                src = f"{uuid.uuid4()}-attachment.{ext}"
                (res / src).write_bytes(data)
                atts.append({"name": att_name, "source": src})
            uid = str(uuid.uuid4())
            module, _, rest = sid.partition("#")
            fn, _, param = rest.partition("[")
            result = {
                "uuid": uid, "name": fn, "fullName": f"{module}#{fn}", "status": st,
                "start": 1764000000000 + k,
                "attachments": atts, "labels": [],
                "parameters": [{"name": p.split("=")[0], "value": p.split("=")[1]}
                               for p in param.rstrip("]").split(",") if p],
            }  # fmt: skip
            if st == "failed":
                result["labels"] = [{"name": report.OUTCOME_LABEL, "value": "defect"}]
                result["statusDetails"] = {"message": "PRODUCT DEFECT: lost call"}
            (res / f"{uid}-result.json").write_text(json.dumps(result))
    return d


FAST = [1.0 + 0.01 * k for k in range(50)]


def test_mann_whitney_known_values() -> None:
    # U = 0, mean 12.5, variance 25 * 11 / 12: z = (12.5 - 0.5) / 4.787 = 2.507, two-sided p = 0.01219
    # (scipy.stats.mannwhitneyu(..., method="asymptotic") gives the same)
    assert compare.mann_whitney_p([1, 2, 3, 4, 5], [6, 7, 8, 9, 10]) == pytest.approx(0.01219, abs=1e-4)
    assert compare.mann_whitney_p([1.8] * 50, [1.8] * 50) == 1.0  # quantized alike: no difference
    assert compare.mann_whitney_p([], [1.0]) is None
    same = compare.mann_whitney_p(FAST, list(reversed(FAST)))
    assert same is not None and same > 0.9


def test_the_recovery_checker_keeps_per_agent_detection_and_recovery() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        h = list(History.load(HIST))
    f = checks.check_recovery_time(h, bound=30).figures
    rec, det = f["per_agent"], f["per_agent_detection"]
    assert set(det) == set(rec) and all(0 < det[a] <= rec[a] for a in rec), (det, rec)
    assert f["detection_max"] == max(det.values()) and f["max"] == max(rec.values())


def test_distribution_and_verdicts() -> None:
    d = compare.distribution(FAST)
    assert d["n"] == 50 and d["p50"] == FAST[24] and d["p95"] == FAST[47] and d["max"] == FAST[-1]
    assert compare.distribution([])["p95"] is None
    assert compare.scenario_verdict(["pass", "defect"]) == "flaky"
    assert compare.scenario_verdict(["defect"]) == "fail"
    assert compare.scenario_verdict(["pass", "incomplete"]) == "unjudged"
    assert compare.scenario_verdict(["skipped"]) == "skipped"


def test_compare_same_runs_exit_0(tmp_path: Path) -> None:
    a = make_run(tmp_path, "20261203T050000Z-v0.3", {LOGIN: [("passed", None)], PBX: [("passed", FAST)]})
    b = make_run(
        tmp_path,
        "20261203T060000Z-v0.4",
        {LOGIN: [("passed", None)], PBX: [("passed", FAST[::-1])]},
        git="v0.4",
    )
    js, md, png = tmp_path / "c.json", tmp_path / "c.md", tmp_path / "c.png"
    r = CliRunner().invoke(main, ["compare", str(a), str(b), "--json", str(js), "--markdown", str(md),
                                  "--plot", str(png)])  # fmt: skip
    assert r.exit_code == 0, r.output
    assert (
        "no regression" in r.output
        and "recovery" in r.output
        and "version git_describe: v0.3 -> v0.4" in r.output
    )
    assert "1.240/1.470/1.490 (50)" in r.output  # p50/p95/max (n), milliseconds
    data = json.loads(js.read_text())
    assert data["schema"] == compare.COMPARE_SCHEMA and data["regressions"] == []
    pbx = next(s for s in data["scenarios"] if s["scenario"] == PBX)
    assert [m["metric"] for m in pbx["metrics"]] == ["recovery", "detection"]
    assert pbx["metrics"][0]["significant"] is False and pbx["metrics"][0]["delta"]["p95"] == 0
    assert md.read_text().startswith("# hil compare") and png.read_bytes()[:4] == b"\x89PNG"


def test_compare_regression_new_vanished(tmp_path: Path) -> None:
    slow = [3 * t for t in FAST]
    gone, new = "scenarios.test_x#test_gone", "scenarios.test_x#test_new"
    a = make_run(
        tmp_path,
        "20261203T050000Z-a",
        {LOGIN: [("passed", None)], PBX: [("passed", FAST)], gone: [("passed", None)]},
    )
    b = make_run(
        tmp_path,
        "20261203T060000Z-b",
        {LOGIN: [("failed", None)], PBX: [("passed", slow)], new: [("passed", None)]},
    )
    js = tmp_path / "c.json"
    r = CliRunner().invoke(main, ["compare", str(a), str(b), "--json", str(js)])
    assert r.exit_code == 1, r.output
    data = json.loads(js.read_text())
    regs = "\n".join(data["regressions"])
    assert f"{LOGIN}: verdict went from pass to fail" in regs
    assert f"{PBX}: recovery p95" in regs and f"{PBX}: detection p95" in regs and "3.0x" in regs
    pres = {s["scenario"]: s["presence"] for s in data["scenarios"]}
    assert pres["scenarios.test_x#test_gone"] == "vanished" and pres["scenarios.test_x#test_new"] == "new"
    assert "REGRESSION" in r.output and "(vanished)" in r.output and "(new)" in r.output
    pbx = next(s for s in data["scenarios"] if s["scenario"] == PBX)["metrics"][0]
    assert pbx["significant"] and pbx["slower"] and pbx["p_value"] < 1e-6


def test_compare_flaky_is_a_regression(tmp_path: Path) -> None:
    a = make_run(tmp_path, "20261203T050000Z-a", {PBX: [("passed", FAST), ("passed", FAST)]})
    b = make_run(tmp_path, "20261203T060000Z-b", {PBX: [("passed", FAST), ("failed", FAST)]})
    cmp = compare.compare(gate.read_run(a, tmp_path)[0], gate.read_run(b, tmp_path)[0])
    assert cmp.exit_code == 1 and cmp.scenarios[0].verdict_b == "flaky"
    assert cmp.scenarios[0].metrics[0].a["n"] == 100  # pooled over the repeats


@pytest.mark.parametrize(
    "break_it, why",
    [
        (lambda d: (d / "run.json").unlink(), "not a run directory"),
        (lambda d: (d / "run.json").write_text("{not json"), "run.json: corrupt"),
        (lambda d: (d / "run.json").write_text('{"status": "interrupted"}'), "partial run: it was interrupt"),
        (lambda d: (d / "run.json").write_text('{"status": "running"}'), "partial run: it never finished"),
        (lambda d: next((d / "allure-results").glob("*-result.json")).write_text("{"), "not readable JSON"),
        (lambda d: [p.unlink() for p in (d / "allure-results").iterdir()], "no test results in it"),
    ],
)  # fmt: skip
def test_compare_bad_run_exit_2(tmp_path: Path, break_it: Any, why: str) -> None:
    a = make_run(tmp_path, "20261203T050000Z-a", {PBX: [("passed", FAST)]})
    b = make_run(tmp_path, "20261203T060000Z-b", {PBX: [("passed", FAST)]})
    break_it(b)
    r = CliRunner().invoke(main, ["compare", str(a), str(b)])
    assert r.exit_code == 2, r.output
    errors = [x for x in r.stderr.splitlines() if x.startswith("error:")]
    assert errors and why in errors[0] and str(b) in errors[0], r.stderr


def test_compare_missing_run_and_other_topology(tmp_path: Path) -> None:
    a = make_run(tmp_path, "20261203T050000Z-a", {PBX: [("passed", FAST)]})
    r = CliRunner().invoke(main, ["compare", str(a), str(tmp_path / "nope")])
    assert r.exit_code == 2 and "missing: no such run directory" in r.stderr
    b = make_run(tmp_path, "20261203T060000Z-b", {PBX: [("passed", FAST)]}, topology="virtual-1k")
    r = CliRunner().invoke(main, ["compare", str(a), str(b)])
    assert r.exit_code == 2 and "topology virtual-1k" in r.stderr and "not comparable" in r.stderr
