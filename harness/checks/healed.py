"""Faults healed: every fault made was undone, and the lab ends as it began, as far as it could be read."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

from harness.checks.evidence import (
    FAULT_HEAL,
    FAULT_INJECT,
    by_time,
    effective_cut,
    fault_key,
    faults_of,
    rounded,
    value_of,
)
from harness.checks.verdict import Verdict
from harness.history import LAB_SNAPSHOT, Event, Obs, pair_ops

__all__ = ["check_faults_healed"]


UNREAD = "unknown"  # a link or process state the backend could not read
OPTIONAL = frozenset({"outlets"})  # compared where both snapshots have it


def _diff(
    before: Any, after: Any, fld: str, partial: tuple[bool, bool] = (False, False)
) -> tuple[list[dict[str, Any]], list[str]]:
    """(differences between what both snapshots read, keys one of them could not read). A key missing
    from a snapshot that read the whole lab is a difference; from a `partial` one, it was not read."""
    if isinstance(before, dict) and isinstance(after, dict):
        diffs, unread = [], []
        for k in sorted(before.keys() | after.keys(), key=str):
            b, a = before.get(k), after.get(k)
            if b == UNREAD or a == UNREAD or (b is None and partial[0]) or (a is None and partial[1]):
                if b != a:
                    unread.append(f"{fld} {k}")
            elif b != a:
                diffs.append({"field": fld, "key": k, "before": b, "after": a})
        return diffs, unread
    if before == after:
        return [], []
    return [{"field": fld, "key": None, "before": before, "after": after}], []


def _incomplete(snap: Obs) -> list[str]:
    """What a lab snapshot says it could not read (`complete: false`, with `problems`)."""
    v = value_of(snap)
    if v.get("complete", True) is not False:  # histories from before `complete` existed were complete
        return []
    return [str(p) for p in v.get("problems") or []] or ["the lab status could not be read"]


def check_faults_healed(
    history: Iterable[Event], *, fields: Sequence[str] = ("links", "processes", "outlets")
) -> Verdict:
    """Every injected fault was healed (a `fault.heal` `ok` with the same id, after it), and the lab ends
    as it began: the first and last `lab_snapshot` agree on `fields` (`outlets` only where the snapshots
    have them: a lab with no PDU, or a history from before they were recorded).

    A fault whose inject failed needs no heal. The first lab snapshot must come before the first fault and
    the last after the last fault operation, else the comparison proves nothing: unknown. So does a snapshot
    that could not read the whole lab (`complete: false`, e.g. a physical lab with no status): only what
    both snapshots read is compared, a difference there is still invalid, and the rest leaves it unknown.
    """
    name = "faults_healed"
    events = by_time(history)
    pairs, _ = pair_ops(events)
    faults = faults_of(pairs)
    heals = [p for p in pairs if p.invoke.f == FAULT_HEAL]
    witnesses: list[dict[str, Any]] = []
    for flt in faults:
        if not flt.took_effect:
            continue
        mine = [
            h for h in heals if fault_key(value_of(h.invoke)) == flt.key and h.invoke.t >= flt.pair.invoke.t
        ]
        if any(h.outcome == "ok" for h in mine):
            continue
        if not mine:
            problem = "never healed"
        else:
            last = mine[-1]
            problem = {
                None: "heal never completed",
                "info": "heal outcome unknown (info)",
                "fail": f"heal failed: {last.completion.error if last.completion else ''}",
            }[last.outcome]
        witnesses.append({"fault": flt.key, "problem": problem, "injected_at": rounded(flt.pair.invoke.t)})
    snaps = [e for e in events if isinstance(e, Obs) and e.kind == LAB_SNAPSHOT]
    fault_ops = [p for p in pairs if p.invoke.f in (FAULT_INJECT, FAULT_HEAL)]
    first_op = min((p.invoke.t for p in fault_ops), default=math.inf)
    cut = effective_cut(pairs)
    figures: dict[str, Any] = {
        "faults": len(faults),
        "unhealed": len(witnesses),
        "lab_snapshots": len(snaps),
    }
    snap_problem = None
    if len(snaps) < 2:
        snap_problem = f"{len(snaps)} lab_snapshot observations, need one at the start and one at the end"
    elif snaps[0].t > first_op:
        snap_problem = "the first lab_snapshot was taken after the first fault operation"
    elif snaps[-1].t <= cut:
        snap_problem = "no lab_snapshot after the last fault operation"
    else:
        before, after = value_of(snaps[0]), value_of(snaps[-1])
        diffs: list[dict[str, Any]] = []
        unread: list[str] = []
        partial = (bool(_incomplete(snaps[0])), bool(_incomplete(snaps[-1])))
        for fld in fields:
            d, u = _diff(before.get(fld), after.get(fld), fld, partial)
            diffs += d
            unread += u
        absent = [
            fld
            for fld in fields
            if (fld not in before or fld not in after) and not (fld in OPTIONAL and fld not in before | after)
        ]
        figures["differences"] = len(diffs)
        for d in diffs:
            witnesses.append({"problem": "lab changed", **d})
        problems = [f"start: {p}" for p in _incomplete(snaps[0])] + [
            f"end: {p}" for p in _incomplete(snaps[-1])
        ]
        if problems:
            # no evidence is never `valid`: a lab that could not be read may not be as it began
            figures["unread"] = problems
            snap_problem = "lab state not fully read, so it cannot be shown to end as it began: " + "; ".join(
                problems[:5]
            )
        elif unread:
            snap_problem = f"lab state not read for {', '.join(unread[:5])}"
        elif absent and not diffs:
            snap_problem = f"lab_snapshot lacks {', '.join(absent)}"
    if witnesses:
        unhealed = figures["unhealed"]
        parts = [f"{unhealed} faults not healed"] if unhealed else []
        parts += (
            [f"lab ends differently in {figures['differences']} places"] if figures.get("differences") else []
        )
        return Verdict(name, "invalid", ", ".join(parts), witnesses, figures)
    if snap_problem:
        return Verdict(name, "unknown", snap_problem, [], figures)
    what = f"all {len(faults)} faults healed" if faults else "no fault injected"
    return Verdict(name, "valid", f"{what}; lab ends as it began", [], figures)
