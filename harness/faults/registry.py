"""Every kind of change by name: how a scenario asks for one, and how a restore rebuilds one from the journal.

A new fault kind is a `Change` subclass with a `kind`, listed here (or `register`ed by a plugin or a test).
"""

from __future__ import annotations

from typing import Any

from harness.drivers.base import Steps
from harness.faults.base import Change
from harness.faults.changes import AgentSession, PlannedSwitch, SpanSession, SwarmService, TrackedProcess
from harness.faults.flood import Flood
from harness.faults.host import ServiceKill, ServicePause, ServiceStop
from harness.faults.network import Blackhole, Loss, Partition, RateLimit
from harness.faults.power import PowerOff
from harness.faults.switch import LinkCut, PortDown
from harness.lab import Lab

KINDS: dict[str, type[Change]] = {
    cls.kind: cls
    for cls in (
        PortDown,
        LinkCut,
        ServiceKill,
        ServiceStop,
        ServicePause,
        PowerOff,
        Blackhole,
        Partition,
        Loss,
        RateLimit,
        PlannedSwitch,
        SwarmService,
        SpanSession,
        TrackedProcess,
        AgentSession,
        Flood,
    )
}


def register(cls: type[Change]) -> type[Change]:
    """Add a kind (usable as a class decorator); a name already taken by another class is an error."""
    if not cls.kind:
        raise ValueError(f"{cls.__name__} has no kind")
    if KINDS.get(cls.kind, cls) is not cls:
        raise ValueError(f"fault kind {cls.kind!r} is already {KINDS[cls.kind].__name__}")
    KINDS[cls.kind] = cls
    return cls


def make_fault(
    lab: Lab,
    kind: str,
    target: str | None = None,
    *,
    steps: Steps | None = None,
    id: str | None = None,
    max_duration: float | None = None,
    notes: dict[str, Any] | None = None,
    **params: Any,
) -> Change:
    """A change of `kind` on `target`; nothing is checked or sent until it is injected."""
    try:
        cls = KINDS[kind]
    except KeyError:
        raise ValueError(f"unknown fault kind {kind!r}; known: {', '.join(sorted(KINDS))}") from None
    if target is None:
        target = params.get("a")
        if target is None:
            raise ValueError(f"{kind}: a target is needed")
    return cls(lab, str(target), params, id=id, max_duration=max_duration, steps=steps, notes=notes)
