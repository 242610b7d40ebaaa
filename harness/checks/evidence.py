"""Reading a history: what every checker needs to know before it judges anything.

Who is who (the roster), which faults were made and whom they hit, which sites there are and where each
agent is expected, and when the scenario's own steps happened. Pure functions of the events; the schema
is docs/history.md.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from harness.history import (
    AGENT_STATE,
    CTI,
    CTI_SNAPSHOT,
    PBX_SNAPSHOT,
    ROSTER,
    SIP,
    Event,
    Obs,
    Op,
    OpPair,
)

__all__ = [
    "CALL_PLACE",
    "ENDED_STATES",
    "EXPECTATION",
    "FAULT_HEAL",
    "FAULT_INJECT",
    "PHASE",
    "RESTORABLE_STATES",
    "STATE_KINDS",
    "AgentInfo",
    "FaultRecord",
    "affected_agents",
    "all_sites",
    "by_time",
    "effective_cut",
    "expected_sites",
    "fault_key",
    "faults_of",
    "op_time",
    "phase_time",
    "roster_of",
    "rounded",
    "site_of",
    "site_of_name",
    "value_of",
]

FAULT_INJECT, FAULT_HEAL, CALL_PLACE = "fault.inject", "fault.heal", "call.place"
# The scenario's own records: a phase began (an `info` op of process `scenario`), and an expectation of its
# own was judged from the snapshots (an observation; docs/scenarios.md).
PHASE, EXPECTATION = "phase", "expectation"
# Session states that mean the session is over (a snapshot may still list it, e.g. as fenced).
ENDED_STATES: frozenset[str] = frozenset({"logged_out", "fenced"})
# States an agent is restored to after a failover; a call in progress is not carried over.
RESTORABLE_STATES: frozenset[str] = frozenset({"ready", "not_ready"})
STATE_KINDS = frozenset({PBX_SNAPSHOT, CTI_SNAPSHOT, SIP, CTI, AGENT_STATE})


def by_time(history: Iterable[Event]) -> list[Event]:
    """Events in the order things happened: `t`, then append order (a capture may be appended late)."""
    return sorted(history, key=lambda e: (e.t, e.i))


def value_of(ev: Event) -> dict[str, Any]:
    return ev.value if isinstance(ev.value, dict) else {}


def site_of_name(name: Any) -> str | None:
    """`sha-pbx1` -> `sha` (DESIGN.md names devices `<site>-<role><n>`)."""
    if isinstance(name, str) and "-" in name:
        return name.split("-", 1)[0]
    return None


def site_of(ev: Event) -> str | None:
    return value_of(ev).get("site") or site_of_name(ev.source)


def rounded(x: float) -> float:
    return round(x, 6)


@dataclass(frozen=True)
class AgentInfo:
    site: str | None
    extension: str | None


def roster_of(
    events: Sequence[Event], override: Mapping[str, Mapping[str, Any]] | None
) -> dict[str, AgentInfo]:
    """Agent -> home site and extension: the param if given, else the `roster` observations (later wins)."""
    raw: dict[str, Mapping[str, Any]] = {}
    if override is not None:
        raw = dict(override)
    else:
        for ev in events:
            if isinstance(ev, Obs) and ev.kind == ROSTER:
                agents = value_of(ev).get("agents")
                if isinstance(agents, dict):
                    raw.update(agents)
    return {
        a: AgentInfo(d.get("site"), None if d.get("extension") is None else str(d.get("extension")))
        for a, d in raw.items()
        if isinstance(d, Mapping)
    }


@dataclass(frozen=True)
class FaultRecord:
    key: str
    pair: OpPair
    site: str | None
    agents: list[str] | None

    @property
    def took_effect(self) -> bool:
        """Not known to have failed: `ok`, `info`, or still in flight all may have changed the lab."""
        return self.pair.outcome != "fail"


def fault_key(v: Any) -> str:
    """What ties a fault's heal to its inject in the history: its id, else kind@target."""
    v = v if isinstance(v, Mapping) else {}
    return str(v["id"]) if v.get("id") is not None else f"{v.get('fault')}@{v.get('target')}"


