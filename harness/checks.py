"""Checkers: pure functions from a history to a verdict.

Every checker has the shape `check_x(history, **params) -> Verdict`, reads nothing but the history (any
iterable of `Op` / `Obs`, e.g. a `History`) and its parameters, and answers `valid`, `invalid` or `unknown`.
`unknown` is an honest answer: when the history holds too little evidence to decide, a checker says so and
why, and never says `valid` (DESIGN.md, Jepsen model). `compose` folds verdicts: invalid beats unknown beats
valid. The observation and operation schemas the checkers read are in docs/history.md.
"""

from __future__ import annotations

import functools
import math
from collections import Counter, defaultdict
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from harness.history import (
    AGENT_STATE,
    CAPTURE_STATS,
    CTI,
    CTI_SNAPSHOT,
    LAB_SNAPSHOT,
    PBX_SNAPSHOT,
    ROSTER,
    SIP,
    Event,
    Obs,
    Op,
    OpPair,
    pair_ops,
)

__all__ = [
    "CAPTURE_KINDS",
    "Checker",
    "Verdict",
    "check_capture_complete",
    "check_faults_healed",
    "check_no_lost_call",
    "check_no_split_brain",
    "check_recovery_time",
    "check_single_registration",
    "compose",
    "depends_on_capture",
    "percentile",
]

Result = Literal["valid", "invalid", "unknown"]
_RANK: dict[str, int] = {"valid": 0, "unknown": 1, "invalid": 2}

FAULT_INJECT, FAULT_HEAL, CALL_PLACE = "fault.inject", "fault.heal", "call.place"
# Session states that mean the session is over (a snapshot may still list it, e.g. as fenced).
ENDED_STATES: frozenset[str] = frozenset({"logged_out", "fenced"})
# States an agent is restored to after a failover; a call in progress is not carried over.
RESTORABLE_STATES: frozenset[str] = frozenset({"ready", "not_ready"})
# Observation kinds decoded from packet captures: the evidence that capture loss can make incomplete.
CAPTURE_KINDS: frozenset[str] = frozenset({SIP, CTI})
_STATE_KINDS = frozenset({PBX_SNAPSHOT, CTI_SNAPSHOT, SIP, CTI, AGENT_STATE})


@dataclass(frozen=True)
class Verdict:
    """A checker's answer, with the evidence for it (witnesses) and its measurements (figures)."""

    name: str
    result: Result
    reason: str
    witnesses: list[Any] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.result not in _RANK:
            raise ValueError(f"result must be valid, invalid or unknown, got {self.result!r}")

    @property
    def valid(self) -> bool:
        return self.result == "valid"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "result": self.result,
            "reason": self.reason,
            "witnesses": self.witnesses,
            "figures": self.figures,
        }


Checker = Callable[..., Verdict]


def compose(*verdicts: Verdict, name: str = "overall") -> Verdict:
    """Fold verdicts into one: invalid beats unknown beats valid; no verdict at all is unknown."""
    if not verdicts:
        return Verdict(name, "unknown", "no checker ran")
    worst = max(verdicts, key=lambda v: _RANK[v.result]).result
    parts = [v for v in verdicts if v.result == worst]
    if worst == "valid":
        reason = f"all {len(verdicts)} checks valid"
    else:
        reason = "; ".join(f"{v.name}: {v.reason}" for v in parts)
    return Verdict(
        name,
        worst,
        reason,
        witnesses=[v.to_dict() for v in parts if worst != "valid"],
        figures={v.name: v.result for v in verdicts},
    )


def percentile(values: Iterable[float], q: float) -> float:
    """Nearest-rank percentile: the smallest observed value with at least q% of values at or below it.

    Nearest rank (not interpolation) so a reported p95 is a recovery time some agent actually had.
    """
    s = sorted(values)
    if not s:
        raise ValueError("percentile of no values")
    if not 0 < q <= 100:
        raise ValueError(f"q must be in (0, 100], got {q}")
    return s[max(1, math.ceil(q * len(s) / 100)) - 1]


# -- reading the history ---------------------------------------------------------------------------------


def _by_time(history: Iterable[Event]) -> list[Event]:
    """Events in the order things happened: `t`, then append order (a capture may be appended late)."""
    return sorted(history, key=lambda e: (e.t, e.i))


def _val(ev: Event) -> dict[str, Any]:
    return ev.value if isinstance(ev.value, dict) else {}


def _site_of_name(name: Any) -> str | None:
    """`sha-pbx1` -> `sha` (DESIGN.md names devices `<site>-<role><n>`)."""
    if isinstance(name, str) and "-" in name:
        return name.split("-", 1)[0]
    return None


def _site(ev: Event) -> str | None:
    return _val(ev).get("site") or _site_of_name(ev.source)


def _r(x: float) -> float:
    return round(x, 6)


@dataclass(frozen=True)
class _Agent:
    site: str | None
    extension: str | None


