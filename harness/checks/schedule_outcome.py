"""A nemesis schedule's outcome: where every agent must, may or must not be at the final read, judged from
the history (the expected outcome is data the runner recorded, never the checker's guess).

The expectation (`Expectation`, JSON `hil-expectation/1`) is computed from the schedule and the topology
by harness/nemesis/expect.py and recorded as the `schedule_expectation` observation before the first op;
its rules are in docs/nemesis.md. It lives here, beside the checker that reads it, because checkers sit
below the nemesis in the layers: the nemesis builds it, the checker owns its shape.

Judged at the final read (the last `pbx_snapshot` and `cti_snapshot` of every site after the last fault
or session operation): every agent that must be online is registered once and logged in once, at one
site, a site it may be at; in its state from before the schedule; agents that must move are away from
where they started, agents that must stay never left (no session elsewhere at any time, the same epoch);
agents logged out and not logged in again hold no session anywhere; and nobody was ever active at two
sites at once (`check_no_split_brain`). Too little evidence (no expectation, no read of every site before
the schedule or after the final heal, a fault never healed, the lab not where the expectation assumed,
capture loss) is unknown, never valid.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from harness.checks.capture_complete import depends_on_capture
from harness.checks.evidence import (
    RESTORABLE_STATES,
    AgentInfo,
    by_time,
    roster_of,
    site_of,
    value_of,
)
from harness.checks.split_brain import check_no_split_brain
from harness.checks.timeline import registrations_in, session_event, sessions_in
from harness.checks.verdict import Verdict, unknown
from harness.history import AGENT_STATE, CTI, CTI_SNAPSHOT, PBX_SNAPSHOT, Event, Obs, Op, pair_ops

__all__ = [
    "EXPECTATION_SCHEMA",
    "SCHEDULE_EXPECTATION",
    "AgentExpectation",
    "Expectation",
    "check_schedule_outcome",
]

SCHEDULE_EXPECTATION = "schedule_expectation"  # the observation kind the runner records
EXPECTATION_SCHEMA = "hil-expectation/1"
START_F = "schedule.start"  # the runner's info op: the schedule's t0
SESSION_CHANGE = "agent_session"  # a logout (apply) healed by a login (revert)
# Changes whose apply/revert are not part of the schedule's effect on the lab (the run's own captures).
_HARNESS_CHANGES = frozenset({"process", "span_session"})
Move = Literal["must", "stay", "may"]


@dataclass(frozen=True)
class AgentExpectation:
    """What one agent must show at the final read, and why (the rules of harness/nemesis/expect.py)."""

    start: str | None  # where it was before the schedule (None: offline)
    online: bool  # online at the final read (False: logged out by the schedule, not back in)
    sites: tuple[str, ...]  # where it may be at the final read (empty when offline)
    move: Move  # must move away from `start`, must stay there throughout, or may do either
    state: bool  # its final state must be its state before the schedule
    why: tuple[str, ...] = ()
    relogin: tuple[str, ...] = ()  # offline agents: where a login at the final heal would land

    def key(self) -> tuple[Any, ...]:
        return (self.start, self.online, self.sites, self.move, self.state, self.why, self.relogin)


@dataclass
class Expectation:
    """The expected outcome of one schedule on one topology (JSON-serialisable with `to_dict`)."""

    agents: dict[str, AgentExpectation]
    window: float
    settle: float
    final_heal: float  # seconds from the schedule's start: when everything is healed
    unservable: list[dict[str, Any]] = field(default_factory=list)  # {home, from, to}: no site serves
    seed: int | None = None
    topology: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Agents with the same expectation share one group, so 10,000 agents stay a small record."""
        groups: dict[tuple[Any, ...], list[str]] = defaultdict(list)
        for agent in sorted(self.agents):
            groups[self.agents[agent].key()].append(agent)
        out: list[dict[str, Any]] = []
        for key, agents in groups.items():
            start, online, sites, move, state, why, relogin = key
            g: dict[str, Any] = {"agents": agents, "start": start, "online": online, "sites": list(sites)}
            g.update({"move": move, "state": state, "why": list(why)})
            if relogin:
                g["relogin"] = list(relogin)
            out.append(g)
        return {
            "schema": EXPECTATION_SCHEMA,
            "seed": self.seed,
            "topology": self.topology,
            "window": self.window,
            "settle": self.settle,
            "final_heal": self.final_heal,
            "unservable": self.unservable,
            "groups": out,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Expectation:
        """Read a recorded expectation back; ValueError naming the field when it is not one."""
        if not isinstance(d, Mapping) or d.get("schema") != EXPECTATION_SCHEMA:
            raise ValueError(f"schema: not {EXPECTATION_SCHEMA}")
        agents: dict[str, AgentExpectation] = {}
        groups = d.get("groups")
        if not isinstance(groups, list):
            raise ValueError("groups: must be a list")
        for k, g in enumerate(groups):
            try:
                ae = AgentExpectation(
                    start=None if g.get("start") is None else str(g["start"]),
                    online=_bool(g["online"]),
                    sites=tuple(str(s) for s in g["sites"]),
                    move=_move(g["move"]),
                    state=_bool(g["state"]),
                    why=tuple(str(w) for w in g.get("why", ())),
                    relogin=tuple(str(s) for s in g.get("relogin", ())),
                )
                names = [str(a) for a in g["agents"]]
            except (KeyError, TypeError, AttributeError, ValueError) as e:
                raise ValueError(f"groups.{k}: {type(e).__name__}: {e}") from None
            for a in names:
                agents[a] = ae
        try:
            return cls(
                agents=agents,
                window=float(d["window"]),
                settle=float(d["settle"]),
                final_heal=float(d["final_heal"]),
                unservable=list(d.get("unservable") or []),
                seed=d.get("seed"),
                topology=d.get("topology"),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{type(e).__name__}: {e}") from None


def _bool(x: Any) -> bool:
    if not isinstance(x, bool):
        raise ValueError(f"{x!r} is not true or false")
    return x


def _move(x: Any) -> Move:
    if x not in ("must", "stay", "may"):
        raise ValueError(f"move {x!r} is not must, stay or may")
    return x  # type: ignore[no-any-return]


# -- reading the history ------------------------------------------------------------------------------


def _schedule_start(events: list[Event]) -> float | None:
    """When the schedule began: the runner's `schedule.start`, else its first fault or change."""
    for e in events:
        if isinstance(e, Op) and e.f == START_F:
            return e.t
    for e in events:
        if isinstance(e, Op) and e.type == "invoke" and e.f in ("fault.inject", "change.apply"):
            if value_of(e).get("change") not in _HARNESS_CHANGES:
                return e.t
    return None


def _final_cut(events: list[Event]) -> tuple[float, list[str]]:
    """The end of the last fault or session operation, and the faults never healed (a logout left open is
    the schedule's own doing, judged by where the agent is, not a fault left in the lab)."""
    pairs, _ = pair_ops(events)
    cut = -math.inf
    ours: set[str] = set()  # ids of the schedule's faults and session changes
    applied: dict[str, str] = {}  # id -> what, for those that must be healed
    healed: set[str] = set()
    for p in pairs:
        v = value_of(p.invoke)
        ident = str(v.get("id"))
        if p.invoke.f in ("fault.inject", "change.apply"):
            if v.get("change") in _HARNESS_CHANGES:
                continue
            ours.add(ident)
            if p.outcome != "fail" and v.get("change") != SESSION_CHANGE:
                applied[ident] = f"{v.get('fault') or v.get('change')} {v.get('target')}"
        elif p.invoke.f in ("fault.heal", "change.revert"):
            if ident not in ours:
                continue  # a harness change's revert (its apply was left out above)
            if p.outcome == "ok":
                healed.add(ident)
        else:
            continue
        cut = max(cut, p.completion.t if p.completion else p.invoke.t)
    open_ = [f"{what} ({i})" for i, what in applied.items() if i not in healed]
    return cut, open_


def _logged_out(events: list[Event]) -> dict[str, bool]:
    """Agent -> whether its last session change left it logged out (a logout not healed by a login)."""
    pairs, _ = pair_ops(events)
    by_id: dict[str, tuple[str, str]] = {}
    out: dict[str, bool] = {}
    for p in pairs:
        v = value_of(p.invoke)
        if p.invoke.f == "change.apply" and v.get("change") == SESSION_CHANGE and p.outcome != "fail":
            agent, verb = str(v.get("target")), str(v.get("verb", "logout"))
            by_id[str(v.get("id"))] = (agent, verb)
            out[agent] = verb == "logout"
        elif p.invoke.f == "change.revert" and p.outcome == "ok" and str(v.get("id")) in by_id:
            agent, verb = by_id[str(v.get("id"))]
            if verb == "logout":
                out[agent] = False
    return out


def _reads(events: list[Event], lo: float, hi: float) -> tuple[dict[str, Obs], dict[str, Obs]]:
    """The last pbx_snapshot and cti_snapshot of each site with lo < t < hi."""
    pbx: dict[str, Obs] = {}
    cti: dict[str, Obs] = {}
    for e in events:
        if isinstance(e, Obs) and lo < e.t < hi and e.kind in (PBX_SNAPSHOT, CTI_SNAPSHOT):
            s = site_of(e)
            if s:
                (pbx if e.kind == PBX_SNAPSHOT else cti)[s] = e
    return pbx, cti


def _placement(cti: Mapping[str, Obs]) -> dict[str, list[tuple[str, str | None, Any]]]:
    """Agent -> [(site, state, epoch)] of its active sessions in these snapshots."""
    out: dict[str, list[tuple[str, str | None, Any]]] = defaultdict(list)
    for site in sorted(cti):
        for agent, ss in sessions_in(cti[site]).items():
            out[agent] += [(site, st, ep) for st, ep in ss]
    return out


def _seen_elsewhere(events: list[Event], t0: float, cut: float) -> dict[str, set[str]]:
    """Agent -> the sites any CTI evidence showed it active at during the schedule."""
    out: dict[str, set[str]] = defaultdict(set)
    for e in events:
        if not isinstance(e, Obs) or not t0 <= e.t <= cut:
            continue
        if e.kind == CTI_SNAPSHOT:
            s = site_of(e)
            for agent in sessions_in(e) if s else ():
                out[agent].add(str(s))
        elif e.kind in (CTI, AGENT_STATE):
            se = session_event(e)
            if se is not None and se.active:
                out[se.agent].add(se.site)
    return out


def _judge(history: Iterable[Event], expectation: Expectation | Mapping[str, Any] | None = None) -> Verdict:
    name = "schedule_outcome"
    events = by_time(history)
    exp, why = _expectation(events, expectation)
    if exp is None:
        return unknown(name, why)
    t0 = _schedule_start(events)
    if t0 is None:
        return unknown(name, "no schedule ran (no schedule.start, fault or change in the history)")
    cut, open_ = _final_cut(events)
    if open_:
        return unknown(
            name, f"never healed, so there is no read after the final heal: {', '.join(open_[:5])}"
        )
    roster = roster_of(events, None)
    sites = sorted(
        {ag.site for ag in roster.values() if ag.site} | {s for a in exp.agents.values() for s in a.sites}
    )
    pre_pbx, pre_cti = _reads(events, -math.inf, t0)
    fin_pbx, fin_cti = _reads(events, cut, math.inf)
    missing = [f"before the schedule: cti_snapshot of {s}" for s in sites if s not in pre_cti]
    missing += [
        f"after the final heal: {k}_snapshot of {s}"
        for s in sites
        for k, d in (("pbx", fin_pbx), ("cti", fin_cti))
        if s not in d
    ]
    if missing:
        return unknown(name, "no read " + "; ".join(missing[:4]))
    no_ext = sorted(a for a in exp.agents if roster.get(a, AgentInfo(None, None)).extension is None)
    if no_ext:
        return unknown(name, f"extension unknown (not in the roster) for {', '.join(no_ext[:5])}")
    before, after = _placement(pre_cti), _placement(fin_cti)
    regs = {s: registrations_in(ev) for s, ev in fin_pbx.items()}
    seen = _seen_elsewhere(events, t0, cut)
    logged_out = _logged_out(events)
    bad: list[dict[str, Any]] = []
    doubt: list[dict[str, Any]] = []
    counts: dict[str, int] = defaultdict(int)
    for agent in sorted(exp.agents):
        ae = exp.agents[agent]
        counts[f"move_{ae.move}" if ae.online else "offline"] += 1
        was = before.get(agent, [])
        was_site = was[0][0] if len(was) == 1 else None
        if ([s for s, _, _ in was] or [None]) != [ae.start]:
            doubt.append(
                {
                    "agent": agent,
                    "problem": "the lab was not where the expectation assumed",
                    "assumed": ae.start,
                    "seen": [s for s, _, _ in was],
                }
            )
            continue
        now = after.get(agent, [])
        ext = str(roster[agent].extension)
        reg_at = sorted(s for s in sites for _ in range(regs[s][ext]))
        w: dict[str, Any] = {
            "agent": agent,
            "start": ae.start,
            "sessions_at": [s for s, _, _ in now],
            "registered_at": reg_at,
            "why": list(ae.why),
        }
        online, allowed, move, check_state = ae.online, ae.sites, ae.move, ae.state
        if not online and not logged_out.get(agent, True):  # the final heal logged it in again
            online, allowed, move, check_state = True, ae.relogin or tuple(sites), "may", False
        if not online:
            if now:
                bad.append({**w, "problem": "logged out by the schedule, but online at the final read"})
            continue
        problem = _placement_problem(now, reg_at, allowed, move, ae.start, seen.get(agent, set()))
        if problem is None and check_state and was:
            earlier, final = was[0][1], now[0][1]
            want = RESTORABLE_STATES if earlier == "on_call" else {earlier}
            if final not in want:
                problem = f"state {final}, was {earlier} before the schedule"
        if problem is None and move == "stay":
            if seen.get(agent, set()) - {ae.start}:
                problem = (
                    f"must stay at {ae.start}, but was seen at {', '.join(sorted(seen[agent] - {ae.start}))}"
                )
            elif was_site is not None and was[0][2] != now[0][2]:
                problem = f"must stay, but logged in anew at {ae.start} (epoch {was[0][2]} -> {now[0][2]})"
        if problem:
            bad.append({**w, "allowed": list(allowed), "move": move, "problem": problem})
    sb = depends_on_capture(check_no_split_brain)(events)
    figures = {
        **counts,
        "agents": len(exp.agents),
        "wrong": len(bad),
        "unsure": len(doubt),
        "split_brain": sb.result,
        "unservable": exp.unservable,
    }
    if bad or sb.result == "invalid":
        parts = [f"{len(bad)} agents not where the schedule leaves them"] if bad else []
        parts += [f"split brain: {sb.reason}"] if sb.result == "invalid" else []
        kinds = sorted({str(w["problem"]).split(",")[0].split(":")[0] for w in bad})[:4]
        return Verdict(
            name,
            "invalid",
            "; ".join(parts) + (f" ({'; '.join(kinds)})" if kinds else ""),
            bad + ([sb.to_dict()] if sb.result == "invalid" else []),
            figures,
        )
    if doubt or sb.result == "unknown":
        parts = (
            [f"{len(doubt)} agents not where the expectation assumed before the schedule"] if doubt else []
        )
        parts += [f"split brain: {sb.reason}"] if sb.result == "unknown" else []
        return Verdict(
            name,
            "unknown",
            "; ".join(parts),
            doubt + ([sb.to_dict()] if sb.result == "unknown" else []),
            figures,
        )
    return Verdict(name, "valid", f"all {len(exp.agents)} agents where the schedule leaves them", [], figures)


def _placement_problem(
    now: list[tuple[str, str | None, Any]], reg_at: list[str], allowed: tuple[str, ...], move: str,
    start: str | None, seen: set[str],
) -> str | None:  # fmt: skip
    """Why an agent that must be online is not once at an allowed site (None: it is)."""
    at = [s for s, _, _ in now]
    if not at and not reg_at:
        return "lost: no session and no registration anywhere"
    if not at:
        return f"lost: no session anywhere (registered at {', '.join(reg_at)})"
    if len(at) > 1:
        return f"doubled: sessions at {', '.join(at)}"
    if len(reg_at) > 1:
        return f"doubled: registered at {', '.join(reg_at)}"
    if reg_at != at:
        return f"half: session at {at[0]}, registration at {', '.join(reg_at) or 'none'}"
    if at[0] in allowed:
        return None
    if move == "must" and at[0] == start:
        if seen - {start}:
            return f"failback: moved, then back at {start} with no plan to send it there"
        return f"did not move: still at {start}, must be at {', '.join(allowed)}"
    if move == "stay":
        return f"moved: at {at[0]}, must stay at {start}"
    return f"wrong site: at {at[0]}, may be at {', '.join(allowed)}"


def _expectation(
    events: list[Event], given: Expectation | Mapping[str, Any] | None
) -> tuple[Expectation | None, str]:
    if isinstance(given, Expectation):
        return given, ""
    raw: Any = given
    if raw is None:
        recs = [e for e in events if isinstance(e, Obs) and e.kind == SCHEDULE_EXPECTATION]
        if not recs:
            return None, "no schedule_expectation recorded: nothing to judge the final read against"
        raw = recs[-1].value
    try:
        return Expectation.from_dict(raw), ""
    except ValueError as e:
        return None, f"the recorded schedule_expectation is not one: {e}"


def check_schedule_outcome(
    history: Iterable[Event], *, expectation: Expectation | Mapping[str, Any] | None = None
) -> Verdict:
    """Every agent where the schedule leaves it at the final read, never at two sites at once (module
    docstring). `expectation` overrides the recorded `schedule_expectation`. Unknown when the captures
    lost packets (their CTI messages are part of the evidence that a must-stay agent never left)."""
    return depends_on_capture(_judge)(history, expectation=expectation)
