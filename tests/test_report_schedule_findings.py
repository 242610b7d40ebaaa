"""A nemesis schedule's outcome is reported in the same finding kinds as the scripted scenarios' checkers
give the same failure (lost agent, double registration, split brain, wrong site), so the gate counts a lost
agent or a split brain found by `hil explore` against its policy as it does a scripted scenario's."""

from __future__ import annotations

import json

import pytest
from test_checks_schedule import MOVED, Place, history

from harness import checks, report
from harness.history import Obs


def _two_sites(final: Place) -> list[Obs]:
    """The history of test_checks_schedule with a1 also left at sha at the final read (at two sites)."""
    h = history(final)
    h.events = [
        e for e in h.events if not (isinstance(e, Obs) and e.t == 20.0 and e.source.startswith("sha"))
    ]
    h.read(20.0, {"a1": ("sha", "ready", 1)}, sites=("sha",))
    return h.events


def _kinds(fs: list[report.Finding]) -> set[tuple[str, tuple[str, ...]]]:
    return {(f.kind, f.agents) for f in fs}


LOST = {k: v for k, v in MOVED.items() if k != "a2"}
STAYED = {**MOVED, "a1": ("sha", "ready", 1)}


@pytest.mark.parametrize(
    ("events", "want"),
    [
        (history(LOST).events, {("lost_agent", ("a2",))}),
        (history(STAYED, mid=STAYED).events, {("wrong_site", ("a1",))}),
        (_two_sites(MOVED), {("double_registration", ("a1",)), ("split_brain", ("a1",))}),
    ],
    ids=["lost", "did-not-move", "two-sites"],
)
def test_schedule_outcome_findings_agree_with_the_scripted_checkers(events: list[Obs], want: set) -> None:
    outcome = checks.check_schedule_outcome(events)
    assert outcome.result == "invalid", outcome.reason
    got = report.findings([outcome])
    assert _kinds(got) == want
    assert all(f.category == "defect" and f.check == "schedule_outcome" for f in got)
    # the scripted scenarios' checkers, over the same history, find the same kinds for the same agents
    scripted = [checks.check_single_registration(events), checks.check_no_split_brain(events)]
    assert _kinds(report.findings(scripted)) == want


def test_schedule_outcome_lines_gate_counts_and_verdict_file() -> None:
    outcome = checks.check_schedule_outcome(_two_sites(MOVED))
    msg = report.failure_message([outcome])
    assert msg.splitlines()[0].startswith(report.DEFECT_SPLIT_BRAIN + ": schedule_outcome: "), msg
    assert any(line.startswith(report.DEFECT_DOUBLE_REGISTRATION) for line in msg.splitlines())
    back = json.loads(json.dumps(report.verdicts_payload([outcome])))
    fs = [report.Finding.from_dict(f) for f in back["findings"]]
    assert fs == report.findings([outcome]) and back["outcome"] == "defect"
    assert next(f for f in fs if f.kind == "split_brain").agents == ("a1",)


def test_other_schedule_problems_are_check_failed_with_the_agent_and_why() -> None:
    outcome = checks.check_schedule_outcome(history({**MOVED, "a2": ("ntg", "ready", 2)}).events)
    (f,) = report.findings([outcome])
    assert f.kind == "check_failed" and f.agents == ("a2",)
    assert "a2 (state ready, was not_ready before the schedule)" in f.detail
    failback, moved = {**MOVED, "a1": ("sha", "ready", 3)}, {**MOVED, "a3": ("sha", "ready", 2)}
    for final, agent in ((failback, "a1"), (moved, "a3")):
        mid = final if agent == "a3" else None
        (f,) = report.findings([checks.check_schedule_outcome(history(final, mid=mid).events)])
        assert (f.kind, f.agents) == ("wrong_site", (agent,)), f  # failback, moved when it must stay
