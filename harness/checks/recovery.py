"""Recovery time: every affected agent back, at its expected site and in its earlier state, within a bound."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping
from typing import Any

from harness.checks.evidence import (
    RESTORABLE_STATES,
    AgentInfo,
    affected_agents,
    all_sites,
    by_time,
    expected_sites,
    faults_of,
    roster_of,
    rounded,
)
from harness.checks.split_brain import held_of
from harness.checks.timeline import Tables
from harness.checks.verdict import Verdict, unknown
from harness.history import CTI, SIP, Event, Obs, pair_ops

__all__ = ["check_recovery_time", "percentile", "seconds"]

WIRE, POLLS = "wire", "polls"  # where an agent's recovery time came from (figures.per_agent_source)


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

    That moment is taken from the capture when it shows both (`wire_recoveries`): a poll only sees it
    when it happens to look, which quantizes every agent to the same few instants. An agent whose
    recovery the capture lacks (or shows later than a poll saw it: the capture missed the first
    evidence) is timed from the polls; the figures count both (`timed_from_wire`, `timed_from_polls`).
    """
    name = "recovery_time"
    events = by_time(history)
    pairs, _ = pair_ops(events)
    faults = [f for f in faults_of(pairs) if f.took_effect]
    if fault is not None:
        faults = [f for f in faults if f.key == fault]
    if not faults:
        what = f"fault {fault!r}" if fault is not None else "fault"
        return unknown(name, f"no {what} injected in the history", bound=bound)
    flt = faults[0]
    t0 = flt.pair.invoke.t
    ros = roster_of(events, roster)
    agents = affected_agents([flt], ros, affected)
    if not agents:
        return unknown(name, f"no affected agents for fault {flt.key}", bound=bound)
    all_faults = faults_of(pairs)
    sites = all_sites(events, ros, all_faults)
    want, problems = expected_sites(agents, expect, ros, all_faults, sites)
    no_ext = [a for a in agents if ros.get(a, AgentInfo(None, None)).extension is None]
    if no_ext:
        problems.append(f"extension unknown (not in roster) for {', '.join(no_ext[:5])}")
    if problems:
        return unknown(name, "; ".join(problems[:5]), affected=len(agents), bound=bound)
    ext_of = {a: str(ros[a].extension) for a in agents}
    agents_of_ext: dict[str, list[str]] = defaultdict(list)
    for a, e in ext_of.items():
        agents_of_ext[e].append(a)

    tables = Tables()
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

    def seen_at(a: str) -> bool:
        s = want[a]
        return tables.regs[s][ext_of[a]] > 0 or tables.sess[s].get(a) is not None

    # Detection: the first sign of an agent at its new site (its registration or its CTI session there,
    # whichever comes first): how long its client took to notice the fault and act. Agents already there
    # before the fault (they stay) have none.
    undetected: dict[str, set[str]] = defaultdict(set)
    for a in agents:
        if not seen_at(a):
            undetected[want[a]].add(a)
    detect: dict[str, float] = {}

    for ev in events[k:]:
        touched = tables.apply(ev)
        if touched is None:
            continue
        site, ext, agent = touched
        last_obs = last_obs_at[site] = ev.t
        waiting, unseen = pending.get(site), undetected.get(site)
        if not waiting and not unseen:
            continue
        everyone = [*(waiting or ()), *(unseen or ())]
        cands = [agent] if agent else agents_of_ext.get(ext, []) if ext else everyone
        for a in cands:
            if unseen and a in unseen and seen_at(a):
                detect[a] = ev.t - t0
                unseen.discard(a)
            if waiting and a in waiting and recovered(a):
                rto[a] = ev.t - t0
                waiting.discard(a)

    wire = wire_recoveries(events, t0, {a: want[a] for a in agents}, ext_of, wanted)
    source: dict[str, str] = {}
    for a in set(rto) | set(wire):
        if a in no_baseline:
            continue
        w, p = wire.get(a), rto.get(a)
        if w is not None and (p is None or w <= p):
            rto[a], source[a] = w, WIRE
        else:
            source[a] = POLLS

    if last_obs is None:
        return unknown(
            name, f"no observations after fault {flt.key} began", affected=len(agents), bound=bound
        )
    covered = last_obs - t0
    times = sorted(rto.values())
    figures: dict[str, Any] = {
        "fault": flt.key,
        "bound": bound,
        "affected": len(agents),
        "recovered": len(rto),
        "p50": rounded(percentile(times, 50)) if times else None,
        "p95": rounded(percentile(times, 95)) if times else None,
        "max": rounded(times[-1]) if times else None,
        "observed_for": rounded(covered),
        "per_agent": {a: rounded(t) for a, t in sorted(rto.items())},
        "timed_from_wire": sum(v == WIRE for v in source.values()),
        "timed_from_polls": sum(v == POLLS for v in source.values()),
        "per_agent_source": dict(sorted(source.items())),
    }
    if detect:
        dts = sorted(detect.values())
        figures |= {
            "detection_p50": rounded(percentile(dts, 50)),
            "detection_p95": rounded(percentile(dts, 95)),
            "detection_max": rounded(dts[-1]),
            "per_agent_detection": {a: rounded(t) for a, t in sorted(detect.items())},
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
                bad.append({"agent": a, "problem": "over_bound", "recovery": rounded(rto[a]), "bound": bound})
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
                    {
                        **w,
                        "problem": "unobserved",
                        "detail": f"observations of {s} end {rounded(seen_for)}s in",
                    }
                )
    if bad:
        lost = sum(w["problem"] == "lost" for w in bad)
        late = len(bad) - lost
        parts = [f"{lost} agents lost"] if lost else []
        parts += [f"{late} agents over the {seconds(bound)} bound"] if late else []
        return Verdict(name, "invalid", ", ".join(parts), bad + doubt, figures)
    if doubt:
        return Verdict(
            name, "unknown", f"{len(doubt)} of {len(agents)} agents cannot be judged", doubt, figures
        )
    return Verdict(
        name,
        "valid",
        f"all {len(agents)} agents recovered within {seconds(bound)} (max {seconds(figures['max'])};"
        f" {timed_from(figures)})",
        [],
        figures,
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


def wire_recoveries(
    events: list[Event],
    t0: float,
    want: Mapping[str, str],
    ext_of: Mapping[str, str],
    wanted: Mapping[str, frozenset[str] | Collection[str]],
) -> dict[str, float]:
    """Agent -> seconds from `t0` to the first moment the capture alone shows it recovered: a 200 OK to
    its REGISTER from its expected site's PBX AND that site's CTI confirming its session in a wanted state
    (login_ok, state_ok, heartbeat_ack), both written at or after `t0`.

    A CTI message is dated when its CTI wrote it (`held_of`: TCP may deliver it much later), so the
    capture's messages are replayed in that order; only evidence from after the fault counts, so an
    agent the capture shows nothing new about is left to the polls.
    """
    wire = sorted(
        (
            (ev.t - held_of(ev) if ev.kind == CTI else ev.t, k, ev)
            for k, ev in enumerate(events)
            if isinstance(ev, Obs) and ev.kind in (SIP, CTI)
        ),
        key=lambda x: (x[0], x[1]),
    )
    agents_of: dict[tuple[str, str], list[str]] = defaultdict(list)  # (site, extension) -> agents
    for a, s in want.items():
        agents_of[(s, ext_of[a])].append(a)
    tables = Tables()
    out: dict[str, float] = {}
    for t, _, ev in wire:
        if t < t0:
            continue
        touched = tables.apply(ev)
        if touched is None:
            continue
        site, ext, agent = touched
        cands = [agent] if agent else agents_of.get((site, ext), []) if ext else []
        for a in cands:
            if a in out or want.get(a) != site:
                continue
            sess = tables.sess[site].get(a)
            if tables.regs[site][ext_of[a]] > 0 and sess is not None and sess[0] in wanted[a]:
                out[a] = t - t0
    return out


def seconds(x: float | None) -> str:
    """A duration for people: three significant figures and the unit ("2.14 s", "0.123 s", "31.0 s",
    "125 s"); "-" for none. Figures keep microseconds; a person comparing runs needs milliseconds."""
    if x is None:
        return "-"
    if abs(x) >= 100:
        return f"{x:.0f} s"
    return f"{x:#.3g}".rstrip(".") + " s"


def timed_from(figures: Mapping[str, Any]) -> str:
    """How many recovery times came from the capture and how many from polls, for a verdict's reason."""
    wire, polls = figures.get("timed_from_wire", 0), figures.get("timed_from_polls", 0)
    return f"{wire} timed from the wire, {polls} from polls"
