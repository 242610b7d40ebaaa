"""One scenario run: its evidence (history, observer, capture), its phases, and the faults it makes.

Entering starts the evidence (start lab snapshot, roster, capture, snapshots at ``Settings.hz``, one
baseline read of every endpoint); leaving heals whatever is still in place, takes the final read and lab
snapshot, stops the capture and records what it decoded. The waits are in `waits`, the judging in
`judging`; a scenario object has all three.

Dry run (``Settings.dry_run``): nothing is sent to any device. Faults contribute ``fault.plan()``, drivers
their planned steps, waits return at once, and :attr:`Scenario.plan` lists every device action in order.
"""

from __future__ import annotations

import logging
import random
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from harness import observe
from harness.checks import PHASE, Verdict
from harness.drivers import Step, Steps
from harness.faults import Change, Injector, make_fault
from harness.history import History
from harness.lab import Lab
from harness.scenario.agents import agent_hosts
from harness.scenario.judging import Judging
from harness.scenario.plan import change_plan
from harness.scenario.readiness import restart_swarms, wait_lab_clean
from harness.scenario.settings import FAULT_JITTER_S, LabNotReady, Settings, poll_rate, slug
from harness.scenario.waits import Waits

__all__ = ["Scenario"]

log = logging.getLogger("hil.scenario")