def _roster(events: Sequence[Event], override: Mapping[str, Mapping[str, Any]] | None) -> dict[str, _Agent]:
    """Agent -> home site and extension: the param if given, else the `roster` observations (later wins)."""
    raw: dict[str, Mapping[str, Any]] = {}
    if override is not None:
        raw = dict(override)
    else:
        for ev in events:
            if isinstance(ev, Obs) and ev.kind == ROSTER:
                agents = _val(ev).get("agents")
                if isinstance(agents, dict):
                    raw.update(agents)
    return {
        a: _Agent(d.get("site"), None if d.get("extension") is None else str(d.get("extension")))
        for a, d in raw.items()
        if isinstance(d, Mapping)
    }


@dataclass(frozen=True)
class _Fault:
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


def _faults(pairs: Iterable[OpPair]) -> list[_Fault]:
    out = []
    for p in pairs:
        if p.invoke.f != FAULT_INJECT:
            continue
        v = _val(p.invoke)
        agents = v.get("agents")
        out.append(
            _Fault(
                fault_key(v),
                p,
                v.get("site") or _site_of_name(v.get("target")),
                [str(a) for a in agents] if isinstance(agents, list) else None,
            )
        )
    return out


def _affected(
    faults: Sequence[_Fault], roster: Mapping[str, _Agent], param: Collection[str] | None
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


def _all_sites(events: Sequence[Event], roster: Mapping[str, _Agent], faults: Sequence[_Fault]) -> set[str]:
    sites = {ag.site for ag in roster.values() if ag.site}
    sites.update(f.site for f in faults if f.site)
    for ev in events:
        if isinstance(ev, Obs) and ev.kind in _STATE_KINDS:
            s = _site(ev)
            if s:
                sites.add(s)
    return sites


def _expected_sites(
    agents: Sequence[str],
    expect: str | Mapping[str, str],
    roster: Mapping[str, _Agent],
    faults: Sequence[_Fault],
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
            home = roster.get(a, _Agent(None, None)).site
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


def _registrations(ev: Obs) -> Counter[str]:
    """Extension -> number of contacts in a `pbx_snapshot`."""
    regs = _val(ev).get("registrations") or []
    return Counter(str(r["extension"]) for r in regs if isinstance(r, dict) and "extension" in r)


def _sessions(ev: Obs) -> dict[str, list[tuple[str | None, Any]]]:
    """Agent -> active sessions (state, epoch) in a `cti_snapshot`; ended (fenced, logged out) left out."""
    out: dict[str, list[tuple[str | None, Any]]] = defaultdict(list)
    for s in _val(ev).get("sessions") or []:
        if isinstance(s, dict) and "agent" in s and s.get("state") not in ENDED_STATES:
            out[str(s["agent"])].append((s.get("state"), s.get("epoch")))
    return out


@dataclass(frozen=True, slots=True)
class _SessionEvent:
    site: str
    agent: str
    active: bool
    state: str | None
    epoch: Any
    exact: bool  # a CTI-confirmed login / logout / fencing, not a state read at some moment


def _session_event(ev: Obs) -> _SessionEvent | None:
    """Normalise a `cti` message or an `agent_state` read into one agent's session at one site."""
    v = _val(ev)
    site, agent = _site(ev), v.get("agent")
    if not site or agent is None:
        return None
    state = v.get("state")
    if ev.kind == CTI:
        event = v.get("event")
        if event in ("logout", "fenced"):
            return _SessionEvent(site, str(agent), False, None, v.get("epoch"), True)
        if event == "login":
            return _SessionEvent(site, str(agent), True, state, v.get("epoch"), True)
        if event != "state":
            return None
    if state in ENDED_STATES:
        return _SessionEvent(site, str(agent), False, None, v.get("epoch"), False)
    return _SessionEvent(site, str(agent), True, state, v.get("epoch"), False)


def _sip_registration(ev: Obs) -> tuple[str, str, bool] | None:
    """(site, extension, registered) from a captured 200 OK to a REGISTER; None for any other message."""
    v = _val(ev)
    method = v.get("cseq_method") or v.get("method")
    if method != "REGISTER" or v.get("status") != 200 or v.get("extension") is None:
        return None
    site = _site(ev)
    if not site:
        return None
    expires = v.get("expires")
    return site, str(v["extension"]), not (isinstance(expires, int | float) and expires <= 0)


class _Tables:
    """The registration and session tables as last seen, updated event by event."""

    def __init__(self) -> None:
        self.regs: dict[str, Counter[str]] = defaultdict(Counter)  # site -> extension -> contacts
        self.sess: dict[str, dict[str, tuple[str | None, Any]]] = defaultdict(dict)  # site -> agent -> s
        self.last_state: dict[str, str] = {}  # agent -> last active state seen anywhere

    def apply(self, ev: Event) -> tuple[str, str | None, str | None] | None:
        """Apply one event; return what it touched: (site, extension, agent), None meaning all."""
        if not isinstance(ev, Obs):
            return None
        if ev.kind == PBX_SNAPSHOT:
            site = _site(ev)
            if site:
                self.regs[site] = _registrations(ev)
                return site, None, None
        elif ev.kind == SIP:
            r = _sip_registration(ev)
            if r:
                site, ext, registered = r
                self.regs[site][ext] = max(1, self.regs[site][ext]) if registered else 0
                return site, ext, None
        elif ev.kind == CTI_SNAPSHOT:
            site = _site(ev)
            if site:
                table = {a: ss[-1] for a, ss in _sessions(ev).items()}
                self.sess[site] = table
                for a, (state, _) in table.items():
                    if state:
                        self.last_state[a] = state
                return site, None, None
        elif ev.kind in (CTI, AGENT_STATE):
            se = _session_event(ev)
            if se:
                table = self.sess[se.site]
                if se.active:
                    old = table.get(se.agent)
                    state = se.state if se.state is not None else (old[0] if old else None)
                    table[se.agent] = (state, se.epoch)
                    if state:
                        self.last_state[se.agent] = state
                else:
                    table.pop(se.agent, None)
                return se.site, None, se.agent
        return None


def _unknown(name: str, reason: str, **figures: Any) -> Verdict:
    return Verdict(name, "unknown", reason, figures=figures)


def _effective_cut(pairs: Sequence[OpPair]) -> float:
    """The end of the last fault operation (inject or heal): 'final' state is what is seen after it."""
    ts = [
        p.completion.t if p.completion else p.invoke.t
        for p in pairs
        if p.invoke.f in (FAULT_INJECT, FAULT_HEAL)
    ]
    return max(ts, default=-math.inf)


# -- 1. single registration ------------------------------------------------------------------------------


def check_single_registration(
    history: Iterable[Event],
    *,
    expect: str | Mapping[str, str] = "surviving",
    affected: Collection[str] | None = None,
    roster: Mapping[str, Mapping[str, Any]] | None = None,
    after: float | None = None,
) -> Verdict:
    """Every affected agent ends with exactly one PBX registration and one CTI session, both at its
    expected site.

    "Ends" is the last `pbx_snapshot` and `cti_snapshot` of every site taken after `after` (default: the end
    of the last fault inject/heal operation). Every site must have both, or a second registration could
    hide at the site nobody looked at: then the answer is unknown.
    `expect`: `"surviving"` (the one site no effective fault named), `"home"` (roster site), or a mapping.
    `affected`: default, the agents each fault names, else those homed at the faulted site.
    """
    name = "single_registration"
    events = _by_time(history)
    pairs, _ = pair_ops(events)
    faults = _faults(pairs)
    ros = _roster(events, roster)
    agents = _affected(faults, ros, affected)
    if not agents:
        return _unknown(name, "no affected agents (no fault naming a site or agents, and none given)")
    sites = _all_sites(events, ros, faults)
    want, problems = _expected_sites(agents, expect, ros, faults, sites)
    if problems:
        return _unknown(name, "; ".join(problems[:5]), affected=len(agents))
    cut = _effective_cut(pairs) if after is None else after
    last_pbx: dict[str, Obs] = {}
    last_cti: dict[str, Obs] = {}
    for ev in events:
        if isinstance(ev, Obs) and ev.t > cut and ev.kind in (PBX_SNAPSHOT, CTI_SNAPSHOT):
            site = _site(ev)
            if site:
                (last_pbx if ev.kind == PBX_SNAPSHOT else last_cti)[site] = ev
    missing = [f"pbx_snapshot of {s}" for s in sorted(sites) if s not in last_pbx]
    missing += [f"cti_snapshot of {s}" for s in sorted(sites) if s not in last_cti]
    if missing:
        when = "" if cut == -math.inf else f" after t={_r(cut)}"
        return _unknown(name, f"no final {', '.join(missing)}{when}", affected=len(agents))
    no_ext = [a for a in agents if ros.get(a, _Agent(None, None)).extension is None]
    if no_ext:
        return _unknown(
            name, f"extension unknown (not in roster) for {', '.join(no_ext[:5])}", affected=len(agents)
        )
    regs = {s: _registrations(ev) for s, ev in last_pbx.items()}
    sess = {s: _sessions(ev) for s, ev in last_cti.items()}
    witnesses = []
    for a in agents:
        ext = str(ros[a].extension)
        reg_at = sorted(s for s in sites for _ in range(regs[s][ext]))
        sess_at = sorted(s for s in sites for _ in sess[s].get(a, ()))
        if reg_at != [want[a]] or sess_at != [want[a]]:
            witnesses.append(
                {
                    "agent": a,
                    "extension": ext,
                    "expected": want[a],
                    "registered_at": reg_at,
                    "sessions_at": sess_at,
                }
            )
    figures = {"affected": len(agents), "wrong": len(witnesses), "cut": None if cut == -math.inf else _r(cut)}
    if witnesses:
        return Verdict(
            name,
            "invalid",
            f"{len(witnesses)} of {len(agents)} agents do not end with one registration and one session "
            "at the expected site",
            witnesses,
            figures,
        )
    return Verdict(name, "valid", f"all {len(agents)} agents end registered and logged in once", [], figures)


# -- 2. no split brain -----------------------------------------------------------------------------------


@dataclass(slots=True)
class _Interval:
    """One session of one agent at one site. `def_*` bound when it was surely active; `poss_*` when it
    may have been (between the last evidence it did not exist and the first evidence it no longer did)."""

    site: str
    epoch: Any
    def_start: float
    poss_start: float
    start_exact: bool
    last_seen: float
    def_end: float = math.inf
    poss_end: float = math.inf
    end_exact: bool = False


def _jt(x: float) -> float | None:
    return None if math.isinf(x) else _r(x)


def check_no_split_brain(
    history: Iterable[Event], *, roster: Mapping[str, Mapping[str, Any]] | None = None
) -> Verdict:
    """No agent is ever active at two sites at once.

    Each agent's session at a site is an interval, from its login (a CTI-confirmed `login`, or the first
    snapshot or state read that shows it) to its end (a CTI-confirmed `logout`/`fenced`, a snapshot that no
    longer lists it, a fault with `ends_sessions` at that site, or a new epoch). Sessions surely active at
    two sites at once are invalid. If they only may have overlapped, because the evidence leaves a gap
    around a start or an end, the answer is unknown, with the window in doubt as witness. So is a history
    without CTI evidence from every site, or, once faults were made, without a final `cti_snapshot` of
    every site after the last fault operation (the final read).
    """
    name = "no_split_brain"
    events = _by_time(history)
    pairs, _ = pair_ops(events)
    ends_at: dict[int, str] = {}  # index of an ok completion -> site whose sessions it ends
    for p in pairs:
        v = _val(p.invoke)
        if p.invoke.f == FAULT_INJECT and v.get("ends_sessions") and p.completion and p.outcome == "ok":
            site = v.get("site") or _site_of_name(v.get("target"))
            if site:
                ends_at[p.completion.i] = site
    open_: dict[tuple[str, str], _Interval] = {}
    by_site: dict[str, set[str]] = defaultdict(set)
    last_absent: dict[tuple[str, str], float] = {}
    last_snap: dict[str, float] = {}
    done: dict[str, list[_Interval]] = defaultdict(list)
    evidence_sites: set[str] = set()

    exact_end: dict[tuple[str, str], tuple[float, Any]] = {}  # last captured logout/fence: (t, epoch)
    # Epochs of sessions seen ending, per (agent, site). A session is its epoch and begins with a login: a
    # later state read of an ended epoch, with no login since, is a message held up in transit (a reply the
    # CTI wrote while its port was down, retransmitted by TCP when the cut healed, is captured then), not a
    # session that came back. Such reads are counted and open nothing.
    ended_epochs: dict[tuple[str, str], set[Any]] = defaultdict(set)
    late_reads = 0

    def close(agent: str, site: str, t: float, exact: bool) -> None:
        iv = open_.pop((agent, site), None)
        last_absent[(agent, site)] = t
        if exact:
            exact_end[(agent, site)] = (t, iv.epoch if iv is not None else None)
        if iv is not None and iv.epoch is not None:
            ended_epochs[(agent, site)].add(iv.epoch)
        if iv is None:
            return
        by_site[site].discard(agent)
        iv.def_end, iv.poss_end, iv.end_exact = (t, t, True) if exact else (iv.last_seen, t, False)
        done[agent].append(iv)

    def active(agent: str, site: str, t: float, epoch: Any, exact: bool) -> None:
        iv = open_.get((agent, site))
        if iv is not None and epoch is not None and iv.epoch is not None and epoch != iv.epoch:
            close(agent, site, t, exact=False)  # a new epoch: the old session ended before now
            last_absent[(agent, site)] = iv.last_seen
            iv = None
        if iv is None:
            ended_epochs[(agent, site)].discard(epoch)  # seen again (a login, or a read of the table)
            poss = (
                t if exact else max(last_absent.get((agent, site), -math.inf), last_snap.get(site, -math.inf))
            )
            open_[(agent, site)] = _Interval(site, epoch, t, poss, exact, t)
            by_site[site].add(agent)
        else:
            iv.last_seen = t
            if iv.epoch is None:
                iv.epoch = epoch

    for ev in events:
        if isinstance(ev, Op):
            site = ends_at.get(ev.i)
            if site is not None:
                for agent in list(by_site[site]):
                    close(agent, site, ev.t, exact=False)
            continue
        if ev.kind == CTI_SNAPSHOT:
            site = _site(ev)
            if not site:
                continue
            evidence_sites.add(site)
            listed = _sessions(ev)
            # A snapshot shows the table at one instant between the query and its reply (`read_ms`): an
            # exact, captured login or logout inside that window may be newer than the snapshot.
            since = ev.t - float(_val(ev).get("read_ms") or 0.0) / 1000.0
            for agent, ss in listed.items():
                ended = exact_end.get((agent, site))
                if (
                    (agent, site) not in open_
                    and ended
                    and ended[0] >= since
                    and ended[1] in (None, ss[-1][1])
                ):
                    continue  # the snapshot predates the captured end of this very session
                active(agent, site, ev.t, ss[-1][1], exact=False)
            for agent in list(by_site[site] - listed.keys()):
                iv = open_[(agent, site)]
                if iv.start_exact and iv.def_start >= since:
                    continue  # the snapshot predates the captured login
                close(agent, site, ev.t, exact=False)
            last_snap[site] = ev.t
        elif ev.kind in (CTI, AGENT_STATE):
            se = _session_event(ev)
            if se is None:
                continue
            evidence_sites.add(se.site)
            key = (se.agent, se.site)
            if se.active and not se.exact and key not in open_ and se.epoch in ended_epochs[key]:
                late_reads += 1
                continue
            if se.active:
                active(se.agent, se.site, ev.t, se.epoch, se.exact)
            else:
                close(se.agent, se.site, ev.t, se.exact)
    for (agent, _), iv in open_.items():
        iv.def_end = iv.last_seen  # still open at the end: surely active until last seen, maybe beyond
        done[agent].append(iv)

    ros = _roster(events, roster)
    sites = evidence_sites | {ag.site for ag in ros.values() if ag.site}
    if not evidence_sites:
        return _unknown(name, "no CTI evidence (cti_snapshot, cti or agent_state observations)")
    blind = sorted(sites - evidence_sites)
    figures: dict[str, Any] = {
        "agents": len(done),
        "sessions": sum(len(v) for v in done.values()),
        "sites": sorted(sites),
        "late_reads": late_reads,
    }
    sure: list[dict[str, Any]] = []
    maybe: list[dict[str, Any]] = []
    for agent in sorted(done):
        ivs = sorted(done[agent], key=lambda iv: iv.def_start)
        for k, a in enumerate(ivs):
            for b in ivs[k + 1 :]:
                if a.site == b.site:
                    continue
                lo, hi = max(a.def_start, b.def_start), min(a.def_end, b.def_end)
                touch_exact = (a.def_end == hi and a.end_exact) or (b.def_end == hi and b.end_exact)
                touch_exact = touch_exact or (a.def_start == lo and a.start_exact)
                touch_exact = touch_exact or (b.def_start == lo and b.start_exact)
                w = {"agent": agent, "sites": [a.site, b.site], "epochs": [a.epoch, b.epoch]}
                if lo < hi or (lo == hi and not touch_exact):
                    sure.append({**w, "interval": [_jt(lo), _jt(hi)]})
                    continue
                plo, phi = max(a.poss_start, b.poss_start), min(a.poss_end, b.poss_end)
                if plo < phi:
                    maybe.append({**w, "possible_interval": [_jt(plo), _jt(phi)]})
    figures["overlaps"] = len(sure)
    figures["possible_overlaps"] = len(maybe)
    if sure:
        agents = sorted({w["agent"] for w in sure})
        return Verdict(
            name,
            "invalid",
            f"{len(agents)} agents active at two sites at once: {', '.join(agents[:5])}",
            sure,
            figures,
        )
    if maybe:
        agents = sorted({w["agent"] for w in maybe})
        return Verdict(
            name,
            "unknown",
            f"{len(agents)} agents may have been active at two sites at once (no evidence of when a session "
            f"ended or began): {', '.join(agents[:5])}",
            maybe,
            figures,
        )
    if blind:
        return Verdict(name, "unknown", f"no CTI evidence from {', '.join(blind)}", [], figures)
    cut = _effective_cut(pairs)
    stale = sorted(s for s in sites if last_snap.get(s, -math.inf) <= cut) if cut > -math.inf else []
    if stale:  # without a final read, a session opened late at a site nobody looked at again is unseen
        return Verdict(
            name,
            "unknown",
            f"no cti_snapshot of {', '.join(stale)} after the last fault operation",
            [],
            figures,
        )
    return Verdict(
        name, "valid", f"no agent active at two sites at once ({figures['sessions']} sessions)", [], figures
    )


# -- 3. recovery time ------------------------------------------------------------------------------------


def check_recovery_time(
    history: Iterable[Event],
    *,
    bound: float,
    expect: str | Mapping[str, str] = "surviving",
    affected: Collection[str] | None = None,
    roster: Mapping[str, Mapping[str, Any]] | None = None,
    fault: str | None = None,
) -> Verdict:
    """Every affected agent recovers within `bound` seconds of the fault's start.

    Fault start is the `fault.inject` invoke's `t` (the first one that did not fail, or the one with id
    `fault`). An agent has recovered at the first moment its extension is registered at its expected
    site's PBX AND it has a session at that site's CTI AND it is back in its state from before the fault
    (ready / not_ready; if it was on a call, either). Not recovered when the observations end: lost
    (invalid) if the observations of its expected site cover `bound`, else unknown.
    """
    name = "recovery_time"
    events = _by_time(history)
    pairs, _ = pair_ops(events)
    faults = [f for f in _faults(pairs) if f.took_effect]
    if fault is not None:
        faults = [f for f in faults if f.key == fault]
    if not faults:
        what = f"fault {fault!r}" if fault is not None else "fault"
        return _unknown(name, f"no {what} injected in the history", bound=bound)
    flt = faults[0]
    t0 = flt.pair.invoke.t
    ros = _roster(events, roster)
    agents = _affected([flt], ros, affected)
    if not agents:
        return _unknown(name, f"no affected agents for fault {flt.key}", bound=bound)
    all_faults = _faults(pairs)
    sites = _all_sites(events, ros, all_faults)
    want, problems = _expected_sites(agents, expect, ros, all_faults, sites)
    no_ext = [a for a in agents if ros.get(a, _Agent(None, None)).extension is None]
    if no_ext:
        problems.append(f"extension unknown (not in roster) for {', '.join(no_ext[:5])}")
    if problems:
        return _unknown(name, "; ".join(problems[:5]), affected=len(agents), bound=bound)
    ext_of = {a: str(ros[a].extension) for a in agents}
    agents_of_ext: dict[str, list[str]] = defaultdict(list)
    for a, e in ext_of.items():
        agents_of_ext[e].append(a)

    tables = _Tables()
    k = 0
    while k < len(events) and events[k].t < t0:
        tables.apply(events[k])
        k += 1
    baseline = {a: tables.last_state.get(a) for a in agents}
    no_baseline = [a for a in agents if baseline[a] is None]
    wanted = {
        a: (RESTORABLE_STATES if baseline[a] not in RESTORABLE_STATES else frozenset({baseline[a]}))
        for a in agents
    }
    pending: dict[str, set[str]] = defaultdict(set)  # site -> agents not yet recovered there
    for a in agents:
        if a not in no_baseline:
            pending[want[a]].add(a)
    rto: dict[str, float] = {}
    last_obs = None
    last_obs_at: dict[str, float] = {}  # site -> last observation about it, to tell lost from unobserved

    def recovered(a: str) -> bool:
        s = want[a]
        sess = tables.sess[s].get(a)
        return tables.regs[s][ext_of[a]] > 0 and sess is not None and sess[0] in wanted[a]

    for ev in events[k:]:
        touched = tables.apply(ev)
        if touched is None:
            continue
        site, ext, agent = touched
        last_obs = last_obs_at[site] = ev.t
        waiting = pending.get(site)
        if not waiting:
            continue
        cands = [agent] if agent else agents_of_ext.get(ext, []) if ext else list(waiting)
        for a in cands:
            if a in waiting and recovered(a):
                rto[a] = ev.t - t0
                waiting.discard(a)

    if last_obs is None:
        return _unknown(
            name, f"no observations after fault {flt.key} began", affected=len(agents), bound=bound
        )
    covered = last_obs - t0
    times = sorted(rto.values())
    figures: dict[str, Any] = {
        "fault": flt.key,
        "bound": bound,
        "affected": len(agents),
        "recovered": len(rto),
        "p50": _r(percentile(times, 50)) if times else None,
        "p95": _r(percentile(times, 95)) if times else None,
        "max": _r(times[-1]) if times else None,
        "observed_for": _r(covered),
        "per_agent": {a: _r(t) for a, t in sorted(rto.items())},
    }
    bad: list[dict[str, Any]] = []
    doubt: list[dict[str, Any]] = []
    for a in agents:
        if a in no_baseline:
            doubt.append(
                {"agent": a, "problem": "no_baseline", "detail": "state before the fault never observed"}
            )
        elif a in rto:
            if rto[a] > bound:
                bad.append({"agent": a, "problem": "over_bound", "recovery": _r(rto[a]), "bound": bound})
        else:
            s = want[a]
            sess = tables.sess[s].get(a)
            missing = []
            if tables.regs[s][ext_of[a]] <= 0:
                missing.append(f"registration of {ext_of[a]} at {s}")
            if sess is None:
                missing.append(f"CTI session at {s}")
            elif sess[0] not in wanted[a]:
                missing.append(f"state {'/'.join(sorted(wanted[a]))} (is {sess[0]})")
            w = {"agent": a, "expected_site": s, "missing": missing}
            seen_for = last_obs_at.get(s, t0) - t0
            if seen_for >= bound:
                bad.append({**w, "problem": "lost"})
            else:
                doubt.append(
                    {**w, "problem": "unobserved", "detail": f"observations of {s} end {_r(seen_for)}s in"}
                )
    if bad:
        lost = sum(w["problem"] == "lost" for w in bad)
        late = len(bad) - lost
        parts = [f"{lost} agents lost"] if lost else []
        parts += [f"{late} agents over the {bound}s bound"] if late else []
        return Verdict(name, "invalid", ", ".join(parts), bad + doubt, figures)
    if doubt:
        return Verdict(
            name, "unknown", f"{len(doubt)} of {len(agents)} agents cannot be judged", doubt, figures
        )
    return Verdict(
        name,
        "valid",
        f"all {len(agents)} agents recovered within {bound}s (max {figures['max']}s)",
        [],
        figures,
    )


# -- 4. no lost call -------------------------------------------------------------------------------------


def check_no_lost_call(history: Iterable[Event], *, f: str = CALL_PLACE, min_calls: int = 1) -> Verdict:
    """Every placed call is answered (`ok`) or fails explicitly (`fail` with an `error`).

    A call with no completion, an `info` completion (outcome unknown) or a `fail` without a reason is lost.
    Fewer than `min_calls` placed calls is unknown, never valid: nothing was tested. A scenario that
    places no calls leaves this checker out instead of passing it vacuously.
    """
    name = "no_lost_call"
    pairs = [p for p in pair_ops(history)[0] if p.invoke.f == f]
    answered: list[OpPair] = []
    failed: list[OpPair] = []
    lost: list[OpPair] = []
    for p in pairs:
        if p.outcome == "ok":
            answered.append(p)
        elif p.outcome == "fail" and p.completion is not None and p.completion.error:
            failed.append(p)
        else:
            lost.append(p)
    reasons = Counter(p.completion.error for p in failed if p.completion)
    figures = {
        "placed": len(pairs),
        "answered": len(answered),
        "failed": len(failed),
        "lost": len(lost),
        "fail_reasons": dict(reasons),
    }
    why = {None: "no completion", "info": "outcome unknown (info)", "fail": "failed without a reason"}
    witnesses = [
        {"process": p.invoke.process, "t": _r(p.invoke.t), "value": p.invoke.value, "problem": why[p.outcome]}
        for p in lost
    ]
    if witnesses:
        return Verdict(name, "invalid", f"{len(lost)} of {len(pairs)} calls lost", witnesses, figures)
    if len(pairs) < min_calls:
        return Verdict(
            name, "unknown", f"{len(pairs)} calls placed, at least {min_calls} needed", [], figures
        )
    return Verdict(
        name, "valid", f"all {len(pairs)} calls answered ({len(answered)}) or failed explicitly", [], figures
    )


# -- 5. faults healed ------------------------------------------------------------------------------------


def _diff(before: Any, after: Any, fld: str) -> list[dict[str, Any]]:
    if isinstance(before, dict) and isinstance(after, dict):
        return [
            {"field": fld, "key": k, "before": before.get(k), "after": after.get(k)}
            for k in sorted(before.keys() | after.keys(), key=str)
            if before.get(k) != after.get(k)
        ]
    return [] if before == after else [{"field": fld, "key": None, "before": before, "after": after}]


def check_faults_healed(
    history: Iterable[Event], *, fields: Sequence[str] = ("links", "processes")
) -> Verdict:
    """Every injected fault was healed (a `fault.heal` `ok` with the same id, after it), and the lab ends
    as it began: the first and last `lab_snapshot` agree on `fields`.

    A fault whose inject failed needs no heal. The first lab snapshot must come before the first fault and
    the last after the last fault operation, else the comparison proves nothing: unknown.
    """
    name = "faults_healed"
    events = _by_time(history)
    pairs, _ = pair_ops(events)
    faults = _faults(pairs)
    heals = [p for p in pairs if p.invoke.f == FAULT_HEAL]
    witnesses: list[dict[str, Any]] = []
    for flt in faults:
        if not flt.took_effect:
            continue
        mine = [h for h in heals if fault_key(_val(h.invoke)) == flt.key and h.invoke.t >= flt.pair.invoke.t]
        if any(h.outcome == "ok" for h in mine):
            continue
        if not mine:
            problem = "never healed"
        else:
            last = mine[-1]
            problem = {
                None: "heal never completed",
                "info": "heal outcome unknown (info)",
                "fail": f"heal failed: {last.completion.error if last.completion else ''}",
            }[last.outcome]
        witnesses.append({"fault": flt.key, "problem": problem, "injected_at": _r(flt.pair.invoke.t)})
    snaps = [e for e in events if isinstance(e, Obs) and e.kind == LAB_SNAPSHOT]
    fault_ops = [p for p in pairs if p.invoke.f in (FAULT_INJECT, FAULT_HEAL)]
    first_op = min((p.invoke.t for p in fault_ops), default=math.inf)
    cut = _effective_cut(pairs)
    figures: dict[str, Any] = {
        "faults": len(faults),
        "unhealed": len(witnesses),
        "lab_snapshots": len(snaps),
    }
    snap_problem = None
    if len(snaps) < 2:
        snap_problem = f"{len(snaps)} lab_snapshot observations, need one at the start and one at the end"
    elif snaps[0].t > first_op:
        snap_problem = "the first lab_snapshot was taken after the first fault operation"
    elif snaps[-1].t <= cut:
        snap_problem = "no lab_snapshot after the last fault operation"
    else:
        before, after = _val(snaps[0]), _val(snaps[-1])
        diffs = [d for fld in fields for d in _diff(before.get(fld), after.get(fld), fld)]
        absent = [fld for fld in fields if fld not in before or fld not in after]
        figures["differences"] = len(diffs)
        for d in diffs:
            witnesses.append({"problem": "lab changed", **d})
        if absent and not diffs:
            snap_problem = f"lab_snapshot lacks {', '.join(absent)}"
    if witnesses:
        unhealed = figures["unhealed"]
        parts = [f"{unhealed} faults not healed"] if unhealed else []
        parts += (
            [f"lab ends differently in {figures['differences']} places"] if figures.get("differences") else []
        )
        return Verdict(name, "invalid", ", ".join(parts), witnesses, figures)
    if snap_problem:
        return Verdict(name, "unknown", snap_problem, [], figures)
    what = f"all {len(faults)} faults healed" if faults else "no fault injected"
    return Verdict(name, "valid", f"{what}; lab ends as it began", [], figures)


# -- 6. capture complete ---------------------------------------------------------------------------------


def _int(x: Any) -> int:
    return int(x) if isinstance(x, int | float) and not isinstance(x, bool) else 0


def _drops(v: Mapping[str, Any]) -> int:
    """`drops`, else tcpdump's kernel + interface drop counters (as `CaptureResult.to_dict` writes them)."""
    if "drops" in v:
        return _int(v["drops"])
    return _int(v.get("packets_dropped_by_kernel")) + _int(v.get("packets_dropped_by_interface"))


def check_capture_complete(history: Iterable[Event]) -> Verdict:
    """Every capture point reports `complete` and no drops. Never invalid: a lossy capture is the
    harness's failure, not the system's, so it can only make the evidence insufficient (unknown)."""
    name = "capture_complete"
    stats: dict[str, dict[str, Any]] = {}
    for ev in _by_time(history):
        if isinstance(ev, Obs) and ev.kind == CAPTURE_STATS:
            v = _val(ev)
            point = str(v.get("capture") or v.get("name") or ev.source)
            prev = stats.get(point, {"drops": 0, "complete": True, "packets": 0})
            stats[point] = {
                # counters are cumulative per capture point: keep the worst seen
                "drops": max(prev["drops"], _drops(v)),
                "complete": prev["complete"]
                and v.get("complete") is not False
                and v.get("lossless") is not False,
                "packets": max(prev["packets"], _int(v.get("packets", v.get("packets_captured")))),
            }
    if not stats:
        return _unknown(name, "no capture_stats observation: capture completeness not recorded")
    figures = {"captures": stats, "drops": sum(s["drops"] for s in stats.values())}
    bad = [(p, s) for p, s in sorted(stats.items()) if s["drops"] > 0 or not s["complete"]]
    if bad:
        parts = [
            f"capture dropped {s['drops']} packets on {p}" if s["drops"] else f"capture incomplete on {p}"
            for p, s in bad
        ]
        return Verdict(name, "unknown", "; ".join(parts), [{"capture": p, **s} for p, s in bad], figures)
    return Verdict(name, "valid", f"{len(stats)} captures complete, no drops", [], figures)


def depends_on_capture(checker: Checker) -> Checker:
    """Wrap a checker whose evidence comes (partly) from packet captures.

    If any capture dropped packets or was incomplete, or the history holds captured messages (`sip`, `cti`)
    but no capture statistics, the wrapped checker answers unknown with the capture's reason, whatever the
    inner checker said (kept in figures as `unchecked_result`): missing packets can fake a lost agent as
    easily as hide a split brain.
    """

    @functools.wraps(checker)
    def wrapped(history: Iterable[Event], **params: Any) -> Verdict:
        events = list(history)
        inner = checker(events, **params)
        cap = check_capture_complete(events)
        if cap.result == "valid":
            return inner
        if cap.figures.get("captures") is None and not any(
            isinstance(e, Obs) and e.kind in CAPTURE_KINDS for e in events
        ):
            return inner  # no capture stats, but nothing captured was used either
        return Verdict(
            inner.name,
            "unknown",
            cap.reason,
            inner.witnesses,
            {**inner.figures, "unchecked_result": inner.result, "capture": cap.figures},
        )

    return wrapped
