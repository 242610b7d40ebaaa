"""No lost call: every placed call answered or refused explicitly."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from harness.checks.evidence import CALL_PLACE, rounded
from harness.checks.verdict import Verdict
from harness.history import Event, OpPair, pair_ops

__all__ = ["check_no_lost_call"]


def check_no_lost_call(history: Iterable[Event], *, f: str = CALL_PLACE, min_calls: int = 1) -> Verdict:
    """Every placed call is answered (`ok`) or fails explicitly (`fail` with an `error`).

    A call with no completion, an `info` completion (outcome unknown) or a `fail` without a reason is lost.
    Fewer than `min_calls` placed calls is unknown, never valid: nothing was tested. A scenario that
    places no calls leaves this checker out instead of passing it vacuously.
    """
    name = "no_lost_call"
    pairs = [p for p in pair_ops(history)[0] if p.invoke.f == f]
    answered: list[OpPair] = []
    failed: list[OpPair] = []
    lost: list[OpPair] = []
    for p in pairs:
        if p.outcome == "ok":
            answered.append(p)
        elif p.outcome == "fail" and p.completion is not None and p.completion.error:
            failed.append(p)
        else:
            lost.append(p)
    reasons = Counter(p.completion.error for p in failed if p.completion)
    figures = {
        "placed": len(pairs),
        "answered": len(answered),
        "failed": len(failed),
        "lost": len(lost),
        "fail_reasons": dict(reasons),
    }
    why = {None: "no completion", "info": "outcome unknown (info)", "fail": "failed without a reason"}
    witnesses = [
        {
            "process": p.invoke.process,
            "t": rounded(p.invoke.t),
            "value": p.invoke.value,
            "problem": why[p.outcome],
        }
        for p in lost
    ]
    if witnesses:
        return Verdict(name, "invalid", f"{len(lost)} of {len(pairs)} calls lost", witnesses, figures)
    if len(pairs) < min_calls:
        return Verdict(
            name, "unknown", f"{len(pairs)} calls placed, at least {min_calls} needed", [], figures
        )
    return Verdict(
        name, "valid", f"all {len(pairs)} calls answered ({len(answered)}) or failed explicitly", [], figures
    )
