"""generate(): deterministic, only fair-game targets, params every fault accepts (its own safety checks
pass on the virtual lab's model, sent nothing), within the profile's limits, every kind reachable."""

from __future__ import annotations

import collections
import ipaddress
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness import topology
from harness.faults import make_fault
from harness.faults.safety import HostInterfaces
from harness.lab import Lab
from harness.lab.dryrun import DryRunBackend
from harness.nemesis.generate import available_kinds, generate
from harness.nemesis.profile import load_profile, parse_profile
from harness.nemesis.schedule import FAULT_KINDS, KINDS, parse

TOPO = topology.load()
PROFILE = load_profile()


class TwinFacts(DryRunBackend):
    """The virtual lab's hosts as the twin builds them: data on eth0, management on mgmt0."""

    def interfaces(self, device: str) -> HostInterfaces | None:
        spec = TOPO.device(device).spec
        return HostInterfaces(
            {
                "eth0": [ipaddress.IPv4Interface(f"{spec.address}/16")],
                "mgmt0": [ipaddress.IPv4Interface(f"{spec.mgmt}/24")],
            }
        )


LAB = Lab(TOPO, TwinFacts(TOPO))


def test_same_seed_same_schedule_byte_for_byte() -> None:
    a, b = generate(TOPO, PROFILE, 42), generate(TOPO, PROFILE, 42)
    assert a.to_json() == b.to_json()
    assert a.seed == 42 and a.profile == "default" and a.topology == TOPO.name
    assert a.settle == PROFILE.settle
    others = {generate(TOPO, PROFILE, s).to_json() for s in range(20)}
    assert len(others) == 20


def test_known_schedule_does_not_drift() -> None:
    """A seed's schedule is part of a replay's contract: a change here is a change of every stored seed."""
    s = generate(TOPO, PROFILE, 7)
    assert [(o.at, o.kind, o.target) for o in s.ops] == [(o.at, o.kind, o.target) for o in s.sorted_ops()]
    assert json.loads(s.to_json())["ops"][0]["at"] == s.ops[0].at


@settings(max_examples=150, deadline=None)
@given(st.integers(min_value=0, max_value=2**48))
def test_every_schedule_loads_and_every_fault_accepts_its_op(seed: int) -> None:
    s = generate(TOPO, PROFILE, seed)
    again = parse(json.loads(s.to_json()), "generated", TOPO)  # checks every target against the topology
    assert again == s
    lim = PROFILE.limits
    assert len(s.ops) <= lim.ops.max
    for op in s.ops:
        end = op.end if op.end is not None else op.at
        assert 0 <= op.at <= end <= lim.span
        if op.duration is not None and op.kind != "call":
            assert any(abs(op.duration - d * PROFILE.window) < 1e-6 for d in lim.durations)
        if op.kind in FAULT_KINDS or op.kind == "planned_switch":
            make_fault(LAB, op.kind, op.target, **op.params).check_safety()
        elif op.kind in ("agent_logout", "agent_login"):
            verb = op.kind.split("_")[1]
            make_fault(LAB, "agent_session", op.target, verb=verb).check_safety()
        else:
            assert op.kind == "call" and set(op.params) == {"to", "via", "hold"}
            assert TOPO.device(op.params["via"]).kind == "pbx"
            assert TOPO.device(op.target).spec.role == "caller"
    faults = [(o.at, o.end if o.end is not None else lim.span) for o in s.ops if o.kind in FAULT_KINDS]
    for t, _ in faults:
        assert sum(1 for a, b in faults if a <= t < b) <= lim.overlap


def test_every_kind_is_reachable_at_both_sites() -> None:
    kinds: collections.Counter[str] = collections.Counter()
    sites: collections.Counter[str] = collections.Counter()
    both = loss = 0
    for seed in range(400):
        s = generate(TOPO, PROFILE, seed)
        kinds.update(o.kind for o in s.ops)
        for o in s.ops:
            d = TOPO.devices.get(o.target.split(":")[0])
            if o.kind in FAULT_KINDS and d is not None:
                sites[d.site] += 1
            if o.kind == "loss":
                loss |= 1 << PROFILE.limits.loss_percent.index(o.params["percent"])
        at = collections.Counter((o.at, o.kind) for o in s.ops if o.kind in FAULT_KINDS)
        both += any(n > 1 for n in at.values())
    assert set(kinds) == set(KINDS), set(KINDS) - set(kinds)
    assert sites["sha"] > 50 and sites["ntg"] > 50
    assert both > 10  # faults mirrored at both sites at once
    assert loss == 0b111  # every loss rate of the profile
    held = sum(
        1
        for seed in range(400)
        for o in generate(TOPO, PROFILE, seed).ops
        if o.is_fault and o.duration is None
    )
    assert held > 0


def test_durations_straddle_the_window() -> None:
    durations = {o.duration for seed in range(200) for o in generate(TOPO, PROFILE, seed).ops if o.is_fault}
    assert min(d for d in durations if d) < PROFILE.window / 4
    assert max(d for d in durations if d) >= 4 * PROFILE.window


def test_weights_pick_the_kinds() -> None:
    only = {k: 0 for k in KINDS} | {"blackhole": 1}
    p = parse_profile({"weights": only, "limits": {"ops": {"min": 3, "max": 3}}}, "p.yaml")
    assert available_kinds(TOPO, p) == ["blackhole"]
    for seed in range(20):
        s = generate(TOPO, p, seed)
        assert {o.kind for o in s.ops} == {"blackhole"} and 1 <= len(s.ops) <= 3
        for o in s.ops:
            assert TOPO.device(o.target).kind in ("pbx", "cti", "ul")


def test_rate_limit_shapes_the_twins_data_nic_only() -> None:
    p = parse_profile({"weights": {k: 0 for k in KINDS} | {"rate_limit": 1}}, "p.yaml")
    ops = [o for seed in range(10) for o in generate(TOPO, p, seed).ops]
    assert ops and all(o.params.get("dev") == "eth0" and o.params["kbit"] in (64, 256, 1024) for o in ops)


def test_logins_follow_their_logouts() -> None:
    p = parse_profile(
        {"weights": {k: 0 for k in KINDS} | {"agent_logout": 1, "port_down": 0.001}, "relogin": 1.0}, "p.yaml"
    )
    for seed in range(20):
        ops = generate(TOPO, p, seed).ops
        outs = {o.target: o.at for o in ops if o.kind == "agent_logout"}
        for o in ops:
            if o.kind == "agent_login":
                assert o.target in outs and o.at > outs[o.target]
        assert len(outs) == len([o for o in ops if o.kind == "agent_logout"])  # one story per agent


def test_a_lab_with_nothing_fair_game_is_refused(tmp_path: Path) -> None:
    text = (topology.DEFAULT_TOPOLOGY).read_text()
    text = text.replace("fair_game: true", "fair_game: false").replace("cuttable: true", "cuttable: false")
    f = tmp_path / "closed.yaml"
    f.write_text(text)
    closed = topology.load(f)
    with pytest.raises(ValueError, match="no fault kind"):
        generate(closed, PROFILE, 1)


@pytest.mark.parametrize("name", ["virtual-1k.yaml", "physical-example.yaml"])
def test_other_topologies(name: str) -> None:
    topo = topology.load(topology.REPO_ROOT / "topologies" / name)
    for seed in range(30):
        s = generate(topo, PROFILE, seed)
        parse(json.loads(s.to_json()), name, topo)
        if topo.kind == "physical":
            assert all("dev" not in o.params for o in s.ops if o.kind == "rate_limit")
