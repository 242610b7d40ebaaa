"""The lab as a scenario starts from it: every agent home and ready, and every process and link as built.

Why the agents are reset before the history starts and not inside it: a swarm restart logs every agent out
and in again, which is set-up, not the behaviour under test; the history then holds only the scenario, with
a baseline read of every PBX and CTI before the first fault.

Why a restart every time, even when every agent is home, ready and clean already: the scenario's capture
starts before it, so every CTI connection is seen from its ``login`` and each later message on it (the
client's heartbeats, the CTI's acks and pushed events, the logout) is attributed to its agent
(harness/observe/wire.py); a connection opened before the capture stays anonymous. Measured on the default
lab, a planned switch run without the restart kept 320 of 1,439 attributed CTI messages and its
no_split_brain verdict fell from valid to unknown. Skipping needs another way to attribute those
connections first.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from harness import observe
from harness.drivers import Steps
from harness.faults import Change, Injector
from harness.lab import Lab
from harness.scenario.agents import agent_hosts, agents_extensions, agents_homes
from harness.scenario.plan import change_plan
from harness.scenario.settings import LabNotReady, Settings, poll_rate

__all__ = [
    "AgentsReady",
    "agents_ready",
    "lab_problems",
    "reset_agents",
    "restart_swarms",
    "wait_lab_clean",
]

log = logging.getLogger("hil.scenario")


def ready_poll_s(agents: int) -> float:
    """Seconds between reads of every PBX and CTI while the agents come home after a restart: four reads
    per observer period (0.05 s on the 100-agent lab, where a read takes a few tens of milliseconds and a
    0.2 s poll added ~0.1 s of pure waiting to every scenario's reset; 0.2 s at 10k, as before, where each
    read is a full table of every contact and would only slow the login storm it waits for)."""
    return min(0.2, 0.25 / poll_rate(agents))


def restart_swarms(
    lab: Lab,
    steps: Steps | None = None,
    sites: Sequence[str] | None = None,
    injector: Injector | None = None,
) -> list[Change]:
    """Restart the agent swarm on every agents host (of ``sites``), in parallel, each a change through the
    injector (journaled while it happens, verified running after); ``injector`` defaults to one of its
    own, which first heals what a dead run left. In a dry run each restart is planned, nothing is sent."""
    inj = injector or Injector(lab, steps=steps, out=log.info)
    try:
        hosts = agent_hosts(lab, None if sites is None else tuple(sites))
        changes = [inj.make("swarm_service", h, verb="restart") for h in hosts]
        with ThreadPoolExecutor(max_workers=max(1, len(changes))) as pool:
            for f in [pool.submit(inj.once, c) for c in changes]:
                f.result()
        return changes
    finally:
        if injector is None:
            inj.close()


def reset_agents(lab: Lab, steps: Steps | None = None, timeout: float = 45.0, dry_run: bool = False) -> float:
    """Bring the agents to a known state: restart every swarm, then wait until every agent of the roster
    is registered once at its home PBX and logged in once at its home CTI, ready, as the PBXs and CTIs show
    it (never the swarm's own word). Returns the seconds it took; LabNotReady if it does not happen."""
    t0 = time.monotonic()
    restart_swarms(lab, steps)
    if dry_run:
        return 0.0
    eps = observe.endpoints(lab)
    homes, exts = agents_homes(lab), agents_extensions(lab)
    every = ready_poll_s(len(homes))
    ok, view = observe.wait_view(
        eps, lambda v: v.complete(eps) and not v.misplaced(homes, exts), timeout, interval=every
    )
    if not ok:
        bad = view.misplaced(homes, exts)
        sample = dict(list(bad.items())[:3])
        raise LabNotReady(
            f"after a swarm restart {len(bad)} of {len(homes)} agents were not home and ready within "
            f"{timeout:.0f}s (e.g. {sample}; unreadable: {view.errors or 'none'})"
        )
    took = time.monotonic() - t0
    log.info("agents reset: every agent home and ready %.2f s after the swarm restart began", took)
    return took


def lab_problems(lab: Lab) -> list[str]:
    """What is not as a fresh lab has it: a process not running, a connected port down, an outlet off."""
    snap = observe.lab_snapshot(lab)
    if not snap.get("complete", True):
        return [f"lab state not read: {p}" for p in snap.get("problems", [])]
    out = [f"process {k} is {v}" for k, v in snap["processes"].items() if v != "running"]
    out += [f"link {k} is {v}" for k, v in snap["links"].items() if v != "up"]
    out += [f"outlet {k} is {v}" for k, v in snap.get("outlets", {}).items() if v != "up"]
    out += [f"management of {k} is {v}" for k, v in snap.get("management", {}).items() if v != "up"]
    return out


def wait_lab_clean(lab: Lab, timeout: float = 15.0) -> None:
    """Wait until every process runs and answers and every connected link is up (after a heal)."""
    deadline = time.monotonic() + timeout
    while True:
        problems = lab_problems(lab)
        if not problems:
            return
        if time.monotonic() >= deadline:
            raise LabNotReady("the lab is not back as it began: " + "; ".join(problems))
        time.sleep(0.2)  # a physical lab answers this through its switches' CLIs: no faster


@dataclass
class AgentsReady:
    """The agents in their known state: how long the reset took, and (dry run) the steps it would take."""

    homes: dict[str, str]
    seconds: float
    plan: list[dict[str, Any]] = field(default_factory=list)


def agents_ready(lab: Lab, settings: Settings) -> AgentsReady:
    """Restart the swarms and wait until every agent is home and ready (see :func:`reset_agents`); in a
    dry run, the plan of the restarts."""
    if settings.dry_run:
        changes = restart_swarms(lab, Steps(dry_run=True))
        plan = [e for c in changes for e in (change_plan(c), change_plan(c, heal=True))]
        return AgentsReady(agents_homes(lab), 0.0, plan)
    took = reset_agents(lab, Steps(), settings.ready_timeout)
    return AgentsReady(agents_homes(lab), took)
