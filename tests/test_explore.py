"""The schedule runner (harness/scenario/explore.py) with fake changes in place of the lab's: ops start at
their offsets, overlapping ones at once, each recorded under a process of its own so the history pairs
them; ops without a duration are healed at the end; a SIGTERM mid-schedule heals what was made and starts
nothing more; a logout is healed by the agent's login; `schedule_ran` judges lateness and failed ops."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from harness import topology
from harness.checks.schedule_ran import LATE_S, OP_F, SCHEDULE
from harness.checks.schedule_ran import check_schedule_ran as schedule_ran
from harness.drivers.base import Steps
from harness.faults import Change, FaultRefused
from harness.faults.base import FAULT_OPS
from harness.faults.registry import KINDS
from harness.history import History, pair_ops
from harness.lab import Lab
from harness.lab.dryrun import DryRunBackend
from harness.nemesis.schedule import Schedule
from harness.scenario.explore import ScheduleRunner

EVENTS: list[tuple[str, str, float]] = []  # (what, change id, monotonic time)
_lock = threading.Lock()


def _note(what: str, cid: str) -> None:
    with _lock:
        EVENTS.append((what, cid, time.monotonic()))


class FakeChange(Change):
    """Applies and heals nothing but a note; reads itself back from the notes."""

    kind = "fake"
    state: dict[str, bool] = {}

    def check_safety(self) -> None:
        if self.params.get("refuse"):
            raise FaultRefused("fake: refused")

    def plan(self) -> list[tuple[str, str]]:
        return []

    def plan_heal(self) -> list[tuple[str, str]]:
        return []

    def _inject(self) -> None:
        self.state[self.id] = True
        _note("inject", self.id)

    def _heal(self) -> None:
        if self.state.get(self.id):
            _note("heal", self.id)
        self.state[self.id] = False

    def took_effect(self) -> bool:
        return self.state.get(self.id, False)


class FakeFault(FakeChange):
    ops = FAULT_OPS  # recorded as fault.inject / fault.heal, as the faults it stands for


@pytest.fixture
def sc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("HIL_FAULT_JOURNAL", str(tmp_path / "journal.jsonl"))
    for kind in ("loss", "service_pause", "port_down"):
        monkeypatch.setitem(KINDS, kind, FakeFault)
    monkeypatch.setitem(KINDS, "agent_session", FakeChange)
    EVENTS.clear()
    topo = topology.load(None)
    hist = History(tmp_path / "h.jsonl")
    hist.observe(SCHEDULE, "test", {"ops": []})
    yield SimpleNamespace(lab=Lab(topo, DryRunBackend(topo)), history=hist, steps=Steps())
    hist.close()


def schedule(*ops: dict[str, Any]) -> Schedule:
    return Schedule.model_validate({"schema": "hil-schedule/1", "settle": 0.0, "ops": list(ops)})


def times(what: str) -> dict[str, float]:
    return {cid: t for w, cid, t in EVENTS if w == what}


def test_ops_at_their_offsets_overlapping_at_once_each_paired(sc: Any) -> None:
    sched = schedule(
        {"at": 0.0, "kind": "loss", "target": "sha-cti1", "duration": 0.6, "params": {"percent": 5}},
        {"at": 0.2, "kind": "service_pause", "target": "sha-pbx1", "duration": 0.6},
        {"at": 0.4, "kind": "port_down", "target": "sha-phone1"},
    )
    runner = ScheduleRunner(sc, sched)
    t0 = time.monotonic()
    recs = runner.run()
    assert [r.result for r in recs] == ["ok", "ok", "ok"]
    assert all(r.late is not None and 0 <= r.late < LATE_S for r in recs)
    inj, heal = times("inject"), times("heal")
    c0, c1, c2 = (r.change for r in recs)
    assert inj[c1] < heal[c0], "the second fault began while the first was in place"
    assert heal[c0] - inj[c0] >= 0.6 - 0.05 and heal[c1] - inj[c1] >= 0.6 - 0.05
    assert heal[c2] >= t0 + 0.8, "the fault without a duration is held until the final heal"
    pairs, stray = pair_ops(sc.history.events)
    faults = [p for p in pairs if p.invoke.f.startswith("fault.")]
    assert not [s for s in stray if s.f.startswith("fault.")]
    assert len(faults) == 6 and all(p.outcome == "ok" for p in faults)
    assert {p.invoke.process for p in faults} == {"nemesis:0", "nemesis:1", "nemesis:2"}
    assert schedule_ran(sc.history.events).result == "valid"


def test_sigterm_heals_what_was_made_and_starts_nothing_more(sc: Any) -> None:
    sched = schedule(
        {"at": 0.0, "kind": "port_down", "target": "sha-phone1"},
        {"at": 20.0, "kind": "loss", "target": "sha-cti1", "duration": 1.0, "params": {"percent": 5}},
    )
    runner = ScheduleRunner(sc, sched)

    def term_when_applied() -> None:
        deadline = time.monotonic() + 30
        while not times("inject") and time.monotonic() < deadline:
            time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGTERM)

    before = signal.getsignal(signal.SIGTERM)
    threading.Thread(target=term_when_applied, daemon=True).start()
    t0 = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        runner.run()
    assert time.monotonic() - t0 < 15.0
    assert runner.records[0].change in times("heal"), "the fault in place was healed"
    assert runner.records[1].result in ("pending", "skipped") and runner.records[1].started is None
    assert signal.getsignal(signal.SIGTERM) is before, "the signal handler is put back"


def test_login_heals_the_agents_logout(sc: Any) -> None:
    sched = schedule(
        {"at": 0.0, "kind": "agent_logout", "target": "a00003"},
        {"at": 0.3, "kind": "agent_login", "target": "a00003"},
        {"at": 0.3, "kind": "agent_login", "target": "a00004"},
    )
    recs = ScheduleRunner(sc, sched).run()
    assert [r.result for r in recs] == ["ok", "ok", "ok"]
    assert recs[0].change == recs[1].change, "the login is the heal of the logout"
    heals = [e for e in sc.history.events if getattr(e, "f", None) == "change.revert" and e.type == "invoke"]
    assert {"reason": "agent_login", "id": recs[0].change} in [e.value for e in heals]


def test_a_refused_op_fails_and_the_rest_goes_on(sc: Any) -> None:
    sched = schedule(
        {"at": 0.0, "kind": "loss", "target": "sha-cti1", "duration": 0.2, "params": {"refuse": True}},
        {"at": 0.1, "kind": "port_down", "target": "sha-phone1", "duration": 0.2},
    )
    recs = ScheduleRunner(sc, sched).run()
    assert [r.result for r in recs] == ["fail", "ok"]
    v = schedule_ran(sc.history.events)
    assert v.result == "unknown" and v.witnesses[0]["index"] == 0


def _ran(tmp_path: Path, late: float, outcome: str = "ok", recorded: bool = True) -> Any:
    h = History(tmp_path / "ran.jsonl")
    if recorded:
        h.observe(SCHEDULE, "test", {"ops": []})
    h.invoke("schedule:0", OP_F, {"index": 0, "kind": "loss", "target": "x", "at": 1.0, "late": late})
    getattr(h, outcome)("schedule:0", OP_F, {"index": 0}, **({"error": "no"} if outcome == "fail" else {}))
    h.close()
    return schedule_ran(History.load(tmp_path / "ran.jsonl").events)


@pytest.mark.parametrize(
    ("late", "outcome", "recorded", "want"),
    [
        (0.01, "ok", True, "valid"),
        (LATE_S + 0.1, "ok", True, "unknown"),
        (0.01, "fail", True, "unknown"),
        (0.01, "info", True, "unknown"),
        (0.01, "ok", False, "unknown"),
    ],
)
def test_schedule_ran(tmp_path: Path, late: float, outcome: str, recorded: bool, want: str) -> None:
    assert _ran(tmp_path, late, outcome, recorded).result == want
