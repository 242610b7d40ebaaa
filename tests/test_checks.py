"""The checkers, on recorded histories (tests/histories/*.jsonl) and on small ones built in the test.

The recorded histories are written by `write_examples` below, through the real `History` writer with a
fixed clock; `test_recorded_histories_are_current` keeps the files and this script in step. To change one,
edit the script and run `python tests/test_checks.py` from the repository root.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

if __name__ == "__main__":  # run as a script to rewrite the recorded histories
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.checks import (
    Verdict,
    check_capture_complete,
    check_expectations,
    check_faults_healed,
    check_logins_at,
    check_no_lost_call,
    check_no_split_brain,
    check_placement_between,
    check_recovery_time,
    check_refused,
    check_single_registration,
    compose,
    depends_on_capture,
    expectation_outcome,
    percentile,
    phase_time,
)
from harness.history import History

HERE = Path(__file__).parent / "histories"
WALL0 = 1_764_000_000.0
ROSTER = {
    "a00001": {"site": "sha", "extension": "1001"},
    "a00002": {"site": "sha", "extension": "1002"},
    "a00003": {"site": "ntg", "extension": "2001"},
    "a00004": {"site": "ntg", "extension": "2002"},
}
EXT = {a: d["extension"] for a, d in ROSTER.items()}
LAB = {
    "links": {"sha-sw1:Gi0/1": "up", "sha-sw1:Gi0/2": "up", "ntg-sw1:Gi0/1": "up"},
    "processes": {"sha-pbx1:kamailio": "running", "ntg-pbx1:kamailio": "running", "sha-cti1:cti": "running"},
    "taken_by": "controller",
}


# -- building histories ----------------------------------------------------------------------------------


class Rec:
    """A History whose clock is set by hand: `rec.at(12.5).observe(...)`."""

    def __init__(self, path: Path) -> None:
        self.now = 0.0
        self.h = History(path, clock=lambda: self.now, wall_clock=lambda: round(WALL0 + self.now, 6))

    def at(self, t: float) -> History:
        self.now = t
        return self.h

    def pbx(self, t: float, site: str, exts: list[str]) -> None:
        regs = [
            {"extension": e, "contact": f"sip:{e}@198.18.{e[0]}.{int(e[-2:]) + 10}:5060", "expires": 300}
            for e in exts
        ]
        self.at(t).observe("pbx_snapshot", f"{site}-pbx1", {"site": site, "registrations": regs})

    def cti(self, t: float, site: str, sessions: dict[str, tuple[str, int]]) -> None:
        ss = [{"agent": a, "state": s, "epoch": e, "extension": EXT[a]} for a, (s, e) in sessions.items()]
        self.at(t).observe("cti_snapshot", f"{site}-cti1", {"site": site, "sessions": ss})

    def cti_msg(
        self, t: float, site: str, agent: str, event: str, epoch: int, state: str | None = None
    ) -> None:
        v: dict[str, Any] = {"site": site, "agent": agent, "event": event, "epoch": epoch}
        if state is not None:
            v["state"] = state
        self.at(t).observe("cti", f"{site}-cti1", v)

    def register(self, t: float, site: str, ext: str, expires: int = 300) -> None:
        v = {"status": 200, "cseq_method": "REGISTER", "extension": ext, "site": site}
        self.at(t).observe("sip", f"{site}-pbx1", {**v, "expires": expires, "call_id": f"reg-{ext}"})

    def op(
        self, t: float, type_: str, process: str, f: str, value: Any = None, error: str | None = None
    ) -> None:
        self.at(t).append(type_, process=process, f=f, source=process, value=value, error=error)


def baseline(r: Rec) -> None:
    """The lab before any fault: four agents logged in at home, one call answered."""
    r.at(0.5).observe("lab_snapshot", "controller", LAB)
    r.at(1.0).observe("roster", "topology", {"agents": ROSTER})
    r.pbx(2.0, "sha", ["1001", "1002"])
    r.pbx(2.05, "ntg", ["2001", "2002"])
    r.cti(2.1, "sha", {"a00001": ("ready", 1), "a00002": ("not_ready", 1)})
    r.cti(2.15, "ntg", {"a00003": ("ready", 1), "a00004": ("ready", 1)})
    r.op(3.0, "invoke", "caller-1", "call.place", {"call": "c1", "to": "4000"})
    r.op(4.0, "ok", "caller-1", "call.place", {"call": "c1", "answered_by": "a00003", "site": "ntg"})


FAULT = {"id": "f1", "fault": "process_kill", "target": "sha-pbx1", "site": "sha"}
ALL_NTG = {"a00001": ("ready", 2), "a00002": ("not_ready", 2), "a00003": ("ready", 1), "a00004": ("ready", 1)}


def pbx_failover(
    r: Rec,
    *,
    split_brain: bool = False,
    lost_agent: bool = False,
    late_agent: bool = False,
    heal_fails: bool = False,
    lost_call: bool = False,
    double_registration: bool = False,
    drops: int = 0,
    lab_unreadable: bool = False,
) -> None:
    """sha's PBX is killed at t=10; the sha agents move to ntg; the PBX is healed at t=60.

    a00001 (ready) recovers at 14.2 s after the fault, a00002 (not_ready) at 6.0 s, unless a variant
    says otherwise.
    """
    baseline(r)
    r.op(10.0, "invoke", "nemesis", "fault.inject", FAULT)
    r.op(10.2, "ok", "nemesis", "fault.inject", FAULT)
    r.pbx(11.0, "ntg", ["2001", "2002"])
    r.cti(11.1, "sha", {"a00001": ("ready", 1), "a00002": ("not_ready", 1)})  # the CTI is still up
    if not split_brain:
        r.cti_msg(13.0, "sha", "a00001", "logout", 1)
    r.register(13.5, "ntg", "1001")
    r.cti_msg(14.0, "ntg", "a00001", "login", 2, "not_ready")
    r.cti_msg(14.2, "ntg", "a00001", "state", 2, "ready")
    r.cti_msg(15.0, "sha", "a00002", "logout", 1)
    if not lost_agent:
        t2 = 45.0 if late_agent else 15.5
        r.register(t2, "ntg", "1002")
        r.cti_msg(t2 + 0.5, "ntg", "a00002", "login", 2, "not_ready")
    if split_brain:  # sha still holds a00001 long after it logged in at ntg, then fences it
        r.cti(20.0, "sha", {"a00001": ("ready", 1)})
        r.cti_msg(21.0, "sha", "a00001", "fenced", 1)
    else:
        r.cti(20.0, "sha", {})
    r.op(20.0, "invoke", "caller-1", "call.place", {"call": "c2", "to": "4000"})
    r.op(21.0, "fail", "caller-1", "call.place", {"call": "c2"}, error="503 Service Unavailable")
    r.op(22.0, "invoke", "caller-2", "call.place", {"call": "c3", "to": "4000"})
    if not lost_call:
        r.op(23.0, "ok", "caller-2", "call.place", {"call": "c3", "answered_by": "a00001", "site": "ntg"})
    r.op(60.0, "invoke", "nemesis", "fault.heal", FAULT)
    if heal_fails:
        r.op(61.0, "fail", "nemesis", "fault.heal", FAULT, error="ssh sha-pbx1: timed out")
    else:
        r.op(61.0, "ok", "nemesis", "fault.heal", FAULT)
    ntg = {a: s for a, s in ALL_NTG.items() if not (lost_agent and a == "a00002")}
    r.pbx(65.0, "sha", ["1001"] if double_registration else [])
    r.pbx(65.05, "ntg", [EXT[a] for a in ntg])
    r.cti(65.1, "sha", {})
    r.cti(65.15, "ntg", ntg)
    for site, n in (("sha", 1840), ("ntg", 2210)):
        stats = {"capture": f"{site}-sw1-span", "packets": n, "drops": drops if site == "sha" else 0}
        r.at(66.0).observe(
            "capture_stats", f"{site}-sw1", {**stats, "complete": not (drops and site == "sha")}
        )
    lab = {**LAB, "processes": {**LAB["processes"], "sha-pbx1:kamailio": "stopped"}} if heal_fails else LAB
    if lab_unreadable:  # the backend had no status at the end (a physical lab whose switches did not answer)
        lab = {"links": {}, "processes": {}, "management": {}, "complete": False, "problems": ["no status"]}
    r.at(67.0).observe("lab_snapshot", "controller", lab)


def no_observations(r: Rec) -> None:
    """The observers died with the fault: it was injected and healed, and nothing was observed after it."""
    baseline(r)
    r.op(10.0, "invoke", "nemesis", "fault.inject", FAULT)
    r.op(10.2, "ok", "nemesis", "fault.inject", FAULT)
    r.op(60.0, "invoke", "nemesis", "fault.heal", FAULT)
    r.op(61.0, "ok", "nemesis", "fault.heal", FAULT)


def no_fault(r: Rec) -> None:
    """A run that never injected a fault (a scenario that forgot its trigger)."""
    baseline(r)
    r.pbx(20.0, "sha", ["1001", "1002"])
    r.pbx(20.05, "ntg", ["2001", "2002"])
    r.cti(20.1, "sha", {"a00001": ("ready", 1), "a00002": ("not_ready", 1)})
    r.cti(20.15, "ntg", {"a00003": ("ready", 1), "a00004": ("ready", 1)})
    r.at(21.0).observe(
        "capture_stats", "sha-sw1", {"capture": "sha-sw1-span", "packets": 90, "drops": 0, "complete": True}
    )
    r.at(22.0).observe("lab_snapshot", "controller", LAB)


EXAMPLES: dict[str, Callable[[Rec], None]] = {
    "valid_pbx_failover": pbx_failover,
    "invalid_split_brain": lambda r: pbx_failover(r, split_brain=True),
    "invalid_lost_agent": lambda r: pbx_failover(r, lost_agent=True),
    "invalid_rto_over_bound": lambda r: pbx_failover(r, late_agent=True),
    "invalid_unhealed_fault": lambda r: pbx_failover(r, heal_fails=True),
    "invalid_lost_call": lambda r: pbx_failover(r, lost_call=True),
    "invalid_double_registration": lambda r: pbx_failover(r, double_registration=True),
    "unknown_capture_drops": lambda r: pbx_failover(r, drops=12),
    "unknown_no_observations": no_observations,
    "unknown_no_fault": no_fault,
    "unknown_lab_unreadable": lambda r: pbx_failover(r, lab_unreadable=True),
}


def write_examples(directory: Path) -> list[Path]:
    """(Re)write every recorded history in `directory`; returns the files written."""
    out = []
    for name, build in EXAMPLES.items():
        p = directory / f"{name}.jsonl"
        p.unlink(missing_ok=True)
        r = Rec(p)
        build(r)
        r.h.close()
        out.append(p)
    return out


def load(name: str) -> History:
    return History.load(HERE / f"{name}.jsonl")


def test_recorded_histories_are_current(tmp_path: Path) -> None:
    for p in write_examples(tmp_path):
        assert p.read_bytes() == (HERE / p.name).read_bytes(), f"{p.name}: run python tests/test_checks.py"


# -- the recorded histories, checker by checker ----------------------------------------------------------

BOUND = 30.0
checked_recovery = depends_on_capture(check_recovery_time)
checked_split_brain = depends_on_capture(check_no_split_brain)

CHECKS: dict[str, Callable[[History], Verdict]] = {
    "single_registration": check_single_registration,
    "no_split_brain": checked_split_brain,
    "recovery_time": lambda h: checked_recovery(h, bound=BOUND),
    "no_lost_call": check_no_lost_call,
    "faults_healed": check_faults_healed,
    "capture_complete": check_capture_complete,
}
V, X, U = "valid", "invalid", "unknown"  # X: invalid
EXPECTED: dict[str, dict[str, str]] = {
    # history: checker -> result
    "valid_pbx_failover": dict.fromkeys(CHECKS, V),
    "invalid_split_brain": {**dict.fromkeys(CHECKS, V), "no_split_brain": X},
    "invalid_lost_agent": {**dict.fromkeys(CHECKS, V), "single_registration": X, "recovery_time": X},
    "invalid_rto_over_bound": {**dict.fromkeys(CHECKS, V), "recovery_time": X},
    "invalid_unhealed_fault": {**dict.fromkeys(CHECKS, V), "faults_healed": X},
    "invalid_lost_call": {**dict.fromkeys(CHECKS, V), "no_lost_call": X},
    "invalid_double_registration": {**dict.fromkeys(CHECKS, V), "single_registration": X},
    "unknown_capture_drops": {
        **dict.fromkeys(CHECKS, V),
        "no_split_brain": U,
        "recovery_time": U,
        "capture_complete": U,
    },
    "unknown_no_observations": {
        "single_registration": U,
        "no_split_brain": U,  # no final read of the CTIs
        "recovery_time": U,
        "no_lost_call": V,
        "faults_healed": U,  # healed, but no lab snapshot at the end
        "capture_complete": U,
    },
    "unknown_no_fault": {**dict.fromkeys(CHECKS, V), "single_registration": U, "recovery_time": U},
    # healed, but the lab could not be read at the end: no evidence it ends as it began
    "unknown_lab_unreadable": {**dict.fromkeys(CHECKS, V), "faults_healed": U},
}


@pytest.mark.parametrize(
    ("history", "checker"), [(h, c) for h in EXPECTED for c in CHECKS], ids=lambda x: str(x)
)
def test_recorded_history(history: str, checker: str) -> None:
    v = CHECKS[checker](load(history))
    assert v.name == checker
    assert v.result == EXPECTED[history][checker], v
    if v.result != "valid":
        assert v.reason


@pytest.mark.parametrize("history", list(EXPECTED))
def test_composed_verdict_of_each_recorded_history(history: str) -> None:
    overall = compose(*(c(load(history)) for c in CHECKS.values()))
    assert overall.result == history.split("_")[0]
    assert overall.figures == EXPECTED[history]


def test_valid_failover_figures() -> None:
    v = check_recovery_time(load("valid_pbx_failover"), bound=BOUND)
    assert v.result == "valid"
    f = v.figures
    assert (f["affected"], f["recovered"]) == (2, 2)
    assert f["per_agent"] == {"a00001": 4.2, "a00002": 6.0}
    assert (f["p50"], f["p95"], f["max"]) == (4.2, 6.0, 6.0)
    assert f["fault"] == "f1" and f["observed_for"] == 55.15
    r = check_single_registration(load("valid_pbx_failover"))
    assert r.figures["affected"] == 2 and r.figures["cut"] == 61.0
    c = check_no_lost_call(load("valid_pbx_failover"))
    assert c.figures == {
        "placed": 3,
        "answered": 2,
        "failed": 1,
        "lost": 0,
        "fail_reasons": {"503 Service Unavailable": 1},
    }


def test_split_brain_witness() -> None:
    v = check_no_split_brain(load("invalid_split_brain"))
    assert v.witnesses == [
        {"agent": "a00001", "sites": ["sha", "ntg"], "epochs": [1, 2], "interval": [14.0, 21.0]}
    ]
    assert "a00001" in v.reason


def test_lost_agent_witnesses() -> None:
    h = load("invalid_lost_agent")
    v = check_recovery_time(h, bound=BOUND)
    assert v.reason == "1 agents lost"
    assert v.witnesses == [
        {
            "agent": "a00002",
            "expected_site": "ntg",
            "missing": ["registration of 1002 at ntg", "CTI session at ntg"],
            "problem": "lost",
        }
    ]
    assert (v.figures["recovered"], v.figures["affected"], v.figures["max"]) == (1, 2, 4.2)
    s = check_single_registration(h)
    assert s.witnesses == [
        {"agent": "a00002", "extension": "1002", "expected": "ntg", "registered_at": [], "sessions_at": []}
    ]


def test_rto_over_bound_witness() -> None:
    v = check_recovery_time(load("invalid_rto_over_bound"), bound=BOUND)
    assert v.witnesses == [{"agent": "a00002", "problem": "over_bound", "recovery": 35.5, "bound": 30.0}]
    assert v.figures["max"] == 35.5
    assert check_recovery_time(load("invalid_rto_over_bound"), bound=40).result == "valid"
    assert check_recovery_time(load("valid_pbx_failover"), bound=5).witnesses == [
        {"agent": "a00002", "problem": "over_bound", "recovery": 6.0, "bound": 5}
    ]


def test_unhealed_fault_witnesses() -> None:
    v = check_faults_healed(load("invalid_unhealed_fault"))
    assert v.witnesses == [
        {"fault": "f1", "problem": "heal failed: ssh sha-pbx1: timed out", "injected_at": 10.0},
        {
            "problem": "lab changed",
            "field": "processes",
            "key": "sha-pbx1:kamailio",
            "before": "running",
            "after": "stopped",
        },
    ]


def test_lost_call_witness() -> None:
    v = check_no_lost_call(load("invalid_lost_call"))
    assert v.witnesses == [
        {"process": "caller-2", "t": 22.0, "value": {"call": "c3", "to": "4000"}, "problem": "no completion"}
    ]


def test_double_registration_witness() -> None:
    v = check_single_registration(load("invalid_double_registration"))
    assert v.witnesses == [
        {
            "agent": "a00001",
            "extension": "1001",
            "expected": "ntg",
            "registered_at": ["ntg", "sha"],
            "sessions_at": ["ntg"],
        }
    ]


def test_capture_drops_make_dependent_checks_unknown() -> None:
    h = load("unknown_capture_drops")
    v = checked_recovery(h, bound=BOUND)
    assert v.result == "unknown" and v.name == "recovery_time"
    assert v.reason == "capture dropped 12 packets on sha-sw1-span"
    assert v.figures["unchecked_result"] == "valid" and v.figures["p95"] == 6.0
    assert check_recovery_time(h, bound=BOUND).result == "valid"  # unwrapped, it does not look
    c = check_capture_complete(h)
    assert c.witnesses == [{"capture": "sha-sw1-span", "drops": 12, "complete": False, "packets": 1840}]


def test_no_observations_reason() -> None:
    v = check_recovery_time(load("unknown_no_observations"), bound=BOUND)
    assert v.reason == "no observations after fault f1 began"
    s = check_single_registration(load("unknown_no_observations"))
    assert s.reason.startswith("no final pbx_snapshot of ntg, pbx_snapshot of sha")
    b = check_no_split_brain(load("unknown_no_observations"))
    assert b.reason == "no cti_snapshot of ntg, sha after the last fault operation"


def test_no_fault_reasons() -> None:
    h = load("unknown_no_fault")
    assert check_recovery_time(h, bound=BOUND).reason == "no fault injected in the history"
    assert check_single_registration(h).result == "unknown"
    # With the agents and where they should be given, the same history can be judged.
    v = check_single_registration(h, expect="home", affected=list(ROSTER))
    assert v.result == "valid", v
    assert check_faults_healed(h).reason == "no fault injected; lab ends as it began"


# -- percentiles and compose -----------------------------------------------------------------------------


def test_percentile_nearest_rank() -> None:
    hundred = list(range(1, 101))
    assert percentile(hundred, 50) == 50
    assert percentile(hundred, 95) == 95
    assert percentile(hundred, 99) == 99
    assert percentile(hundred, 100) == 100
    assert percentile(reversed(hundred), 95) == 95  # order does not matter
    assert percentile([15, 20, 35, 40, 50], 30) == 20  # the textbook example
    assert percentile([15, 20, 35, 40, 50], 40) == 20
    assert percentile([15, 20, 35, 40, 50], 50) == 35
    assert percentile([15, 20, 35, 40, 50], 100) == 50
    assert percentile([4.2, 6.0], 50) == 4.2
    assert percentile([4.2, 6.0], 95) == 6.0
    assert percentile([7.0], 1) == 7.0
    assert percentile([3, 1, 2, 4], 7) == 1  # 7 * 4 / 100 rounds up to rank 1, without float trouble
    for bad in (0, -5, 101):
        with pytest.raises(ValueError):
            percentile([1, 2], bad)
    with pytest.raises(ValueError):
        percentile([], 50)


def test_compose() -> None:
    ok = Verdict("a", "valid", "fine")
    unk = Verdict("b", "unknown", "capture dropped 3 packets on x")
    bad = Verdict("c", "invalid", "1 agents lost", [{"agent": "a00001"}])
    assert compose(ok, ok).result == "valid"
    assert compose(ok, unk).result == "unknown"
    assert compose(unk, bad, ok).result == "invalid"
    v = compose(ok, unk, bad)
    assert v.reason == "c: 1 agents lost"
    assert v.witnesses == [bad.to_dict()]
    assert v.figures == {"a": "valid", "b": "unknown", "c": "invalid"}
    assert compose().result == "unknown"
    with pytest.raises(ValueError):
        Verdict("x", "maybe", "")  # type: ignore[arg-type]


# -- edge cases on small histories ----------------------------------------------------------------------


@pytest.fixture
def rec(tmp_path: Path) -> Rec:
    return Rec(tmp_path / "h.jsonl")


def test_split_brain_only_possible_is_unknown(rec: Rec) -> None:
    """Snapshots only: sha listed a00001 at 9 and no longer at 12; ntg listed it at 11 but not at 8. Both
    may have held it from 8 to 12, or never at once: no proof either way."""
    rec.cti(8.0, "ntg", {})
    rec.cti(9.0, "sha", {"a00001": ("ready", 1)})
    rec.cti(11.0, "ntg", {"a00001": ("ready", 2)})
    rec.cti(12.0, "sha", {})
    v = check_no_split_brain(rec.h)
    assert v.result == "unknown"
    assert v.witnesses == [
        {"agent": "a00001", "sites": ["sha", "ntg"], "epochs": [1, 2], "possible_interval": [8.0, 12.0]}
    ]


def test_split_brain_from_snapshots_alone(rec: Rec) -> None:
    rec.cti(9.0, "sha", {"a00001": ("ready", 1)})
    rec.cti(11.0, "ntg", {"a00001": ("ready", 2)})
    rec.cti(12.0, "sha", {"a00001": ("ready", 1)})
    rec.cti(13.0, "ntg", {"a00001": ("ready", 2)})
    v = check_no_split_brain(rec.h)
    assert v.result == "invalid" and v.witnesses[0]["interval"] == [11.0, 12.0]


def test_split_brain_killed_cti_ends_its_sessions(rec: Rec) -> None:
    """A killed CTI holds no sessions: the fault's `ends_sessions` closes them at the kill."""
    kill = {"id": "k", "fault": "process_kill", "target": "sha-cti1", "site": "sha", "ends_sessions": True}
    rec.cti(9.0, "sha", {"a00001": ("ready", 1)})
    rec.op(10.0, "invoke", "nemesis", "fault.inject", kill)
    rec.op(10.1, "ok", "nemesis", "fault.inject", kill)
    rec.cti_msg(14.0, "ntg", "a00001", "login", 2, "ready")
    rec.op(30.0, "invoke", "nemesis", "fault.heal", kill)
    rec.op(31.0, "ok", "nemesis", "fault.heal", kill)
    rec.cti(32.0, "sha", {})
    rec.cti(32.1, "ntg", {"a00001": ("ready", 2)})
    assert check_no_split_brain(rec.h).result == "valid"
    # Without knowing the kill ended the session, sha's session may have lasted until t=32.
    without = [e for e in rec.h if not (getattr(e, "f", None) == "fault.inject")]
    assert check_no_split_brain(without).result == "unknown"


