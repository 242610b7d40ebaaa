"""Planned switches of online agents (design step 4): a rule at the UL moves agents, the switch back
returns them. Each is a `planned_switch` change through the injector (journaled before the UL is asked,
its rule ids journaled as the UL gives them, so `hil lab restore` removes a rule a killed run left), and
recorded as a fault on the UL whose ``agents`` are the ones it should move, so the checkers know who is
affected (docs/history.md)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager

from harness.scenario.agents import agents_homes
from harness.scenario.run import Scenario

__all__ = ["planned_switch", "switch_back"]


def _ul_of(sc: Scenario, site: str) -> str:
    uls = sc.lab.topology.of_kind("ul", site)
    if not uls:
        raise ValueError(f"site {site} has no unified login to hold a planned-switch rule")
    return uls[0].name


@contextmanager
def planned_switch(
    sc: Scenario, scope: str, value: str, to: str, agents: Sequence[str], *, id: str = "switch"
) -> Iterator[None]:
    """A planned-switch rule (scope, value -> site ``to``) added at the agents' home UL for the block and
    removed after it, however the block ends."""
    if not agents:
        raise ValueError(f"planned switch {scope}={value}: no online agent would move; nothing to test")
    site = agents_homes(sc.lab)[agents[0]]
    ul = _ul_of(sc, site)
    with sc.fault("planned_switch", ul, id=id, scope=scope, value=value, to=to, agents=list(agents)):
        yield


@contextmanager
def switch_back(sc: Scenario, agents: Sequence[str], *, id: str = "switch-back") -> Iterator[None]:
    """Return switched agents home: agent-scope rules (one per agent, the most specific scope, so agents
    of the other site with the same attributes are untouched) at each home's UL, targeting that home;
    removed after the block. The first home's change has ``id``; others ``<id>-<site>``."""
    homes = agents_homes(sc.lab)
    by_home: dict[str, list[str]] = {}
    for a in agents:
        by_home.setdefault(homes[a], []).append(a)
    with ExitStack() as stack:
        for k, (site, members) in enumerate(by_home.items()):
            cid = id if k == 0 else f"{id}-{site}"
            stack.enter_context(
                sc.fault(
                    "planned_switch",
                    _ul_of(sc, site),
                    id=cid,
                    scope="agent",
                    value=members,
                    to=site,
                    agents=members,
                )  # fmt: skip
            )
        yield
