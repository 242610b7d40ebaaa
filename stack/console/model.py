"""The page's model: what the last read of every site says, shaped for the templates.

Why apart from the reads and the web handlers: it is a pure function of the reads (and of when each part
was last seen), so what the page says of a site that cannot be seen is tested without a network. Agents are
counted per site and skill group and by state, never listed one by one: the view must keep up with 10,000
agents (issue 14), and a count is what an operator moving traffic reads.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from stack.common.directory import Directory
from stack.console.config import ConsoleConfig
from stack.console.reader import Part

PART_NAMES = {"ul": "UL", "cti": "CTI", "pbx": "PBX"}
UL_ONLY = "ul only"  # a session at the UL the CTI does not hold (logging in, or lost on the way)


def clock(t: float | None) -> str:
    """``08:41:02 UTC`` (the lab's hosts share one clock; UTC, so two sites' pages agree)."""
    return "never" if not t else time.strftime("%H:%M:%S UTC", time.gmtime(t))


def _group_of(directory: Directory | None, agent: str) -> str:
    a = directory.agents.get(agent) if directory is not None else None
    return a.skill_group if a is not None else "unknown"


def agents_view(parts: dict[str, Part], site: str, directory: Directory | None) -> dict[str, Any]:
    """Per skill group: sessions at the UL, at the CTI, and the CTI's sessions by state."""
    ul, cti = parts["ul"], parts["cti"]
    at_ul = {s["agent"] for s in ul.data.get("sessions", []) if isinstance(s, dict) and s.get("site") == site}
    by_state: dict[str, Counter[str]] = {}
    at_cti: set[str] = set()
    for s in cti.data.get("sessions", []) if cti.ok else []:
        if isinstance(s, dict) and isinstance(s.get("agent"), str):
            at_cti.add(s["agent"])
            group = _group_of(directory, s["agent"])
            by_state.setdefault(group, Counter())[str(s.get("state", "?"))] += 1
    ul_groups: Counter[str] = Counter(_group_of(directory, a) for a in at_ul)
    if cti.ok:
        for a in at_ul - at_cti:
            by_state.setdefault(_group_of(directory, a), Counter())[UL_ONLY] += 1
    rows = []
    for group in sorted(set(ul_groups) | set(by_state)):
        states = dict(by_state.get(group, {}))
        online = sum(n for st, n in states.items() if st != UL_ONLY)
        rows.append({"group": group, "ul": ul_groups[group] if ul.ok else None,
                     "cti": online if cti.ok else None, "states": states})  # fmt: skip
    states = sorted({st for c in by_state.values() for st in c}, key=lambda s: (s == UL_ONLY, s))
    totals = {"ul": len(at_ul) if ul.ok else None, "cti": len(at_cti) if cti.ok else None}
    return {"rows": rows, "states": states, "totals": totals}


def site_view(
    code: str,
    parts: dict[str, Part],
    trouble: dict[str, tuple[float, str]],
    seen: dict[str, float],
    config: ConsoleConfig,
) -> dict[str, Any]:
    """One site's card. ``trouble``: part -> (since when it has not been seen, why); ``seen``: part -> when
    it last answered."""
    configured = [p for p, part in parts.items() if part.configured]
    blind = bool(configured) and all(p in trouble for p in configured)
    notes = []
    if blind:
        since = min(trouble[p][0] for p in configured)
        why = "; ".join(f"{PART_NAMES[p]}: {trouble[p][1]}" for p in configured)
        notes.append(f"cannot see site {code} since {clock(since)}: {why}")
    else:
        for p in configured:
            if p in trouble:
                since, why = trouble[p]
                notes.append(f"cannot see {code} {PART_NAMES[p]} since {clock(since)}: {why} "
                             f"(last seen {clock(seen.get(p))})")  # fmt: skip
    ul, cti, pbx = parts["ul"], parts["cti"], parts["pbx"]
    health = ul.data.get("health", {}) if ul.ok else {}
    status = {
        p: {"name": PART_NAMES[p], "ok": part.ok, "configured": part.configured,
            "error": part.error, "seen": clock(seen.get(p))}
        for p, part in parts.items()
    }  # fmt: skip
    status["ul"]["detail"] = (
        f"peer {health.get('peer', '?')}, {'reconciled' if health.get('reconciled') else 'not reconciled'}, "
        f"{health.get('sessions', '?')} sessions"
        if ul.ok
        else ""
    )
    status["cti"]["detail"] = f"PBX link {cti.data.get('pbx_link', '?')}" if cti.ok else ""
    reg = pbx.data.get("registered")
    status["pbx"]["detail"] = (
        f"{'?' if reg is None else reg} registered, up {pbx.data.get('uptime', '?')} s" if pbx.ok else ""
    )
    return {
        "code": code,
        "home": code == config.home,
        "blind": blind,
        "notes": notes,
        "status": [status[p] for p in ("ul", "cti", "pbx")],
        "agents": agents_view(parts, code, config.directory),
        "ul_ok": ul.ok,
        "rules": ul.data.get("rules", []) if ul.ok else [],
        "ramps": _optional(ul, "ramps"),
        "campaigns": _optional(ul, "campaigns"),
    }


def _optional(ul: Part, name: str) -> dict[str, Any]:
    """An endpoint the UL may not have: rows when it answers, else a plain reason (never an error)."""
    if not ul.ok:
        return {"available": False, "reason": "the UL cannot be read"}
    body = ul.data.get(name)
    if body is None:
        return {"available": False, "reason": "not available on this UL"}
    rows = body.get(name, []) if isinstance(body, dict) else body
    rows = rows if isinstance(rows, list) else []
    return {"available": True, "rows": [r for r in rows if isinstance(r, dict)]}


def page_view(
    config: ConsoleConfig,
    parts: dict[str, dict[str, Part]],
    trouble: dict[str, dict[str, tuple[float, str]]],
    seen: dict[str, dict[str, float]],
    at: float,
) -> dict[str, Any]:
    """The whole page: every site's card, and the planned-switch rules as the home UL holds them."""
    sites = [site_view(s.code, parts[s.code], trouble[s.code], seen[s.code], config) for s in config.sites]
    home = sites[0]
    home_ids = {r.get("id") for r in home["rules"]}
    for s in sites[1:]:
        if s["ul_ok"] and home["ul_ok"] and {r.get("id") for r in s["rules"]} != home_ids:
            other = f"{s['code']}'s UL holds other rules than {home['code']}'s"
            s["notes"].append(f"{other} (replication pending)")
    return {
        "at": clock(at),
        "home": config.home,
        "sites": sites,
        "rules": home["rules"],
        "rules_readable": home["ul_ok"],
        "targets": [s.code for s in config.sites],
    }
