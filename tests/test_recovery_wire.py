"""Recovery times from the capture: the moment the wire shows an agent's REGISTER answered 200 OK at its new
site's PBX and its CTI session there back in its earlier state, not when a poll happened to look (issue 13:
all 50 agents of a PBX kill "recovered" at the one instant a snapshot was taken)."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_checks import FAULT, ROSTER, Rec

from harness.checks import check_recovery_time

AGENTS = ["a00001", "a00002"]


@pytest.fixture
def rec(tmp_path: Path) -> Rec:
    return Rec(tmp_path / "h.jsonl")


def setup(rec: Rec) -> None:
    """Two agents at sha (ready, not_ready) when sha's PBX is killed at t=10; they belong at ntg next."""
    rec.at(0.0).observe("roster", "topology", {"agents": ROSTER})
    rec.cti(1.0, "sha", {"a00001": ("ready", 1), "a00002": ("not_ready", 1)})
    rec.op(10.0, "invoke", "nemesis", "fault.inject", {**FAULT, "agents": AGENTS})
    rec.op(10.5, "ok", "nemesis", "fault.inject", FAULT)


def polls_show_both_back(rec: Rec, t: float) -> None:
    rec.pbx(t, "ntg", ["1001", "1002"])
    rec.cti(t, "ntg", {"a00001": ("ready", 2), "a00002": ("not_ready", 2)})


def held_msg(rec: Rec, t: float, agent: str, state: str, held: float) -> None:
    v = {"site": "ntg", "agent": agent, "event": "login", "epoch": 2, "state": state, "held": held}
    rec.at(t).observe("cti", "ntg-cti1", v)


def test_the_wire_wins_over_the_polls(rec: Rec) -> None:
    setup(rec)
    rec.register(11.2, "ntg", "1001")
    rec.cti_msg(11.7, "ntg", "a00001", "login", 2, "ready")
    rec.register(12.3, "ntg", "1002")
    held_msg(rec, 14.5, "a00002", "not_ready", 2.0)  # written at 12.5, TCP delivered it at 14.5
    polls_show_both_back(rec, 14.0)  # the poll looked at 14.0, between the write and the delivery
    polls_show_both_back(rec, 45.0)
    v = check_recovery_time(rec.h, bound=30)
    assert v.result == "valid"
    assert v.figures["per_agent"] == {"a00001": pytest.approx(1.7), "a00002": pytest.approx(2.5)}
    assert v.figures["timed_from_wire"] == 2 and v.figures["timed_from_polls"] == 0
    assert v.figures["per_agent_source"] == {"a00001": "wire", "a00002": "wire"}
    assert v.figures["p50"] == pytest.approx(1.7) and v.figures["max"] == pytest.approx(2.5)
    assert v.reason == (
        "all 2 agents recovered within 30.0 s (max 2.50 s; 2 timed from the wire, 0 from polls)"
    )


def test_distinct_wire_times_behind_one_poll(rec: Rec) -> None:
    """The complaint of issue 13: one poll, every agent at its instant. The wire tells them apart."""
    setup(rec)
    for k, a in enumerate(AGENTS):
        rec.register(11.0 + k * 0.3, "ntg", ROSTER[a]["extension"])
        rec.cti_msg(11.1 + k * 0.3, "ntg", a, "login", 2, "ready" if a == "a00001" else "not_ready")
    polls_show_both_back(rec, 40.0)
    v = check_recovery_time(rec.h, bound=60)
    assert v.result == "valid" and len(set(v.figures["per_agent"].values())) == 2
    assert v.figures["per_agent"]["a00002"] == pytest.approx(1.4)


