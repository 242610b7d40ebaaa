"""check_schedule_outcome from small histories: valid, invalid (lost, moved when it must stay, failback, at
two sites, wrong state, logged out but online) and unknown (no expectation, no final read after the last
heal, a fault never healed, capture gaps, the lab not where the expectation assumed)."""

from __future__ import annotations

from typing import Any

import pytest

from harness.checks import check_schedule_outcome
from harness.checks.schedule_outcome import SCHEDULE_EXPECTATION, AgentExpectation, Expectation
from harness.history import Event, Obs, Op

ROSTER = {"a1": ("sha", "1001"), "a2": ("sha", "1002"), "a3": ("ntg", "2001")}
EXT = {a: ext for a, (_, ext) in ROSTER.items()}
Place = dict[str, tuple[str, str, int]]  # agent -> (site, state, epoch)


class Hist:
    """A history built by hand: operations and observations at given times."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def op(
        self, t: float, typ: str, process: str, f: str, value: Any = None, error: str | None = None
    ) -> None:
        self.events.append(Op(len(self.events), t, 1e9 + t, typ, process, f, process, value, error))  # type: ignore[arg-type]

    def obs(self, t: float, kind: str, source: str, value: Any) -> None:
        self.events.append(Obs(len(self.events), t, 1e9 + t, kind, source, value))

    def read(self, t: float, place: Place, sites: tuple[str, ...] = ("sha", "ntg")) -> None:
        """A pbx_snapshot and a cti_snapshot of each site showing `place`."""
        for site in sites:
            here = {a: v for a, v in place.items() if v[0] == site}
            regs = [{"extension": EXT[a], "contact": f"sip:{EXT[a]}@x", "expires": 300} for a in here]
            self.obs(t, "pbx_snapshot", f"{site}-pbx1", {"site": site, "registrations": regs})
            sess = [
                {"agent": a, "state": st, "epoch": ep, "extension": EXT[a]} for a, (_, st, ep) in here.items()
            ]
            self.obs(t, "cti_snapshot", f"{site}-cti1", {"site": site, "sessions": sess})

    def fault(self, t0: float, t1: float, id: str = "f1", heal: str = "ok") -> None:
        v = {"id": id, "fault": "port_down", "target": "sha-sw1:Gi0/1", "site": "sha"}
        self.op(t0, "invoke", f"nemesis:{id}", "fault.inject", v)
        self.op(t0 + 0.2, "ok", f"nemesis:{id}", "fault.inject", {"id": id})
        if heal:
            self.op(t1, "invoke", f"nemesis:{id}", "fault.heal", {"id": id, "reason": "done"})
            self.op(t1 + 0.2, heal, f"nemesis:{id}", "fault.heal", {"id": id})


HOME: Place = {"a1": ("sha", "ready", 1), "a2": ("sha", "not_ready", 1), "a3": ("ntg", "ready", 1)}
MOVED: Place = {"a1": ("ntg", "ready", 2), "a2": ("ntg", "not_ready", 2), "a3": ("ntg", "ready", 1)}


def expectation(**over: AgentExpectation) -> Expectation:
    """a1 and a2 (home sha) must move to ntg; a3 must stay at ntg."""
    move = AgentExpectation("sha", True, ("ntg",), "must", True, ("sha: 8 s break moves it to ntg",))
    agents = {"a1": move, "a2": move, "a3": AgentExpectation("ntg", True, ("ntg",), "stay", True)}
    agents.update(over)
    return Expectation(agents, window=4.0, settle=15.0, final_heal=10.0)


def history(final: Place, *, exp: Expectation | None = None, mid: Place | None = None) -> Hist:
    """Before the schedule everyone at home; a PBX port down at sha from 2 to 10 s; `mid` read at 6 s
    (after a read at 5 s showing the movers in transit); `final` read at 20 s, after the heal."""
    h = Hist()
    h.obs(
        0.0,
        "roster",
        "topology",
        {"agents": {a: {"site": s, "extension": e} for a, (s, e) in ROSTER.items()}},
    )
    h.obs(0.1, SCHEDULE_EXPECTATION, "nemesis", (exp or expectation()).to_dict())
    h.read(1.0, HOME)
    h.op(2.0, "info", "schedule", "schedule.start", {"t0": 2.0, "ops": 1})
    h.fault(2.0, 10.0)
    h.read(5.0, {"a3": HOME["a3"]})
    h.read(6.0, MOVED if mid is None else mid)
    h.read(20.0, final)
    return h


def judge(h: Hist, **kw: Any) -> Any:
    return check_schedule_outcome(h.events, **kw)


def test_valid_movers_moved_stayer_stayed() -> None:
    v = judge(history(MOVED))
    assert v.result == "valid", v.reason
    assert v.figures["move_must"] == 2 and v.figures["move_stay"] == 1


def test_invalid_lost_agent() -> None:
    final = {k: v for k, v in MOVED.items() if k != "a2"}
    v = judge(history(final))
    assert v.result == "invalid"
    (w,) = v.witnesses
    assert w["agent"] == "a2" and w["problem"].startswith("lost")


def test_invalid_moved_when_it_must_stay() -> None:
    final = {**MOVED, "a3": ("sha", "ready", 2)}
    v = judge(history(final, mid={**MOVED, "a3": ("sha", "ready", 2)}))
    assert v.result == "invalid"
    w = next(w for w in v.witnesses if w.get("agent") == "a3")
    assert w["problem"].startswith("moved")


def test_invalid_left_and_came_back_although_it_must_stay() -> None:
    # a3 was seen at sha during the schedule and is back at ntg under a new epoch: it left
    h = history({**MOVED, "a3": ("ntg", "ready", 3)}, mid={**MOVED, "a3": ("sha", "ready", 2)})
    v = judge(h)
    assert v.result == "invalid"
    w = next(w for w in v.witnesses if w.get("agent") == "a3")
    assert "must stay at ntg, but was seen at sha" in w["problem"]


def test_invalid_new_epoch_at_the_same_site_when_it_must_stay() -> None:
    v = judge(history({**MOVED, "a3": ("ntg", "ready", 4)}))
    assert v.result == "invalid"
    assert "logged in anew" in next(w for w in v.witnesses if w.get("agent") == "a3")["problem"]


def test_invalid_failback_without_a_plan() -> None:
    final = {**MOVED, "a1": ("sha", "ready", 3)}
    v = judge(history(final))
    assert v.result == "invalid"
    w = next(w for w in v.witnesses if w.get("agent") == "a1")
    assert w["problem"].startswith("failback")


def test_invalid_did_not_move() -> None:
    h = history({**MOVED, "a1": ("sha", "ready", 1)}, mid={**MOVED, "a1": ("sha", "ready", 1)})
    v = judge(h)
    assert v.result == "invalid"
    assert next(w for w in v.witnesses if w.get("agent") == "a1")["problem"].startswith("did not move")


def test_invalid_active_at_two_sites() -> None:
    h = history(MOVED)
    # a1 also still holds a session (and a registration) at sha at the final read
    h.events = [
        e for e in h.events if not (isinstance(e, Obs) and e.t == 20.0 and e.source.startswith("sha"))
    ]
    h.read(20.0, {"a1": ("sha", "ready", 1)}, sites=("sha",))
    v = judge(h)
    assert v.result == "invalid"
    w = next(w for w in v.witnesses if w.get("agent") == "a1")
    assert w["problem"].startswith("doubled")
    assert "split brain" in v.reason


def test_invalid_state_not_restored() -> None:
    v = judge(history({**MOVED, "a2": ("ntg", "ready", 2)}))
    assert v.result == "invalid"
    assert "state ready, was not_ready" in next(w for w in v.witnesses if w.get("agent") == "a2")["problem"]


def test_may_allows_either_site_and_still_never_two() -> None:
    may = AgentExpectation("sha", True, ("ntg", "sha"), "may", True)
    exp = expectation(a1=may, a2=may)
    assert judge(history(MOVED, exp=exp)).result == "valid"
    back = history({**MOVED, "a1": ("sha", "ready", 3)}, exp=exp)
    back.read(15.0, {k: v for k, v in MOVED.items() if k != "a1"})  # a1 between sites: never at two
    back.events.sort(key=lambda e: (e.t, e.i))
    v = judge(back)
    assert v.result == "valid", v.reason


def test_logged_out_agent_must_be_offline_unless_the_final_heal_logged_it_in() -> None:
    out = AgentExpectation("sha", False, (), "may", False, ("logged out at 3 s",), ("sha",))
    exp = expectation(a2=out)
    h = history({k: v for k, v in MOVED.items() if k != "a2"}, exp=exp)
    h.op(
        3.0,
        "invoke",
        "nemesis:1",
        "change.apply",
        {"id": "s1", "change": "agent_session", "target": "a2", "verb": "logout"},
    )
    h.op(3.1, "ok", "nemesis:1", "change.apply", {"id": "s1"})
    h.events.sort(key=lambda e: (e.t, e.i))
    assert judge(h).result == "valid"
    online = history(MOVED, exp=exp)
    online.events += [e for e in h.events if isinstance(e, Op) and e.f == "change.apply"]
    v = judge(online)
    assert v.result == "invalid" and "logged out by the schedule" in v.witnesses[0]["problem"]
    # the final heal logged it in again: then it must be online, where a login lands
    gone = {k: v for k, v in MOVED.items() if k != "a2"}
    back = history({**MOVED, "a2": ("sha", "ready", 3)}, exp=exp, mid=gone)
    back.events += [e for e in h.events if isinstance(e, Op) and e.f == "change.apply"]
    back.op(11.0, "invoke", "nemesis:1", "change.revert", {"id": "s1", "reason": "final heal"})
    back.op(11.2, "ok", "nemesis:1", "change.revert", {"id": "s1"})
    assert judge(back).result == "valid", judge(back).reason


def test_unknown_without_expectation() -> None:
    h = history(MOVED)
    h.events = [e for e in h.events if not (isinstance(e, Obs) and e.kind == SCHEDULE_EXPECTATION)]
    v = judge(h)
    assert v.result == "unknown" and "no schedule_expectation" in v.reason
    assert judge(h, expectation=expectation()).result == "valid"  # given as a parameter instead


def test_unknown_without_final_read_after_the_last_heal() -> None:
    h = history(MOVED)
    h.events = [e for e in h.events if not (isinstance(e, Obs) and e.t == 20.0)]
    h.fault(12.0, 25.0, id="f2")  # a second fault healed after the last read
    v = judge(h)
    assert v.result == "unknown" and "after the final heal" in v.reason


def test_unknown_when_a_fault_was_never_healed() -> None:
    h = history(MOVED)
    h.fault(11.0, 0.0, id="f2", heal="")
    v = judge(h)
    assert v.result == "unknown" and "never healed" in v.reason


def test_unknown_on_capture_gaps() -> None:
    h = history(MOVED)
    h.obs(20.5, "capture_stats", "sha-sw1-span", {"capture": "sha-sw1-span", "packets": 100, "drops": 7})
    v = judge(h)
    assert v.result == "unknown" and "dropped 7 packets" in v.reason


def test_unknown_when_the_lab_was_not_where_the_expectation_assumed() -> None:
    exp = expectation(a3=AgentExpectation("sha", True, ("sha",), "stay", True))
    v = judge(history(MOVED, exp=exp))
    assert v.result == "unknown"
    assert v.witnesses[0]["agent"] == "a3" and v.witnesses[0]["seen"] == ["ntg"]


def test_expectation_round_trips_grouped() -> None:
    exp = expectation()
    d = exp.to_dict()
    assert len(d["groups"]) == 2  # a1 and a2 share one group
    back = Expectation.from_dict(d)
    assert back.agents == exp.agents and back.window == 4.0
    import json

    assert Expectation.from_dict(json.loads(json.dumps(d))).agents == exp.agents


@pytest.mark.parametrize(
    "broken, field",
    [
        ({"schema": "x"}, "schema"),
        ({"groups": {}}, "groups"),
        ({"groups": [{"agents": ["a1"], "online": "yes"}]}, "groups.0"),
        (
            {
                "groups": [
                    {
                        "agents": ["a1"],
                        "start": "sha",
                        "online": True,
                        "sites": [],
                        "move": "away",
                        "state": True,
                    }
                ]
            },
            "groups.0",
        ),
    ],
)
def test_unreadable_expectation_is_unknown(broken: dict[str, Any], field: str) -> None:
    d = {**expectation().to_dict(), **broken}
    with pytest.raises(ValueError, match=field):
        Expectation.from_dict(d)
    h = history(MOVED)
    assert judge(h, expectation=d).result == "unknown"
