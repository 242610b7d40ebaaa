"""The plan of a dry run: every device action the scenarios would take, in order, touching nothing."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from harness.faults import FAULT_OPS, Change

__all__ = ["PlanLog", "change_plan", "format_plan", "read_plan", "record_plan"]

_ACTIONS = ("fault", "heal", "change", "revert")  # plan entries of the injector's changes


class _Planned(Protocol):
    dry_run: bool
    name: str
    plan: list[dict[str, Any]]
    settings: Any


def change_plan(change: Change, *, heal: bool = False) -> dict[str, Any]:
    """A change of the injector as a plan entry: what it is, and the device commands it would send (to
    make it, or with ``heal`` to undo it). A fault is a ``fault`` / ``heal``; another change (a swarm
    restart, a SPAN session) a ``change`` / ``revert``."""
    fault = change.ops == FAULT_OPS
    if heal:
        undo = "heal" if fault else "revert"
        return {undo: change.kind, "target": change.target, "plan": change.plan_heal()}
    what = "fault" if fault else "change"
    return {what: change.kind, "target": change.target, "params": change.params, "plan": change.plan()}


@dataclass
class PlanLog:
    """Every device action a dry run would take, scenario by scenario (``hil run --dry-run`` prints it)."""

    path: Path
    entries: list[dict[str, Any]] = field(default_factory=list)

    def add(self, scenario: str, plan: list[dict[str, Any]]) -> None:
        self.entries.append({"scenario": scenario, "plan": plan})
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as f:
            f.write(json.dumps({"scenario": scenario, "plan": plan}, default=str) + "\n")


def record_plan(sc: _Planned) -> None:
    """In a dry run, append the scenario's plan to reports/plan.jsonl (``hil run --dry-run`` prints it)."""
    if sc.dry_run:
        PlanLog(Path(sc.settings.out_dir) / "plan.jsonl").add(sc.name, sc.plan)


def read_plan(path: Path) -> list[dict[str, Any]]:
    """The plans a dry run wrote (one JSON line per scenario)."""
    try:
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except FileNotFoundError:
        return []


def _short(v: Any) -> str:
    """A parameter as a plan line shows it: a long list (the agents a switch moves) by its count."""
    if isinstance(v, list | tuple) and len(v) > 4:
        return f"[{v[0]}, {v[1]}, ... {len(v)} in all]"
    return str(v)


def format_plan(entries: Sequence[Mapping[str, Any]]) -> str:
    """The dry-run plan as text: one line per device action, grouped by scenario and phase."""
    lines = []
    for e in entries:
        lines.append(f"== {e['scenario']}")
        for item in e["plan"]:
            if "phase" in item:
                lines.append(f"  [{item['phase']}]")
            elif any(k in item for k in _ACTIONS):
                what = next(k for k in _ACTIONS if k in item)
                params = ", ".join(f"{k}={_short(v)}" for k, v in (item.get("params") or {}).items())
                extra = f" ({params})" if params else ""
                if item.get("delay_s") is not None:
                    extra += f" after a seeded {item['delay_s']} s"
                lines.append(f"    {what} {item[what]} on {item['target']}{extra}")
                for dev, cmd in item.get("plan") or []:
                    lines.append(f"      {dev}: {cmd}")
            elif "device" in item:
                for cmd in item.get("commands") or [""]:
                    lines.append(f"    {item['device']}: {cmd}")
            elif "op" in item:
                lines.append(f"    {item['op']}: {json.dumps(item['value'], default=str)}")
    return "\n".join(lines)