@pytest.mark.parametrize("kind", ["service_pause", "blackhole", "port_down"])
def test_split_brain_a_silenced_cti_served_nobody_until_healed(rec: Rec, kind: str) -> None:
    """Found by `hil explore` (cti-pause-8s): sha's CTI hung 8 s, its agents logged in at ntg, and when it
    came back their sessions were gone (lease). Last seen before the silence and never after: those sessions
    served nobody from the silence on, so there is no doubt to report; a lapsed fence read after the heal
    says only that the session is over by then."""
    f = {"id": "p", "fault": kind, "target": "sha-cti1", "site": "sha"}
    rec.cti_msg(5.0, "sha", "a00001", "login", 1, "ready")
    rec.cti_msg(6.0, "sha", "a00001", "state", 1, "ready")
    rec.op(7.0, "invoke", "nemesis", "fault.inject", f)
    rec.op(7.1, "ok", "nemesis", "fault.inject", f)
    rec.cti_msg(10.0, "ntg", "a00001", "login", 2, "ready")
    rec.op(15.0, "invoke", "nemesis", "fault.heal", f)
    rec.op(15.1, "ok", "nemesis", "fault.heal", f)
    rec.cti_msg(15.2, "sha", "a00001", "lapsed", 1)
    rec.cti(16.0, "sha", {})
    rec.cti(16.1, "ntg", {"a00001": ("ready", 2)})
    assert check_no_split_brain(rec.h).result == "valid"
    # Not known to have taken effect (no ok): the session may have lasted until the lapsed fence.
    unsure = [e for e in rec.h if not (getattr(e, "f", None) == "fault.inject" and e.type == "ok")]
    assert check_no_split_brain(unsure).result == "unknown"


