"""The exploration loop (harness/scenario/exploration.py) with the lab run faked: an invalid schedule is
kept as <seed>.json, shrunk with each candidate run again, kept as <seed>.min.json with the command that
replays it; valid ones are kept nowhere; the summary counts them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from harness import topology
from harness.checks import Verdict
from harness.nemesis import generate, profile
from harness.nemesis.schedule import Schedule
from harness.nemesis.schedule import load as load_schedule
from harness.scenario import exploration
from harness.scenario.exploration import Explorer, Inputs, ScheduleResult, summary
from harness.scenario.settings import LabNotReady


class FakeExplorer(Explorer):
    """Judges a schedule invalid when it holds an op of `culprit` kind (check `culprit_check`), and invalid
    another way when it holds none but an op of `other` kind; nothing touches a lab."""

    culprit = "service_pause"
    other = "no such kind"

    def __init__(self, inputs: Inputs, out: Path) -> None:
        super().__init__(None, inputs, say=lambda _line: None, out_dir=out, shrink_budget=40)  # type: ignore[arg-type]
        self.runs: list[str] = []

    def run_one(self, schedule: Schedule, name: str) -> ScheduleResult:
        self.runs.append(name)
        kinds = {op.kind for op in schedule.ops}
        if self.culprit in kinds:
            v = Verdict("culprit_check", "invalid", "fake", [], {})
        elif self.other in kinds:
            v = Verdict("other_check", "invalid", "fake", [], {})
        else:
            v = Verdict("culprit_check", "valid", "fake", [], {})
        return ScheduleResult(name, schedule, v, [v], [], 1.0, Path("/dev/null"))


@pytest.fixture
def inputs() -> Inputs:
    return Inputs(topology.load(None), profile.load_profile(None))


def _seed_with(inputs: Inputs, kind: str, others: int) -> Schedule:
    """A drawn schedule holding an op of `kind` and at least `others` other ops."""
    for seed in range(1, 500):
        s = generate.generate(inputs.topology, inputs.profile, seed)
        if any(o.kind == kind for o in s.ops) and len(s.ops) > others:
            return s
    raise AssertionError(f"no seed below 500 draws a {kind} with {others} other ops")


def test_invalid_schedule_kept_shrunk_and_replayable(inputs: Inputs, tmp_path: Path) -> None:
    ex = FakeExplorer(inputs, tmp_path)
    bad = _seed_with(inputs, FakeExplorer.culprit, 2)
    results = ex.explore([bad])
    (res,) = results
    assert res.result == "invalid"
    original, shrunk = Path(res.files["original"]), Path(res.files["shrunk"])
    assert original == tmp_path / f"{bad.seed}.json" and shrunk == tmp_path / f"{bad.seed}.min.json"
    assert load_schedule(original, inputs.topology) == bad
    small = load_schedule(shrunk, inputs.topology)
    assert [o.kind for o in small.ops] == [FakeExplorer.culprit], "shrunk to the one op that fails"
    assert res.replay == f"hil explore --replay {shrunk}"
    assert res.shrink["runs"] == len(ex.runs) - 1 and res.shrink["ops_after"] == 1
    assert all(name.startswith(f"shrink-{bad.seed}-") for name in ex.runs[1:])


def test_valid_schedules_are_kept_nowhere(inputs: Inputs, tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setattr(FakeExplorer, "culprit", "no such kind")
    ex = FakeExplorer(inputs, tmp_path)
    results = ex.explore(exploration.draw(inputs, range(1, 4)))
    assert [r.result for r in results] == ["valid"] * 3 and not list(tmp_path.iterdir())
    doc = summary(results, seed=1)
    assert (doc["schedules"], doc["valid"], doc["invalid"]) == (3, 3, 0)
    assert [r["seed"] for r in doc["results"]] == [1, 2, 3]


def test_no_shrink_keeps_the_original_only(inputs: Inputs, tmp_path: Path) -> None:
    ex = FakeExplorer(inputs, tmp_path)
    bad = _seed_with(inputs, FakeExplorer.culprit, 2)
    (res,) = ex.explore([bad], shrink_invalid=False)
    assert "shrunk" not in res.files and ex.runs == [f"explore-{bad.seed}"]
    assert res.replay == f"hil explore --replay {tmp_path / f'{bad.seed}.json'}"


def test_a_shrink_keeps_to_the_same_failure(inputs: Inputs, tmp_path: Path, monkeypatch: Any) -> None:
    """Dropping the culprit but keeping another op that fails another way is not the same failure."""
    bad = _seed_with(inputs, FakeExplorer.culprit, 2)
    other = next(o.kind for o in bad.ops if o.kind != FakeExplorer.culprit)
    monkeypatch.setattr(FakeExplorer, "other", other)
    (res,) = FakeExplorer(inputs, tmp_path).explore([bad])
    small = load_schedule(res.files["shrunk"], inputs.topology)
    assert [o.kind for o in small.ops] == [FakeExplorer.culprit] and res.shrink["failure"] == [
        "culprit_check"
    ]


def test_failure_words() -> None:
    lost = {"agent": "a1", "problem": "lost: no session anywhere"}
    sb = {"name": "no_split_brain", "result": "invalid"}
    vs = [
        Verdict("schedule_outcome", "invalid", "x", [lost, sb], {}),
        Verdict("no_split_brain", "invalid", "x", [], {}),
        Verdict("faults_healed", "valid", "x", [], {}),
        Verdict("capture_complete", "unknown", "x", [], {}),
    ]
    assert exploration.failure(vs) == {"outcome: lost", "no_split_brain"}


def test_a_failure_that_does_not_come_back_is_not_shrunk(inputs: Inputs, tmp_path: Path) -> None:
    class Once(FakeExplorer):
        def run_one(self, schedule: Schedule, name: str) -> ScheduleResult:
            res = super().run_one(schedule, name)
            if len(self.runs) > 1:  # only the first run fails
                v = Verdict("culprit_check", "valid", "fake", [], {})
                return ScheduleResult(name, schedule, v, [v], [], 1.0, Path("/dev/null"))
            return res

    ex = Once(inputs, tmp_path)
    bad = _seed_with(inputs, FakeExplorer.culprit, 2)
    (res,) = ex.explore([bad])
    assert res.result == "invalid"
    assert {k: v for k, v in res.shrink.items() if k != "seconds"} == {
        "failure": ["culprit_check"],
        "reproduced": False,
        "runs": 1,
        "ops_before": len(bad.ops),
        "ops_after": len(bad.ops),
    }
    assert res.shrink["seconds"] >= 0  # the bench's figures read every shrink's time (it crashed on this one)
    assert "shrunk" not in res.files and len(ex.runs) == 2
    assert res.replay == f"hil explore --replay {tmp_path / f'{bad.seed}.json'}"


def test_a_lab_fault_makes_one_schedule_unknown_and_the_run_goes_on(inputs: Inputs, tmp_path: Path) -> None:
    class Flaky(Explorer):
        calls = 0

        def _run(self, schedule: Schedule, name: str, t0: float) -> ScheduleResult:
            self.calls += 1
            if self.calls == 1:
                raise LabNotReady("the lab is not back as it began: process sha-pbx1/kamailio is failed")
            v = Verdict("culprit_check", "valid", "fake", [], {})
            return ScheduleResult(name, schedule, v, [v], [], 1.0, Path("/dev/null"))

    said: list[str] = []
    ex = Flaky(None, inputs, say=said.append, out_dir=tmp_path)  # type: ignore[arg-type]
    results = ex.explore(exploration.draw(inputs, range(1, 3)))
    assert [r.result for r in results] == ["unknown", "valid"]
    assert results[0].verdicts[0].name == "lab_ready" and "kamailio is failed" in results[0].verdict.reason
    assert results[0].findings and results[0].findings[0]["category"] == "incomplete"
    assert any("lab fault" in line for line in said) and not list(tmp_path.iterdir())
