"""No agent active at two sites at once, with the doubt the evidence leaves made explicit."""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from harness.checks.evidence import (
    FAULT_HEAL,
    FAULT_INJECT,
    by_time,
    effective_cut,
    roster_of,
    rounded,
    site_of,
    site_of_name,
    value_of,
)
from harness.checks.timeline import session_event, sessions_in
from harness.checks.verdict import Verdict, unknown
from harness.history import AGENT_STATE, CTI, CTI_SNAPSHOT, Event, Op, pair_ops

__all__ = ["check_no_split_brain"]


# Faults after which a site's CTI surely served nobody until healed: it was hung, stopped, cut off or dark.
SILENCING = ("service_pause", "service_stop", "blackhole", "power_off", "port_down")
# Faults after which a site's CTI process surely wrote nothing until healed: a message of it captured
# meanwhile is one it wrote before (TCP retransmits what loss or a cut held back, with the process stopped).
FROZEN = ("service_pause", "service_stop", "power_off")
_CTI_NAME = re.compile(r"^[a-z0-9]+-cti\d+$")  # devices are named <site>-<role><n> (DESIGN.md)


def silent_periods(
    pairs: list[Any], kinds: tuple[str, ...] = SILENCING
) -> dict[str, list[tuple[float, float]]]:
    """Per site, when its CTI was surely silent: from a silencing fault's confirmed inject (it took
    effect) to its heal's invoke. A fact from outside (the fault's own verification), not the CTI's word."""
    heals: dict[str, float] = {}
    for p in pairs:
        if p.invoke.f == FAULT_HEAL:
            heals.setdefault(str(value_of(p.invoke).get("id")), p.invoke.t)
    out: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for p in pairs:
        v = value_of(p.invoke)
        if p.invoke.f != FAULT_INJECT or v.get("fault") not in kinds or p.outcome != "ok":
            continue
        target = str(v.get("target") or "").split(":", 1)[0]
        healed = heals.get(str(v.get("id")))
        site = v.get("site") or site_of_name(target)
        if _CTI_NAME.match(target) and site and healed is not None and p.completion is not None:
            out[str(site)].append((p.completion.t, healed))
    return out


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


def written_by(frozen: Iterable[tuple[float, float]], t: float) -> float:
    """The latest time a CTI message captured at ``t`` can have been written: ``t``, or the start of a
    period its CTI was frozen in (scenarios/schedules/cti-loss-then-pause.json: 60 % loss held a
    heartbeat's answer back, TCP delivered it 6 s into the CTI's hang, after its agent had logged in at
    the other site)."""
    for lo, hi in frozen:
        if lo <= t < hi:
            return lo
    return t


def held_of(ev: Event) -> float:
    """Seconds a captured CTI message was held back between its CTI writing it and the capture
    (harness/observe/wire.py, from the CTI's ``at`` stamp); 0 when prompt or not known."""
    held = value_of(ev).get("held")
    return float(held) if isinstance(held, int | float) and not isinstance(held, bool) and held > 0 else 0.0


def _jt(x: float) -> float | None:
    return None if math.isinf(x) else rounded(x)


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
    events = by_time(history)
    pairs, _ = pair_ops(events)
    ends_at: dict[int, str] = {}  # index of an ok completion -> site whose sessions it ends
    for p in pairs:
        v = value_of(p.invoke)
        if p.invoke.f == FAULT_INJECT and v.get("ends_sessions") and p.completion and p.outcome == "ok":
            site = v.get("site") or site_of_name(v.get("target"))
            if site:
                ends_at[p.completion.i] = site
    silent = silent_periods(pairs)
    frozen = silent_periods(pairs, FROZEN)
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

    def close(agent: str, site: str, t: float, exact: bool, epoch: Any = None) -> None:
        iv = open_.pop((agent, site), None)
        last_absent[(agent, site)] = max(last_absent.get((agent, site), -math.inf), t)
        if exact:
            exact_end[(agent, site)] = (t, iv.epoch if iv is not None else epoch)
        if iv is not None and iv.epoch is not None:
            ended_epochs[(agent, site)].add(iv.epoch)
        if iv is None:
            if exact:
                settle_end(agent, site, t, epoch)
            return
        by_site[site].discard(agent)
        iv.def_end, iv.poss_end, iv.end_exact = (t, t, True) if exact else (iv.last_seen, t, False)
        if not exact:
            # Last seen before its CTI went silent, gone when it came back, and never seen in between or
            # since: it served nobody from the silence on (the capture is judged complete separately).
            for lo, hi in silent.get(site, ()):
                if iv.last_seen <= lo and hi <= t:
                    iv.poss_end = min(iv.poss_end, lo)
        done[agent].append(iv)

    def settle_end(agent: str, site: str, t: float, epoch: Any) -> None:
        """An exact end that reached the wire after the session was seen gone (TCP held the CTI's answer
        back; dated by its `at`): it settles when, within the doubt the snapshots left, it ended."""
        for iv in reversed(done[agent]):
            if iv.site == site and not iv.end_exact and epoch in (None, iv.epoch):
                if iv.def_end <= t <= iv.poss_end:
                    iv.def_end = iv.poss_end = t
                    iv.end_exact = True
                return

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
            iv.last_seen = max(iv.last_seen, t)
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
            site = site_of(ev)
            if not site:
                continue
            evidence_sites.add(site)
            listed = sessions_in(ev)
            # A snapshot shows the table at one instant between the query and its reply (`read_ms`): an
            # exact, captured login or logout inside that window may be newer than the snapshot.
            since = ev.t - float(value_of(ev).get("read_ms") or 0.0) / 1000.0
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
            se = session_event(ev)
            if se is None:
                continue
            evidence_sites.add(se.site)
            key = (se.agent, se.site)
            if se.active and not se.exact and key not in open_ and se.epoch in ended_epochs[key]:
                late_reads += 1
                continue
            t = ev.t - held_of(ev)  # when the CTI wrote it (its `at` stamp), if TCP held it back
            if se.active and ev.kind == CTI and not se.exact:
                t = written_by(frozen.get(se.site, ()), t)
                if t < ev.t:
                    late_reads += 1  # written well before it reached the wire
                    iv = open_.get(key)
                    if iv is None or (se.epoch is not None and iv.epoch not in (None, se.epoch)):
                        continue  # a late read opens no session and ends none
                    iv.last_seen = max(iv.last_seen, t)
                    continue
            if se.active:
                active(se.agent, se.site, t, se.epoch, se.exact)
            else:
                close(se.agent, se.site, t, se.exact, se.epoch)
    for (agent, _), iv in open_.items():
        iv.def_end = iv.last_seen  # still open at the end: surely active until last seen, maybe beyond
        done[agent].append(iv)

    ros = roster_of(events, roster)
    sites = evidence_sites | {ag.site for ag in ros.values() if ag.site}
    if not evidence_sites:
        return unknown(name, "no CTI evidence (cti_snapshot, cti or agent_state observations)")
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
    cut = effective_cut(pairs)
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
