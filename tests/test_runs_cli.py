"""`hil run` keeping its runs, and its re-runs: a complete run moves reports/latest and prunes, a failed or
interrupted one touches nothing of another; -k/-m/--last-failed select through pytest; a bad run directory
or retention value is exit 2 with one line. The lab and the suite are stood in for (the suite's sessions are
the unit of tests/test_plugin.py), except pytest's collection, which the selection really runs."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from harness import mainjob
from harness.cli import main
from harness.cli import suite as suite_cli
from harness.lab.session import LabError
from harness.report import runs
from harness.topology import REPO_ROOT

T0 = dt.datetime(2026, 12, 1, 8, 0, 0, tzinfo=dt.UTC)
LOGIN = "scenarios/test_login.py::test_login_local"


def kept_run(
    reports: Path, minute: int, status: str = "complete", failed: list[str] | None = None
) -> runs.Run:
    run = runs.create(reports, repo=REPO_ROOT, now=T0 + dt.timedelta(minutes=minute), describe="v1")
    (run.path / "allure-results").mkdir()
    (run.path / "gate.md").write_text(f"run {minute}")
    if failed is not None:
        f = run.path / "pytest-cache" / "v" / "cache" / "lastfailed"
        f.parent.mkdir(parents=True)
        f.write_text(json.dumps(dict.fromkeys(failed, True)))
    if status != "running":
        run.finish(status)
    return run


def tree_digest(path: Path) -> str:
    """Everything under a directory, names and bytes: to show that nothing of it changed."""
    h = hashlib.sha256()
    for p in sorted(path.rglob("*")):
        h.update(str(p.relative_to(path)).encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


class FakeSuite:
    """Stands in for the lab and pytest sessions (and the report and gate): records what it was asked."""

    def __init__(self, raises: BaseException | None = None, gate_exit: int = 0) -> None:
        self.raises, self.gate_exit = raises, gate_exit
        self.calls: list[dict[str, Any]] = []

    def sessions(
        self, sessions, res, results, out_dir, policy, dry_run, out, extra=None, repeat: int = 1
    ) -> None:
        self.calls.append({"sessions": [s.name for s in sessions], "markers": [s.markers for s in sessions],
                           "out_dir": out_dir, "extra": list(extra or [])})  # fmt: skip
        (results / "x-result.json").write_text("{}")
        if self.raises is not None:
            raise self.raises
        for s in sessions:
            s.returncode = 0
            res.sessions.append(s)

    def judge(self, res, out_dir, results, policy, out) -> None:
        (out_dir / "gate.md").write_text("SHIP")
        res.gate_exit = res.exit_code = self.gate_exit


@pytest.fixture
def reports(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(suite_cli, "REPORTS", tmp_path)
    monkeypatch.delenv(runs.KEEP_RUNS_ENV, raising=False)
    monkeypatch.delenv(runs.KEEP_SIZE_ENV, raising=False)
    return tmp_path


def fake(monkeypatch: pytest.MonkeyPatch, suite: FakeSuite) -> FakeSuite:
    monkeypatch.setattr(mainjob, "_run_sessions", suite.sessions)
    monkeypatch.setattr(mainjob, "_judge", suite.judge)
    return suite


def hil(*args: str) -> Any:
    return CliRunner().invoke(main, list(args))


def one_error(result: Any, *needles: str) -> None:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for n in needles:
        assert n in lines[0], (n, lines[0])


def test_a_complete_run_is_kept_becomes_latest_and_prunes_the_oldest(reports: Path, monkeypatch) -> None:
    suite = fake(monkeypatch, FakeSuite(gate_exit=1))
    olds = [kept_run(reports, m) for m in range(3)]
    r = hil("run", "--no-scale", "--keep-runs", "3")
    assert r.exit_code == 1, r.output  # the gate's exit code
    new = Path(os.path.realpath(reports / "latest"))
    assert new.parent == reports / "runs" and new not in [o.path for o in olds]
    assert suite.calls[0]["out_dir"] == new  # histories, pcaps, verdicts, junit go into the run
    m = json.loads((new / "run.json").read_text())
    assert m["status"] == "complete" and m["exit_code"] == 1 and m["gate_exit"] == 1
    assert m["sessions"][0]["name"] == "suite" and m["versions"]["kamailio"]
    assert (new / "inputs" / "topology-suite.yaml").is_file() and (new / "inputs" / "policy.yaml").is_file()
    assert not olds[0].path.exists() and olds[1].path.is_dir() and olds[2].path.is_dir()
    assert f"retention: removed run {olds[0].name} (" in r.output and "more than 3 runs kept" in r.output
    assert f"run: {new}" in r.output and "DO NOT SHIP" in r.output


@pytest.mark.parametrize(
    ("raises", "status", "code"),
    [(LabError("lab would not come up"), "failed", 1), (KeyboardInterrupt(), "interrupted", 130)],
)
def test_a_failed_or_interrupted_run_touches_nothing_of_another(
    reports: Path, monkeypatch: pytest.MonkeyPatch, raises: BaseException, status: str, code: int
) -> None:
    fake(monkeypatch, FakeSuite(raises=raises))
    olds = [kept_run(reports, m) for m in range(3)]
    runs.point_latest(reports, olds[1])
    before = {o.name: tree_digest(o.path) for o in olds}
    r = hil("run", "--no-scale", "--keep-runs", "1", "--keep-size", "1")  # would prune all, if it could
    assert r.exit_code == code, r.output
    assert {o.name: tree_digest(o.path) for o in olds} == before
    assert os.readlink(reports / "latest") == f"runs/{olds[1].name}"
    mine = [p for p in (reports / "runs").iterdir() if p.name not in before]
    assert len(mine) == 1 and json.loads((mine[0] / "run.json").read_text())["status"] == status
    assert "retention" not in r.output


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["--keep-runs", "abc"], ["--keep-runs: 'abc' is not a positive whole number"]),
        (["--keep-runs", "0"], ["--keep-runs: '0'"]),
        (["--keep-size", "-3G"], ["--keep-size: '-3G' is not a positive size"]),
        (["--last-failed"], ["latest: missing", "run hil run first"]),
        (["--failed-of", "20990101T000000Z-nope"], ["20990101T000000Z-nope: missing: no such run directory"]),
        (["--last-failed", "--failed-of", "x"], ["give one"]),
    ],
)
def test_bad_retention_or_missing_run_is_one_line_and_exit_2(
    reports: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], needles: list[str]
) -> None:
    suite = fake(monkeypatch, FakeSuite())
    one_error(hil("run", "--no-scale", *args), *needles)
    assert suite.calls == [] and not (reports / "runs").exists()  # no run made, no lab touched


def test_an_environment_retention_is_checked_too(reports: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake(monkeypatch, FakeSuite())
    monkeypatch.setenv(runs.KEEP_SIZE_ENV, "plenty")
    one_error(hil("run"), f"{runs.KEEP_SIZE_ENV}: 'plenty'")


def test_a_partial_or_corrupt_run_named_for_a_rerun_is_refused(reports: Path, monkeypatch) -> None:
    suite = fake(monkeypatch, FakeSuite())
    partial = kept_run(reports, 0, status="running", failed=[LOGIN])
    runs.point_latest(reports, partial)
    one_error(hil("run", "--last-failed"), f"{partial.name}: partial run: it never finished")
    corrupt = kept_run(reports, 1, failed=[LOGIN])
    (corrupt.path / "run.json").write_text("{")
    one_error(hil("run", "--failed-of", str(corrupt.path)), "run.json: corrupt (not JSON")
    bad_cache = kept_run(reports, 2, failed=[LOGIN])
    (bad_cache.path / "pytest-cache" / "v" / "cache" / "lastfailed").write_text("[")
    one_error(hil("run", "--failed-of", bad_cache.name), "lastfailed: corrupt")
    assert suite.calls == []


def test_last_failed_of_a_run_without_failures_runs_nothing(reports: Path, monkeypatch) -> None:
    suite = fake(monkeypatch, FakeSuite())
    runs.point_latest(reports, kept_run(reports, 0))
    r = hil("run", "--last-failed")
    assert r.exit_code == 0 and "nothing to re-run: no scenario failed in" in r.output, r.output
    assert suite.calls == [] and len(list((reports / "runs").iterdir())) == 1


def test_last_failed_reruns_them_from_a_copy_of_the_runs_cache(reports: Path, monkeypatch) -> None:
    """pytest's --lf over a copy of the earlier run's cache; the scale session, which selects nothing of
    the failures (a real pytest --collect-only), is skipped before its 1,000-agent lab would come up."""
    suite = fake(monkeypatch, FakeSuite())
    earlier = kept_run(reports, 0, failed=[LOGIN])
    runs.point_latest(reports, earlier)
    before = tree_digest(earlier.path)
    r = hil("run", "--last-failed", "-m", "not slow")
    assert r.exit_code == 0, r.output
    assert "scale: the selection picks no scenario on virtual-1k.yaml; session skipped" in r.output
    (call,) = suite.calls
    assert call["sessions"] == ["suite"] and call["markers"] == ["(not scale) and (not slow)"]
    assert call["extra"] == ["--lf"]
    assert runs.last_failed(runs.open_run(call["out_dir"], reports, complete=False)) == [LOGIN]
    assert tree_digest(earlier.path) == before
    m = json.loads((call["out_dir"] / "run.json").read_text())
    assert m["selection"] == {"last_failed_of": earlier.name, "markers": "not slow"}


def test_a_selection_that_picks_nothing_is_exit_2(reports: Path, monkeypatch) -> None:
    suite = fake(monkeypatch, FakeSuite())
    one_error(hil("run", "--no-scale", "-k", "no_such_scenario_at_all"), "picks no scenario")
    assert suite.calls == [] and not (reports / "runs").exists()


def test_report_and_gate_read_a_kept_run_or_say_why_not(reports: Path, tmp_path: Path) -> None:
    one_error(hil("gate", "--run", "latest"), "latest: missing")
    one_error(hil("report", "--run", str(tmp_path)), "not a run directory (no run.json")
    run = kept_run(reports, 0)
    one_error(hil("gate", "--run", run.name, "--results", "x"), "give one")
    r = hil("gate", "--run", run.name, "--out", str(tmp_path / "regate"))
    assert r.exit_code == 2 and "no scenario in the results matches it" in r.output  # judged: it is empty
    assert (tmp_path / "regate" / "gate.md").exists() and (run.path / "gate.md").read_text() == "run 0"