def test_split_brain_a_session_seen_after_the_silence_is_not_excused(rec: Rec) -> None:
    """The CTI came back and still served a00001 at 15.5 while it was active at ntg: split brain."""
    f = {"id": "p", "fault": "service_pause", "target": "sha-cti1", "site": "sha"}
    rec.cti_msg(5.0, "sha", "a00001", "login", 1, "ready")
    rec.op(7.0, "invoke", "nemesis", "fault.inject", f)
    rec.op(7.1, "ok", "nemesis", "fault.inject", f)
    rec.cti_msg(10.0, "ntg", "a00001", "login", 2, "ready")
    rec.op(15.0, "invoke", "nemesis", "fault.heal", f)
    rec.op(15.1, "ok", "nemesis", "fault.heal", f)
    rec.cti_msg(15.5, "sha", "a00001", "state", 1, "ready")
    rec.cti(16.0, "sha", {})
    rec.cti(16.1, "ntg", {"a00001": ("ready", 2)})
    v = check_no_split_brain(rec.h)
    assert v.result == "invalid" and v.witnesses[0]["interval"] == [10.0, 15.5]


def test_split_brain_exact_handover_at_one_instant_is_not_overlap(rec: Rec) -> None:
    rec.cti_msg(5.0, "sha", "a00001", "login", 1, "ready")
    rec.cti_msg(10.0, "sha", "a00001", "fenced", 1)
    rec.cti_msg(10.0, "ntg", "a00001", "login", 2, "ready")
    assert check_no_split_brain(rec.h).result == "valid"


