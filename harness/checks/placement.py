"""Placement between two faults: where every agent was after one took effect and before the next began
(e.g. a planned switch moved exactly the targeted agents before the switch back)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from harness.checks.evidence import FAULT_INJECT, by_time, op_time
from harness.checks.registration import check_single_registration
from harness.checks.verdict import Verdict, renamed, unknown
from harness.history import Event

__all__ = ["check_placement_between"]


def check_placement_between(
    history: Iterable[Event],
    since_id: str,
    until_id: str,
    *,
    expect: Mapping[str, str],
    name: str = "placement_between",
) -> Verdict:
    """``check_single_registration`` on the last snapshots taken after fault ``since_id`` took effect
    (its inject ``ok``) and before fault ``until_id`` began (its inject ``invoke``). Unknown when either
    fault is not in the history."""
    events = by_time(history)
    since = op_time(events, FAULT_INJECT, since_id, "ok")
    until = op_time(events, FAULT_INJECT, until_id, "invoke")
    if since is None or until is None:
        return unknown(name, f"no fault {since_id} or {until_id} in the history")
    prefix = [e for e in events if e.t < until]
    v = check_single_registration(prefix, expect=dict(expect), affected=list(expect), after=since)
    return renamed(v, name)
