"""The trend across kept runs (harness.report.trend), the release gate's result in the report
(harness.report.gateresult), and Allure 3's history carried by build_report."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from harness import report
from harness.report import gateresult, runs, trend

SCEN = "scenarios.test_unplanned#test_pbx_killed"


def _result(results: Path, name: str, per_agent: dict[str, float] | None, status: str = "passed") -> None:
    """One Allure result of `name`, with a verdict file holding a recovery checker's per-agent times."""
    verdicts: list[dict[str, Any]] = [{"name": "single_registration", "result": "valid", "figures": {}}]
    if per_agent is not None:
        det = {a: t - 0.2 for a, t in per_agent.items()}
        figures = {"per_agent": per_agent, "per_agent_detection": det}
        verdicts.append({"name": "recovery_time", "result": "valid", "figures": figures})
    src = f"{uuid.uuid4()}-attachment.json"
    (results / src).write_text(json.dumps({"schema": "hil-verdicts/1", "verdicts": verdicts}))
    res = {
        "uuid": str(uuid.uuid4()),
        "name": name.rsplit("#", 1)[-1],
        "fullName": name,
        "status": status,
        "parameters": [{"name": "site", "value": "'sha'"}] if "[" not in name else [],
        "attachments": [{"name": report.VERDICTS_NAME, "source": src, "type": "application/json"}],
    }
    (results / f"{res['uuid']}-result.json").write_text(json.dumps(res))


def _run(reports: Path, when: str, rev: str, times: list[dict[str, float]], status: str = "complete") -> Path:
    """A kept run as `hil run` leaves it: run.json and Allure results (one result per repeat)."""
    path = reports / "runs" / f"{when}-{rev}"
    (path / "allure-results").mkdir(parents=True)
    manifest = {"name": path.name, "status": status, "started": when, "versions": {"git_describe": rev}}
    (path / "run.json").write_text(json.dumps(manifest))
    for t in times:
        _result(path / "allure-results", SCEN, t)
    _result(path / "allure-results", "scenarios.test_login#test_login_local", None)
    return path