def test_split_brain_new_epoch_at_one_site_is_not_split(rec: Rec) -> None:
    rec.cti(1.0, "ntg", {})
    rec.cti(2.0, "sha", {"a00001": ("ready", 1)})
    rec.cti(3.0, "sha", {"a00001": ("ready", 2)})
    rec.cti(4.0, "ntg", {})
    v = check_no_split_brain(rec.h)
    assert v.result == "valid" and v.figures["sessions"] == 2


def test_split_brain_needs_evidence_from_every_site(rec: Rec) -> None:
    assert check_no_split_brain(rec.h).reason.startswith("no CTI evidence")
    rec.at(0.1).observe("roster", "topology", {"agents": ROSTER})
    rec.cti(1.0, "sha", {"a00001": ("ready", 1)})
    v = check_no_split_brain(rec.h)
    assert v.result == "unknown" and v.reason == "no CTI evidence from ntg"


def test_agent_state_reads_count_as_session_evidence(rec: Rec) -> None:
    rec.cti(1.0, "ntg", {})
    rec.at(2.0).observe(
        "agent_state", "sha-cti1", {"site": "sha", "agent": "a00001", "state": "ready", "epoch": 1}
    )
    rec.at(3.0).observe(
        "agent_state", "ntg-cti1", {"site": "ntg", "agent": "a00001", "state": "ready", "epoch": 2}
    )
    rec.at(4.0).observe(
        "agent_state", "sha-cti1", {"site": "sha", "agent": "a00001", "state": "ready", "epoch": 1}
    )
    rec.at(5.0).observe(
        "agent_state", "sha-cti1", {"site": "sha", "agent": "a00001", "state": "logged_out", "epoch": 1}
    )
    v = check_no_split_brain(rec.h)
    assert v.result == "invalid" and v.witnesses[0]["interval"] == [3.0, 3.0]