def test_missing_wire_evidence_falls_back_to_the_polls(rec: Rec) -> None:
    setup(rec)
    rec.register(11.2, "ntg", "1001")
    rec.cti_msg(11.7, "ntg", "a00001", "login", 2, "ready")
    rec.register(12.3, "ntg", "1002")  # a00002's CTI connection was not captured: no login on the wire
    polls_show_both_back(rec, 15.0)
    polls_show_both_back(rec, 45.0)
    v = check_recovery_time(rec.h, bound=30)
    assert v.result == "valid"
    assert v.figures["per_agent"] == {"a00001": pytest.approx(1.7), "a00002": pytest.approx(5.0)}
    assert v.figures["per_agent_source"] == {"a00001": "wire", "a00002": "polls"}
    assert v.figures["timed_from_wire"] == 1 and v.figures["timed_from_polls"] == 1
    assert "1 timed from the wire, 1 from polls" in v.reason


def test_a_poll_earlier_than_the_wire_means_the_capture_missed_the_moment(rec: Rec) -> None:
    setup(rec)
    polls_show_both_back(rec, 12.0)  # both back at 12; the capture shows only later refreshes
    rec.register(40.0, "ntg", "1001")
    rec.cti_msg(40.1, "ntg", "a00001", "state", 2, "ready")
    polls_show_both_back(rec, 45.0)
    v = check_recovery_time(rec.h, bound=60)
    assert v.figures["per_agent"]["a00001"] == pytest.approx(2.0)
    assert v.figures["timed_from_polls"] == 2 and v.figures["timed_from_wire"] == 0


def test_wire_evidence_from_before_the_fault_does_not_time_a_recovery(rec: Rec) -> None:
    setup(rec)
    rec.register(5.0, "ntg", "1001")  # before the fault: says nothing of the recovery
    held_msg(rec, 10.8, "a00001", "ready", 1.5)  # captured after the fault, but written at 9.3
    rec.cti_msg(11.0, "ntg", "a00002", "login", 2, "not_ready")
    rec.register(11.5, "ntg", "1002")
    polls_show_both_back(rec, 14.0)
    polls_show_both_back(rec, 45.0)
    v = check_recovery_time(rec.h, bound=30)
    assert v.figures["per_agent_source"] == {"a00001": "polls", "a00002": "wire"}
    assert v.figures["per_agent"]["a00002"] == pytest.approx(1.5)


def test_the_wire_needs_the_earlier_state_at_the_expected_site(rec: Rec) -> None:
    setup(rec)
    rec.register(11.0, "ntg", "1001")
    rec.cti_msg(11.2, "ntg", "a00001", "login", 2, "not_ready")  # back, but not as it was
    rec.cti_msg(11.3, "sha", "a00001", "state", 1, "ready")  # the old site says nothing of the new
    rec.cti_msg(13.0, "ntg", "a00001", "state", 2, "ready")  # its state_ok: now it is
    rec.register(11.0, "ntg", "1002")
    rec.cti_msg(11.4, "ntg", "a00002", "login", 2, "ready")  # not as it was either
    rec.cti_msg(11.6, "ntg", "a00002", "logout", 2)  # out again, and back in its earlier state
    rec.cti_msg(12.6, "ntg", "a00002", "login", 3, "not_ready")
    polls_show_both_back(rec, 45.0)
    v = check_recovery_time(rec.h, bound=60)
    assert v.figures["per_agent"] == {"a00001": pytest.approx(3.0), "a00002": pytest.approx(2.6)}
    assert v.figures["timed_from_wire"] == 2


def test_no_evidence_at_all_is_unknown_never_a_pass(rec: Rec) -> None:
    setup(rec)
    rec.register(11.2, "ntg", "1001")
    rec.cti_msg(11.7, "ntg", "a00001", "login", 2, "ready")  # a00002: nothing, and ntg seen only to 11.7
    v = check_recovery_time(rec.h, bound=30)
    assert v.result == "unknown"
    assert v.figures["recovered"] == 1 and v.figures["timed_from_wire"] == 1
    assert [w["agent"] for w in v.witnesses] == ["a00002"] and v.witnesses[0]["problem"] == "unobserved"