def test_the_trend_has_a_point_per_scenario_per_run_labelled_by_revision(tmp_path: Path) -> None:
    _run(tmp_path, "20261201T100000Z", "v0.3", [{"a1": 1.0, "a2": 2.0, "a3": 3.0}])
    _run(tmp_path, "20261202T100000Z", "v0.4", [{"a1": 4.0, "a2": 5.0}, {"a1": 6.0}])  # two repeats
    _run(tmp_path, "20261202T110000Z", "v0.5", [{"a1": 9.0}], status="interrupted")  # partial: left out
    points = trend.collect(tmp_path)
    assert [p.revision for p in points] == ["v0.3", "v0.4"]
    assert points[0].label.startswith("v0.3\n12-01 10:00")
    sid = f"{SCEN}[site=sha]"
    assert all(set(p.scenarios) == {sid} for p in points)  # a scenario without times has no point
    rec0, rec1 = (p.scenarios[sid]["recovery"] for p in points)
    assert (rec0["p50"], rec0["p95"], rec0["max"], rec0["n"]) == (2.0, 3.0, 3.0, 3)
    assert (rec1["max"], rec1["n"]) == (6.0, 3)  # repeats pooled
    assert points[1].scenarios[sid]["detection"]["max"] == pytest.approx(5.8)

    cur = tmp_path / "runs" / "20261202T100000Z-v0.4"
    made = trend.write_trend(tmp_path, cur)
    assert made == [cur / "trend.png", cur / "trend.html"]
    for where in (tmp_path, cur):
        assert (where / "trend.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        page = (where / "trend.html").read_text()
        assert page.count("<td>20261201T100000Z-v0.3</td>") == 1 and "<td>v0.4</td>" in page
        assert "data:image/png;base64," in page and "6.00 s" in page


def test_the_run_being_finished_is_on_its_own_trend_and_an_empty_trend_still_draws(tmp_path: Path) -> None:
    cur = _run(tmp_path, "20261203T100000Z", "v1", [{"a1": 1.5}], status="running")
    assert trend.collect(tmp_path) == []
    assert [p.name for p in trend.collect(tmp_path, cur)] == [cur.name]
    assert trend.trend_png([])[:4] == b"\x89PNG"
    assert "No run kept holds" in trend.trend_html([], b"")
    assert runs.list_runs(tmp_path)[0].status == "running"  # the trend only reads


def _gate(d: Path, code: int, verdict: str, scen: list[dict[str, Any]], missing: list[str]) -> None:
    body = {"verdict": verdict, "exit_code": code, "scenarios": scen, "missing": missing}
    (d / "gate.json").write_text(json.dumps(body))
    (d / "gate.md").write_text(f"# Release gate: {verdict.upper()} (exit {code})\n")


def test_the_gate_becomes_a_release_gate_result_with_its_page_and_the_trend(tmp_path: Path) -> None:
    scen = [
        {"scenario": "a#pass", "verdict": "pass", "reasons": []},
        {"scenario": "a#slow", "verdict": "fail", "reasons": ["regression: p95 3.0 s > 1.5x 1.0 s"]},
    ]
    _gate(tmp_path, 1, "do not ship", scen, [])
    png = tmp_path / "trend.png"
    png.write_bytes(b"\x89PNG")
    out = gateresult.write_gate_result(tmp_path, tmp_path / "extra", [png])
    assert out is not None
    r = json.loads(out.read_text())
    assert (r["name"], r["status"], r["historyId"]) == ("release gate", "failed", gateresult.GATE_HISTORY_ID)
    assert r["statusDetails"]["message"] == "release gate: DO NOT SHIP (exit 1)"
    assert "a#slow: fail (regression: p95 3.0 s > 1.5x 1.0 s)" in r["statusDetails"]["trace"]
    assert "a#pass" not in r["statusDetails"]["trace"]
    assert r["description"].startswith("# Release gate: DO NOT SHIP")
    names = {a["name"]: a for a in r["attachments"]}
    assert set(names) == {"gate.md", "gate.json", "trend.png"}
    assert all((tmp_path / "extra" / a["source"]).is_file() for a in names.values())

    _gate(tmp_path, 2, "could not judge", [], ["rule 2 ('x'): no scenario in the results matches it"])
    r2 = json.loads(gateresult.write_gate_result(tmp_path, tmp_path / "extra2").read_text())  # type: ignore[union-attr]
    assert r2["status"] == "broken" and "missing: rule 2" in r2["statusDetails"]["trace"]
    assert gateresult.write_gate_result(tmp_path / "nowhere", tmp_path / "x") is None  # not judged: none


def _allure_missing() -> str | None:
    try:
        report.allure_cli()
    except report.ReportError as e:
        return str(e)
    return None


@pytest.mark.skipif(_allure_missing() is not None, reason=f"Allure 3 is not installed: {_allure_missing()}")
def test_a_second_report_shows_the_first_in_its_history_and_carries_the_gate(tmp_path: Path) -> None:
    run = _run(tmp_path, "20261201T100000Z", "v0.3", [{"a1": 1.0}])
    _gate(run, 0, "ship", [], [])
    extra = gateresult.write_gate_result(run, tmp_path / "gate-result")
    assert extra is not None
    history = tmp_path / "history.jsonl"
    for _ in range(2):
        report.build_report(
            run / "allure-results", tmp_path / "report", history=history,
            extra_results=[extra.parent], attached=[],
        )  # fmt: skip
    assert len(history.read_text().splitlines()) == 2  # each report appends its results
    shown = json.loads((tmp_path / "report" / "test-results.json").read_text())["byId"]
    assert {v["name"] for v in shown.values()} >= {"release gate", "test_pbx_killed"}
    gate_id = next(k for k, v in shown.items() if v["name"] == "release gate")
    gate_page = json.loads((tmp_path / "report" / "data" / "test-results" / f"{gate_id}.json").read_text())
    assert gate_page["status"] == "passed" and len(gate_page["history"]) == 1  # the first report's