def recovery_setup(rec: Rec, *, before: str = "ready") -> None:
    rec.at(0.0).observe("roster", "topology", {"agents": ROSTER})
    rec.cti(1.0, "sha", {"a00001": (before, 1)})
    rec.op(10.0, "invoke", "nemesis", "fault.inject", {**FAULT, "agents": ["a00001"]})
    rec.op(10.5, "ok", "nemesis", "fault.inject", FAULT)


def test_recovery_unobserved_before_the_bound_is_unknown(rec: Rec) -> None:
    recovery_setup(rec)
    rec.register(12.0, "ntg", "1001")
    v = check_recovery_time(rec.h, bound=30)
    assert v.result == "unknown"
    assert v.witnesses[0]["problem"] == "unobserved" and v.figures["observed_for"] == 2.0
    rec.cti(45.0, "ntg", {})  # observed past the bound, still not logged in: lost
    v = check_recovery_time(rec.h, bound=30)
    assert v.result == "invalid"
    assert v.witnesses[0]["missing"] == ["CTI session at ntg"]


def test_recovery_lost_needs_observations_of_the_expected_site(rec: Rec) -> None:
    recovery_setup(rec)
    rec.cti(45.0, "sha", {})  # long after the bound, but about the wrong site
    v = check_recovery_time(rec.h, bound=30)
    assert v.result == "unknown" and v.witnesses[0]["detail"] == "observations of ntg end 0.0s in"


def test_recovery_needs_the_earlier_state(rec: Rec) -> None:
    recovery_setup(rec, before="not_ready")
    rec.register(12.0, "ntg", "1001")
    rec.cti_msg(13.0, "ntg", "a00001", "login", 2, "ready")  # logged in, but not as it was
    rec.cti(50.0, "ntg", {"a00001": ("ready", 2)})
    v = check_recovery_time(rec.h, bound=30)
    assert v.result == "invalid" and v.witnesses[0]["missing"] == ["state not_ready (is ready)"]
    rec.at(51.0).observe("agent_state", "ntg-cti1", {"site": "ntg", "agent": "a00001", "state": "not_ready"})
    v = check_recovery_time(rec.h, bound=60)
    assert v.result == "valid" and v.figures["per_agent"] == {"a00001": 41.0}


def test_recovery_from_a_call_accepts_ready_or_not_ready(rec: Rec) -> None:
    recovery_setup(rec, before="on_call")
    rec.cti_msg(13.0, "ntg", "a00001", "login", 2, "not_ready")
    rec.register(14.0, "ntg", "1001")  # the later condition decides the moment
    v = check_recovery_time(rec.h, bound=30)
    assert v.result == "valid" and v.figures["max"] == 4.0


def test_recovery_unregister_and_registration_table(rec: Rec) -> None:
    recovery_setup(rec)
    rec.register(12.0, "ntg", "1001")
    rec.register(12.5, "ntg", "1001", expires=0)  # unregistered again
    rec.cti_msg(13.0, "ntg", "a00001", "login", 2, "ready")
    rec.pbx(16.0, "ntg", ["1001"])
    v = check_recovery_time(rec.h, bound=30)
    assert v.figures["per_agent"] == {"a00001": 6.0}


def test_recovery_without_baseline_is_unknown(rec: Rec) -> None:
    rec.at(0.0).observe("roster", "topology", {"agents": ROSTER})
    rec.op(10.0, "invoke", "nemesis", "fault.inject", {**FAULT, "agents": ["a00001"]})
    rec.register(12.0, "ntg", "1001")
    rec.cti_msg(13.0, "ntg", "a00001", "login", 2, "ready")
    v = check_recovery_time(rec.h, bound=30)
    assert v.result == "unknown" and v.witnesses[0]["problem"] == "no_baseline"


def test_recovery_ignores_a_failed_inject_and_selects_by_id(rec: Rec) -> None:
    recovery_setup(rec)
    other = {"id": "f0", "fault": "port_down", "target": "ntg-sw1", "site": "ntg"}
    rec.op(5.0, "invoke", "nemesis-2", "fault.inject", other)
    rec.op(5.1, "fail", "nemesis-2", "fault.inject", other, error="switch refused")
    rec.register(12.0, "ntg", "1001")
    rec.cti_msg(13.0, "ntg", "a00001", "login", 2, "ready")
    v = check_recovery_time(rec.h, bound=30)
    assert v.result == "valid" and v.figures["fault"] == "f1" and v.figures["max"] == 3.0
    assert check_recovery_time(rec.h, bound=30, fault="f0").result == "unknown"
    assert check_recovery_time(rec.h, bound=30, fault="f1", expect={"a00001": "ntg"}).result == "valid"
    assert check_recovery_time(rec.h, bound=30, expect={"a00009": "ntg"}).result == "unknown"


