"""The scenario's own expectations (a wait, a hold), judged from what it recorded of each, not from memory.

Each wait or hold of a scenario (harness.scenario) writes one `expectation` observation when it ends: what
was expected (`expected`: agent -> site, or one agent's state), how it was judged (`check`: placement,
hold, converge, state), and what the snapshots showed (`seen`: how many views were judged, how many
agents were out of place, a sample). A view that was never judged is no evidence: unknown, never valid.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from harness.checks.evidence import EXPECTATION, by_time, rounded, value_of
from harness.checks.verdict import Verdict
from harness.history import Event, Obs

__all__ = ["check_expectations", "expectation_outcome"]


def expectation_outcome(value: Mapping[str, Any]) -> tuple[str, str]:
    """(valid / invalid / unknown, why) of one `expectation` record."""
    seen = value.get("seen") if isinstance(value.get("seen"), Mapping) else {}
    if not seen.get("judged"):
        return "unknown", str(seen.get("error") or "no read of every PBX and CTI was judged")
    if value.get("check") == "state":
        if seen.get("state") != (value.get("expected") or {}).get("state"):
            return "invalid", f"state is {seen.get('state')}"
        return "valid", "state seen"
    wrong = seen.get("out_of_place")
    if not isinstance(wrong, int) or isinstance(wrong, bool):
        return "unknown", "the record does not say how many agents were out of place"
    if wrong:
        return "invalid", f"{wrong} agents out of place"
    return "valid", "every agent in place"


def check_expectations(history: Iterable[Event]) -> Verdict:
    """Every expectation the scenario recorded was met. Invalid if one was not (the snapshots showed agents
    out of place); unknown if one was never judged (no fresh read) or none was recorded at all: a scenario
    that sets no expectation of its own leaves this checker out instead of passing it vacuously."""
    name = "expectations"
    records = [e for e in by_time(history) if isinstance(e, Obs) and e.kind == EXPECTATION]
    if not records:
        return Verdict(
            name, "unknown", "the scenario recorded no expectation of its own", [], {"expectations": 0}
        )
    bad: list[dict[str, Any]] = []
    doubt: list[dict[str, Any]] = []
    for e in records:
        v = value_of(e)
        result, why = expectation_outcome(v)
        if result == "valid":
            continue
        seen = v.get("seen") if isinstance(v.get("seen"), Mapping) else {}
        w = {"what": v.get("what"), "check": v.get("check"), "problem": why, "t": rounded(e.t)}
        w.update({k: seen[k] for k in ("out_of_place", "sample", "state", "errors") if seen.get(k)})
        (bad if result == "invalid" else doubt).append(w)
    figures = {"expectations": len(records), "unmet": len(bad), "unjudged": len(doubt)}
    if bad:
        why = "; ".join(f"{w['what']}: {w['problem']}" for w in bad + doubt)
        return Verdict(name, "invalid", why, bad + doubt, figures)
    if doubt:
        why = "; ".join(f"{w['what']}: {w['problem']}" for w in doubt)
        return Verdict(name, "unknown", why, doubt, figures)
    return Verdict(name, "valid", f"all {len(records)} expectations met", [], figures)