class Scenario(Waits, Judging):
    """A scenario's run: its history, the observer and the capture, the faults it makes, and its verdicts.

    ``phase_hook(name)`` (e.g. ``allure.step``) wraps each phase, so a report shows apply / verify /
    revert / verify-revert as steps.
    """

    def __init__(
        self,
        lab: Lab,
        name: str,
        settings: Settings | None = None,
        *,
        steps: Steps | None = None,
        phase_hook: Callable[[str], Any] | None = None,
        capture: observe.LabCapture | None = None,
    ) -> None:
        self.lab = lab
        self.name = slug(name)
        self.settings = settings or Settings()
        self.dry_run = self.settings.dry_run
        self.steps = steps or Steps(dry_run=self.dry_run)
        self.steps.dry_run = self.dry_run
        self.phase_hook = phase_hook
        out = Path(self.settings.out_dir)
        self.history_path = out / "histories" / f"{self.name}.jsonl"
        self.pcap_dir = out / "pcap" / self.name
        self.verdict_path = out / "verdicts" / f"{self.name}.json"
        self.history: History | None = None
        self.observer: observe.Observer | None = None
        # A capture started before the agents were reset sees every CTI connection from its login, so
        # each later message on it can be attributed to its agent (exact session starts and ends).
        self.capture: observe.LabCapture | None = capture
        self.decoded: dict[str, Any] = {}
        self.plan: list[dict[str, Any]] = []
        self.verdicts: list[Verdict] = []
        self.timings: dict[str, float] = {}
        self._stack = ExitStack()
        self._faults_drawn = 0  # faults this scenario has drawn a seeded delay for
        self.finished = False
        self._injector: Injector | None = None
        self._swarms_stopped: dict[str, Change] = {}  # agents host -> its open swarm stop
        self._lock = threading.Lock()
        self.steps.sinks.append(self._on_step)

    # -- evidence --------------------------------------------------------------------------------------

    def _on_step(self, step: Step) -> None:
        if step.dry_run:
            self.plan.append({"device": step.device, "action": step.action, "commands": step.commands})
        elif self.history is not None:
            value = {"device": step.device, "action": step.action, "commands": step.commands}
            proc = f"driver:{step.device}"
            with self._lock:
                self.history.invoke(proc, f"driver.{step.action}", value, t=step.t_start)
                if step.ok:
                    self.history.ok(proc, f"driver.{step.action}", t=step.t_end)
                else:
                    self.history.fail(
                        proc, f"driver.{step.action}", error=step.error or "failed", t=step.t_end
                    )

    def __enter__(self) -> Scenario:
        return self.start()

    def start(self) -> Scenario:
        """Start the evidence: lab snapshot, roster, capture, snapshots, and a baseline read."""
        if self.dry_run:
            if self.settings.capture and observe.span_points(self.lab):  # the plan shows the SPAN set-up
                self.plan.extend(change_plan(c) for c in observe.configure_span(self.lab, self.injector()))
            return self
        if self.history is not None:
            return self
        try:
            self.history_path.parent.mkdir(parents=True, exist_ok=True)
            self.history_path.unlink(missing_ok=True)
            self.history = History(self.history_path)
            self._stack.callback(self.history.close)
            observe.record_start(self.lab, self.history)
            if self.capture is None and self.settings.capture:
                self.capture = observe.LabCapture(self.lab, self.pcap_dir).start()
            if self.capture is not None:
                self._stack.callback(self.capture.stop)
            hz = self.settings.hz or poll_rate(len(self.lab.topology.agents()))
            self.observer = observe.Observer(self.lab, self.history, hz=hz).start()
            self._stack.callback(self.observer.stop)
            if not self.observer.wait_fresh(10.0):
                raise LabNotReady(f"no baseline read of every PBX and CTI: {self.observer.view.errors}")
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.finish(final_read=exc_type is None or not issubclass(exc_type, KeyboardInterrupt))

    def finish(self, final_read: bool = True) -> None:
        """End the evidence (idempotent): wait for the lab to be back, a final read of every PBX and CTI,
        the end lab snapshot, then stop the capture and record what it decoded. Faults were healed by
        their own blocks (harness.faults heals on any exit), and a change still open (a swarm stopped by
        :meth:`begin` and never ended) is healed first; after an interrupt the final read is skipped and
        the evidence so far is still closed and kept."""
        if self.dry_run or self.finished or self.history is None:
            return
        self.finished = True
        try:
            self.heal_active()  # a change a block left open (a swarm stopped and never started again)
            if final_read:
                self._final_read()
        finally:
            self._finish()

    def _final_read(self) -> None:
        assert self.observer is not None
        try:
            wait_lab_clean(self.lab)
        except LabNotReady as e:
            log.warning("%s", e)
        self.settle(self.settings.settle)

    def _finish(self) -> None:
        try:
            if self.observer is not None:
                self.observer.stop()
            if self.history is not None and self.history._file is not None:  # noqa: SLF001
                self.history.observe("lab_snapshot", "controller", observe.lab_snapshot(self.lab))
            if self.capture is not None and self.history is not None:
                self.decoded = observe.record_capture(self.lab, self.history, self.capture)
        finally:
            self._stack.close()

    def settle(self, seconds: float | None = None) -> None:
        """Keep observing for ``seconds``, then make sure every endpoint was read afresh (the final read)."""
        if self.dry_run or self.observer is None:
            return
        time.sleep(self.settings.settle if seconds is None else seconds)
        self.observer.wait_fresh(5.0)

    # -- phases and actions ----------------------------------------------------------------------------

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """One phase (apply, verify, revert, verify-revert): a report step and an entry in the history."""
        t0 = time.monotonic()
        cm = self.phase_hook(f"{name}") if self.phase_hook else None
        if self.history is not None:
            self.history.info("scenario", PHASE, {"phase": name})
        if self.dry_run:
            self.plan.append({"phase": name})
        try:
            if cm is not None:
                with cm:
                    yield
            else:
                yield
        finally:
            self.timings[name] = round(time.monotonic() - t0, 3)

    @contextmanager
    def fault(self, kind: str, target: str, duration: float | None = None, **params: Any) -> Iterator[Any]:
        """Inject a fault (harness.faults): refused if not fair game, journaled, recorded in the history,
        verified, and healed when the block ends, however it ends. In a dry run its plan is collected."""
        inj = self.injector()
        f = make_fault(self.lab, kind, target, steps=self.steps, **params)
        delay = self._fault_delay()
        if self.dry_run:
            f.check_safety()
            with self.phase(f"apply: {kind} {target}"):
                step = {"fault": kind, "target": target, "params": params, "plan": f.plan()}
                self.plan.append({**step, "delay_s": delay} if delay is not None else step)
            yield f
            with self.phase(f"revert: {kind} {target}"):
                self.plan.append({"heal": kind, "target": target, "plan": f.plan_heal()})
            return
        cm = inj.fault(f, duration=duration)
        if delay is not None:
            f.check_safety()  # a refusal must not wait for the delay
            with self.phase(f"fault delay {delay:.3f} s (seed {self.settings.fault_seed})"):
                time.sleep(delay)
        with self.phase(f"apply: {kind} {target}"):
            active = cm.__enter__()
        try:
            yield active
        except BaseException:
            with self.phase(f"revert: {kind} {target}"):
                if not cm.__exit__(*sys.exc_info()):
                    raise
        else:
            with self.phase(f"revert: {kind} {target}"):
                cm.__exit__(None, None, None)

    def _fault_delay(self) -> float | None:
        """With ``--fault-seed``: how long to wait before the next fault of this scenario, drawn from the
        seed, the scenario's name and the fault's place in it (0 to FAULT_JITTER_S). A fault then lands at
        a different phase of the agents' heartbeats, the CTI's probes and the phones' refreshes from seed
        to seed, and the same seed replays the same moments; None without a seed."""
        seed = self.settings.fault_seed
        if seed is None:
            return None
        self._faults_drawn += 1
        return round(random.Random(f"{seed}:{self.name}:{self._faults_drawn}").uniform(0, FAULT_JITTER_S), 3)

    def wait_healed(self, fault: Any, timeout: float = 10.0) -> bool:
        """Wait until a fault with a ``duration`` has healed itself (the injector no longer holds it)."""
        if self.dry_run or self._injector is None:
            return True
        deadline = time.monotonic() + timeout
        while fault.id in self._injector.active:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)
        return True

    def heal_active(self) -> None:
        """Heal every fault this scenario's injector still holds (a block that never reached its end)."""
        if self._injector is not None:
            self._injector.heal_all()

    def injector(self) -> Injector:
        """The scenario's fault injector (one per scenario; it heals what a killed run left, first)."""
        if self._injector is None:
            self._injector = Injector(
                self.lab, history=self.history, dry_run=self.dry_run, steps=self.steps, out=log.info
            )
        return self._injector

    # -- changes that are not faults (a swarm stopped, restarted), through the same injector ----------

    def begin(self, kind: str, target: str, **params: Any) -> Change:
        """Make a change through the injector (refused if unsafe, journaled, read back) and keep it until
        :meth:`end` (or the scenario's end, which heals what is left open). Planned in a dry run."""
        inj = self.injector()
        change = inj.make(kind, target, **params)
        if self.dry_run:
            change.check_safety()
            self.plan.append(change_plan(change))
            return change
        return inj.start(change)

    def end(self, change: Change) -> None:
        """Undo a change made by :meth:`begin` (its heal, read back)."""
        if self.dry_run:
            self.plan.append(change_plan(change, heal=True))
            return
        self.injector().end(change)

    def once(self, kind: str, target: str, **params: Any) -> Change:
        """Make a change and heal it at once (a swarm restart: journaled while it happens, verified after)."""
        change = self.begin(kind, target, **params)
        self.end(change)
        return change

    def restart_swarms(self, sites: Sequence[str] | None = None) -> None:
        restart_swarms(self.lab, self.steps, sites, injector=self.injector())

    def swarm(self, verb: str, sites: Sequence[str]) -> None:
        """``systemctl <verb> hil-swarm`` on the agents hosts of ``sites`` (stop, start, restart), each a
        change through the injector: a stop lasts until the next start (or the scenario's end), which is
        its heal; a restart is made and verified at once."""
        for h in agent_hosts(self.lab, tuple(sites)):
            if verb == "stop":
                if h not in self._swarms_stopped:
                    self._swarms_stopped[h] = self.begin("swarm_service", h, verb="stop")
            elif h in self._swarms_stopped:
                self.end(self._swarms_stopped.pop(h))  # the heal of a stop starts it
            else:
                self.once("swarm_service", h, verb=verb)