def test_no_lost_call_edges(rec: Rec) -> None:
    v = check_no_lost_call(rec.h)
    assert v.result == "unknown" and v.reason == "0 calls placed, at least 1 needed"
    rec.op(1.0, "invoke", "caller-1", "call.place", {"call": "c1"})
    rec.op(2.0, "ok", "caller-1", "call.place")
    assert check_no_lost_call(rec.h).result == "valid"
    assert check_no_lost_call(rec.h, min_calls=2).result == "unknown"
    rec.op(3.0, "invoke", "caller-1", "call.place", {"call": "c2"})
    rec.op(4.0, "info", "caller-1", "call.place", error="caller crashed")
    rec.op(5.0, "invoke", "caller-2", "call.place", {"call": "c3"})
    rec.op(6.0, "fail", "caller-2", "call.place")
    v = check_no_lost_call(rec.h)
    assert v.result == "invalid"
    assert [w["problem"] for w in v.witnesses] == ["outcome unknown (info)", "failed without a reason"]


def test_faults_healed_edges(rec: Rec) -> None:
    assert check_faults_healed(rec.h).result == "unknown"
    rec.at(0.0).observe("lab_snapshot", "controller", LAB)
    failed = {"id": "f0", "target": "ntg-sw1"}
    rec.op(1.0, "invoke", "nemesis", "fault.inject", failed)
    rec.op(1.1, "fail", "nemesis", "fault.inject", failed, error="refused")  # never made: needs no heal
    rec.op(2.0, "invoke", "nemesis", "fault.inject", {"id": "f1"})
    rec.op(2.1, "ok", "nemesis", "fault.inject", {"id": "f1"})
    rec.op(3.0, "invoke", "nemesis", "fault.heal", {"id": "f1"})
    v = check_faults_healed(rec.h)
    assert v.result == "invalid" and v.witnesses[0]["problem"] == "heal never completed"
    rec.op(3.5, "ok", "nemesis", "fault.heal", {"id": "f1"})
    v = check_faults_healed(rec.h)
    assert (
        v.result == "unknown"
        and v.reason == "1 lab_snapshot observations, need one at the start and one at the end"
    )
    rec.at(4.0).observe("lab_snapshot", "controller", {**LAB, "taken_by": "someone else"})  # not compared
    assert check_faults_healed(rec.h).result == "valid"
    links = {**LAB["links"], "sha-sw1:Gi0/2": "down"}
    rec.at(5.0).observe("lab_snapshot", "controller", {**LAB, "links": links})
    v = check_faults_healed(rec.h)
    assert v.result == "invalid" and v.witnesses[0]["key"] == "sha-sw1:Gi0/2"


def test_depends_on_capture_without_stats(rec: Rec) -> None:
    recovery_setup(rec)
    rec.pbx(12.0, "ntg", ["1001"])
    rec.cti(13.0, "ntg", {"a00001": ("ready", 2)})
    # Snapshots only, nothing captured: capture completeness does not matter.
    assert checked_recovery(rec.h, bound=30).result == "valid"
    rec.register(14.0, "ntg", "1001")  # now the history holds captured messages but no capture stats
    v = checked_recovery(rec.h, bound=30)
    assert v.result == "unknown" and "not recorded" in v.reason
    rec.at(15.0).observe(
        "capture_stats", "ntg-sw1", {"name": "ntg", "packets_captured": 10, "complete": True}
    )
    assert checked_recovery(rec.h, bound=30).result == "valid"
    # tcpdump's own counters, as harness.capture.CaptureResult.to_dict writes them
    rec.at(16.0).observe(
        "capture_stats",
        "ntg-sw1",
        {"name": "ntg", "packets_dropped_by_kernel": 3, "packets_dropped_by_interface": 1, "complete": False},
    )
    assert checked_recovery(rec.h, bound=30).reason == "capture dropped 4 packets on ntg"


def test_checkers_are_pure() -> None:
    h = load("valid_pbx_failover")
    before = [e.to_dict() for e in h]
    for c in CHECKS.values():
        assert c(h) == c(h)
    assert [e.to_dict() for e in h] == before


if __name__ == "__main__":
    for path in write_examples(HERE):
        print(path)


def _snapshot_in_flight(rec: Rec, read_ms: float | None) -> None:
    """sha's fence of a00001 is captured at 10.00 and ntg's login at 10.05; a sha snapshot whose query left
    at 9.95 and whose reply arrived at 10.10 still lists the old session."""
    rec.cti(9.0, "sha", {"a00001": ("ready", 1)})
    rec.cti(9.0, "ntg", {})
    rec.cti_msg(10.0, "sha", "a00001", "fenced", 1)
    rec.cti_msg(10.05, "ntg", "a00001", "login", 2, "ready")
    v = {"site": "sha", "sessions": [{"agent": "a00001", "state": "ready", "epoch": 1, "extension": "1001"}]}
    if read_ms is not None:
        v["read_ms"] = read_ms
    rec.at(10.1).observe("cti_snapshot", "sha-cti1", v)
    rec.cti(11.0, "sha", {})
    rec.cti(11.0, "ntg", {"a00001": ("ready", 2)})


def test_snapshot_older_than_a_captured_fence_is_no_split_brain(rec: Rec) -> None:
    _snapshot_in_flight(rec, read_ms=150.0)
    assert check_no_split_brain(rec.h).result == "valid"


def test_snapshot_after_a_captured_fence_is_split_brain(rec: Rec) -> None:
    """The same listing with no read window (or one that ends before the fence) is a real overlap."""
    _snapshot_in_flight(rec, read_ms=None)
    assert check_no_split_brain(rec.h).result == "invalid"


def test_split_brain_late_read_of_an_ended_session_is_not_a_return(rec: Rec) -> None:
    """sha's CTI wrote a state reply while its port was down; TCP delivered it when the cut healed, long
    after sha's snapshots stopped listing the session and the agent logged in at ntg. A session is its epoch
    and begins with a login: the late read of the ended epoch opens nothing."""
    rec.cti_msg(5.0, "sha", "a00001", "login", 1, "ready")
    rec.cti(6.0, "sha", {"a00001": ("ready", 1)})
    rec.cti(6.0, "ntg", {})
    rec.cti(9.0, "sha", {})  # the lease ended it
    rec.cti_msg(11.0, "ntg", "a00001", "login", 2, "ready")
    rec.cti_msg(15.0, "sha", "a00001", "state", 1, "ready")  # captured when the cut healed
    rec.cti(16.0, "sha", {})
    rec.cti(16.0, "ntg", {"a00001": ("ready", 2)})
    v = check_no_split_brain(rec.h)
    assert v.result == "valid" and v.figures["late_reads"] == 1
    # the same read with an epoch never seen ending is a session at sha: two sites at once
    rec.cti_msg(17.0, "sha", "a00001", "state", 3, "ready")
    rec.cti(18.0, "ntg", {"a00001": ("ready", 2)})
    assert check_no_split_brain(rec.h).result == "invalid"


