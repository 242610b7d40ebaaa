"""check_schedule_ran from hand-made histories: valid when every op started on time and completed ok;
unknown (never invalid) for a late, refused, unknown-outcome or never-completed op, or no schedule."""

from __future__ import annotations

from typing import Any

import pytest

from harness.checks.schedule_ran import LATE_S, OP_F, SCHEDULE, check_schedule_ran
from harness.history import Event, Obs, Op


def ran(*ops: tuple[float, str | None], recorded: bool = True) -> list[Event]:
    """A history of a schedule whose op k started `late` seconds late and ended with `outcome` (None: it
    never completed)."""
    ev: list[Event] = [Obs(0, 0.0, 1e9, SCHEDULE, "nemesis", {"ops": []})] if recorded else []
    for k, (late, outcome) in enumerate(ops):
        proc, t = f"schedule:{k}", 1.0 + k
        v: dict[str, Any] = {"index": k, "kind": "loss", "target": "sha-cti1", "at": t, "late": late}
        ev.append(Op(len(ev), t, 1e9 + t, "invoke", proc, OP_F, proc, {**v, "started": t + late}))
        if outcome:
            err = None if outcome == "ok" else "refused"
            ev.append(Op(len(ev), t + 0.5, 1e9 + t + 0.5, outcome, proc, OP_F, proc, {"index": k}, err))  # type: ignore[arg-type]
    return ev


def test_valid_every_op_on_time_and_ok() -> None:
    v = check_schedule_ran(ran((0.01, "ok"), (0.2, "ok")))
    assert v.result == "valid" and v.figures == {"ops": 2, "max_late": 0.2, "late_bound": LATE_S}


@pytest.mark.parametrize(
    ("op", "problem"),
    [
        ((LATE_S + 0.1, "ok"), "started 0.600 s late"),
        ((0.01, "fail"), "fail: refused"),
        ((0.01, "info"), "info: refused"),
        ((0.01, None), "no completion"),
    ],
)
def test_unknown_when_an_op_did_not_run_as_written(op: tuple[float, str | None], problem: str) -> None:
    v = check_schedule_ran(ran((0.01, "ok"), op))
    assert v.result == "unknown" and v.reason == "1 of 2 ops did not run as written"
    (w,) = v.witnesses
    assert w["index"] == 1 and w["problem"] == problem and w["target"] == "sha-cti1"


def test_the_late_bound_is_a_parameter_and_no_schedule_is_unknown() -> None:
    assert check_schedule_ran(ran((0.3, "ok")), late=0.2).result == "unknown"
    assert check_schedule_ran(iter(ran((0.3, "ok")))).result == "valid"  # any iterable, read once
    v = check_schedule_ran(ran((0.01, "ok"), recorded=False))
    assert v.result == "unknown" and "no schedule recorded" in v.reason
