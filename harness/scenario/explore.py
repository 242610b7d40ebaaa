"""A nemesis schedule run as a scenario: every op at its offset, through the injector, then Jepsen's end.

A schedule (harness.nemesis.schedule) is data: ops at offsets from its start. Running one means starting
each op at its offset on the monotonic clock (ops that overlap run at the same time, each in a thread of
its own), every fault and change through the injector with its duration so it heals itself, and then the
end every Jepsen test has: heal everything still in place, wait the schedule's `settle`, take a final read
of every PBX and CTI (the scenario's finish), and judge with the standard checkers plus the schedule's own
(`check_schedule_outcome`, which reads the `schedule_expectation` observation recorded here).

Why one injector per op: the injector records under one history process, and a process does one thing at
a time (harness.history.pair_ops); two faults applied at once under one process would pair one's invoke
with the other's completion. Each op's injector records as `nemesis:<op index>`, so overlapping faults
pair up as they happened; and a slow heal of one op never holds the lock another op's apply waits on.

Recorded besides the injector's own records (docs/history.md): the observations `schedule` (the schedule
JSON) and `schedule_expectation` (the expected outcome), an info op `schedule.start` (value `t0`, the
monotonic time offsets count from), and per op `schedule.op` (process `schedule:<index>`): invoked when it
started, with the planned `at` and the actual `started` offset and how `late` it was; completed ok (with
its change id), fail (refused or never took effect) or info (outcome unknown). A late op is a fact the
shrinker and a replay must know: `check_schedule_ran` (harness/checks/schedule_ran.py) answers unknown
for a run whose ops did not start on time.

Ctrl-C or SIGTERM during a schedule: no further op starts, the ops being applied finish applying, and
everything is healed before the interrupt goes on (the atexit heal and the journal remain behind that).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from harness import checks
from harness.checks import Verdict
from harness.checks.schedule_ran import OP_F, SCHEDULE, check_schedule_ran
from harness.faults import Change, FaultNotEffective, FaultRefused, Injector
from harness.nemesis.schedule import Op as ScheduleOp
from harness.nemesis.schedule import Schedule
from harness.scenario.calls import place_call
from harness.scenario.run import Scenario

__all__ = [
    "SCHEDULE_EXPECTATION",
    "OpRecord",
    "ScheduleRunner",
    "interruptible",
    "run_ops",
    "schedule_checks",
]

log = logging.getLogger("hil.explore")

SCHEDULE_EXPECTATION = "schedule_expectation"  # observation kind (SCHEDULE: harness/checks/schedule_ran.py)
START_F = "schedule.start"
JOIN_S = 60.0  # how long an interrupted schedule waits for the ops being applied before it heals them
CALL_PORT = 5070  # the test caller's SIP port of a schedule's first call; each further call the next one


@dataclass
class OpRecord:
    """What became of one op of the schedule: when it started (offset from the schedule's start)."""

    index: int
    op: ScheduleOp
    started: float | None = None
    ended: float | None = None
    result: str = "pending"  # ok | fail | info | skipped (interrupted before its time)
    error: str | None = None
    change: str | None = None  # the injector's change id

    @property
    def late(self) -> float | None:
        return None if self.started is None else round(self.started - self.op.at, 3)

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "kind": self.op.kind,
            "target": self.op.target,
            "at": self.op.at,
            "started": self.started,
            "late": self.late,
            "ended": self.ended,
            "result": self.result,
            "error": self.error,
        }


class _Lane:
    """The history as one op's injector writes to it: every record under that op's own process."""

    def __init__(self, history: Any, process: str) -> None:
        self._history, self.process = history, process

    def invoke(self, _process: str, f: str, value: Any = None, **kw: Any) -> Any:
        return self._history.invoke(self.process, f, value, **kw)

    def ok(self, _process: str, f: str, value: Any = None, **kw: Any) -> Any:
        return self._history.ok(self.process, f, value, **kw)

    def fail(self, _process: str, f: str, value: Any = None, **kw: Any) -> Any:
        return self._history.fail(self.process, f, value, **kw)

    def info(self, _process: str, f: str, value: Any = None, **kw: Any) -> Any:
        return self._history.info(self.process, f, value, **kw)


