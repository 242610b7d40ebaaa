"""A blip on the wire, measured and judged against the confirmation window (the anti-flap promise).

Why a checker of its own: a fault's command says how long it meant to cut (a 300 ms `port_down`), but what
the agents lived through is what the wire shows, and that was about a second (the switch's CLI round trips
and the fault's verification come on top). So the blip's length is measured from the capture: the silence
of the faulted device's answers (the CTI's acks, confirmations and pushed events to its agents; the PBX's
SIP messages), from its last answer before the fault to its first after the heal, per link and per agent.
The window is the product's promise (stack/agent/state.py ``Timers.window``): a break shorter than its
first edge moves nobody, one longer than its second edge moves every agent it hit; between them, an agent
moves if its heartbeat fell in the break, so either outcome is valid.

What the history must hold (docs/history.md): the fault's `fault.inject` and `fault.heal` operations, the
captured `cti` (or `sip`) messages of the faulted device before and after it, and evidence from the other
sites after it (a `cti` message or a `cti_snapshot`), else the answer is `unknown`. The client's side of
the blip is counted where the capture recorded it: `cti` events `heartbeat` (asked, unanswered), pushed
`pbx_link_down` (the link-down report), `status` (a re-check on a fresh connection), and SIP `OPTIONS` to
the PBX from a sender (address and From user) that was not probing it before (a client's re-check).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from harness.checks.evidence import (
    FAULT_HEAL,
    FaultRecord,
    by_time,
    fault_key,
    faults_of,
    roster_of,
    rounded,
    site_of,
    value_of,
)
from harness.checks.verdict import Verdict, unknown
from harness.history import CTI, CTI_SNAPSHOT, SIP, Event, Obs, Op, pair_ops

__all__ = ["check_blip"]

NAME = "blip"
ENDED = frozenset({"logged_out", "fenced"})


@dataclass(frozen=True)
class Span:
    """When the fault was surely in place (``on``: its inject completed; ``off``: its heal was invoked),
    and the times around it (``start``: its inject invoked; ``end``: its heal completed)."""

    start: float
    on: float
    off: float
    end: float


def _role(target: str) -> str:
    """`sha-cti1` -> `cti` (DESIGN.md names devices `<site>-<role><n>`)."""
    return re.sub(r"\d+$", "", target.split("-", 1)[-1])


def _span(events: list[Event], flt: FaultRecord) -> Span | str:
    inv, done = flt.pair.invoke, flt.pair.completion
    if done is None or done.type != "ok":
        return "the fault's inject did not complete ok"
    heal_inv = heal_ok = None
    for e in events:
        if isinstance(e, Op) and e.f == FAULT_HEAL and fault_key(e.value) == flt.key and e.t >= done.t:
            if e.type == "invoke" and heal_inv is None:
                heal_inv = e.t
            elif e.type == "ok" and heal_inv is not None:
                heal_ok = e.t
                break
    if heal_inv is None or heal_ok is None:
        return "the fault was never healed: not a blip"
    return Span(inv.t, done.t, heal_inv, heal_ok)


def _pbx_address(sips: list[Obs]) -> str | None:
    """The PBX's address: who answered REGISTERs (the decoder's ``registrar`` of a response)."""
    for e in sips:
        v = value_of(e)
        if v.get("status") is not None and v.get("cseq_method") == "REGISTER" and v.get("src_ip"):
            return str(v["src_ip"])
    return None


def _answers(events: list[Event], target: str, role: str) -> tuple[list[Obs], dict[str, list[float]]]:
    """The faulted device's own messages on the wire, and the CTI's per agent."""
    if role == "cti":
        own = [
            e
            for e in events
            if isinstance(e, Obs) and e.kind == CTI and e.source == target
            and value_of(e).get("event") not in ("heartbeat", "status")  # those are the clients' asking
        ]  # fmt: skip
        per: dict[str, list[float]] = {}
        for e in own:
            agent = value_of(e).get("agent")
            if agent:
                per.setdefault(str(agent), []).append(e.t)
        return own, per
    sips = [e for e in events if isinstance(e, Obs) and e.kind == SIP and e.source == target]
    addr = _pbx_address(sips)
    return [e for e in sips if addr and value_of(e).get("src_ip") == addr], {}


def _held(flt: FaultRecord) -> float | None:
    """The pause a host held itself (a fault's ``hold`` param: stopped, held, resumed in one command line,
    harness/faults/host.py ServicePause), or None."""
    v = value_of(flt.pair.invoke).get("hold")
    try:
        return float(v) if v is not None else None
    except (TypeError, ValueError):
        return None


def _held_span(times: list[float], span: Span) -> Span | str:
    """A pause the host held itself lies inside its inject (invoked to completed), not between inject and
    heal: its break is the longest gap of the device's messages across that interval, whose edges stand
    for ``on`` and ``off``."""
    before = [t for t in times if t < span.start]
    after = [t for t in times if t > span.on]
    if not before or not after:
        return "no captured message on both sides of the held pause"
    seq = [before[-1], *[t for t in times if span.start <= t <= span.on], after[0]]
    lo, hi = max(zip(seq, seq[1:], strict=False), key=lambda g: g[1] - g[0])
    return Span(span.start, lo, hi, span.end)


def _gap(times: list[float], span: Span) -> tuple[float | None, float | None, list[float]]:
    """(last answer by the time the fault was in place, first after its heal was invoked, answers while it
    was surely in place)."""
    before = [t for t in times if t <= span.on]
    after = [t for t in times if t >= span.off]
    during = [t for t in times if span.on < t < span.off]
    return (before[-1] if before else None), (after[0] if after else None), during


def _moves(events: list[Event], agents: set[str], site: str, since: float) -> tuple[set[str], bool]:
    """Agents seen with a session at another site after ``since`` (a captured login, or a snapshot), and
    whether any other site was seen at all after it."""
    moved: set[str] = set()
    seen_elsewhere = False
    for e in events:
        if not isinstance(e, Obs) or e.t < since or e.kind not in (CTI, CTI_SNAPSHOT):
            continue
        where = site_of(e)
        if where is None or where == site:
            continue
        seen_elsewhere = True
        v = value_of(e)
        if e.kind == CTI and v.get("event") == "login" and v.get("agent") in agents:
            moved.add(str(v["agent"]))
        elif e.kind == CTI_SNAPSHOT:
            for s in v.get("sessions") or []:
                if isinstance(s, dict) and s.get("agent") in agents and s.get("state") not in ENDED:
                    moved.add(str(s["agent"]))
    return moved, seen_elsewhere


def _client_side(events: list[Event], target: str, site: str, span: Span, last: float) -> dict[str, Any]:
    """What the clients did about the blip on the wire: unanswered heartbeats, link-down reports, re-checks
    (a fresh connection's ``status``, an OPTIONS to the PBX from a sender, address and From user, that
    was not probing it before)."""
    asked: set[str] = set()
    reports = status = 0
    probers: set[str] = set()
    rechecks: set[str] = set()
    for e in events:
        if not isinstance(e, Obs):
            continue
        v = value_of(e)
        if e.kind == CTI and site_of(e) == site:
            ev = v.get("event")
            if ev == "heartbeat" and e.source == target and last < e.t < span.end and v.get("agent"):
                asked.add(str(v["agent"]))
            elif ev == "pbx_link_down" and span.start <= e.t <= span.end + 5.0:
                reports += 1
            elif ev == "status" and span.start <= e.t <= span.end + 5.0:
                status += 1
        elif e.kind == SIP and site_of(e) == site and v.get("method") == "OPTIONS" and v.get("src_ip"):
            who = f"{v['src_ip']} {v.get('from_user')}"  # the CTI's probe, a phone's keepalive, a re-check
            if e.t < span.start:
                probers.add(who)
            elif e.t <= span.end + 5.0 and who not in probers:
                rechecks.add(str(v["src_ip"]))
    return {
        "agents_unanswered_heartbeats": len(asked),
        "link_down_reports": reports,
        "cti_rechecks": status,
        "sip_recheck_sources": sorted(rechecks),
    }


def check_blip(
    history: Iterable[Event],
    *,
    window: tuple[float, float],
    expect: str | None = None,
    fault: str | None = None,
    heartbeat: float = 1.0,
    roster: Mapping[str, Mapping[str, Any]] | None = None,
) -> Verdict:
    """Measure the blip of ``fault`` (its id; default: the first that took effect) on the wire and judge
    who moved against ``window`` = (shortest, longest) break that is confirmed: a break surely shorter than
    the first moved nobody, one surely longer than the second moved every agent of the faulted device's
    site. ``expect`` ("stay" or "move") is what the scenario meant to show: a break that was not below
    (above) the window on the wire shows nothing of the kind, and is unknown. ``heartbeat`` (s) tells a
    missed answer in an agent's stream. Figures: the wire length and its bounds, the quiet before, who
    missed answers, who moved, and what the clients did on the wire."""
    if expect not in (None, "stay", "move"):
        raise ValueError(f"expect must be 'stay', 'move' or None, got {expect!r}")
    events = by_time(history)
    pairs, _ = pair_ops(events)
    flts = [f for f in faults_of(pairs) if f.took_effect and (fault is None or f.key == fault)]
    if not flts:
        return unknown(NAME, f"no fault {fault!r} that took effect: no blip to measure")
    flt = flts[0]
    target = str(value_of(flt.pair.invoke).get("target") or "")
    role, site = _role(target), flt.site
    if role not in ("cti", "pbx") or site is None:
        return unknown(NAME, f"{target}: only a CTI's or a PBX's blip can be measured from the capture")
    span = _span(events, flt)
    if isinstance(span, str):
        return unknown(NAME, span, fault=flt.key)
    own, per_agent = _answers(events, target, role)
    times = [e.t for e in own]
    quiet = [b - a for a, b in zip(times, times[1:], strict=False) if b <= span.start]
    figures: dict[str, Any] = {"fault": flt.key, "target": target, "window": list(window)}
    if len(quiet) < 3:
        return unknown(
            NAME, f"too few captured messages of {target} before the fault to tell a gap", **figures
        )
    held = _held(flt)
    if held is not None:
        inside = _held_span(times, span)
        if isinstance(inside, str):
            return unknown(NAME, f"{target}: {inside}", **figures)
        span = inside
    last, first, during = _gap(times, span)
    if last is None:
        return unknown(NAME, f"no captured message of {target} before the fault", **figures)
    if during:
        why = f"{target} was heard {len(during)} times while the fault was in place: never silent"
        return unknown(NAME, why, **figures)
    lower = span.off - span.on  # the fault was surely in place this long
    upper = (first if first is not None else span.end) - last
    if held is not None:
        lower = min(held, upper)  # the host held it this long; the gap around it is the most it can be
    baseline = max(quiet)
    figures.update(
        wire_length_s=rounded(first - last) if first is not None else None,
        bounds_s=[rounded(lower), rounded(upper)],
        last_before=rounded(last),
        first_after=rounded(first) if first is not None else None,
        quiet_max_gap_s=rounded(baseline),
    )
    if upper <= baseline:
        return unknown(
            NAME, f"the blip was not seen: no gap in {target}'s messages longer than before", **figures
        )
    home = {a for a, info in roster_of(events, roster).items() if info.site == site}
    if role == "cti":  # the agents this CTI answered before the fault
        hit = {a for a, ts in per_agent.items() if a in home and ts[0] <= span.start}
    else:
        hit = home
    # Per agent: its own answers' gap over the fault. Over a heartbeat (and the link's usual jitter), an
    # answer came late (its heartbeat fell in the break); over one and a half, one never came.
    late, missed = [], []
    for a in sorted(hit & set(per_agent)):
        lo, hi, _ = _gap(per_agent[a], span)
        agap = (hi if hi is not None else span.end) - lo if lo is not None else 0.0
        if agap > heartbeat + baseline:
            late.append(a)
        if agap > 1.5 * heartbeat:
            missed.append(a)
    moved, seen_elsewhere = _moves(events, hit, site, span.start)
    figures.update(
        agents=len(hit),
        agents_answered_late=len(late),
        agents_missed_answers=len(missed),
        moved=len(moved),
        stayed=len(hit - moved),
        **_client_side(events, target, site, span, last),
    )
    if not hit:
        return unknown(NAME, f"no agent of {site} was seen on {target} before the fault", **figures)
    if not seen_elsewhere:
        return unknown(
            NAME, "nothing seen of the other sites after the blip: a move could hide there", **figures
        )
    rule = "stay" if upper < window[0] else "move" if lower > window[1] else None
    if expect is not None and rule != expect:
        side = "below the window's" if expect == "stay" else "above the window's"
        edge = window[0] if expect == "stay" else window[1]
        why = f"the break was {lower:.2f}-{upper:.2f}s on the wire, not {side} {edge:g}s: it shows nothing"
        return unknown(NAME, why, **figures)
    return _judge(target, site, window, (lower, upper, first is not None), hit, moved, len(late), figures)


def _judge(
    target: str,
    site: str,
    window: tuple[float, float],
    length: tuple[float, float, bool],
    hit: set[str],
    moved: set[str],
    late: int,
    figures: dict[str, Any],
) -> Verdict:
    """The promise for a break of ``length`` = (at least, at most, measured at both ends)."""
    lower, upper, both_ends = length
    if upper < window[0]:
        figures["rule"] = "nobody moves"
        bad = sorted(moved)
        why = f"a break of at most {upper:.2f}s (window {window[0]:g}s) moved {len(bad)} agents"
    elif lower > window[1]:
        figures["rule"] = "everybody moves"
        bad = sorted(hit - moved)
        why = f"a break of at least {lower:.2f}s (window {window[1]:g}s) left {len(bad)} agents in place"
    else:
        figures["rule"] = "either"
        bad, why = [], ""
    if bad:
        return Verdict(NAME, "invalid", why, [{"agent": a, "site": site} for a in bad], figures)
    seen = f"{upper:.2f}s on the wire" if both_ends else f"{lower:.2f}-{upper:.2f}s"
    why = f"{target} silent {seen}; {late} of {len(hit)} agents' answers late or lost; {len(moved)} moved"
    return Verdict(NAME, "valid", f"{why} ({figures['rule']})", [], figures)
