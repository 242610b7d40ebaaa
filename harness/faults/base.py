"""What every change the injector makes shares: identity, description, the apply/heal/read-back contract.

A `Change` is anything the harness does to the lab that must be undone: a fault (a port down, a service
killed), a planned-switch rule, a swarm stop, a SPAN session, a capture process. Each one can say what it
would send (`plan`, `plan_heal`), refuse itself before anything is sent (`check_safety`), apply and heal
itself, and read back from the device that either took effect. The injector adds the journal, the history
and the timers; a change knows nothing of them except `note()`, for facts learnt only once applied (the id
a UL gives a rule), which the injector journals so a restore after SIGKILL can still find them.
"""

from __future__ import annotations

import secrets
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar

from harness.drivers import driver_for
from harness.drivers.base import RefusedBySafety, Steps
from harness.lab import Lab

NEMESIS = "nemesis"
SETTLE = 5.0  # seconds an inject or heal may take to show
FAULT_OPS = ("fault.inject", "fault.heal")
CHANGE_OPS = ("change.apply", "change.revert")


class FaultRefused(RefusedBySafety):
    """Not fair game, or on the controller's management path: nothing was sent."""


class FaultNotEffective(Exception):
    """The fault was injected but never showed; it has been healed."""


class FaultHealFailed(Exception):
    """A heal did not complete or did not show; the fault stays open in the journal for `hil lab restore`."""


def new_id() -> str:
    return "f" + secrets.token_hex(4)


def wait_for(pred: Callable[[], bool], timeout: float, every: float = 0.1) -> bool:
    """Poll `pred` until it holds or `timeout` passes (it is always asked at least once)."""
    deadline = time.monotonic() + timeout
    while True:
        if pred():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(every)


class Change(ABC):
    """One change to the lab: what, where, how to undo, how to see either; optionally a time limit."""

    kind: ClassVar[str] = ""
    default_max_duration: ClassVar[float | None] = None  # None: lasts until healed (no self-heal timer)
    ops: ClassVar[tuple[str, str]] = CHANGE_OPS  # the history's f for (apply, heal)

    def __init__(
        self,
        lab: Lab,
        target: str,
        params: dict[str, Any] | None = None,
        *,
        id: str | None = None,
        max_duration: float | None = None,
        steps: Steps | None = None,
        notes: dict[str, Any] | None = None,
    ):
        self.lab = lab
        self.target = target
        self.params = dict(params or {})
        self.id = id or new_id()
        limit = max_duration if max_duration is not None else self.default_max_duration
        self.max_duration: float | None = float(limit) if limit is not None else None
        self.steps = steps or Steps()
        self.notes: dict[str, Any] = dict(notes or {})
        self.on_note: Callable[[dict[str, Any]], None] | None = None  # set by the injector: journals notes
        self.healed_via: str | None = None
        self._heal_lock = threading.Lock()

    # -- description ----------------------------------------------------------------------------------
    @property
    def site(self) -> str | None:
        d = self.lab.topology.devices.get(self.target.split(":", 1)[0])
        return d.site if d else None

    @property
    def ends_sessions(self) -> bool:
        """True when the change removes a CTI process (its sessions die with it)."""
        return False

    def describe(self) -> dict[str, Any]:
        """The journal's record of the change: enough for `make_fault` to rebuild it after a crash."""
        d: dict[str, Any] = {
            "id": self.id,
            "kind": self.kind,
            "target": self.target,
            "params": self.params,
            "max_duration": self.max_duration,
            "site": self.site,
        }
        if self.ends_sessions:
            d["ends_sessions"] = True
        return d

    def history_value(self) -> dict[str, Any]:
        """The invoke value of docs/history.md (`fault.inject` for faults, `change.apply` otherwise)."""
        key = "fault" if self.ops == FAULT_OPS else "change"
        v: dict[str, Any] = {"id": self.id, key: self.kind, "target": self.target, **self.params}
        if self.site:
            v["site"] = self.site
        if self.ends_sessions:
            v["ends_sessions"] = True
        return v

    def note(self, **data: Any) -> None:
        """Remember a fact learnt while applying (journaled at once by the injector)."""
        self.notes.update(data)
        if self.on_note is not None:
            self.on_note(data)

    # -- what subclasses provide ----------------------------------------------------------------------
    @abstractmethod
    def check_safety(self) -> None:
        """Raise FaultRefused unless the topology allows the change and the controller's way back stays up.
        Must send nothing to any device."""

    @abstractmethod
    def plan(self) -> list[tuple[str, str]]:
        """(device, command) pairs apply would send, in order."""

    @abstractmethod
    def plan_heal(self) -> list[tuple[str, str]]:
        """(device, command) pairs heal would send, in order."""

    @abstractmethod
    def _inject(self) -> None: ...

    @abstractmethod
    def _heal(self) -> None: ...

    @abstractmethod
    def took_effect(self) -> bool:
        """Read back from the device that the change is in place."""

    def heal_took_effect(self) -> bool:
        """Read back that the heal is in place (default: the change no longer shows)."""
        return not self.took_effect()

    # -- the interface --------------------------------------------------------------------------------
    def inject(self) -> None:
        self.check_safety()
        self._inject()

    def heal(self) -> None:
        """Undo the change. Idempotent: healing a healed (or never applied) change is harmless."""
        with self._heal_lock:
            self._heal()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.id} {self.kind} {self.target} {self.params}>"

    # -- helpers --------------------------------------------------------------------------------------
    def _device(self, name: str) -> Any:
        try:
            return self.lab.topology.device(name)
        except KeyError:
            raise FaultRefused(f"{self.kind}: {name!r} is not a device of {self.lab.topology.file}") from None

    def _driver(self, name: str) -> Any:
        return driver_for(self.lab, name, self.steps)


class Fault(Change):
    """A fault: a change the scenario judges recovery from; it heals itself after `max_duration`."""

    default_max_duration: ClassVar[float | None] = 300.0
    ops: ClassVar[tuple[str, str]] = FAULT_OPS


def process_of(change: Change) -> str:
    """The history process a change's records go under: one per change, `nemesis:<change id>`.

    A history process does one thing at a time (harness.history.pair_ops pairs an invoke with the next
    completion of its process). Under one name for every change, a self-heal firing while another change
    was still being applied, or two injectors' heals at once, paired one change's invoke with another's
    completion and left a heal without its completion ("never healed"). A change's own records never
    overlap: its heal starts after its apply completed."""
    return f"{NEMESIS}:{change.id}"
