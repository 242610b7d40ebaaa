"""Where agents logged in, as the wire shows it: every login confirmed by the CTI of the expected site."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from harness.checks.evidence import by_time, phase_time, value_of
from harness.checks.verdict import Verdict, unknown
from harness.history import CTI, Event, Obs

__all__ = ["check_logins_at"]


def check_logins_at(
    history: Iterable[Event],
    agents: Sequence[str],
    site: str,
    *,
    after: float | None = None,
    after_phase: str | None = None,
) -> Verdict:
    """Every agent's last login after ``after`` (or the start of the phase ``after_phase``) was confirmed
    on the wire by the CTI of ``site`` (a captured ``login_ok``), and any login it made elsewhere on the way
    (design step 6: CTI login, then the phone linkage fails) was ended there (``logout`` / ``fenced``). The
    wire says where an agent logged in, not the stack's own word. Unknown without any captured CTI message
    after that moment, or when the phase named is not in the history."""
    name = f"logins_at_{site}"
    events = by_time(history)
    if after_phase is not None:
        began = phase_time(events, after_phase)
        if began is None:
            return unknown(name, f"no phase {after_phase!r} in the history: nothing to count logins from")
        after = began if after is None else max(after, began)
    logins: dict[str, list[tuple[str, float]]] = {}
    ends: dict[tuple[str, str], list[float]] = {}
    cti_seen = False
    for e in events:
        if not isinstance(e, Obs) or e.kind != CTI or (after is not None and e.t < after):
            continue
        cti_seen = True
        v = value_of(e)
        where = str(v.get("site") or e.source.split("-", 1)[0])
        if v.get("agent") not in agents:
            continue
        if v.get("event") == "login":
            logins.setdefault(str(v["agent"]), []).append((where, e.t))
        elif v.get("event") in ("logout", "fenced"):
            ends.setdefault((str(v["agent"]), where), []).append(e.t)
    if not cti_seen:
        return unknown(name, "no captured CTI message: the logins were not seen on the wire")
    witnesses: list[dict[str, Any]] = []
    for a in agents:
        seq = logins.get(a, [])
        if not seq or seq[-1][0] != site:
            last = seq[-1][0] if seq else None
            witnesses.append({"agent": a, "problem": f"last login at {last}, not {site}"})
            continue
        for where, t in seq[:-1]:
            if where != site and not any(x >= t for x in ends.get((a, where), [])):
                witnesses.append({"agent": a, "problem": f"a login at {where} was never ended"})
    figures = {"agents": len(agents), "seen": len(logins)}
    if witnesses:
        why = f"{len(witnesses)} of {len(agents)} agents not logged in at {site} only"
        return Verdict(name, "invalid", why, witnesses, figures)
    return Verdict(name, "valid", f"all {len(agents)} agents logged in at {site}", [], figures)