@contextmanager
def interruptible() -> Iterator[None]:
    """SIGTERM and SIGHUP raise KeyboardInterrupt in the main thread as SIGINT does, so a schedule's
    `finally` heals before the process goes (the ops' threads cannot receive signals)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def raiser(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")

    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGHUP)}
    for sig in previous:
        signal.signal(sig, raiser)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class ScheduleRunner:
    """Runs the ops of a schedule on a started scenario: each at its offset, each through an injector of
    its own; :meth:`run` returns when every op has started and ended, and everything is healed."""

    def __init__(self, sc: Scenario, schedule: Schedule, *, on_op: Callable[[OpRecord], None] | None = None):
        self.sc = sc
        self.schedule = schedule
        self.records = [OpRecord(k, op) for k, op in enumerate(schedule.ops)]
        self.on_op = on_op
        self.t0 = 0.0
        self._cancel = threading.Event()
        self._threads: list[threading.Thread] = []
        self._injectors: list[Injector] = []
        self._logouts: dict[str, tuple[Injector, Change]] = {}  # agent -> its open logout
        self._timed: list[tuple[Injector, Change]] = []  # changes that heal themselves after a duration
        self._lock = threading.Lock()
        self._calls = 0

    # -- the timer wheel --------------------------------------------------------------------------------
    def run(self) -> list[OpRecord]:
        assert self.sc.history is not None, "the scenario must be started"
        with interruptible():
            try:
                self._dispatch()
                self._wait_durations()
            finally:
                self._cancel.set()
                self._join()
                self.heal_all()
        return self.records

    def _dispatch(self) -> None:
        """Start each op at its offset from t0 (monotonic), in order of offset; a thread per op."""
        self.t0 = time.monotonic()
        self.sc.history.info("schedule", START_F, {"t0": self.t0, "ops": len(self.records)}, t=self.t0)
        for rec in sorted(self.records, key=lambda r: (r.op.at, r.index)):
            while (left := self.t0 + rec.op.at - time.monotonic()) > 0:
                if self._cancel.wait(min(left, 0.5)):
                    return
            th = threading.Thread(
                target=self._run_op, args=(rec,), name=f"schedule-op-{rec.index}", daemon=True
            )
            self._threads.append(th)
            th.start()

    def _wait_durations(self) -> None:
        """Until every op has ended and every op with a duration has healed itself (the schedule's span)."""
        for th in self._threads:
            while th.is_alive():
                th.join(0.5)
        while (left := self.t0 + self.schedule.span - time.monotonic()) > 0:
            time.sleep(min(left, 0.5))
        deadline = time.monotonic() + 15.0  # a self-heal already fired may still be reading itself back
        while time.monotonic() < deadline and any(c.id in inj.active for inj, c in self._timed):
            time.sleep(0.1)

    def _join(self) -> None:
        deadline = time.monotonic() + JOIN_S
        for th in self._threads:
            th.join(max(0.0, deadline - time.monotonic()))
            if th.is_alive():
                log.warning(
                    "schedule op thread %s still applying after %.0f s; healing anyway", th.name, JOIN_S
                )

    def heal_all(self) -> None:
        """Jepsen's final heal: everything the schedule's ops still hold, latest first."""
        for inj in reversed(self._injectors):
            inj.close()

    # -- one op -----------------------------------------------------------------------------------------
    def _injector(self, rec: OpRecord) -> Injector:
        inj = Injector(
            self.sc.lab,
            history=_Lane(self.sc.history, f"nemesis:{rec.index}"),
            steps=self.sc.steps,
            restore_first=False,  # the scenario's own injector healed a dead run's leftovers already
            out=log.info,
        )
        with self._lock:
            self._injectors.append(inj)
        return inj

    def _run_op(self, rec: OpRecord) -> None:
        hist = self.sc.history
        assert hist is not None
        proc = f"schedule:{rec.index}"
        if self._cancel.is_set():
            rec.result = "skipped"
            return
        rec.started = round(time.monotonic() - self.t0, 3)
        op = rec.op
        started = {k: v for k, v in rec.to_dict().items() if k not in ("ended", "result", "error")}
        hist.invoke(proc, OP_F, {**started, "duration": op.duration, "params": op.params})
        try:
            rec.change = self._apply(rec)
        except (FaultRefused, FaultNotEffective) as e:
            rec.result, rec.error = "fail", f"{type(e).__name__}: {e}"
        except Exception as e:  # noqa: BLE001 - an op that failed midway: its outcome is unknown
            rec.result, rec.error = "info", f"{type(e).__name__}: {e}"
        else:
            rec.result = "ok"
        rec.ended = round(time.monotonic() - self.t0, 3)
        done = {"index": rec.index, "ended": rec.ended, "change": rec.change}
        if rec.result == "ok":
            hist.ok(proc, OP_F, done)
        elif rec.result == "fail":
            hist.fail(proc, OP_F, done, error=rec.error or "failed")
        else:
            hist.info(proc, OP_F, done, error=rec.error)
        if rec.result != "ok":
            log.warning("schedule op %d %s %s: %s", rec.index, op.kind, op.target, rec.error)
        if self.on_op is not None:
            self.on_op(rec)

    def _apply(self, rec: OpRecord) -> str | None:
        """Do the op; returns the id of the change it made (None for a call)."""
        op = rec.op
        if op.kind == "call":
            self._call(op)
            return None
        if op.kind == "agent_login":
            with self._lock:
                open_logout = self._logouts.pop(op.target, None)
            if open_logout is not None:  # the heal of the agent's logout is its login
                inj, change = open_logout
                inj.heal(change, reason="agent_login")
                return change.id
        inj = self._injector(rec)
        if op.kind in ("agent_logout", "agent_login"):
            verb = op.kind.removeprefix("agent_")
            change = inj.make("agent_session", op.target, verb=verb)
            if verb == "logout":
                inj.inject(change)
                with self._lock:
                    self._logouts[op.target] = (inj, change)
            else:
                inj.once(change)  # an agent that was not logged out: a login, nothing to undo
            return change.id
        params = dict(op.params)
        if op.kind == "planned_switch":
            params.setdefault("agents", self._switched(params))
        change = inj.make(op.kind, op.target, **params)
        inj.inject(change, duration=op.duration)
        if op.duration is not None:
            with self._lock:
                self._timed.append((inj, change))
        return change.id

    def _switched(self, params: dict[str, Any]) -> list[str]:
        """The agents a planned-switch rule selects (its scope and value) that are not homed at its target:
        who the checkers should see moved (the rule's `agents`, docs/history.md)."""
        scope, to = params.get("scope"), params.get("to")
        value = params.get("value")
        values = {str(v) for v in value} if isinstance(value, list | tuple) else {str(value)}
        out = []
        for a in self.sc.lab.topology.agents():
            have = a.id if scope == "agent" else str(getattr(a, str(scope), ""))
            if have in values and a.home != to:
                out.append(a.id)
        return out

    def _call(self, op: ScheduleOp) -> None:
        """A test call from the op's caller host through its site's PBX (or `via`) to `to` (an agent or an
        extension), held for the op's duration (or `hold`); each call of the schedule on a port of its own."""
        topo = self.sc.lab.topology
        caller = op.target
        site = topo.device(caller).site
        via = str(op.params.get("via") or topo.of_kind("pbx", site)[0].name)
        to = str(op.params.get("to", ""))
        exts = {a.id: a.extension for a in topo.agents()}
        hold = float(op.params.get("hold", op.duration or 0.5))
        with self._lock:
            port = CALL_PORT + self._calls
            self._calls += 1
        res = place_call(self.sc, caller, via, exts.get(to, to), hold=hold, sip_port=port)
        if not res.answered:
            log.info("schedule call %s -> %s: %s", caller, to, res.outcome)


def run_ops(
    sc: Scenario,
    schedule: Schedule,
    expectation: dict[str, Any] | None,
    *,
    on_op: Callable[[OpRecord], None] | None = None,
) -> list[OpRecord]:
    """Record the schedule and its expectation in the scenario's history, run its ops (phase `schedule`),
    and heal everything (phase `final heal`). The caller then finishes the scenario (settle, final read)."""
    if sc.dry_run:  # the plan lists each op at its offset; nothing is run, nothing recorded
        for op in schedule.sorted_ops():
            sc.plan.append({"op": "schedule.op", "value": op.model_dump(exclude_none=True)})
        return []
    assert sc.history is not None, "the scenario must be started"
    sc.history.observe(SCHEDULE, "nemesis", schedule.model_dump(by_alias=True, exclude_none=True))
    if expectation is not None:
        sc.history.observe(SCHEDULE_EXPECTATION, "nemesis", expectation)
    runner = ScheduleRunner(sc, schedule, on_op=on_op)
    with sc.phase("schedule"):
        return runner.run()


def schedule_checks(
    sc: Scenario, schedule: Schedule, extra: Sequence[Callable[..., Verdict]] = ()
) -> list[Verdict]:
    """The checkers of a schedule's run, on its history: no split brain, every fault healed and the lab as
    it began, the capture complete, no lost call (when the schedule placed calls), the schedule ran as
    written, and the schedule's own expectation (`extra`: `check_schedule_outcome`)."""
    if sc.dry_run:
        return []
    ev = sc.events()
    out = [
        checks.depends_on_capture(checks.check_no_split_brain)(ev),
        checks.check_faults_healed(ev),
        checks.check_capture_complete(ev),
        check_schedule_ran(ev),
    ]
    if any(op.kind == "call" for op in schedule.ops):
        out.append(checks.check_no_lost_call(ev))
    out += [chk(ev) for chk in extra]
    return out
