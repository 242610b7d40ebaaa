"""`hil run --repeat N`: each session runs N times into the same results (so the gate's `repeat:` can be met
and a scenario with mixed results is called flaky); bad values are exit 2 with one line. No lab: the pytest
child and the lab's bring-up are replaced."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from harness import mainjob
from harness.cli import main
from harness.cli import suite as suite_cli

TOPO = Path(__file__).parent.parent / "topologies" / "virtual-two-site.yaml"


def test_each_session_runs_n_times_into_the_same_results(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[list[str]] = []

    def child(argv: list[str], out: Any) -> int:
        calls.append(argv)
        junit = Path(argv[argv.index("--junitxml") + 1])
        failed = int(len(calls) == 2)
        junit.write_text(f'<testsuite tests="2" failures="{failed}" errors="0" skipped="0"/>')
        return failed

    monkeypatch.setattr(mainjob, "_run_child", child)
    monkeypatch.setattr(mainjob, "_bring_up", lambda topo, out: (None, False))
    healed: list[str] = []
    monkeypatch.setattr(mainjob, "_heal_leftovers", lambda topo, out: healed.append(topo.name))
    res, said = mainjob.JobResult(), []
    s = mainjob.Session("suite", TOPO, "not scale")
    results = tmp_path / "allure-results"
    mainjob._run_sessions([s], res, results, tmp_path, None, False, said.append, ["-k", "login"], repeat=3)
    assert len(calls) == 3 and all(a[a.index("--alluredir") + 1] == str(results) for a in calls)
    junits = [Path(a[a.index("--junitxml") + 1]).name for a in calls]
    assert junits == ["junit-suite.xml", "junit-suite-2.xml", "junit-suite-3.xml"]
    assert s.returncode == 1, "a repetition that failed is the session's result"
    assert s.counts == {"tests": 6, "failures": 1, "errors": 0, "skipped": 0, "passed": 5}
    assert len(healed) == 3 and "suite: repetition 3 of 3" in said  # leftovers healed before each


def test_repeat_reaches_the_job_and_bad_values_are_one_line(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(suite_cli, "REPORTS", tmp_path)
    seen: list[mainjob.Selection] = []

    def job(*_a: Any, select: mainjob.Selection, **_k: Any) -> mainjob.JobResult:
        seen.append(select)
        return mainjob.JobResult()

    monkeypatch.setattr(mainjob, "run", job)
    r = CliRunner().invoke(main, ["run", "--repeat", "3", "-k", "pbx_killed"])
    assert r.exit_code == 0, r.output
    assert seen[0].repeat == 3 and seen[0].describe() == {"keyword": "pbx_killed", "repeat": "3"}
    for args, why in (
        (["--repeat", "0"], "--repeat: '0' is not a positive whole number"),
        (["--repeat", "lots"], "--repeat: 'lots' is not a positive whole number"),
        (["--repeat", "2", "--last-failed"], "--repeat with --last-failed/--failed-of"),
    ):
        r = CliRunner().invoke(main, ["run", *args])
        lines = r.stderr.strip().splitlines()
        assert r.exit_code == 2 and len(lines) == 1 and why in lines[0], r.stderr
    assert len(seen) == 1