def test_split_brain_relogin_with_the_same_epoch_counts_again(rec: Rec) -> None:
    """A client that lost its connection logs in again with the same token: a captured login of the ended
    epoch opens the session again, and its state reads count."""
    rec.cti_msg(5.0, "sha", "a00001", "login", 1, "ready")
    rec.cti(6.0, "ntg", {})
    rec.cti(7.0, "sha", {})
    rec.cti_msg(8.0, "sha", "a00001", "login", 1, "ready")
    rec.cti_msg(9.0, "ntg", "a00001", "login", 2, "ready")
    rec.cti_msg(10.0, "sha", "a00001", "state", 1, "ready")
    rec.cti(11.0, "sha", {})
    rec.cti(11.0, "ntg", {"a00001": ("ready", 2)})
    assert check_no_split_brain(rec.h).result == "invalid"


# -- judgements a scenario used to make from memory, now checkers on its history ------------------------


def test_check_logins_at(rec: Rec) -> None:
    rec.cti_msg(1.0, "ntg", "a00001", "login", 1)
    rec.cti_msg(1.1, "sha", "a00002", "login", 1)
    rec.cti_msg(1.2, "ntg", "a00002", "login", 2)
    assert check_logins_at(rec.h, ["a00001"], "ntg").result == "valid"
    v = check_logins_at(rec.h, ["a00001", "a00002", "a00003"], "ntg")
    assert v.result == "invalid"
    assert {w["agent"] for w in v.witnesses} == {"a00002", "a00003"}  # a00003 never seen; a00002 below
    v2 = check_logins_at(rec.h, ["a00002"], "ntg")
    assert v2.result == "invalid" and "never ended" in v2.witnesses[0]["problem"]  # ...but sha never ended
    assert check_logins_at([], ["a00001"], "ntg").result == "unknown"


def test_check_logins_at_a_login_ended_on_the_way_is_fine(rec: Rec) -> None:
    """Design step 6: a login at sha that was ended (the phone linkage failed), then one at ntg."""
    rec.cti_msg(1.0, "sha", "a00001", "login", 1)
    rec.cti_msg(1.1, "sha", "a00001", "logout", 1)
    rec.cti_msg(1.2, "ntg", "a00001", "login", 2)
    assert check_logins_at(rec.h, ["a00001"], "ntg").result == "valid"


def test_check_logins_at_counts_from_a_phase(rec: Rec) -> None:
    rec.cti_msg(1.0, "sha", "a00001", "login", 1)  # the login from before the scenario's swarm stop
    rec.op(2.0, "info", "scenario", "phase", {"phase": "apply: swarm stopped"})
    assert check_logins_at(rec.h, ["a00001"], "ntg", after_phase="apply: swarm stopped").result == "unknown"
    rec.cti_msg(3.0, "ntg", "a00001", "login", 2)
    assert check_logins_at(rec.h, ["a00001"], "ntg", after_phase="apply: swarm stopped").result == "valid"
    assert check_logins_at(rec.h, ["a00001"], "sha", after_phase="apply: swarm stopped").result == "invalid"
    v = check_logins_at(rec.h, ["a00001"], "ntg", after_phase="apply: no such phase")
    assert v.result == "unknown" and "no such phase" in v.reason  # not the whole history instead
    assert phase_time(rec.h, "apply: swarm stopped") == 2.0


def test_check_refused(rec: Rec) -> None:
    p = "client:cti"
    rec.op(1.0, "invoke", p, "cti.x", {})
    rec.op(1.1, "fail", p, "cti.x", {"replies": [{"type": "error"}], "closed": False}, error="token_invalid")
    assert check_refused(rec.h, "cti.x", ["token_invalid"]).result == "valid"
    assert check_refused(rec.h, "cti.x", ["too_large"]).result == "invalid"
    assert check_refused(rec.h, "cti.y", ["x"]).result == "unknown"
    v = check_refused(rec.h, "cti.x", ["token_invalid"], closed=True)
    assert v.result == "invalid" and v.witnesses[0]["problem"] == "connection left open"
    rec.op(2.0, "invoke", p, "cti.z", {})
    rec.op(2.1, "fail", p, "cti.z", {"replies": [{"type": "error"}, "closed"]}, error="bad_json")
    assert check_refused(rec.h, "cti.z", ["bad_json"], closed=True).result == "valid"  # the replies say so
    rec.op(3.0, "invoke", p, "cti.ok", {})
    rec.op(3.1, "ok", p, "cti.ok", {"replies": [], "closed": True})
    assert check_refused(rec.h, "cti.ok", ["token_invalid"]).result == "invalid"  # a forged login got in
    rec.op(4.0, "invoke", p, "cti.lost", {})  # never completed: not a refusal
    assert check_refused(rec.h, "cti.lost", ["token_invalid"]).result == "invalid"


SWITCH = {"id": "switch", "fault": "planned_switch", "target": "sha-ul1", "site": "sha", "agents": ["a00001"]}
BACK = {
    "id": "switch-back",
    "fault": "planned_switch",
    "target": "sha-ul1",
    "site": "sha",
    "agents": ["a00001"],
}


def _planned_switch(rec: Rec, *, leftover: bool = False) -> None:
    """a00001 is switched to ntg at t=10; where everyone is between that and the switch back at t=20."""
    baseline(rec)
    rec.op(10.0, "invoke", "nemesis", "fault.inject", SWITCH)
    rec.op(10.1, "ok", "nemesis", "fault.inject", SWITCH)
    rec.pbx(12.0, "sha", ["1001", "1002"] if leftover else ["1002"])
    rec.pbx(12.05, "ntg", ["1001", "2001", "2002"])
    rec.cti(12.1, "sha", {"a00002": ("not_ready", 1)})
    rec.cti(12.15, "ntg", {"a00001": ("ready", 2), "a00003": ("ready", 1), "a00004": ("ready", 1)})
    rec.op(20.0, "invoke", "nemesis", "fault.inject", BACK)
    rec.op(20.1, "ok", "nemesis", "fault.inject", BACK)
    rec.pbx(22.0, "sha", ["1001", "1002"])  # after the switch back: not judged here
    rec.pbx(22.05, "ntg", ["2001", "2002"])


FORWARD = {"a00001": "ntg", "a00002": "sha", "a00003": "ntg", "a00004": "ntg"}


def test_placement_between_two_faults(rec: Rec) -> None:
    _planned_switch(rec)
    v = check_placement_between(rec.h, "switch", "switch-back", expect=FORWARD, name="placement_after_switch")
    assert v.result == "valid" and v.name == "placement_after_switch"
    assert v.figures["affected"] == 4


def test_placement_between_a_leftover_is_invalid(rec: Rec) -> None:
    _planned_switch(rec, leftover=True)
    v = check_placement_between(rec.h, "switch", "switch-back", expect=FORWARD)
    assert v.result == "invalid" and v.name == "placement_between"
    assert [w["agent"] for w in v.witnesses] == ["a00001"]
    assert v.witnesses[0]["registered_at"] == ["ntg", "sha"]


