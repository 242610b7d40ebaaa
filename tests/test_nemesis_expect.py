"""expected_outcome(): the rules of harness/nemesis/expect.py on small schedules of the default lab, and
properties over generated ones (nobody is ever expected lost; the record round-trips as JSON)."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from harness import topology
from harness.checks.schedule_outcome import Expectation
from harness.nemesis.expect import expected_outcome
from harness.nemesis.generate import generate
from harness.nemesis.profile import load_profile
from harness.nemesis.schedule import parse

TOPO = topology.load()
PROFILE = load_profile()
SHA = [a.id for a in TOPO.agents() if a.home == "sha"]
NTG = [a.id for a in TOPO.agents() if a.home == "ntg"]
VIP = [a.id for a in TOPO.agents() if a.skill_group == "vip"]
PBX_PORT, CTI_PORT = "sha-sw1:Gi0/1", "sha-sw1:Gi0/2"
NTG_CTI_PORT = "ntg-sw1:GigabitEthernet0/0/2"


def expect(*ops: dict[str, Any], **kw: Any) -> Expectation:
    return expected_outcome(parse({"ops": list(ops)}, "test", TOPO), TOPO, PROFILE, **kw)


def op(at: float, kind: str, target: str, duration: float | None = None, **params: Any) -> dict[str, Any]:
    d: dict[str, Any] = {"at": at, "kind": kind, "target": target, "params": params}
    if duration is not None:
        d["duration"] = duration
    return d


def outcome(e: Expectation, agent: str) -> tuple[str, tuple[str, ...], bool]:
    a = e.agents[agent]
    return a.move, a.sites, a.online


def test_nothing_happens_everyone_stays() -> None:
    e = expect()
    assert all(a.move == "stay" and a.sites == (a.start,) and a.state for a in e.agents.values())
    assert len(e.agents) == len(TOPO.agents())


def test_short_clean_break_moves_nobody() -> None:
    e = expect(op(1, "port_down", PBX_PORT, 0.4), op(10, "service_pause", "sha-cti1", 0.4, service="hil-cti"))
    assert {outcome(e, a) for a in SHA} == {("stay", ("sha",), True)}
    assert "moves nobody" in e.agents[SHA[0]].why[0]


def test_break_between_the_bounds_may_move() -> None:
    e = expect(op(1, "port_down", PBX_PORT, 2.0))
    assert outcome(e, SHA[0]) == ("may", ("ntg", "sha"), True)
    assert outcome(e, NTG[0]) == ("stay", ("ntg",), True)


def test_long_hard_break_moves_everyone_there() -> None:
    for kind, target, params in [
        ("port_down", PBX_PORT, {}),
        ("port_down", CTI_PORT, {}),
        ("service_kill", "sha-pbx1", {"service": "kamailio"}),
        ("service_pause", "sha-cti1", {"service": "hil-cti"}),
        ("power_off", "sha-pbx1", {}),
        ("blackhole", "sha-pbx1", {}),
        ("partition", "sha-cti1", {"b": "sha-pbx1"}),
        ("partition", "sha-cti1", {"b": "sha-agents1", "one_way": True}),
        ("partition", "sha-pbx1", {"b": "sha-agents1", "one_way": True}),  # the phones' keep-alive sees it
    ]:
        e = expect(op(1, kind, target, 8.0, **params))
        assert {outcome(e, a) for a in SHA} == {("must", ("ntg",), True)}, (kind, target, params)
        assert {outcome(e, a) for a in NTG} == {("stay", ("ntg",), True)}, (kind, target, params)


def test_a_fault_held_to_the_final_heal_is_long() -> None:
    e = expect(op(1, "port_down", PBX_PORT), op(20, "call", "ntg-caller1", to=NTG[0], via="ntg-pbx1"))
    assert outcome(e, SHA[0]) == ("must", ("ntg",), True)
    assert e.final_heal == 20


def test_lossy_breaks_may_move_even_when_short() -> None:
    e = expect(op(1, "service_kill", "sha-pbx1", 0.4, service="kamailio"))
    assert outcome(e, SHA[0]) == ("may", ("ntg", "sha"), True)
    assert "lossy" in e.agents[SHA[0]].why[0]


def test_gray_failures_may_move_but_never_lose() -> None:
    for kind, target, params in [
        ("loss", "sha-cti1", {"percent": 60}),
        ("rate_limit", "sha-pbx1", {"kbit": 64, "dev": "eth0"}),
    ]:
        e = expect(op(1, kind, target, 16.0, **params))
        assert outcome(e, SHA[0]) == ("may", ("ntg", "sha"), True), kind


def test_ul_and_wan_are_not_in_an_online_agents_chain() -> None:
    e = expect(
        op(1, "service_kill", "sha-ul1", 16.0, service="hil-login"),
        op(2, "link_cut", "wan", 16.0),
        op(3, "partition", "sha-ul1", 16.0, b="ntg-ul1"),
        op(4, "port_down", "sha-sw1:Gi0/7", 16.0),  # a spare port
    )
    assert all(a.move == "stay" for a in e.agents.values())


def test_both_sites_broken_at_once_is_unservable_then_back() -> None:
    e = expect(op(1, "port_down", PBX_PORT, 8.0), op(3, "port_down", NTG_CTI_PORT, 8.0))
    assert outcome(e, SHA[0]) == ("may", ("ntg", "sha"), True)
    assert outcome(e, NTG[0]) == ("may", ("ntg", "sha"), True)
    assert {"home": "sha", "from": 3.0, "to": 9.0} in e.unservable
    assert any("unservable" in w for w in e.agents[SHA[0]].why)


def test_no_failback_and_a_break_at_the_new_site_moves_it_again() -> None:
    e = expect(op(1, "port_down", PBX_PORT, 8.0), op(20, "service_stop", "ntg-cti1", 8.0, service="hil-cti"))
    assert outcome(e, SHA[0]) == ("may", ("sha",), True)  # to ntg, then back to sha by a break: it moved
    assert outcome(e, NTG[0]) == ("must", ("sha",), True)
    e = expect(op(1, "port_down", PBX_PORT, 8.0), op(20, "link_cut", "wan", 8.0))
    assert outcome(e, SHA[0]) == ("may", ("sha",), True)  # at ntg its chain crosses the WAN
    assert outcome(e, NTG[0]) == ("stay", ("ntg",), True)


def test_agents_elsewhere_before_the_schedule() -> None:
    start = dict.fromkeys(SHA, "ntg")
    e = expect(op(1, "port_down", PBX_PORT, 8.0), start=start)
    assert outcome(e, SHA[0]) == ("stay", ("ntg",), True)
    assert e.agents[SHA[0]].start == "ntg"


def test_planned_switch_moves_its_agents_and_nobody_back() -> None:
    e = expect(op(1, "planned_switch", "sha-ul1", 8.0, scope="skill_group", value="vip", to="ntg"))
    for a in VIP:
        home = TOPO.agents()[int(a[1:]) - 1].home
        want = ("stay", ("ntg",), True) if home == "ntg" else ("must", ("ntg",), True)
        assert outcome(e, a) == want
    others = [a for a in SHA if a not in VIP]
    assert {outcome(e, a) for a in others} == {("stay", ("sha",), True)}


def test_short_or_troubled_planned_switch_may_move() -> None:
    e = expect(op(1, "planned_switch", "sha-ul1", 0.8, scope="agent", value=SHA[0], to="ntg"))
    assert outcome(e, SHA[0]) == ("may", ("ntg", "sha"), True)
    e = expect(
        op(1, "planned_switch", "sha-ul1", 8.0, scope="agent", value=SHA[0], to="ntg"),
        op(2, "service_pause", "ntg-ul1", 2.0, service="hil-login"),
    )
    assert outcome(e, SHA[0]) == ("may", ("ntg", "sha"), True)


def test_logouts_and_logins() -> None:
    e = expect(
        op(1, "agent_logout", SHA[0]),
        op(5, "agent_login", SHA[0]),
        op(2, "agent_logout", SHA[1]),
        op(3, "planned_switch", "sha-ul1", 16.0, scope="agent", value=SHA[2], to="ntg"),
        op(2, "agent_logout", SHA[2]),
        op(6, "agent_login", SHA[2]),
    )
    back = e.agents[SHA[0]]
    assert (back.online, back.sites, back.move, back.state) == (True, ("sha",), "may", False)
    gone = e.agents[SHA[1]]
    assert (gone.online, gone.sites, gone.relogin) == (False, (), ("sha",))
    under_rule = e.agents[SHA[2]]
    assert under_rule.sites == ("ntg",)  # a login while the rule is active goes where it says


def test_json_round_trip_and_grouping() -> None:
    e = expect(op(1, "port_down", PBX_PORT, 8.0), op(2, "agent_logout", SHA[3]))
    d = json.loads(json.dumps(e.to_dict()))
    assert len(d["groups"]) == 3
    assert Expectation.from_dict(d).agents == e.agents


@settings(max_examples=120, deadline=None)
@given(st.integers(min_value=0, max_value=2**48))
def test_generated_schedules_never_expect_anyone_lost(seed: int) -> None:
    s = generate(TOPO, PROFILE, seed)
    e = expected_outcome(s, TOPO, PROFILE)
    assert e == expected_outcome(s, TOPO, PROFILE)
    assert Expectation.from_dict(json.loads(json.dumps(e.to_dict()))).agents == e.agents
    for a in e.agents.values():
        if not a.online:
            assert a.sites == () and a.relogin
            continue
        assert a.sites and set(a.sites) <= {"sha", "ntg"}
        if a.move == "stay":
            assert a.sites == (a.start,)
        if a.move == "must":
            assert a.start not in a.sites


def test_short_breaks_less_than_a_window_apart_count_as_one() -> None:
    e = expect(op(1, "port_down", PBX_PORT, 0.4), op(2, "port_down", PBX_PORT, 0.4))
    assert outcome(e, SHA[0]) == ("may", ("ntg", "sha"), True)
