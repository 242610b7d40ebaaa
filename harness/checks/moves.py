"""Where agents went under a fault that lets them move, read from the history: each agent's sessions in
the order they were seen, where each ended, and whether any moved more than once or back (flapping).

A scenario whose fault may or may not move an agent (30 % loss on a CTI link) cannot say beforehand where
each ends; it judges where each went instead: `final_sites` gives the expected site for
check_single_registration (which judges the rest: registered once and logged in once, both there), and
`check_moves` judges the path: home, then at most one allowed site, never back.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

from harness.checks.evidence import by_time, site_of
from harness.checks.timeline import session_event, sessions_in
from harness.checks.verdict import Verdict
from harness.history import AGENT_STATE, CTI, CTI_SNAPSHOT, Event, Obs

__all__ = ["check_moves", "final_sites", "site_sequences"]


def site_sequences(history: Iterable[Event]) -> dict[str, list[tuple[str, Any]]]:
    """Agent -> its sessions, in the order each was first seen: (site, epoch). Evidence is every CTI
    snapshot and every captured CTI message (docs/history.md); a session is its epoch, so a stale read of
    a session already left adds nothing, and a second session at the same site is a new entry."""
    seen: dict[str, list[tuple[str, Any]]] = defaultdict(list)
    for ev in by_time(history):
        if not isinstance(ev, Obs):
            continue
        found: list[tuple[str, str, Any]] = []
        if ev.kind == CTI_SNAPSHOT:
            site = site_of(ev)
            if site:
                found = [(a, site, ep) for a, ss in sessions_in(ev).items() for _, ep in ss]
        elif ev.kind in (CTI, AGENT_STATE):
            se = session_event(ev)
            if se is not None and se.active:
                found = [(se.agent, se.site, se.epoch)]
        for agent, site, epoch in found:
            key = (site, epoch)
            if key not in seen[agent]:
                seen[agent].append(key)
    return seen


def _sites(sessions: list[tuple[str, Any]]) -> list[str]:
    """The sites of a session sequence, a run of sessions at one site counted once."""
    out: list[str] = []
    for site, _ in sessions:
        if not out or out[-1] != site:
            out.append(site)
    return out


def final_sites(history: Iterable[Event], homes: Mapping[str, str]) -> dict[str, str]:
    """Where each agent's last session was (home for an agent never seen): the expected site for
    check_single_registration when a fault may move agents, so that checker judges the rest of the
    promise (registered once and logged in once, at that one site, both there)."""
    seq = site_sequences(history)
    return {a: (_sites(seq[a])[-1] if seq.get(a) else home) for a, home in homes.items()}


def check_moves(
    history: Iterable[Event], homes: Mapping[str, str], *, allowed: Mapping[str, list[str]]
) -> Verdict:
    """No flapping: every agent's sessions, in time order, are at its home site and then at most one
    site of ``allowed[home]`` (none for a home not named), never back. Unknown for an agent whose sessions
    were never seen (a pure function of the history: no evidence is no answer)."""
    name = "moves"
    seq = site_sequences(history)
    bad: list[dict[str, Any]] = []
    unseen = sorted(a for a in homes if not seq.get(a))
    moved = 0
    for agent, home in sorted(homes.items()):
        sites = _sites(seq.get(agent, []))
        if not sites:
            continue
        ok = sites[0] == home and (len(sites) == 1 or (len(sites) == 2 and sites[1] in allowed.get(home, [])))
        moved += len(sites) > 1
        if not ok:
            bad.append({"agent": agent, "home": home, "sites": sites, "sessions": len(seq[agent])})
    figures = {"agents": len(homes), "moved": moved, "flapped": len(bad), "unseen": len(unseen)}
    if bad:
        return Verdict(name, "invalid", f"{len(bad)} agents moved more than once or back", bad, figures)
    if unseen:
        return Verdict(
            name,
            "unknown",
            f"{len(unseen)} agents never seen logged in: {', '.join(unseen[:5])}",
            [],
            figures,
        )
    return Verdict(
        name, "valid", f"{moved} of {len(homes)} agents moved, none more than once or back", [], figures
    )
