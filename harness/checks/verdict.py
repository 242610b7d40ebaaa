"""A checker's answer, and how answers fold into one.

`unknown` is an honest answer: a checker with too little evidence says so and why, and never says `valid`
(DESIGN.md, the Jepsen model). Folding keeps the worst: invalid beats unknown beats valid.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Literal

__all__ = ["RANK", "Checker", "Result", "Verdict", "compose", "renamed", "unknown"]

Result = Literal["valid", "invalid", "unknown"]
RANK: dict[str, int] = {"valid": 0, "unknown": 1, "invalid": 2}


@dataclass(frozen=True)
class Verdict:
    """A checker's answer, with the evidence for it (witnesses) and its measurements (figures)."""

    name: str
    result: Result
    reason: str
    witnesses: list[Any] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.result not in RANK:
            raise ValueError(f"result must be valid, invalid or unknown, got {self.result!r}")

    @property
    def valid(self) -> bool:
        return self.result == "valid"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "result": self.result,
            "reason": self.reason,
            "witnesses": self.witnesses,
            "figures": self.figures,
        }


Checker = Callable[..., Verdict]


def compose(*verdicts: Verdict, name: str = "overall") -> Verdict:
    """Fold verdicts into one: invalid beats unknown beats valid; no verdict at all is unknown."""
    if not verdicts:
        return Verdict(name, "unknown", "no checker ran")
    worst = max(verdicts, key=lambda v: RANK[v.result]).result
    parts = [v for v in verdicts if v.result == worst]
    if worst == "valid":
        reason = f"all {len(verdicts)} checks valid"
    else:
        reason = "; ".join(f"{v.name}: {v.reason}" for v in parts)
    return Verdict(
        name,
        worst,
        reason,
        witnesses=[v.to_dict() for v in parts if worst != "valid"],
        figures={v.name: v.result for v in verdicts},
    )


def unknown(name: str, reason: str, **figures: Any) -> Verdict:
    """Too little evidence to decide, and why."""
    return Verdict(name, "unknown", reason, figures=figures)


def renamed(v: Verdict, name: str) -> Verdict:
    """The same verdict under another name (one checker run twice in a scenario, e.g. switch and back)."""
    return replace(v, name=name)
