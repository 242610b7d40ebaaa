"""Shrinking a failing schedule to a small one that still fails, for a person to read and replay.

Why it is built this way (Zeller's delta debugging, Hypothesis's shrinking): every candidate is run again
(`fails`: the runner replays it on the lab and judges it), so runs are the cost and `budget` caps them; a
candidate already tried is never run twice. Three passes, each keeping only reductions that still fail:
1. ddmin over the ops: drop halves, then quarters..., keeping any subset or complement that still fails,
   until no single chunk can go (1-minimal at the finest granularity the budget allowed);
2. durations: halve each op's duration while it still fails (a fault held to the final heal first gets
   one, the rest of the schedule), and move the whole schedule to start at 0;
3. targets: a two-way partition becomes one way; with the topology, a link cut becomes one end's port down
   and a planned switch of a group becomes one of its agents, a list of values one value.
The result says how many runs it took and which reductions were accepted, in order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from harness.nemesis.schedule import Op, Schedule
from harness.topology import Topology

__all__ = ["ShrinkResult", "shrink"]

MIN_DURATION = 0.05  # seconds: a fault shorter than this is shorter than the lab can inject it


@dataclass
class ShrinkResult:
    """The smallest failing schedule found, the runs it took, and each accepted reduction."""

    schedule: Schedule
    runs: int
    steps: list[str] = field(default_factory=list)


class _OutOfBudget(Exception):
    pass


class _Shrinker:
    def __init__(
        self, fails: Callable[[Schedule], bool], budget: int, log: Callable[[str], None], base: Schedule
    ) -> None:
        self.fails, self.budget, self.log, self.base = fails, budget, log, base
        self.runs = 0
        self.seen: dict[str, bool] = {}
        self.steps: list[str] = []
        self.best: list[Op] = base.sorted_ops()  # the smallest failing ops so far

    def make(self, ops: list[Op]) -> Schedule:
        return self.base.model_copy(update={"ops": sorted(ops, key=lambda o: o.at)})

    def test(self, ops: list[Op], what: str) -> bool:
        """Whether the schedule of `ops` still fails (each distinct candidate is run once)."""
        cand = self.make(ops)
        key = cand.to_json()
        if key in self.seen:
            return self.seen[key]
        if self.runs >= self.budget:
            raise _OutOfBudget
        self.runs += 1
        failed = bool(self.fails(cand))
        self.seen[key] = failed
        self.log(f"shrink run {self.runs}/{self.budget}: {what}: {'still fails' if failed else 'passes'}")
        return failed

    def accept(self, what: str, ops: list[Op]) -> list[Op]:
        """Keep a reduction that still fails (at once: the budget may run out at the next candidate)."""
        self.steps.append(what)
        self.best = ops
        return ops

    # -- pass 1: ddmin over ops -------------------------------------------------------------------------
    def ddmin(self, ops: list[Op]) -> list[Op]:
        n = 2
        while len(ops) >= 2:
            size = len(ops)
            chunks = [ops[i * size // n : (i + 1) * size // n] for i in range(n)]
            chunks = [c for c in chunks if c]
            done = False
            for c in chunks:
                if len(c) < size and self.test(c, f"keep {len(c)} of {size} ops"):
                    ops = self.accept(f"kept {len(c)} of {size} ops: {_names(c)}", c)
                    n, done = 2, True
                    break
            if not done:
                for c in chunks:
                    rest = [o for o in ops if o not in c]
                    if rest and self.test(rest, f"drop {len(c)} of {size} ops"):
                        ops = self.accept(f"dropped {len(c)} of {size} ops: {_names(c)}", rest)
                        n, done = max(n - 1, 2), True
                        break
            if not done:
                if n >= size:
                    break
                n = min(size, n * 2)
        return ops

    # -- pass 2: durations -------------------------------------------------------------------------------
    def durations(self, ops: list[Op]) -> list[Op]:
        span = self.make(ops).span
        for k in range(len(ops)):
            op = ops[k]
            if op.duration is None and op.is_fault and span > op.at:
                cand = _with(op, duration=round(span - op.at, 3))
                trial = ops[:k] + [cand] + ops[k + 1 :]
                if self.test(trial, f"give {_name(op)} a duration of {cand.duration} s"):
                    ops = self.accept(f"{_name(op)}: held to the final heal -> {cand.duration} s", trial)
            while ops[k].duration is not None and ops[k].duration / 2 >= MIN_DURATION:
                cur = ops[k]
                half = round(cur.duration / 2, 3)  # type: ignore[operator]
                trial = ops[:k] + [_with(cur, duration=half)] + ops[k + 1 :]
                if not self.test(trial, f"{_name(cur)} for {half} s"):
                    break
                ops = self.accept(f"{_name(cur)}: {cur.duration} s -> {half} s", trial)
        first = min((o.at for o in ops), default=0.0)
        if first > 0:
            trial = [_with(o, at=round(o.at - first, 3)) for o in ops]
            if self.test(trial, f"start {first} s earlier"):
                ops = self.accept(f"moved to start at 0 (everything {first} s earlier)", trial)
        return ops

    # -- pass 3: targets -------------------------------------------------------------------------------
    def targets(self, ops: list[Op], topo: Topology | None) -> list[Op]:
        for k in range(len(ops)):
            for cand, what in _narrower(ops[k], topo):
                trial = ops[:k] + [cand] + ops[k + 1 :]
                if self.test(trial, what):
                    ops = self.accept(what, trial)
                    break
        return ops


def _with(op: Op, **change: Any) -> Op:
    """The op with fields changed, validated again."""
    return Op.model_validate({**op.model_dump(), **change})


def _name(op: Op) -> str:
    return f"{op.kind} {op.target} at {op.at:g} s"


def _names(ops: list[Op]) -> str:
    return "; ".join(_name(o) for o in ops[:6]) + ("; ..." if len(ops) > 6 else "")


def _narrower(op: Op, topo: Topology | None) -> list[tuple[Op, str]]:
    """Candidates that act on less than `op` does, most promising first."""
    out: list[tuple[Op, str]] = []
    if op.kind == "partition" and not op.params.get("one_way"):
        out.append((_with(op, params={**op.params, "one_way": True}), f"{_name(op)}: two-way -> one way"))
    v = op.params.get("value")
    if op.kind == "planned_switch" and isinstance(v, list) and len(v) > 1:
        for x in v:
            out.append((_with(op, params={**op.params, "value": x}), f"{_name(op)}: values {v} -> {x}"))
    if topo is None:
        return out
    if op.kind == "link_cut" and op.target in topo.model.links:
        lk = topo.model.links[op.target]
        for end in (lk.a, lk.b):
            out.append((_with(op, kind="port_down", target=end), f"{_name(op)} -> port_down {end}"))
    if op.kind == "planned_switch" and op.params.get("scope") != "agent":
        scope, values = str(op.params.get("scope")), [str(x) for x in (v if isinstance(v, list) else [v])]
        hit = next((a for a in topo.agents() if str(getattr(a, scope, "")) in values), None)
        if hit is not None:
            cand = _with(op, params={**op.params, "scope": "agent", "value": hit.id})
            out.append((cand, f"{_name(op)}: {scope}={v} -> agent {hit.id}"))
    return out


def shrink(
    schedule: Schedule,
    fails: Callable[[Schedule], bool],
    budget: int = 50,
    log: Callable[[str], None] = print,
    *,
    topo: Topology | None = None,
) -> ShrinkResult:
    """The smallest schedule found that still `fails`, in at most `budget` runs of `fails` (the original is
    taken as failing and not run again). `topo` lets targets be narrowed further (module docstring)."""
    sh = _Shrinker(fails, budget, log, schedule)
    try:
        sh.targets(sh.durations(sh.ddmin(sh.best)), topo)
    except _OutOfBudget:
        log(f"shrink: budget of {budget} runs spent; keeping the smallest failing schedule so far")
    was = schedule.note or (f"seed {schedule.seed}" if schedule.seed is not None else "a schedule")
    note = f"shrunk from {was}: {len(schedule.ops)} -> {len(sh.best)} ops in {sh.runs} runs"
    return ShrinkResult(sh.make(sh.best).model_copy(update={"note": note}), sh.runs, sh.steps)
