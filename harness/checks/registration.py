"""Where agents end: every affected agent registered once and logged in once, at its expected site."""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Mapping
from typing import Any

from harness.checks.evidence import (
    AgentInfo,
    affected_agents,
    all_sites,
    by_time,
    effective_cut,
    expected_sites,
    faults_of,
    roster_of,
    rounded,
    site_of,
)
from harness.checks.timeline import registrations_in, sessions_in
from harness.checks.verdict import Verdict, unknown
from harness.history import CTI_SNAPSHOT, PBX_SNAPSHOT, Event, Obs, pair_ops

__all__ = ["check_single_registration"]


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
    events = by_time(history)
    pairs, _ = pair_ops(events)
    faults = faults_of(pairs)
    ros = roster_of(events, roster)
    agents = affected_agents(faults, ros, affected)
    if not agents:
        return unknown(name, "no affected agents (no fault naming a site or agents, and none given)")
    sites = all_sites(events, ros, faults)
    want, problems = expected_sites(agents, expect, ros, faults, sites)
    if problems:
        return unknown(name, "; ".join(problems[:5]), affected=len(agents))
    cut = effective_cut(pairs) if after is None else after
    last_pbx: dict[str, Obs] = {}
    last_cti: dict[str, Obs] = {}
    for ev in events:
        if isinstance(ev, Obs) and ev.t > cut and ev.kind in (PBX_SNAPSHOT, CTI_SNAPSHOT):
            site = site_of(ev)
            if site:
                (last_pbx if ev.kind == PBX_SNAPSHOT else last_cti)[site] = ev
    missing = [f"pbx_snapshot of {s}" for s in sorted(sites) if s not in last_pbx]
    missing += [f"cti_snapshot of {s}" for s in sorted(sites) if s not in last_cti]
    if missing:
        when = "" if cut == -math.inf else f" after t={rounded(cut)}"
        return unknown(name, f"no final {', '.join(missing)}{when}", affected=len(agents))
    no_ext = [a for a in agents if ros.get(a, AgentInfo(None, None)).extension is None]
    if no_ext:
        return unknown(
            name, f"extension unknown (not in roster) for {', '.join(no_ext[:5])}", affected=len(agents)
        )
    regs = {s: registrations_in(ev) for s, ev in last_pbx.items()}
    sess = {s: sessions_in(ev) for s, ev in last_cti.items()}
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
    figures = {
        "affected": len(agents),
        "wrong": len(witnesses),
        "cut": None if cut == -math.inf else rounded(cut),
    }
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
