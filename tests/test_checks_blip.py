"""check_blip from small histories: a CTI's or a PBX's blip measured on the wire and judged against the
confirmation window (valid, invalid, unknown)."""

from __future__ import annotations

from typing import Any

from harness.checks import check_blip
from harness.history import Event, Obs, Op

WINDOW = (1.1, 2.1)  # stack/agent/state.py Timers().window at the defaults
ROSTER = {
    "a1": {"site": "sha", "extension": "1001"},
    "a2": {"site": "sha", "extension": "1002"},
    "b1": {"site": "ntg", "extension": "2001"},
}


class Hist:
    """A history written by hand: operations and observations in time order."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def _i(self) -> int:
        return len(self.events)

    def op(self, t: float, typ: str, f: str, value: Any = None, process: str = "nemesis") -> Hist:
        self.events.append(Op(self._i(), t, 1000 + t, typ, process, f, process, value))  # type: ignore[arg-type]
        return self

    def obs(self, t: float, kind: str, source: str, value: Any) -> Hist:
        self.events.append(Obs(self._i(), t, 1000 + t, kind, source, value))
        return self

    def fault(self, target: str, on: tuple[float, float], off: tuple[float, float], fid: str = "f1") -> Hist:
        """A fault injected over ``on`` (invoke, ok) and healed over ``off``."""
        v = {"id": fid, "fault": "blackhole", "target": target, "site": target.split("-")[0]}
        self.op(on[0], "invoke", "fault.inject", v).op(on[1], "ok", "fault.inject", {"id": fid})
        self.op(off[0], "invoke", "fault.heal", {"id": fid})
        return self.op(off[1], "ok", "fault.heal", {"id": fid})

    def acks(self, agent: str, times: list[float], cti: str = "sha-cti1") -> Hist:
        """The CTI's answers to an agent's heartbeats (the `state` events of docs/history.md)."""
        for t in times:
            self.obs(t, "cti", cti, {"site": cti[:3], "agent": agent, "event": "state", "state": "ready"})
        return self

    def login(self, t: float, agent: str, cti: str) -> Hist:
        return self.obs(t, "cti", cti, {"site": cti[:3], "agent": agent, "event": "login", "epoch": 2})

    def ntg_snapshot(self, t: float, agents: list[str]) -> Hist:
        sessions = [{"agent": a, "state": "ready", "epoch": 1, "extension": "x"} for a in agents]
        return self.obs(t, "cti_snapshot", "ntg-cti1", {"site": "ntg", "sessions": sessions})

    def done(self) -> list[Event]:
        return sorted(self.events, key=lambda e: (e.t, e.i))


def beats(start: float, end: float, skip: tuple[float, float] | None = None) -> list[float]:
    """Answers once a second from ``start``, none inside ``skip``."""
    out, t = [], start
    while t < end:
        if skip is None or not skip[0] <= t <= skip[1]:
            out.append(round(t, 3))
        t += 1.0
    return out


def cti_blip(off_at: float, back_at: float) -> Hist:
    """sha's CTI silent from 10.0 to ``back_at`` (its fault verified at 10.1, healed at ``off_at``); a1
    heartbeats at .25, a2 at .75 of each second; b1 at ntg throughout."""
    h = Hist().obs(0.0, "roster", "topology", {"agents": ROSTER})
    h.fault("sha-cti1", (9.9, 10.1), (off_at, off_at + 0.1))
    h.acks("a1", beats(0.25, 30.0, (10.0, back_at)))
    h.acks("a2", beats(0.75, 30.0, (10.0, back_at)))
    h.acks("b1", beats(0.5, 30.0), cti="ntg-cti1")
    return h


def test_short_cti_blip_moves_nobody_and_is_measured_on_the_wire() -> None:
    h = cti_blip(off_at=10.2, back_at=10.5)  # a1's 10.25 answer missing, a2's 10.75 there
    h.ntg_snapshot(20.0, ["b1"])
    v = check_blip(h.done(), window=WINDOW)
    assert v.result == "valid", v.reason
    f = v.figures
    assert f["rule"] == "nobody moves" and f["moved"] == 0 and f["agents"] == 2
    assert f["wire_length_s"] == 1.0  # a2's 9.75 to a2's 10.75: the link's answers stopped this long
    assert f["last_before"] == 9.75 and f["first_after"] == 10.75
    assert f["agents_missed_answers"] == 1  # a1 missed one answer; a2's heartbeat fell outside the blip
    assert f["agents_answered_late"] == 1


def test_short_cti_blip_that_moved_an_agent_is_a_false_failover() -> None:
    h = cti_blip(off_at=10.2, back_at=10.5)
    h.login(12.0, "a1", "ntg-cti1").ntg_snapshot(20.0, ["b1", "a1"])
    v = check_blip(h.done(), window=WINDOW)
    assert v.result == "invalid"
    assert v.witnesses == [{"agent": "a1", "site": "sha"}]
    assert "moved 1 agents" in v.reason


def test_long_cti_blip_moves_everybody() -> None:
    h = Hist().obs(0.0, "roster", "topology", {"agents": ROSTER})
    h.fault("sha-cti1", (9.9, 10.1), (16.0, 16.1))
    h.acks("a1", beats(0.25, 10.0)).acks("a2", beats(0.75, 10.0))  # never answered again: they left
    h.acks("b1", beats(0.5, 30.0), cti="ntg-cti1")
    h.login(12.5, "a1", "ntg-cti1").login(13.2, "a2", "ntg-cti1").ntg_snapshot(20.0, ["b1", "a1", "a2"])
    v = check_blip(h.done(), window=WINDOW)
    assert v.result == "valid", v.reason
    assert v.figures["rule"] == "everybody moves" and v.figures["moved"] == 2
    assert v.figures["wire_length_s"] is None and v.figures["bounds_s"] == [5.9, 6.35]


def test_long_cti_blip_that_left_an_agent_in_place_is_invalid() -> None:
    h = Hist().obs(0.0, "roster", "topology", {"agents": ROSTER})
    h.fault("sha-cti1", (9.9, 10.1), (16.0, 16.1))
    h.acks("a1", beats(0.25, 10.0)).acks("a2", beats(0.75, 30.0, (10.0, 16.3)))
    h.acks("b1", beats(0.5, 30.0), cti="ntg-cti1")
    h.login(12.5, "a1", "ntg-cti1").ntg_snapshot(20.0, ["b1", "a1"])
    v = check_blip(h.done(), window=WINDOW)
    assert v.result == "invalid" and v.witnesses == [{"agent": "a2", "site": "sha"}]


def test_break_inside_the_window_allows_either_outcome() -> None:
    h = cti_blip(off_at=11.4, back_at=11.6)
    h.login(12.5, "a1", "ntg-cti1").ntg_snapshot(20.0, ["b1", "a1"])
    v = check_blip(h.done(), window=WINDOW)
    assert v.result == "valid" and v.figures["rule"] == "either" and v.figures["moved"] == 1


def test_clients_side_of_the_blip_is_counted_when_captured() -> None:
    h = cti_blip(off_at=10.2, back_at=10.5).ntg_snapshot(20.0, ["b1"])
    h.obs(10.25, "cti", "sha-cti1", {"site": "sha", "agent": "a1", "event": "heartbeat"})
    h.obs(10.8, "cti", "sha-cti1", {"site": "sha", "event": "status", "extension": "1001"})
    v = check_blip(h.done(), window=WINDOW)
    assert v.result == "valid"
    assert v.figures["agents_unanswered_heartbeats"] == 1 and v.figures["cti_rechecks"] == 1


def pbx_blip(rechecker: str | None) -> Hist:
    """sha's PBX answers the CTI's OPTIONS every 0.5 s, silent from 10.0 to 10.6."""
    h = Hist().obs(0.0, "roster", "topology", {"agents": ROSTER})
    h.fault("sha-pbx1", (9.9, 10.0), (10.3, 10.4))
    pbx, cti = "198.18.1.10", "198.18.1.20"
    h.obs(0.1, "sip", "sha-pbx1", {"status": 200, "cseq_method": "REGISTER", "src_ip": pbx, "dst_ip": "x"})
    t = 0.2
    while t < 20:
        probe = {"method": "OPTIONS", "src_ip": cti, "dst_ip": pbx, "site": "sha", "from_user": "probe"}
        h.obs(t, "sip", "sha-pbx1", probe)
        if not 10.0 <= t <= 10.6:
            h.obs(t + 0.001, "sip", "sha-pbx1", {"status": 200, "src_ip": pbx, "dst_ip": cti, "site": "sha"})
        t = round(t + 0.5, 3)
    phone = {"method": "OPTIONS", "src_ip": "198.18.1.100", "dst_ip": pbx, "site": "sha", "from_user": "1001"}
    h.obs(5.0, "sip", "sha-pbx1", phone)  # a phone's keepalive from the agents host: not a re-check
    if rechecker:
        recheck = {"method": "OPTIONS", "src_ip": rechecker, "dst_ip": pbx, "from_user": "probe"}
        h.obs(10.5, "sip", "sha-pbx1", recheck)
    h.obs(10.4, "cti", "sha-cti1", {"site": "sha", "agent": "a1", "event": "pbx_link_down"})
    return h.ntg_snapshot(20.0, ["b1"])


def test_pbx_blip_is_measured_from_its_sip_answers_with_the_clients_rechecks() -> None:
    v = check_blip(pbx_blip("198.18.1.100").done(), window=(1.2, 2.2))
    assert v.result == "valid", v.reason
    f = v.figures
    assert f["wire_length_s"] == 1.0 and f["rule"] == "nobody moves" and f["agents"] == 2
    assert f["sip_recheck_sources"] == ["198.18.1.100"] and f["link_down_reports"] == 1


def test_no_captured_messages_is_unknown() -> None:
    h = Hist().obs(0.0, "roster", "topology", {"agents": ROSTER})
    h.fault("sha-cti1", (9.9, 10.1), (10.2, 10.3)).ntg_snapshot(20.0, ["b1"])
    v = check_blip(h.done(), window=WINDOW)
    assert v.result == "unknown" and "too few captured messages" in v.reason


def test_fault_never_healed_is_unknown() -> None:
    h = Hist().obs(0.0, "roster", "topology", {"agents": ROSTER})
    h.op(9.9, "invoke", "fault.inject", {"id": "f1", "fault": "blackhole", "target": "sha-cti1"})
    h.op(10.1, "ok", "fault.inject", {"id": "f1"}).acks("a1", beats(0.25, 30.0, (10.0, 30.0)))
    v = check_blip(h.done(), window=WINDOW)
    assert v.result == "unknown" and "never healed" in v.reason


def test_device_heard_while_the_fault_was_in_place_is_unknown() -> None:
    h = Hist().obs(0.0, "roster", "topology", {"agents": ROSTER})
    h.fault("sha-cti1", (9.9, 10.1), (13.0, 13.1))
    h.acks("a1", beats(0.25, 30.0)).ntg_snapshot(20.0, ["b1"])  # answers right through the "blip"
    v = check_blip(h.done(), window=WINDOW)
    assert v.result == "unknown" and "never silent" in v.reason


def test_nothing_seen_of_the_other_site_is_unknown() -> None:
    h = Hist().obs(0.0, "roster", "topology", {"agents": ROSTER})
    h.fault("sha-cti1", (9.9, 10.1), (10.2, 10.3))
    h.acks("a1", beats(0.25, 30.0, (10.0, 10.5)))
    v = check_blip(h.done(), window=WINDOW)
    assert v.result == "unknown" and "other sites" in v.reason


def test_no_fault_and_a_fault_elsewhere_are_unknown() -> None:
    h = Hist().obs(0.0, "roster", "topology", {"agents": ROSTER}).acks("a1", beats(0.25, 30.0))
    assert check_blip(h.done(), window=WINDOW).result == "unknown"
    h.fault("sha-ul1", (9.9, 10.1), (10.2, 10.3))
    v = check_blip(h.done(), window=WINDOW)
    assert v.result == "unknown" and "only a CTI's or a PBX's" in v.reason


def test_a_break_not_where_the_scenario_meant_it_is_unknown() -> None:
    """A blip meant to be short that lasted into the window on the wire (a port's shutdown is a CLI round
    trip and a verification long) proves neither promise."""
    h = cti_blip(off_at=11.4, back_at=11.6).ntg_snapshot(20.0, ["b1"])
    v = check_blip(h.done(), window=WINDOW, expect="stay")
    assert v.result == "unknown" and "not below the window's 1.1s" in v.reason
    short = cti_blip(off_at=10.2, back_at=10.5).ntg_snapshot(20.0, ["b1"])
    assert check_blip(short.done(), window=WINDOW, expect="stay").result == "valid"
    assert check_blip(short.done(), window=WINDOW, expect="move").result == "unknown"
