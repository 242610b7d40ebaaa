"""The split-brain checker and a CTI message TCP delivered late: one captured while its CTI was frozen
(hung, stopped, powered off) was written before the freeze, and says nothing of the session after it
(scenarios/schedules/cti-loss-then-pause.json: 60 % loss held a heartbeat's answer back; TCP delivered it
6 s into the CTI's hang, after its agent had logged in at the other site)."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_checks import Rec

from harness.checks import check_no_split_brain


@pytest.fixture
def rec(tmp_path: Path) -> Rec:
    return Rec(tmp_path / "h.jsonl")


def lossy_then_frozen(rec: Rec, kind: str, late_at: float) -> None:
    f = {"id": "p", "fault": kind, "target": "sha-cti1", "site": "sha"}
    rec.cti_msg(5.0, "sha", "a00001", "login", 1, "ready")
    rec.op(7.0, "invoke", "nemesis", "fault.inject", f)
    rec.op(7.1, "ok", "nemesis", "fault.inject", f)
    rec.cti_msg(10.0, "ntg", "a00001", "login", 2, "ready")
    rec.cti_msg(late_at, "sha", "a00001", "state", 1, "ready")  # a heartbeat's answer, retransmitted
    rec.op(15.0, "invoke", "nemesis", "fault.heal", f)
    rec.op(15.1, "ok", "nemesis", "fault.heal", f)
    rec.cti(16.0, "sha", {})
    rec.cti(16.1, "ntg", {"a00001": ("ready", 2)})


@pytest.mark.parametrize("kind", ["service_pause", "service_stop", "power_off"])
def test_an_answer_captured_while_its_cti_was_frozen_was_written_before(rec: Rec, kind: str) -> None:
    lossy_then_frozen(rec, kind, 12.0)
    v = check_no_split_brain(rec.h)
    assert v.result == "valid", v.reason
    assert v.figures["late_reads"] == 1


@pytest.mark.parametrize("kind", ["blackhole", "port_down"])
def test_an_answer_captured_while_its_cti_was_only_cut_off_still_counts(rec: Rec, kind: str) -> None:
    """Cut off, the CTI still runs and writes: what is captured of it was written then."""
    lossy_then_frozen(rec, kind, 12.0)
    v = check_no_split_brain(rec.h)
    assert v.result == "invalid" and v.witnesses[0]["interval"] == [10.0, 12.0]


def test_an_answer_captured_once_the_heal_began_still_counts(rec: Rec) -> None:
    """From the heal's invoke on the CTI may run again: an answer then may be new (the defect the lease
    check fixed: a CTI answering heartbeats it read after a long hang)."""
    lossy_then_frozen(rec, "service_pause", 15.05)
    v = check_no_split_brain(rec.h)
    assert v.result == "invalid" and v.witnesses[0]["interval"] == [10.0, 15.05]


@pytest.mark.parametrize(("held", "result"), [(9.0, "valid"), (0.01, "invalid"), (None, "invalid")])
def test_an_answer_tcp_held_back_is_dated_when_written(rec: Rec, held: float | None, result: str) -> None:
    """The same run seen through the CTI's `at` stamp (`held`, harness/observe/wire.py): a heartbeat's
    answer written before the hang reached the wire 9 s later, in the heal's window, where the freeze
    alone cannot date it. Written as captured (or not stamped), it is the CTI answering after it came
    back, while the agent was at ntg: split brain."""
    f = {"id": "p", "fault": "service_pause", "target": "sha-cti1", "site": "sha"}
    rec.cti_msg(5.0, "sha", "a00001", "login", 1, "ready")
    rec.op(7.0, "invoke", "nemesis", "fault.inject", f)
    rec.op(7.1, "ok", "nemesis", "fault.inject", f)
    rec.cti_msg(10.0, "ntg", "a00001", "login", 2, "ready")
    rec.op(15.0, "invoke", "nemesis", "fault.heal", f)
    v = {"site": "sha", "agent": "a00001", "event": "state", "epoch": 1, "state": "ready"}
    rec.at(15.05).observe("cti", "sha-cti1", v if held is None else {**v, "held": held})
    rec.op(15.1, "ok", "nemesis", "fault.heal", f)
    rec.cti(16.0, "sha", {})
    rec.cti(16.1, "ntg", {"a00001": ("ready", 2)})
    assert check_no_split_brain(rec.h).result == result


@pytest.mark.parametrize(("held", "result"), [(0.6, "valid"), (0.0, "unknown")])
def test_a_logout_answer_held_back_settles_when_the_session_ended(rec: Rec, held: float, result: str) -> None:
    """explore-58 (30 % loss on the CTI): a snapshot still listed the session, the agent logged in at ntg,
    the next snapshot no longer listed it, and the CTI's logout answer reached the wire only after that.
    Dated by its `at`, it ended before the login at ntg; undated, the snapshots leave the doubt."""
    rec.cti_msg(5.0, "sha", "a00001", "login", 1, "ready")
    rec.cti(10.0, "sha", {"a00001": ("ready", 1)})
    rec.cti(10.0, "ntg", {})
    rec.cti_msg(10.3, "ntg", "a00001", "login", 2, "ready")
    rec.cti(10.5, "sha", {})
    rec.cti(10.5, "ntg", {"a00001": ("ready", 2)})
    v = {"site": "sha", "agent": "a00001", "event": "logout", "epoch": 1}
    rec.at(10.7).observe("cti", "sha-cti1", {**v, "held": held} if held else v)  # written at 10.1
    assert check_no_split_brain(rec.h).result == result
