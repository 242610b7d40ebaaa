"""shrink() with pure `fails` functions (the runner's re-run stands behind it on a lab): the result still
fails, is minimal (no op can go, no duration halve), the budget is kept, and no candidate runs twice."""

from __future__ import annotations

from collections.abc import Callable

from hypothesis import given, settings
from hypothesis import strategies as st

from harness import topology
from harness.nemesis.generate import generate
from harness.nemesis.profile import load_profile
from harness.nemesis.schedule import Op, Schedule
from harness.nemesis.shrink import shrink

TOPO = topology.load()
PROFILE = load_profile()


def sched(*ops: Op) -> Schedule:
    return Schedule(seed=5, ops=list(ops), note="generated from seed 5")


def pause(at: float, duration: float | None, target: str = "sha-cti1") -> Op:
    return Op(at=at, kind="service_pause", target=target, duration=duration, params={"service": "hil-cti"})


def port(at: float, duration: float = 4.0, target: str = "sha-sw1:Gi0/1") -> Op:
    return Op(at=at, kind="port_down", target=target, duration=duration)


def counting(pred: Callable[[Schedule], bool]) -> tuple[Callable[[Schedule], bool], list[str]]:
    calls: list[str] = []

    def fails(s: Schedule) -> bool:
        calls.append(s.to_json())
        return pred(s)

    return fails, calls


def long_pause(s: Schedule) -> bool:
    return any(o.kind == "service_pause" and (o.duration or 1e9) > 2 for o in s.ops)


def test_shrinks_to_the_one_op_that_matters_and_halves_its_duration() -> None:
    s = sched(
        port(1), pause(3, 16.0), port(5, target="ntg-sw1:GigabitEthernet0/0/1"), pause(9, 1.0), port(20)
    )
    fails, calls = counting(long_pause)
    lines: list[str] = []
    r = shrink(s, fails, log=lines.append)
    (op,) = r.schedule.ops
    assert op.kind == "service_pause" and 2 < op.duration <= 4  # type: ignore[operator]
    assert op.at == 0.0  # moved to start at 0
    assert long_pause(r.schedule)
    assert r.runs == len(calls) == len(set(calls)) == len(lines)  # each distinct candidate ran once
    assert r.steps and any("16.0 s -> 8.0 s" in st for st in r.steps)
    assert "shrunk from generated from seed 5: 5 -> 1 ops" in (r.schedule.note or "")
    assert r.schedule.seed == 5


def test_budget_is_kept_and_the_result_still_fails() -> None:
    s = generate(TOPO, PROFILE, 3).model_copy(
        update={"ops": [pause(0.5, 16.0), *generate(TOPO, PROFILE, 3).ops]}
    )
    for budget in (0, 1, 2, 5):
        fails, calls = counting(long_pause)
        r = shrink(s, fails, budget=budget, log=lambda _: None)
        assert r.runs == len(calls) <= budget
        assert long_pause(r.schedule)
    r = shrink(s, long_pause, budget=0, log=lambda _: None)
    assert r.schedule.ops == s.sorted_ops() and r.steps == []


def test_a_held_fault_gets_a_duration_first() -> None:
    """Held to the final heal, which comes when the last op ends: the op after it keeps it long."""
    s = sched(pause(2, None), port(10, 10.0), port(11, 1.0, target="sha-sw1:Gi0/7"))

    def fails(c: Schedule) -> bool:
        return long_pause(c) and any(o.kind == "port_down" and o.target == "sha-sw1:Gi0/1" for o in c.ops)

    r = shrink(s, fails, log=lambda _: None)
    assert [o.kind for o in r.schedule.ops] == ["service_pause", "port_down"]
    held = r.schedule.ops[0]
    assert held.duration is not None and 2 < held.duration <= 4.5
    assert any("held to the final heal -> 18.0 s" in st for st in r.steps)


def test_targets_are_narrowed() -> None:
    part = Op(at=1, kind="partition", target="sha-cti1", duration=4.0, params={"b": "sha-pbx1"})
    cut = Op(at=2, kind="link_cut", target="wan", duration=4.0)
    switch = Op(
        at=3, kind="planned_switch", target="sha-ul1", duration=4.0,
        params={"scope": "skill_group", "value": "vip", "to": "ntg"},
    )  # fmt: skip

    def still(s: Schedule) -> bool:
        return {o.kind for o in s.ops} >= {"partition", "planned_switch"} and len(s.ops) >= 3

    r = shrink(sched(part, cut, switch), still, log=lambda _: None, topo=TOPO)
    kinds = {o.kind: o for o in r.schedule.ops}
    assert kinds["partition"].params["one_way"] is True
    assert kinds["port_down"].target == "sha-sw1:Gi0/24"
    assert kinds["planned_switch"].params["scope"] == "agent"
    assert any("two-way -> one way" in st for st in r.steps)


@settings(max_examples=60, deadline=None)
@given(st.integers(min_value=0, max_value=2**32), st.data())
def test_ddmin_finds_exactly_the_culprits(seed: int, data: st.DataObject) -> None:
    s = generate(TOPO, PROFILE, seed)
    ops = s.sorted_ops()
    culprits = data.draw(st.sets(st.integers(0, len(ops) - 1), min_size=1, max_size=min(3, len(ops))))
    want = {(ops[k].kind, ops[k].target, ops[k].at) for k in culprits}

    def fails(c: Schedule) -> bool:  # fails while every culprit is still there (at any offset or length)
        have = {(o.kind, o.target) for o in c.ops}
        return {(k, t) for k, t, _ in want} <= have

    r = shrink(s, fails, budget=200, log=lambda _: None)
    assert fails(r.schedule)
    assert {(o.kind, o.target) for o in r.schedule.ops} == {(k, t) for k, t, _ in want}
    assert len(r.schedule.ops) == len({(k, t) for k, t, _ in want})  # 1-minimal
    assert r.runs <= 200
