"""Whether a nemesis schedule ran as written: every op started on time and took effect.

The schedule's expected outcome (harness/checks/schedule_outcome.py) assumes each op happened at its
offset. An op refused, not effective, of unknown outcome, or started late makes that assumption unsure,
so the run cannot be judged: unknown, never invalid (the product did nothing wrong). It reads what the
schedule runner (harness/scenario/explore.py) records, docs/history.md: the `schedule` observation and
one `schedule.op` operation per op, its invoke carrying the planned `at`, the actual `started` offset and
how `late` it was.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from harness.checks.verdict import Verdict
from harness.history import Event, Obs, Op, pair_ops

__all__ = ["LATE_S", "OP_F", "SCHEDULE", "check_schedule_ran"]

SCHEDULE = "schedule"  # the observation kind holding the schedule's JSON
OP_F = "schedule.op"  # the runner's operation per op (process `schedule:<index>`)
LATE_S = 0.5  # an op that starts later than this past its offset makes the run's timing unknown


def check_schedule_ran(history: Iterable[Event], *, late: float = LATE_S) -> Verdict:
    """The schedule ran as written: every op started within `late` seconds of its offset and completed ok.
    An op refused, not effective, of unknown outcome, or late makes the expected outcome unsure: unknown
    (never invalid: the product did nothing wrong). No schedule recorded: unknown."""
    name = "schedule_ran"
    events = list(history)
    if not any(isinstance(e, Obs) and e.kind == SCHEDULE for e in events):
        return Verdict(name, "unknown", "no schedule recorded in the history", [], {})
    pairs = [p for p in pair_ops(events)[0] if p.invoke.f == OP_F]
    witnesses: list[dict[str, Any]] = []
    lateness = []
    for p in pairs:
        v = p.invoke.value if isinstance(p.invoke.value, dict) else {}
        lat = v.get("late")
        if isinstance(lat, int | float):
            lateness.append(float(lat))
        problem = None
        if p.outcome != "ok":
            err = p.completion.error if isinstance(p.completion, Op) else None
            problem = f"{p.outcome or 'no completion'}: {err or ''}".strip(": ")
        elif isinstance(lat, int | float) and lat > late:
            problem = f"started {lat:.3f} s late"
        if problem:
            witnesses.append(
                {k: v.get(k) for k in ("index", "kind", "target", "at", "started")} | {"problem": problem}
            )
    figures = {"ops": len(pairs), "max_late": max(lateness, default=0.0), "late_bound": late}
    if witnesses:
        return Verdict(
            name,
            "unknown",
            f"{len(witnesses)} of {len(pairs)} ops did not run as written",
            witnesses,
            figures,
        )
    return Verdict(name, "valid", f"all {len(pairs)} ops started on time and took effect", [], figures)