def test_placement_between_needs_both_faults(rec: Rec) -> None:
    _planned_switch(rec)
    v = check_placement_between(rec.h, "switch", "no-such-fault", expect=FORWARD)
    assert v.result == "unknown" and "no-such-fault" in v.reason
    assert check_placement_between([], "switch", "switch-back", expect=FORWARD).result == "unknown"


def _expectation(rec: Rec, t: float, what: str, check: str, seen: dict[str, Any], **extra: Any) -> None:
    value = {"what": what, "check": check, "expected": {"a00001": "ntg"}, "seen": seen, **extra}
    rec.at(t).observe("expectation", "scenario", value)


def test_expectations(rec: Rec) -> None:
    v = check_expectations(rec.h)
    assert v.result == "unknown" and "no expectation" in v.reason  # nothing recorded is not a pass
    _expectation(rec, 1.0, "agents at ntg", "placement", {"judged": 3, "out_of_place": 0, "seconds": 2.1})
    assert check_expectations(rec.h).result == "valid"
    _expectation(rec, 2.0, "nobody else moves", "hold", {"judged": 0, "out_of_place": 0, "error": "no read"})
    v = check_expectations(rec.h)
    assert v.result == "unknown" and v.reason == "nobody else moves: no read"
    assert v.figures == {"expectations": 2, "unmet": 0, "unjudged": 1}
    sample = {"a00001": {"expected": "ntg", "registered_at": ["sha"]}}
    _expectation(rec, 3.0, "back home", "converge", {"judged": 9, "out_of_place": 3, "sample": sample})
    v = check_expectations(rec.h)
    assert v.result == "invalid" and "back home: 3 agents out of place" in v.reason
    assert v.witnesses[0]["sample"] == sample and v.witnesses[0]["t"] == 3.0


def test_expectation_of_a_state(rec: Rec) -> None:
    state = {"agent": "a00001", "site": "sha", "state": "on_call"}
    rec.at(1.0).observe(
        "expectation", "scenario", {"what": "on a call", "check": "state", "expected": state,
                                    "seen": {"judged": 2, "state": "on_call"}}
    )  # fmt: skip
    assert expectation_outcome(rec.h[-1].value) == ("valid", "state seen")
    assert check_expectations(rec.h).result == "valid"
    rec.at(2.0).observe(
        "expectation", "scenario", {"what": "on a call", "check": "state", "expected": state,
                                    "seen": {"judged": 2, "state": "ready"}}
    )  # fmt: skip
    v = check_expectations(rec.h)
    assert v.result == "invalid" and "state is ready" in v.reason


def test_faults_healed_on_a_lab_that_could_not_be_read(rec: Rec) -> None:
    """The physical backend with no status: lab snapshots that read nothing are no evidence (unknown),
    never proof the lab ends as it began."""
    blind = {"links": {}, "processes": {}, "management": {}, "complete": False, "problems": ["no status"]}
    rec.at(0.0).observe("lab_snapshot", "controller", blind)
    rec.op(1.0, "invoke", "nemesis", "fault.inject", {"id": "f1"})
    rec.op(1.1, "ok", "nemesis", "fault.inject", {"id": "f1"})
    rec.op(2.0, "invoke", "nemesis", "fault.heal", {"id": "f1"})
    rec.op(2.1, "ok", "nemesis", "fault.heal", {"id": "f1"})
    rec.at(3.0).observe("lab_snapshot", "controller", blind)
    v = check_faults_healed(rec.h)
    assert v.result == "unknown" and "no status" in v.reason
    # a fault never healed is still invalid, whatever the lab status
    rec.op(4.0, "invoke", "nemesis", "fault.inject", {"id": "f2"})
    rec.op(4.1, "ok", "nemesis", "fault.inject", {"id": "f2"})
    rec.at(5.0).observe("lab_snapshot", "controller", blind)
    assert check_faults_healed(rec.h).result == "invalid"


def test_faults_healed_compares_only_what_both_snapshots_read(rec: Rec) -> None:
    start = {**LAB, "complete": True, "problems": []}
    rec.at(0.0).observe("lab_snapshot", "controller", start)
    rec.op(1.0, "invoke", "nemesis", "fault.inject", {"id": "f1"})
    rec.op(1.1, "ok", "nemesis", "fault.inject", {"id": "f1"})
    rec.op(2.0, "invoke", "nemesis", "fault.heal", {"id": "f1"})
    rec.op(2.1, "ok", "nemesis", "fault.heal", {"id": "f1"})
    # ntg's switch did not answer at the end: its link is unknown, the rest was read
    links = {**LAB["links"], "ntg-sw1:Gi0/1": "unknown"}
    partial = {**LAB, "links": links, "complete": False, "problems": ["ntg-sw1: links not read: timeout"]}
    rec.at(3.0).observe("lab_snapshot", "controller", partial)
    v = check_faults_healed(rec.h)
    assert v.result == "unknown" and "ntg-sw1: links not read" in v.reason
    # ...but a difference in what both did read is evidence: invalid
    down = {**links, "sha-sw1:Gi0/2": "down"}
    rec.at(4.0).observe("lab_snapshot", "controller", {**partial, "links": down})
    v = check_faults_healed(rec.h)
    assert v.result == "invalid" and [w["key"] for w in v.witnesses] == ["sha-sw1:Gi0/2"]
    # a state the backend marks unknown, with no problem listed, is not read either
    rec.at(5.0).observe("lab_snapshot", "controller", {**start, "links": links})
    v = check_faults_healed(rec.h)
    assert v.result == "unknown" and "ntg-sw1:Gi0/1" in v.reason


def test_faults_healed_compares_pdu_outlets_where_recorded(rec: Rec) -> None:
    """A powered-off device whose outlet never came back on: the lab does not end as it began."""
    lab = {**LAB, "outlets": {"sha-pdu1:1": "up"}}
    rec.at(0.0).observe("lab_snapshot", "controller", lab)
    off = {"id": "p1", "fault": "power_off", "target": "sha-pbx1"}
    rec.op(1.0, "invoke", "nemesis", "fault.inject", off)
    rec.op(1.1, "ok", "nemesis", "fault.inject", off)
    rec.op(2.0, "invoke", "nemesis", "fault.heal", off)
    rec.op(2.1, "ok", "nemesis", "fault.heal", off)
    rec.at(3.0).observe("lab_snapshot", "controller", lab)
    assert check_faults_healed(rec.h).result == "valid"
    rec.at(4.0).observe("lab_snapshot", "controller", {**LAB, "outlets": {"sha-pdu1:1": "down"}})
    v = check_faults_healed(rec.h)
    assert v.result == "invalid" and v.witnesses[0]["field"] == "outlets"
