"""The injector: the one way anything changes the lab. Refuse, journal (fsync), record, apply, verify;
always heal.

Order of every apply: safety check (nothing sent if refused) -> journal record, fsynced (nothing sent if
it cannot be written whole) -> history invoke -> apply -> read back until it shows. Everything after the
journal record sits inside one `try`: an apply that raises, a read-back that raises, a read-back that
never shows, a KeyboardInterrupt or SystemExit (SIGTERM/SIGHUP are turned into one) during any of it, and
the change is healed before the error goes on. The heal is read back too; only a heal that showed closes
the journal record. History writes never stand between the lab and a heal: a closed or failing history is
skipped, and at interpreter exit the heal comes first and its record after.
"""

from __future__ import annotations

import atexit
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from harness.drivers.base import Steps
from harness.faults.base import (
    SETTLE,
    Change,
    FaultHealFailed,
    FaultNotEffective,
    FaultRefused,
    process_of,
    wait_for,
)
from harness.faults.changes import TrackedProcess
from harness.faults.journal import Journal, JournalError, default_journal, owner, proc_start
from harness.faults.registry import make_fault
from harness.faults.restore import restore
from harness.lab import Lab

_LIVE: set[Injector] = set()  # injectors that may hold open changes, healed at interpreter exit


class Injector:
    """Applies changes safely and heals them; see the module docstring for the order of things."""

    def __init__(
        self,
        lab: Lab,
        journal_path: Path | str | None = None,
        history: Any = None,
        dry_run: bool = False,
        steps: Steps | None = None,
        *,
        restore_first: bool = True,
        out: Callable[[str], None] = print,
        settle: float = SETTLE,
    ):
        self.lab = lab
        self.history = history
        self.steps = steps or Steps(dry_run=dry_run)
        self.dry_run = dry_run or self.steps.dry_run
        self.steps.dry_run = self.dry_run
        self.journal = Journal(Path(journal_path) if journal_path else default_journal(lab))
        self.out = out
        self.settle = settle
        self.active: dict[str, Change] = {}
        self.planned: list[tuple[str, str, str]] = []  # (change id, device, command) in a dry run
        self._timers: dict[str, threading.Timer] = {}
        self._lock = threading.RLock()
        self.restored: list[dict[str, Any]] = []
        if restore_first and not self.dry_run:
            self.restored = restore(lab, self.journal.path, history=history, steps=self.steps, settle=settle)
        _LIVE.add(self)

    def make(self, kind: str, target: str | None = None, **params: Any) -> Change:
        return make_fault(self.lab, kind, target, steps=self.steps, **params)

    # -- history, never in the way --------------------------------------------------------------------
    def _record(self, change: Change, method: str, f: str, value: Any, **kw: Any) -> None:
        if self.history is None:
            return
        try:
            getattr(self.history, method)(process_of(change), f, value, **kw)
        except Exception as e:  # noqa: BLE001 - a closed history must not stop an apply's heal
            self.out(f"history: {f} {method} not recorded: {type(e).__name__}: {e}")

    # -- apply ----------------------------------------------------------------------------------------
    def inject(self, change: Change, duration: float | None = None) -> Change:
        """Apply and verify; a change with a time limit then heals itself after `duration` (or its
        max_duration). Raises FaultRefused (nothing sent), JournalError (nothing sent), FaultNotEffective
        (healed), or whatever the apply raised (healed)."""
        change.steps = self.steps
        apply_f = change.ops[0]
        hv = change.history_value()
        try:
            change.check_safety()
        except FaultRefused as e:
            if not self.dry_run:
                self._record(change, "invoke", apply_f, hv)
                self._record(change, "fail", apply_f, {"id": change.id}, error=f"refused: {e}")
            raise
        if self.dry_run:
            self._print_plan(change)
            return change
        with self._lock:
            if change.id in self.active:
                raise ValueError(f"{change.id} is applied already; ids must be unique while open")
            self.journal.append(
                {"op": "inject", "id": change.id, "fault": change.describe(), "owner": owner()}
            )
            self.active[change.id] = change
            change.on_note = lambda data, cid=change.id: self.journal.append(
                {"op": "note", "id": cid, "data": data}
            )
        try:
            self._record(change, "invoke", apply_f, hv, sync=True)
            change.inject()
            applied_at = time.monotonic()  # its time counts from here, not from its verification
            if not wait_for(change.took_effect, self.settle):
                raise FaultNotEffective(f"{change!r} was sent but never showed on the device; healed")
        except BaseException as e:
            if isinstance(e, FaultNotEffective):
                self._record(change, "fail", apply_f, {"id": change.id}, error="did not take effect")
            else:
                self._record(change, "info", apply_f, {"id": change.id}, error=f"{type(e).__name__}: {e}")
            self._heal_quietly(change, "inject failed")
            raise
        self._record(change, "ok", apply_f, {"id": change.id})
        self._arm(change, duration, applied_at)
        return change

    def _print_plan(self, change: Change) -> None:
        for word, pairs in (("inject", change.plan()), ("heal:  ", change.plan_heal())):
            for dev, cmd in pairs:
                self.planned.append((change.id, dev, cmd))
                self.out(f"[dry-run] {change.kind} {change.id} {word} {dev}: {cmd}")

    def _arm(self, change: Change, duration: float | None, applied_at: float) -> None:
        limits = [x for x in (duration, change.max_duration) if x]
        if not limits:
            return
        left = max(0.0, min(limits) - (time.monotonic() - applied_at))  # a 300 ms blip stays near 300 ms
        timer = threading.Timer(left, self._expire, args=(change,))
        timer.daemon = True
        timer.name = f"fault-{change.id}-max-duration"
        self._timers[change.id] = timer
        timer.start()

    def _expire(self, change: Change) -> None:
        try:
            self.heal(change, reason="max_duration")
        except Exception as e:  # the journal keeps it open; restore will try again
            self.out(f"fault {change.id}: self-heal after max_duration failed: {e}")

    # -- heal -----------------------------------------------------------------------------------------
    def heal(self, change: Change, reason: str = "done", *, record_first: bool = True) -> None:
        """Heal (once) and read back; the journal marks it healed only when the heal showed.

        `record_first=False` (at exit) heals before writing the history's invoke."""
        if self.dry_run:
            return
        heal_f = change.ops[1]
        with self._lock:
            if change.id not in self.active:
                return
            timer = self._timers.pop(change.id, None)
            if timer is not None and timer is not threading.current_thread():
                timer.cancel()
            invoke = {"id": change.id, "reason": reason}
            if record_first:
                self._record(change, "invoke", heal_f, invoke, sync=True)
            try:
                change.heal()
                if not wait_for(change.heal_took_effect, self.settle):
                    raise FaultHealFailed(f"{change!r}: heal sent but it still shows after {self.settle:g} s")
            except BaseException as e:
                err = f"{type(e).__name__}: {e}"
                self._journal_quietly({"op": "heal", "id": change.id, "result": "failed", "error": err})
                if not record_first:
                    self._record(change, "invoke", heal_f, invoke)
                self._record(change, "fail", heal_f, {"id": change.id}, error=err)
                raise
            self.active.pop(change.id, None)
            self._journal_quietly({"op": "heal", "id": change.id, "result": "ok", "via": change.healed_via})
            if not record_first:
                self._record(change, "invoke", heal_f, invoke)
            v: dict[str, Any] = {"id": change.id}
            if change.healed_via:
                v["via"] = change.healed_via
            self._record(change, "ok", heal_f, v)

    def _journal_quietly(self, record: dict[str, Any]) -> None:
        """After a heal, a journal that cannot be written leaves the record open: a later restore heals
        again (heals are idempotent), which is better than an exception hiding the heal's own outcome."""
        try:
            self.journal.append(record)
        except JournalError as e:
            self.out(f"fault {record['id']}: {e}")

    def _heal_quietly(self, change: Change, reason: str) -> None:
        try:
            self.heal(change, reason=reason)
        except Exception as e:
            self.out(f"fault {change.id}: heal after a failed inject failed too: {e}")

    def heal_all(self, *, at_exit: bool = False) -> None:
        """Heal every change this injector has open (latest first); errors are reported, not raised.
        Tracked processes are their owners' to stop (a capture reads its counters), except at exit."""
        for change in reversed(list(self.active.values())):
            if isinstance(change, TrackedProcess) and not at_exit:
                continue
            try:
                self.heal(change, reason="at_exit" if at_exit else "heal_all", record_first=not at_exit)
            except Exception as e:
                self.out(f"fault {change.id}: heal failed: {e}")

    def close(self) -> None:
        """Heal what is open and forget this injector (it is no longer healed at interpreter exit)."""
        self.heal_all()
        _LIVE.discard(self)

    # -- the scenario's API ---------------------------------------------------------------------------
    @contextmanager
    def apply(self, change: Change, duration: float | None = None) -> Iterator[Change]:
        """Apply for the block; heal when it ends however it ends (exception, SIGINT, SIGTERM)."""
        with _signals_raise():
            self.inject(change, duration)
            try:
                yield change
            finally:
                self.heal(change)

    fault = apply  # the name scenarios and tests have used for faults

    def start(self, change: Change) -> Change:
        """Apply and keep it until `end(change)`, `heal_all()` or exit (a SPAN session for the run)."""
        return self.inject(change)

    def end(self, change: Change) -> None:
        self.heal(change)

    def once(self, change: Change) -> Change:
        """Apply, verify, heal (a swarm restart: journaled while it happens, verified running after)."""
        with self.apply(change):
            pass
        return change

    def track_process(self, kind: str, pid: int, what: str) -> str:
        """Journal a process the controller started (a capture's tcpdump), so a restore after a crash
        stops it (by PID and start time, never another process). Returns the id for `release`."""
        start = proc_start(pid)
        change = TrackedProcess(self.lab, what, {"pid": pid, "start": start, "role": kind}, steps=self.steps)
        if self.dry_run or start is None:
            return change.id  # nothing runs (dry run), or it has exited already: nothing to stop later
        with self._lock:
            self.journal.append(
                {"op": "inject", "id": change.id, "fault": change.describe(), "owner": owner()}
            )
            self.active[change.id] = change
        return change.id

    def release(self, id: str) -> None:
        """The owner stopped the process itself: close its journal record."""
        with self._lock:
            if self.active.pop(id, None) is not None:
                self._journal_quietly({"op": "heal", "id": id, "result": "ok", "by": "release"})


@atexit.register
def _heal_at_exit() -> None:
    for inj in list(_LIVE):
        inj.heal_all(at_exit=True)


@contextmanager
def _signals_raise() -> Iterator[None]:
    """SIGTERM (and SIGINT, and SIGHUP) raise in the main thread, so `finally` heals before exit."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def raiser(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")

    previous = {}
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        previous[sig] = signal.getsignal(sig)
        if sig == signal.SIGINT and previous[sig] not in (signal.SIG_DFL, signal.default_int_handler):
            continue  # someone (pytest, a runner) handles SIGINT already; it raises KeyboardInterrupt too
        signal.signal(sig, raiser)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