def faults_of(pairs: Iterable[OpPair]) -> list[FaultRecord]:
    out = []
    for p in pairs:
        if p.invoke.f != FAULT_INJECT:
            continue
        v = value_of(p.invoke)
        agents = v.get("agents")
        out.append(
            FaultRecord(
                fault_key(v),
                p,
                v.get("site") or site_of_name(v.get("target")),
                [str(a) for a in agents] if isinstance(agents, list) else None,
            )
        )
    return out


def affected_agents(
    faults: Sequence[FaultRecord], roster: Mapping[str, AgentInfo], param: Collection[str] | None
) -> list[str]:
    """The param, else each effective fault's `agents`, else the roster agents homed at its site."""
    if param is not None:
        return sorted(param)
    out: set[str] = set()
    for flt in faults:
        if not flt.took_effect:
            continue
        if flt.agents is not None:
            out.update(flt.agents)
        elif flt.site is not None:
            out.update(a for a, ag in roster.items() if ag.site == flt.site)
    return sorted(out)


def all_sites(
    events: Sequence[Event], roster: Mapping[str, AgentInfo], faults: Sequence[FaultRecord]
) -> set[str]:
    sites = {ag.site for ag in roster.values() if ag.site}
    sites.update(f.site for f in faults if f.site)
    for ev in events:
        if isinstance(ev, Obs) and ev.kind in STATE_KINDS:
            s = site_of(ev)
            if s:
                sites.add(s)
    return sites


def expected_sites(
    agents: Sequence[str],
    expect: str | Mapping[str, str],
    roster: Mapping[str, AgentInfo],
    faults: Sequence[FaultRecord],
    sites: set[str],
) -> tuple[dict[str, str], list[str]]:
    """Where each agent should end up: a per-agent mapping, `"home"`, or `"surviving"` (the only unfaulted
    site). Returns the sites found and the problems that kept one from being found."""
    problems: list[str] = []
    out: dict[str, str] = {}
    if isinstance(expect, Mapping):
        for a in agents:
            if a in expect:
                out[a] = expect[a]
            else:
                problems.append(f"no expected site given for {a}")
        return out, problems
    if expect == "home":
        for a in agents:
            home = roster.get(a, AgentInfo(None, None)).site
            if home:
                out[a] = home
            else:
                problems.append(f"home site of {a} unknown (not in roster)")
        return out, problems
    if expect != "surviving":
        raise ValueError(f"expect must be 'surviving', 'home' or a mapping, got {expect!r}")
    faulted = {f.site for f in faults if f.took_effect and f.site}
    surviving = sites - faulted
    if not faulted:
        return {}, ["no effective fault names a site, so there is no surviving site"]
    if len(surviving) != 1:
        return {}, [f"cannot tell the surviving site: sites {sorted(sites)}, faulted {sorted(faulted)}"]
    (s,) = surviving
    return dict.fromkeys(agents, s), []


def effective_cut(pairs: Sequence[OpPair]) -> float:
    """The end of the last fault operation (inject or heal): 'final' state is what is seen after it."""
    ts = [
        p.completion.t if p.completion else p.invoke.t
        for p in pairs
        if p.invoke.f in (FAULT_INJECT, FAULT_HEAL)
    ]
    return max(ts, default=-math.inf)


def phase_time(history: Iterable[Event], phase: str) -> float | None:
    """When a phase of the scenario began (its `phase` record in the history); None if it never did."""
    for e in by_time(history):
        if isinstance(e, Op) and e.f == PHASE and value_of(e).get("phase") == phase:
            return e.t
    return None


def op_time(events: Iterable[Event], f: str, id: str, typ: str) -> float | None:
    """When the first `typ` (invoke, ok...) of operation `f` with value id `id` was recorded."""
    return next(
        (
            e.t
            for e in events
            if isinstance(e, Op) and e.type == typ and e.f == f and value_of(e).get("id") == id
        ),
        None,
    )
