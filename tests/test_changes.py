"""Changes that are not faults, through the injector on the virtual lab: planned-switch rules, swarm
restarts, SPAN sessions. Each is journaled before it is made, read back, recorded in the history the way
the checkers read it, and healed when its block ends; a dry run plans them and sends nothing."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.drivers import driver_for
from harness.drivers.base import Step, Steps
from harness.faults import FaultRefused, Injector, Journal
from harness.history import History
from harness.lab import Lab
from harness.ulapi import UlClient, ul_urls

pytestmark = pytest.mark.lab


@pytest.fixture
def injector(lab: Lab, tmp_path: Path) -> Iterator[Injector]:
    inj = Injector(lab, journal_path=tmp_path / "j.jsonl", history=History(tmp_path / "h.jsonl"))
    yield inj
    inj.close()


def rules_with(lab: Lab, values: list[str]) -> dict[str, set[str]]:
    return {
        site: {r["value"] for r in UlClient(url).rules() if r.get("value") in values}
        for site, url in ul_urls(lab).items()
    }


def test_planned_switch_rule_for_the_block(lab: Lab, injector: Injector) -> None:
    value = f"change-{os.getpid()}"
    ch = injector.make(
        "planned_switch", "sha-ul1", id="switch", scope="skill_group", value=value, to="ntg", agents=[]
    )
    with injector.apply(ch):
        assert rules_with(lab, [value]) == {"sha": {value}, "ntg": {value}}  # replicated to the peer
        [rec] = Journal(injector.journal.path).open_faults()
        assert rec["notes"]["rule_ids"][value]
    assert rules_with(lab, [value]) == {"sha": set(), "ntg": set()}
    assert Journal(injector.journal.path).open_faults() == []
    ops = [(e.type, e.f, e.value) for e in injector.history.events]
    assert [(t, f) for t, f, _ in ops] == [
        ("invoke", "fault.inject"), ("ok", "fault.inject"), ("invoke", "fault.heal"), ("ok", "fault.heal"),
    ]  # fmt: skip
    assert ops[0][2] == {
        "id": "switch", "fault": "planned_switch", "target": "sha-ul1", "site": "sha", "agents": [],
        "scope": "skill_group", "value": value, "to": "ntg",
    }  # fmt: skip


def test_planned_switch_of_several_values(lab: Lab, injector: Injector) -> None:
    values = [f"zz-nobody-{os.getpid()}-{i}" for i in range(3)]  # agent ids no agent has
    with injector.apply(injector.make("planned_switch", "ntg-ul1", scope="agent", value=values, to="sha")):
        assert rules_with(lab, values)["ntg"] == set(values)
    assert rules_with(lab, values) == {"sha": set(), "ntg": set()}


@pytest.mark.parametrize(
    "params,why",
    [
        ({"scope": "building", "value": "x", "to": "ntg"}, "scope must be"),
        ({"scope": "region", "value": "east", "to": "mars"}, "not a site"),
        ({"scope": "region", "value": "", "to": "ntg"}, "needs value"),
    ],
)
def test_planned_switch_refused(lab: Lab, injector: Injector, params: dict, why: str) -> None:
    with pytest.raises(FaultRefused, match=why):
        injector.inject(injector.make("planned_switch", "sha-ul1", **params))
    assert not injector.journal.path.exists()


def test_swarm_restart_once(lab: Lab, injector: Injector) -> None:
    with driver_for(lab, "sha-agents1") as h:
        before = h.service_pid("hil-swarm")
    ch = injector.once(injector.make("swarm_service", "sha-agents1", verb="restart"))
    with driver_for(lab, "sha-agents1") as h:
        assert h.service_active("hil-swarm") and h.service_pid("hil-swarm") not in (None, before)
    assert Journal(injector.journal.path).open_faults() == []
    assert [e.f for e in injector.history.events] == ["change.apply"] * 2 + ["change.revert"] * 2
    assert injector.history.events[0].value == {
        "id": ch.id, "change": "swarm_service", "target": "sha-agents1", "verb": "restart", "site": "sha"
    }  # fmt: skip


def test_swarm_refused_off_an_agents_host(lab: Lab, injector: Injector) -> None:
    with pytest.raises(FaultRefused, match="not an agents host"):
        injector.inject(injector.make("swarm_service", "sha-pbx1", verb="stop"))


def test_span_session_for_the_block(lab: Lab, injector: Injector) -> None:
    with injector.apply(injector.make("span_session", "sha-sw1")):
        with driver_for(lab, "sha-sw1") as sw:
            assert set(sw.span_state(1).sources) == {"Gi0/1", "Gi0/2"}
    with driver_for(lab, "sha-sw1") as sw:
        assert sw.span_state(1).empty


def test_span_destination_must_be_the_span_port(lab: Lab, injector: Injector) -> None:
    with pytest.raises(FaultRefused, match="span_port"):
        injector.inject(injector.make("span_session", "sha-sw1", destination="Gi0/7"))


def test_dry_run_plans_changes_and_sends_nothing(lab: Lab, tmp_path: Path) -> None:
    printed: list[str] = []
    steps: list[Step] = []
    inj = Injector(
        lab, tmp_path / "j.jsonl", dry_run=True, out=printed.append, steps=Steps(sinks=[steps.append])
    )
    for ch in (
        inj.make("planned_switch", "sha-ul1", scope="region", value="east", to="ntg"),
        inj.make("swarm_service", "ntg-agents1", verb="stop"),
        inj.make("span_session", "ntg-sw1"),
    ):
        with inj.apply(ch):
            pass
    text = "\n".join(printed)
    for expected in (
        "sha-ul1: POST /v1/rules region=east -> ntg",
        "sha-ul1: DELETE /v1/rules/<rule region=east -> ntg>",
        "ntg-agents1: systemctl stop hil-swarm",
        "ntg-agents1: systemctl start hil-swarm",
        "ntg-sw1: port-mirroring to observe-port 1 both",
        "ntg-sw1: undo observe-port 1",
    ):
        assert expected in text, text
    assert not (tmp_path / "j.jsonl").exists() and all(s.dry_run for s in steps)
