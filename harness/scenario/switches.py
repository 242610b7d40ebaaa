"""Planned switches of online agents (design step 4): a rule at the UL moves agents, the switch back
returns them. Each is recorded as a fault on the UL whose ``agents`` are the ones it should move, so the
checkers know who is affected (docs/history.md)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from harness import ulapi
from harness.lab import Lab
from harness.scenario.agents import agents_homes
from harness.scenario.run import Scenario

__all__ = ["planned_switch", "switch_back"]


def _ul(lab: Lab, site: str) -> Any:
    return ulapi.client_for(lab, prefer=site)


@contextmanager
def planned_switch(
    sc: Scenario, scope: str, value: str, to: str, agents: Sequence[str], *, id: str = "switch"
) -> Iterator[None]:
    """A planned-switch rule (scope, value -> site ``to``) added at the agents' home UL for the block and
    removed after it."""
    if not agents:
        raise ValueError(f"planned switch {scope}={value}: no online agent would move; nothing to test")
    site = agents_homes(sc.lab)[agents[0]]
    ul_dev = next(d.name for d in sc.lab.topology.of_kind("ul", site))
    value_ = {"id": id, "fault": "planned_switch", "target": ul_dev, "site": site, "agents": list(agents),
              "scope": scope, "value": value, "to": to}  # fmt: skip
    rule: dict[str, Any] = {}
    with sc.phase(f"apply: planned switch {scope}={value} -> {to}"):
        reply = sc.op("fault.inject", value_, lambda: _ul(sc.lab, site).add_rule(scope, value, to))
        rule = (reply or {}).get("rule") or {}
    try:
        yield
    finally:
        with sc.phase(f"revert: remove rule {scope}={value}"):
            if sc.dry_run:
                sc.plan.append({"op": "fault.heal", "value": {"id": id, "remove_rule": f"{scope}={value}"}})
            else:
                sc.op("fault.heal", {"id": id}, lambda: _ul(sc.lab, site).remove_rule(rule["id"]))


@contextmanager
def switch_back(sc: Scenario, agents: Sequence[str], *, id: str = "switch-back") -> Iterator[None]:
    """Return switched agents home: one agent-scope rule per agent targeting its home (the most specific
    scope, so agents of the other site with the same attributes are untouched), removed after the block."""
    homes = agents_homes(sc.lab)
    by_home: dict[str, list[str]] = {}
    for a in agents:
        by_home.setdefault(homes[a], []).append(a)
    rules: list[tuple[str, str]] = []

    def add() -> None:
        for site, members in by_home.items():
            ul = _ul(sc.lab, site)
            for a in members:
                rules.append((site, ul.add_rule("agent", a, site)["rule"]["id"]))

    def remove() -> None:
        for site, rid in rules:
            _ul(sc.lab, site).remove_rule(rid)

    site = next(iter(by_home), "")
    ul_dev = next((d.name for d in sc.lab.topology.of_kind("ul", site)), site)
    value = {"id": id, "fault": "planned_switch", "target": ul_dev, "site": site, "agents": list(agents),
             "scope": "agent", "to": "home"}  # fmt: skip
    with sc.phase("apply: switch back"):
        sc.op("fault.inject", value, add)
    try:
        yield
    finally:
        with sc.phase("revert: remove the switch-back rules"):
            sc.op("fault.heal", {"id": id}, remove)
