"""What every driver shares: each action is a logged step, connection failures are retried and then
reported as a lab fault (the device is unreachable), and a dry run records commands without sending.

A lab fault is not a product failure: a report must be able to tell "the switch did not answer" from "the
agents did not recover", so drivers raise DeviceUnreachable for the first and never for the second.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

from tenacity import RetryError, Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from harness.credentials import redact

log = logging.getLogger("hil.driver")
T = TypeVar("T")


class DeviceUnreachable(Exception):
    """The device did not answer after retries: a lab fault, not a product defect."""

    def __init__(self, device: str, action: str, cause: BaseException | str):
        self.device, self.action, self.cause = device, action, cause
        super().__init__(f"{device}: {action}: device unreachable ({cause})")


class DeviceError(Exception):
    """The device answered but refused or failed the command."""


class RefusedBySafety(Exception):
    """The topology does not mark the target as fair game; nothing was sent."""


@dataclass
class Step:
    device: str
    action: str
    commands: list[str]
    t_start: float
    t_end: float | None = None
    ok: bool | None = None
    error: str | None = None
    dry_run: bool = False


StepSink = Callable[[Step], None]


@dataclass
class Steps:
    """Where driver steps go: the Python log, and any sinks (history, Allure) the caller adds."""

    sinks: list[StepSink] = field(default_factory=list)
    dry_run: bool = False
    planned: list[Step] = field(default_factory=list)

    def emit(self, step: Step) -> None:
        log.info(
            "%s %s %s %s%s",
            step.device,
            step.action,
            "DRY-RUN" if step.dry_run else ("ok" if step.ok else "FAILED"),
            redact("; ".join(step.commands)),
            f" ({step.error})" if step.error else "",
        )
        for sink in self.sinks:
            sink(step)


DEFAULT_STEPS = Steps()


class Driver:
    """Base of every driver: one device, a step log, retries on connection failures."""

    connect_attempts = 3

    def __init__(self, name: str, steps: Steps | None = None):
        self.name = name
        self.steps = steps or DEFAULT_STEPS

    @property
    def dry_run(self) -> bool:
        return self.steps.dry_run

    @contextmanager
    def step(self, action: str, commands: list[str]) -> Iterator[Step]:
        st = Step(self.name, action, list(commands), time.monotonic(), dry_run=self.dry_run)
        if self.dry_run:
            st.t_end, st.ok = st.t_start, True
            self.steps.planned.append(st)
            self.steps.emit(st)
            yield st
            return
        try:
            yield st
            st.ok = True
        except BaseException as e:
            st.ok, st.error = False, redact(str(e))
            raise
        finally:
            st.t_end = time.monotonic()
            self.steps.emit(st)

    def retrying(self, action: str, fn: Callable[[], T], transient: tuple[type[BaseException], ...]) -> T:
        """Call fn, retrying transient connection errors with backoff; then report the device unreachable."""
        try:
            for attempt in Retrying(
                stop=stop_after_attempt(self.connect_attempts),
                wait=wait_exponential(multiplier=0.2, max=2.0),
                retry=retry_if_exception_type(transient),
                reraise=False,
            ):
                with attempt:
                    return fn()
        except RetryError as e:
            cause = e.last_attempt.exception()
            raise DeviceUnreachable(self.name, action, cause or "no answer") from None
        raise AssertionError("unreachable")  # pragma: no cover

    def close(self) -> None:
        """Release connections; drivers hold at most one each."""

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
