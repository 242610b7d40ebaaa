"""The nemesis on the lab: random fault schedules (seeds S..S+N-1) run one after another on one virtual lab,
as `hil explore` runs them, with the figures the issue's targets name.

    .venv/bin/python bench/bench_explore.py [--schedules 20] [--seed 1] [--profile F] [--topology F]
                                             [--no-shrink] [--shrink-budget N] [--json FILE]

Figures: schedules per hour on this machine (wall clock of the schedules themselves: reset, ops, settle,
final read, judging; shrinking counted apart), how many were valid, invalid or could not be judged, lost
agents, agents in a split brain, false failovers (agents that moved on a break the expected outcome says
moves nobody, or moved back with no plan: the schedule_outcome checker's witnesses), the ops that started
late, and for each invalid schedule the time and lab runs its shrink took. Run it in a network namespace
of its own (one virtual lab per namespace):

    unshare --net sh -c 'ip link set lo up; HIL_RUN_DIR=/tmp/hil-bench .venv/bin/hil bench explore ...'
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.sysinfo import describe  # noqa: E402
from harness.checks.schedule_ran import LATE_S  # noqa: E402
from harness.lab.session import close_lab, open_lab  # noqa: E402
from harness.scenario import exploration  # noqa: E402


def witnesses(results: list[exploration.ScheduleResult], check: str) -> list[dict[str, Any]]:
    return [
        w for r in results for v in r.verdicts if v.name == check for w in v.witnesses if isinstance(w, dict)
    ]


def agents_with(results: list[exploration.ScheduleResult], *problems: str) -> int:
    """Agents the schedule_outcome checker found with a problem starting with one of these words (its
    witnesses: "lost: ...", "moved: ...", "must stay, ...", "failback: ...")."""
    return sum(
        1 for w in witnesses(results, "schedule_outcome") if str(w.get("problem", "")).startswith(problems)
    )


def figures(results: list[exploration.ScheduleResult], wall: float) -> dict[str, Any]:
    runs = [r.seconds for r in results]
    shrinks = [r.shrink for r in results if r.shrink]
    late = [op.late for r in results for op in r.ops if op.late is not None]
    kinds = Counter(op.op.kind for r in results for op in r.ops)
    return {
        "schedules": len(results),
        "valid": sum(1 for r in results if r.result == "valid"),
        "invalid": sum(1 for r in results if r.result == "invalid"),
        "unknown": sum(1 for r in results if r.result == "unknown"),
        "schedules_per_hour": {
            "value": round(3600 * len(runs) / sum(runs), 1) if runs else None,
            "unit": "1/h",
        },
        "schedule_s": {
            "median": round(statistics.median(runs), 1) if runs else None,
            "max": round(max(runs), 1) if runs else None,
            "unit": "s",
        },
        "lost_agents": agents_with(results, "lost"),
        "split_brain_agents": len(
            {(r.name, w.get("agent")) for r in results for w in witnesses([r], "no_split_brain")}
        ),
        "false_failovers": agents_with(results, "moved", "must stay", "failback"),
        "ops": sum(kinds.values()),
        "ops_by_kind": dict(sorted(kinds.items())),
        "ops_late": {"count": sum(1 for x in late if x > LATE_S), "max_s": round(max(late, default=0.0), 3)},
        "shrink": {
            "count": len(shrinks),
            "seconds": [s["seconds"] for s in shrinks],
            "runs": [s["runs"] for s in shrinks],
            "ops": [[s["ops_before"], s["ops_after"]] for s in shrinks],
            "unit": "s",
        },
        "wall_s": {"value": round(wall, 1), "unit": "s"},
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--schedules", type=int, default=20)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--profile", default=None)
    ap.add_argument("--topology", default=None)
    ap.add_argument("--no-shrink", action="store_true")
    ap.add_argument("--shrink-budget", type=int, default=exploration.SHRINK_BUDGET)
    ap.add_argument("--json", dest="json_file")
    args = ap.parse_args()
    info = describe(("kamailio", "tcpdump"))  # before the runs: the load average at the start
    try:
        inputs = exploration.load_inputs(args.topology, args.profile)
        schedules = exploration.draw(inputs, range(args.seed, args.seed + args.schedules))
    except exploration.InputError as e:
        for line in e.lines():
            print(f"error: {line}", file=sys.stderr)
        return 2
    t0 = time.monotonic()
    lab = open_lab(inputs.topology)
    try:
        with exploration.Explorer(lab, inputs, say=print, shrink_budget=args.shrink_budget) as ex:
            results = ex.explore(
                schedules, shrink_invalid=not args.no_shrink, on_result=lambda r: print(r.line(), flush=True)
            )
    finally:
        close_lab(lab)
    figs = figures(results, time.monotonic() - t0)
    print(
        f"{figs['schedules']} schedules (seeds {args.seed}-{args.seed + args.schedules - 1}): "
        f"{figs['valid']} valid, {figs['invalid']} invalid, {figs['unknown']} not judged; "
        f"{figs['schedules_per_hour']['value']} schedules/h; lost agents {figs['lost_agents']}, "
        f"split brain {figs['split_brain_agents']}, false failovers {figs['false_failovers']}"
    )
    doc = {
        "bench": "explore",
        **info,
        "seeds": [args.seed, args.seed + args.schedules - 1],
        "profile": args.profile or "default",
        "topology": inputs.topology.name,
        "figures": figs,
        "run": exploration.summary(results, seed=args.seed, profile=args.profile),
    }
    if args.json_file:
        Path(args.json_file).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json_file).write_text(json.dumps(doc, indent=1, default=str))
        print(f"written: {args.json_file}")
    return 0 if figs["invalid"] == 0 and figs["unknown"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
