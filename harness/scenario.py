"""One scenario run, as a library: apply -> verify -> revert -> verify-revert, with its evidence and verdicts.

The pytest plugin (fixtures/plugin.py) is a thin shell around this module, and a plain script can do the
same::

    lab = open_lab(topology.load(None))
    reset_agents(lab)                                   # swarm restarted, every agent home and ready
    with Scenario(lab, "pbx_killed", Settings()) as sc:
        with sc.phase("apply"), sc.fault("service_kill", "sha-pbx1", service="kamailio"):
            with sc.phase("verify"):
                sc.wait_placement(sc.expect(moved_from="sha"), "agents of sha at ntg")
        with sc.phase("verify-revert"):
            sc.settle()
    verdicts = sc.judge(sc.standard_checks(expect="surviving"))

Why the agents are reset before the history starts and not inside it: a swarm restart logs every agent out
and in again, which is set-up, not the behaviour under test; the history then holds only the scenario, with
a baseline read of every PBX and CTI before the first fault.

Dry run (``Settings.dry_run``): nothing is sent to any device. Faults contribute ``fault.plan()``, drivers
their planned steps, waits return at once, and :attr:`Scenario.plan` lists every device action in order.
"""

from __future__ import annotations

import json
import logging
import random
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import checks, observe
from harness.checks import Verdict
from harness.drivers.base import Step, Steps
from harness.history import History
from harness.lab import Lab
from harness.lab.dryrun import DryRunBackend
from harness.topology import REPO_ROOT

log = logging.getLogger("hil.scenario")

SWARM_UNIT = "hil-swarm"
REPORTS = REPO_ROOT / "reports"
# --fault-seed: a fault waits 0 to this many seconds before it is injected (a heartbeat interval and more:
# every phase of the agents' 1 s heartbeats and the CTI's 0.5 s PBX probes is reachable).
FAULT_JITTER_S = 1.5
# hold(): how long past its duration to wait for a read of every endpoint taken after it began.
FRESH_READ_S = 5.0


class LabNotReady(Exception):
    """The lab did not reach the state a scenario starts from: a lab fault, not a product verdict."""


@dataclass
class Settings:
    """What a run may tune: the recovery bound, the poll rate, dry run, and where evidence goes."""

    bound: float = 30.0  # seconds: every affected agent must recover within it (generous for CI)
    hz: float | None = None  # snapshots per second of every PBX and CTI (None: by lab size, see poll_rate)
    dry_run: bool = False
    fault_seed: int | None = None
    out_dir: Path = REPORTS
    ready_timeout: float = 45.0  # for the swarm to bring every agent home after a restart
    settle: float = 2.0  # seconds of observation after the lab is back, for the final read
    capture: bool = True

    policy: str | None = None  # gate policy file: per-scenario recovery bounds (docs/gate.md)

    def for_scenario(self, scenario_id: str) -> Settings:
        """These settings with the recovery bound the gate policy sets for this scenario (its Allure id,
        ``module#function[params]``), so the checker and the gate judge by one number."""
        from dataclasses import replace

        if self.policy is None:
            return self
        from harness import gate

        return replace(self, bound=gate.recovery_bound(self.policy, scenario_id, self.bound))


def poll_rate(agents: int) -> float:
    """Snapshots per second: 5 Hz up to a few hundred agents; fewer for big labs, where every snapshot is a
    full table (1,000 contacts: ~80 KB per read, four endpoints) and the history must stay loadable."""
    return 5.0 if agents <= 300 else 2.5 if agents <= 2000 else 1.0


# -- the agents ------------------------------------------------------------------------------------------


def agents_homes(lab: Lab) -> dict[str, str]:
    return {a.id: a.home for a in lab.topology.agents()}


def _out_of_place(expectation: Mapping[str, Any]) -> str:
    return f"{expectation.get('count', '?')} agents out of place"


def agents_extensions(lab: Lab) -> dict[str, str]:
    return {a.id: a.extension for a in lab.topology.agents()}


def agents_where(lab: Lab, **attrs: str) -> list[str]:
    """Agents whose attributes match (``home="sha"``, ``system="air"``, ``skill_group="vip"``...)."""
    return [a.id for a in lab.topology.agents() if all(getattr(a, k) == v for k, v in attrs.items())]


def uplink(lab: Lab, site: str) -> str:
    """The site's uplink, as ``switch:port``: the port of one of its switches that carries a topology link."""
    for sw in lab.topology.of_kind("switch", site):
        for pname, port in sw.spec.ports.items():
            if port.connects in lab.topology.model.links:
                return f"{sw.name}:{pname}"
    raise ValueError(f"site {site} has no switch port on an inter-site link")


def agent_hosts(lab: Lab) -> list[str]:
    return [d.name for d in lab.topology.of_kind("host") if d.spec.role == "agents"]


def restart_swarms(lab: Lab, steps: Steps | None = None, sites: Sequence[str] | None = None) -> None:
    """Restart the agent swarm on every agents host (of ``sites``), in parallel, through the host driver."""
    from harness.drivers import driver_for

    hosts = [h for h in agent_hosts(lab) if sites is None or lab.topology.device(h).site in sites]

    def one(name: str) -> None:
        with driver_for(lab, name, steps) as drv:
            drv.run(f"systemctl restart {SWARM_UNIT}", action="service_restart", check=True)

    with ThreadPoolExecutor(max_workers=max(1, len(hosts))) as pool:
        for f in [pool.submit(one, h) for h in hosts]:
            f.result()


def reset_agents(lab: Lab, steps: Steps | None = None, timeout: float = 45.0, dry_run: bool = False) -> float:
    """Bring the agents to a known state: restart every swarm, then wait until every agent of the roster
    is registered once at its home PBX and logged in once at its home CTI, ready, as the PBXs and CTIs show
    it (never the swarm's own word). Returns the seconds it took; LabNotReady if it does not happen."""
    t0 = time.monotonic()
    restart_swarms(lab, steps)
    if dry_run:
        return 0.0
    eps = observe.endpoints(lab)
    homes, exts = agents_homes(lab), agents_extensions(lab)
    ok, view = observe.wait_view(eps, lambda v: v.complete(eps) and not v.misplaced(homes, exts), timeout)
    if not ok:
        bad = view.misplaced(homes, exts)
        sample = dict(list(bad.items())[:3])
        raise LabNotReady(
            f"after a swarm restart {len(bad)} of {len(homes)} agents were not home and ready within "
            f"{timeout:.0f}s (e.g. {sample}; unreadable: {view.errors or 'none'})"
        )
    return time.monotonic() - t0


def lab_problems(lab: Lab) -> list[str]:
    """What is not as a fresh lab has it: a process not running, a connected port down."""
    snap = observe.lab_snapshot(lab)
    if not snap.get("complete", True):
        return [f"lab state not read: {p}" for p in snap.get("problems", [])]
    out = [f"process {k} is {v}" for k, v in snap["processes"].items() if v != "running"]
    out += [f"link {k} is {v}" for k, v in snap["links"].items() if v != "up"]
    out += [f"management of {k} is {v}" for k, v in snap.get("management", {}).items() if v != "up"]
    return out


def wait_lab_clean(lab: Lab, timeout: float = 15.0) -> None:
    """Wait until every process runs and answers and every connected link is up (after a heal)."""
    deadline = time.monotonic() + timeout
    while True:
        problems = lab_problems(lab)
        if not problems:
            return
        if time.monotonic() >= deadline:
            raise LabNotReady("the lab is not back as it began: " + "; ".join(problems))
        time.sleep(0.2)


# -- one scenario ----------------------------------------------------------------------------------------


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_")[:120] or "scenario"


class Scenario:
    """A scenario's run: its history, the observer and the capture, the faults it makes, and its verdicts.

    Entering starts the evidence (start lab snapshot, roster, capture, snapshots at ``Settings.hz``, one
    baseline read of every endpoint); leaving heals whatever is still in place, takes the final read and
    lab snapshot, stops the capture and records what it decoded. ``phase_hook(name)`` (e.g. ``allure.step``)
    wraps each phase, so a report shows apply / verify / revert / verify-revert as steps.
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
        self.name = _slug(name)
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
        self.expectations: list[dict[str, Any]] = []
        self._injector: Any = None
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
            if self.settings.capture and observe.span_points(self.lab):
                observe.configure_span(self.lab, self.steps)  # the plan shows the SPAN set-up, sends nothing
            return self
        if self.history is not None:
            return self
        try:
            for p in (self.history_path,):
                p.parent.mkdir(parents=True, exist_ok=True)
                p.unlink(missing_ok=True)
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
        their own blocks (harness.faults heals on any exit); after an interrupt the final read is skipped
        and the evidence so far is still closed and kept."""
        if self.dry_run or self.finished or self.history is None:
            return
        self.finished = True
        try:
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

    # -- phases and actions ----------------------------------------------------------------------------

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """One phase (apply, verify, revert, verify-revert): a report step and an entry in the history."""
        t0 = time.monotonic()
        cm = self.phase_hook(f"{name}") if self.phase_hook else None
        if self.history is not None:
            self.history.info("scenario", "phase", {"phase": name})
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
        from harness.faults import make_fault

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

    def injector(self) -> Any:
        """The scenario's fault injector (one per scenario; it heals what a killed run left, first)."""
        if self._injector is None:
            from harness.faults import Injector

            self._injector = Injector(
                self.lab, history=self.history, dry_run=self.dry_run, steps=self.steps, out=log.info
            )
        return self._injector

    def op(self, f: str, value: dict[str, Any], fn: Callable[[], Any], process: str = "nemesis") -> Any:
        """Record an operation of the scenario's own (a planned-switch rule) around ``fn``."""
        if self.dry_run:
            self.plan.append({"op": f, "value": value})
            return None
        assert self.history is not None
        self.history.invoke(process, f, value, sync=True)
        try:
            res = fn()
        except BaseException as e:
            self.history.info(process, f, {"id": value.get("id")}, error=f"{type(e).__name__}: {e}")
            raise
        self.history.ok(process, f, {"id": value.get("id")})
        return res

    def restart_swarms(self, sites: Sequence[str] | None = None) -> None:
        restart_swarms(self.lab, self.steps, sites)

    # -- expectations ------------------------------------------------------------------------------------

    def expect(
        self,
        moved: Mapping[str, str] | None = None,
        *,
        moved_from: str | None = None,
        to: str | None = None,
    ) -> dict[str, str]:
        """Where every agent of the roster should be: home, except those ``moved`` (agent -> site) and, with
        ``moved_from``, every agent homed there (to ``to``, default the other site)."""
        homes = agents_homes(self.lab)
        out = dict(homes)
        if moved_from is not None:
            dest = to or next(s for s in self.lab.topology.sites if s != moved_from)
            out.update({a: dest for a, h in homes.items() if h == moved_from})
        out.update(moved or {})
        return out

    def wait_placement(
        self,
        expected: Mapping[str, str],
        what: str,
        timeout: float | None = None,
        states: Sequence[str] | None = ("ready",),
    ) -> float | None:
        """Wait until the PBXs and CTIs show every agent registered and logged in at its expected site (in
        one of ``states``; a leftover elsewhere is the checkers' to judge, not a reason to keep waiting);
        the seconds it took, or None when it did not happen in ``timeout``
        (default: the recovery bound). Either way the outcome is kept as an expectation (see
        :meth:`expectations_verdict`) and the scenario goes on to revert: the checkers say why."""
        if self.dry_run:
            return 0.0
        assert self.observer is not None
        timeout = self.settings.bound if timeout is None else timeout
        exts = agents_extensions(self.lab)
        t0 = time.monotonic()
        ok = self.observer.wait_until(lambda v: not v.missing(expected, exts, states), timeout)
        took = time.monotonic() - t0
        detail: dict[str, Any] = {"seconds": round(took, 3)}
        if not ok:
            bad = self.observer.view.missing(expected, exts, states)
            detail.update(count=len(bad), sample=dict(list(bad.items())[:3]), timeout=timeout)
        self._expect(what, ok, detail)
        return took if ok else None

    def wait_state(self, agent: str, site: str, state: str, timeout: float = 15.0) -> bool:
        """Wait until the CTI of ``site`` shows ``agent`` in ``state`` (e.g. on_call); kept as expectation."""
        if self.dry_run:
            return True
        assert self.observer is not None
        ok = self.observer.wait_until(lambda v: v.sessions.get(site, {}).get(agent) == state, timeout)
        self._expect(f"{agent} {state} at {site}", ok, {"timeout": timeout})
        return ok

    def hold(
        self,
        expected: Mapping[str, str],
        what: str,
        duration: float,
        states: Sequence[str] | None = None,
    ) -> bool:
        """The placement holds for ``duration`` seconds: every read in that time shows it (anti-flap, an
        outage that must move nobody). Kept as an expectation; False at the first read that breaks it."""
        if self.dry_run:
            return True
        assert self.observer is not None
        exts = agents_extensions(self.lab)
        start = time.monotonic()
        deadline = start + duration
        seen = self.observer.reads
        bad: dict[str, Any] = {}
        judged = 0
        # Only views whose every PBX and CTI snapshot was taken after the hold began are judged: each
        # endpoint is read by its own thread, so the view at the start can pair a PBX read from before a
        # move that just ended with one from after it (a planned switch takes ~30 ms; the reads are
        # 200 ms apart), which shows a leftover that was gone before the hold began.
        obs = self.observer

        def judge(view: Any) -> dict[str, Any] | None:
            return view.misplaced(expected, exts, states) if obs.fresh(start) else None

        while not bad and (time.monotonic() < deadline or not judged):
            if time.monotonic() > deadline + FRESH_READ_S:
                break
            seen, found = obs.after_read(seen, judge)
            if found is not None:
                judged += 1
                bad = found
        detail: dict[str, Any] = {"duration": duration, "reads_judged": judged}
        if bad:
            detail.update(count=len(bad), sample=dict(list(bad.items())[:3]))
        elif not judged:
            detail["error"] = f"no read of every PBX and CTI within {duration + FRESH_READ_S:.0f} s"
        ok = judged > 0 and not bad
        self._expect(what, ok, detail)
        return ok

    def converge(
        self,
        expected: Mapping[str, str],
        what: str,
        timeout: float = 10.0,
        states: Sequence[str] | None = None,
    ) -> float | None:
        """Wait until a read shows the placement exactly as :meth:`hold` wants it (each agent registered and
        logged in once, at its expected site): the seconds it took, or None. Kept as an expectation."""
        if self.dry_run:
            return 0.0
        assert self.observer is not None
        exts = agents_extensions(self.lab)
        t0 = time.monotonic()
        seen = self.observer.reads
        bad: dict[str, Any] = {"(no read yet)": None}
        while time.monotonic() - t0 < timeout:
            seen, found = self.observer.after_read(seen, lambda v: v.misplaced(expected, exts, states))
            if found is not None:
                bad = found
                if not bad:
                    break
        took = time.monotonic() - t0 if not bad else None
        detail: dict[str, Any] = {"timeout": timeout, "took": None if took is None else round(took, 3)}
        if bad:
            detail.update(count=len(bad), sample=dict(list(bad.items())[:3]))
        self._expect(what, not bad, detail)
        return took

    def _expect(self, what: str, ok: bool, detail: dict[str, Any]) -> None:
        self.expectations.append({"what": what, "ok": ok, **detail})
        if self.history is not None:
            self.history.info("scenario", "expectation", {"what": what, "ok": ok, **detail})

    def expectations_verdict(self) -> Verdict:
        """The scenario's own waits and holds, read from the snapshots: invalid if one was not met."""
        bad = [e for e in self.expectations if not e["ok"]]
        figures = {"expectations": len(self.expectations), "unmet": len(bad)}
        if bad:
            why = "; ".join(f"{e['what']}: {e.get('error') or _out_of_place(e)}" for e in bad)
            return Verdict("expectations", "invalid", why, bad, figures)
        if not self.expectations:
            return Verdict(
                "expectations", "valid", "the scenario sets no expectations of its own", [], figures
            )
        return Verdict("expectations", "valid", f"all {len(self.expectations)} expectations met", [], figures)

    def swarm(self, verb: str, sites: Sequence[str]) -> None:
        """``systemctl <verb> hil-swarm`` on the agents hosts of ``sites`` (stop, start, restart)."""
        from harness.drivers import driver_for

        for h in agent_hosts(self.lab):
            if self.lab.topology.device(h).site in sites:
                with driver_for(self.lab, h, self.steps) as drv:
                    drv.run(f"systemctl {verb} {SWARM_UNIT}", action=f"service_{verb}", check=True)

    def settle(self, seconds: float | None = None) -> None:
        """Keep observing for ``seconds``, then make sure every endpoint was read afresh (the final read)."""
        if self.dry_run or self.observer is None:
            return
        time.sleep(self.settings.settle if seconds is None else seconds)
        self.observer.wait_fresh(5.0)

    # -- judging -----------------------------------------------------------------------------------------

    def standard_checks(
        self,
        *,
        expect: str | Mapping[str, str] = "surviving",
        affected: Sequence[str] | None = None,
        recovery: bool = True,
        fault: str | None = None,
        final_expect: str | Mapping[str, str] | None = None,
        final_affected: Sequence[str] | None = None,
        calls: bool = False,
    ) -> list[Verdict]:
        """The checkers every scenario runs, on its history: where agents end up, no split brain, recovery
        within the bound (if ``recovery``), every fault healed, capture complete, and calls if any."""
        if self.dry_run:
            return []
        ev = self.events()
        rt = checks.depends_on_capture(checks.check_recovery_time)
        sb = checks.depends_on_capture(checks.check_no_split_brain)
        out = [
            checks.check_single_registration(
                ev,
                expect=final_expect if final_expect is not None else expect,
                affected=final_affected if final_affected is not None else affected,
            ),
            sb(ev),
        ]
        if recovery:
            out.append(rt(ev, bound=self.settings.bound, expect=expect, affected=affected, fault=fault))
        out += [
            checks.check_faults_healed(ev),
            checks.check_capture_complete(ev),
            self.expectations_verdict(),
        ]
        if calls:
            out.append(checks.check_no_lost_call(ev))
        return out

    def events(self) -> list[Any]:
        """The recorded history (after :meth:`finish`), for checkers of a scenario's own."""
        if self.dry_run:
            return []
        return History.load(self.history_path).events

    def judge(self, verdicts: Sequence[Verdict]) -> Verdict:
        """Fold the verdicts, keep them, and write the verdict file (reports/verdicts/<scenario>.json)."""
        self.verdicts = list(verdicts)
        if self.dry_run:  # nothing was done, so nothing is judged; planning itself raises if refused
            return Verdict(self.name, "valid", f"dry run: {len(self.plan)} planned entries")
        overall = checks.compose(*self.verdicts, name=self.name)
        from harness import report

        payload = report.verdicts_payload(self.verdicts, history=self.history_path, scenario=self.name)
        payload["timings"] = self.timings
        payload["bound"] = self.settings.bound
        self.verdict_path.parent.mkdir(parents=True, exist_ok=True)
        self.verdict_path.write_text(json.dumps(payload, indent=1, default=str))
        return overall

    def conclude(self, verdicts: Sequence[Verdict], **attach: Any) -> Verdict:
        """Judge (see :meth:`judge`) and attach the evidence to the running Allure test, if any."""
        overall = self.judge(verdicts)
        if not self.dry_run:
            from harness import report

            logs = {p.name: p for p in self.device_logs()}
            if (
                self.decoded and "events" not in attach
            ):  # decoded once already: the ladder needs no second pass
                attach["events"] = sorted(
                    (e for d in self.decoded.values() for e in d.events), key=lambda e: e.time
                )
            report.attach_run(
                self.history_path,
                self.verdicts,
                pcaps=self.pcaps(),
                logs=logs,
                topology=self.lab.topology.file,
                scenario=self.name,
                extra={"timings": self.timings, "bound": self.settings.bound},
                **attach,
            )
        return overall

    def device_logs(self) -> list[Path]:
        """The lab's device logs (kamailio, CTI, UL, swarm) for the report."""
        logs = self.lab.backend.logs_dir()
        return sorted(p for p in logs.glob("*.log") if p.is_file()) if logs is not None else []

    def failure_message(self) -> str:
        from harness import report

        return report.failure_message(self.verdicts)

    def pcaps(self) -> list[Path]:
        return [r.pcap_path for r in (self.capture.results if self.capture else []) if r.pcap_path.exists()]

    def recovery(self) -> dict[str, Any]:
        """The recovery figures (p50 / p95 / max) of the first recovery verdict, for summaries."""
        for v in self.verdicts:
            if v.name == "recovery_time":
                return {k: v.figures.get(k) for k in ("p50", "p95", "max", "recovered", "affected", "bound")}
        return {}


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


def read_plan(path: Path) -> list[dict[str, Any]]:
    """The plans a dry run wrote (one JSON line per scenario)."""
    try:
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except FileNotFoundError:
        return []


def format_plan(entries: Sequence[Mapping[str, Any]]) -> str:
    """The dry-run plan as text: one line per device action, grouped by scenario and phase."""
    lines = []
    for e in entries:
        lines.append(f"== {e['scenario']}")
        for item in e["plan"]:
            if "phase" in item:
                lines.append(f"  [{item['phase']}]")
            elif "fault" in item or "heal" in item:
                what = "fault" if "fault" in item else "heal"
                params = ", ".join(f"{k}={v}" for k, v in (item.get("params") or {}).items())
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


# -- what the pytest plugin calls (kept here so a script can do the same) ---------------------------------


@dataclass
class AgentsReady:
    """The agents in their known state: how long the reset took, and (dry run) the steps it would take."""

    homes: dict[str, str]
    seconds: float
    plan: list[dict[str, Any]] = field(default_factory=list)


def agents_ready(lab: Lab, settings: Settings) -> AgentsReady:
    """Restart the swarms and wait until every agent is home and ready (see :func:`reset_agents`)."""
    steps = Steps(dry_run=settings.dry_run)
    plan: list[dict[str, Any]] = []
    steps.sinks.append(
        lambda st: (
            plan.append({"device": st.device, "action": st.action, "commands": st.commands})
            if st.dry_run
            else None
        )
    )
    took = reset_agents(lab, steps, settings.ready_timeout, dry_run=settings.dry_run)
    return AgentsReady(agents_homes(lab), took, plan)


def dry_run_lab(topo: Any) -> Lab:
    """The lab as a dry run sees it: the topology only. Nothing is brought up or contacted; secrets the
    environment lacks get a placeholder, since no command is ever sent with them."""
    import os

    from harness import credentials

    credentials.register(topo)
    for var in credentials.referenced(topo):
        os.environ.setdefault(var, "dry-run-placeholder")
    os.environ.setdefault(credentials.STACK_SECRET_VAR, "dry-run-placeholder")
    return Lab(topo, DryRunBackend(topo))


def missing_kinds(topo: Any, kinds: Sequence[str]) -> list[str]:
    """The device kinds (``switch``, ``pdu``, ``phone``; ``host:caller`` for a host role) a lab lacks."""
    out = []
    for k in kinds:
        kind, _, role = k.partition(":")
        found = [d for d in topo.of_kind(kind) if not role or getattr(d.spec, "role", None) == role]
        if not found:
            out.append(k)
    return out


def scale_unfit(topo: Any, need: int = 1000) -> str | None:
    """Why a lab cannot run a scale scenario (None when it can)."""
    n = len(topo.agents())
    if n < need:
        return f"scale scenarios need {need}+ agents; {topo.name} has {n} (use topologies/virtual-1k.yaml)"
    return None


def label_test(
    module: str,
    feature: str | None,
    story: str,
    severity: str | None,
    site: str | Sequence[str] | None = None,
) -> None:
    """Allure labels of a scenario (epic, feature, story, severity, and the sites it involves: the one it
    fails and the one it expects agents at); nothing without an Allure session."""
    from harness import report

    feat = feature or module.rsplit(".", 1)[-1].removeprefix("test_").replace("_", " ")
    report.apply_labels(epic="failover", feature=feat, story=story, severity=severity, site=site)


def device_facts(lab: Lab) -> dict[str, Any]:
    """What the devices say they are, for the report's environment: kamailio's version (JSON-RPC
    `core.version`), each switch's `show version` / `display version`, each phone's firmware. A device that
    does not answer is noted, not fatal: the report must not fail on a fact."""
    from harness.drivers import driver_for

    facts: dict[str, Any] = {"kamailio": {}, "switch": {}, "phone": {}}
    for ep in observe.endpoints(lab):
        if ep.kind != "pbx":
            continue
        try:
            facts["kamailio"][ep.device] = str(
                observe.jsonrpc(ep.rpc_url, "core.version", timeout=3) or ""
            ).strip()
        except observe.ObserveError as e:
            facts["kamailio"][ep.device] = f"unreachable: {e}"[:200]
    for kind in ("switch", "phone"):
        for d in lab.topology.of_kind(kind):
            try:
                with driver_for(lab, d.name) as drv:
                    facts[kind][d.name] = drv.facts()
            except Exception as e:
                facts[kind][d.name] = {"error": f"{type(e).__name__}: {e}"[:200]}
    return facts


def write_session_reports(results_dir: str | Path, topology_file: str | None, lab: Lab | None = None) -> None:
    """environment.properties (with the devices' facts when a lab is at hand) and categories.json, once
    per session."""
    from harness import report

    topo = topology_file or str(REPO_ROOT / "topologies" / "virtual-two-site.yaml")
    facts = device_facts(lab) if lab is not None else None
    report.write_environment(results_dir, facts, topology=topo)
    report.write_categories(results_dir)


def driver(sc: Scenario, name: str) -> Any:
    """A device's driver whose steps go to the scenario (history, or the plan in a dry run)."""
    from harness.drivers import driver_for

    return driver_for(sc.lab, name, sc.steps)


def heal_leftovers(sc: Scenario) -> None:
    """Heal whatever a crashed fault block left in the journal (harness.faults.restore)."""
    if sc.dry_run:
        return
    from harness import faults

    sc.heal_active()
    faults.restore(sc.lab, history=None, steps=sc.steps)


def record_plan(sc: Scenario) -> None:
    """In a dry run, append the scenario's plan to reports/plan.jsonl (``hil run --dry-run`` prints it)."""
    if sc.dry_run:
        PlanLog(Path(sc.settings.out_dir) / "plan.jsonl").add(sc.name, sc.plan)


# -- scenario-level checkers (pure: history in, verdict out) ----------------------------------------------


def _events(history: Any) -> list[Any]:
    return sorted(history, key=lambda e: (e.t, e.i))


def check_logins_at(history: Any, agents: Sequence[str], site: str, *, after: float | None = None) -> Verdict:
    """Every agent's last login after ``after`` was confirmed on the wire by the CTI of ``site`` (a captured
    ``login_ok``), and any login it made elsewhere on the way (design step 6: CTI login, then the phone
    linkage fails) was ended there (``logout`` / ``fenced``). The wire says where an agent logged in, not
    the stack's own word. Unknown without any captured CTI message after ``after``."""
    from harness.history import Obs

    name = f"logins_at_{site}"
    logins: dict[str, list[tuple[str, float]]] = {}
    ends: dict[tuple[str, str], list[float]] = {}
    cti_seen = False
    for e in _events(history):
        if not isinstance(e, Obs) or e.kind != "cti" or (after is not None and e.t < after):
            continue
        cti_seen = True
        v = e.value if isinstance(e.value, dict) else {}
        where = str(v.get("site") or e.source.split("-", 1)[0])
        if v.get("agent") not in agents:
            continue
        if v.get("event") == "login":
            logins.setdefault(str(v["agent"]), []).append((where, e.t))
        elif v.get("event") in ("logout", "fenced"):
            ends.setdefault((str(v["agent"]), where), []).append(e.t)
    if not cti_seen:
        return Verdict(name, "unknown", "no captured CTI message: the logins were not seen on the wire")
    witnesses: list[dict[str, Any]] = []
    for a in agents:
        seq = logins.get(a, [])
        if not seq or seq[-1][0] != site:
            last = seq[-1][0] if seq else None
            witnesses.append({"agent": a, "problem": f"last login at {last}, not {site}"})
            continue
        for where, t in seq[:-1]:
            if where != site and not any(x >= t for x in ends.get((a, where), [])):
                witnesses.append({"agent": a, "problem": f"a login at {where} was never ended"})
    figures = {"agents": len(agents), "seen": len(logins)}
    if witnesses:
        why = f"{len(witnesses)} of {len(agents)} agents not logged in at {site} only"
        return Verdict(name, "invalid", why, witnesses, figures)
    return Verdict(name, "valid", f"all {len(agents)} agents logged in at {site}", [], figures)


def phase_time(history: Any, phase: str) -> float | None:
    """When a phase of the scenario began (its ``phase`` info in the history)."""
    from harness.history import Op

    for e in _events(history):
        if (
            isinstance(e, Op)
            and e.f == "phase"
            and isinstance(e.value, dict)
            and e.value.get("phase") == phase
        ):
            return e.t
    return None


def check_refused(history: Any, f: str, codes: Sequence[str]) -> Verdict:
    """Every ``f`` operation was refused explicitly (``fail`` whose error names one of ``codes``).
    An operation that succeeded is invalid; none at all is unknown."""
    from harness.history import pair_ops

    name = f"refused_{f.replace('.', '_')}"
    pairs = [p for p in pair_ops(history)[0] if p.invoke.f == f]
    if not pairs:
        return Verdict(name, "unknown", f"no {f} operation in the history")
    bad = []
    for p in pairs:
        err = p.completion.error if p.completion is not None else None
        if p.outcome != "fail" or not err or not any(c in err for c in codes):
            bad.append({"value": p.invoke.value, "outcome": p.outcome, "error": err})
    if bad:
        return Verdict(name, "invalid", f"{len(bad)} of {len(pairs)} {f} not refused with {'/'.join(codes)}",
                       bad, {"operations": len(pairs)})  # fmt: skip
    return Verdict(
        name, "valid", f"all {len(pairs)} {f} refused ({'/'.join(codes)})", [], {"operations": len(pairs)}
    )


def _op_time(evs: Sequence[Any], f: str, id: str, typ: str) -> float | None:
    from harness.history import Op

    return next(
        (e.t for e in evs if isinstance(e, Op) and e.type == typ and e.f == f
         and isinstance(e.value, dict) and e.value.get("id") == id),
        None,
    )  # fmt: skip


def placement_between(
    history: Any, since_id: str, until_id: str, *, expect: Mapping[str, str], name: str
) -> Verdict:
    """``check_single_registration`` on the last snapshots taken after fault ``since_id`` took effect and
    before fault ``until_id`` began: where every agent was in between (e.g. only the targeted moved)."""
    evs = _events(history)
    since = _op_time(evs, "fault.inject", since_id, "ok")
    until = _op_time(evs, "fault.inject", until_id, "invoke")
    if since is None or until is None:
        return Verdict(name, "unknown", f"no fault {since_id} or {until_id} in the history")
    prefix = [e for e in evs if e.t < until]
    v = checks.check_single_registration(prefix, expect=dict(expect), affected=list(expect), after=since)
    return renamed(v, name)


# -- planned switches ------------------------------------------------------------------------------------


def _ul(lab: Lab, site: str) -> Any:
    from harness import ulapi

    return ulapi.client_for(lab, prefer=site)


@contextmanager
def planned_switch(
    sc: Scenario, scope: str, value: str, to: str, agents: Sequence[str], *, id: str = "switch"
) -> Iterator[None]:
    """A planned-switch rule (scope, value -> site ``to``) added at the agents' home UL for the block and
    removed after it. Recorded as a fault on the UL whose ``agents`` are the ones it should move, so the
    checkers know who is affected (docs/history.md)."""
    if not agents:
        raise ValueError(f"planned switch {scope}={value}: no online agent would move; nothing to test")
    site = agents_homes(sc.lab)[agents[0]]
    ul_dev = next(d.name for d in sc.lab.topology.of_kind("ul", site))
    value_ = {"id": id, "fault": "planned_switch", "target": ul_dev, "site": site, "agents": list(agents),
              "scope": scope, "value": value, "to": to}  # fmt: skip
    rule: dict[str, Any] = {}
    with sc.phase(f"apply: planned switch {scope}={value} -> {to}"):
        reply = sc.op("fault.inject", value_, lambda: _ul(sc.lab, site).add_rule(scope, value, to))
        rule = (reply or {}).get("rule") or {}
    try:
        yield
    finally:
        with sc.phase(f"revert: remove rule {scope}={value}"):
            if sc.dry_run:
                sc.plan.append({"op": "fault.heal", "value": {"id": id, "remove_rule": f"{scope}={value}"}})
            else:
                sc.op("fault.heal", {"id": id}, lambda: _ul(sc.lab, site).remove_rule(rule["id"]))


@contextmanager
def switch_back(sc: Scenario, agents: Sequence[str], *, id: str = "switch-back") -> Iterator[None]:
    """Return switched agents home: one agent-scope rule per agent targeting its home (the most specific
    scope, so agents of the other site with the same attributes are untouched), removed after the block."""
    homes = agents_homes(sc.lab)
    by_home: dict[str, list[str]] = {}
    for a in agents:
        by_home.setdefault(homes[a], []).append(a)
    rules: list[tuple[str, str]] = []

    def add() -> None:
        for site, members in by_home.items():
            ul = _ul(sc.lab, site)
            for a in members:
                rules.append((site, ul.add_rule("agent", a, site)["rule"]["id"]))

    def remove() -> None:
        for site, rid in rules:
            _ul(sc.lab, site).remove_rule(rid)

    site = next(iter(by_home), "")
    ul_dev = next((d.name for d in sc.lab.topology.of_kind("ul", site)), site)
    value = {"id": id, "fault": "planned_switch", "target": ul_dev, "site": site, "agents": list(agents),
             "scope": "agent", "to": "home"}  # fmt: skip
    with sc.phase("apply: switch back"):
        sc.op("fault.inject", value, add)
    try:
        yield
    finally:
        with sc.phase("revert: remove the switch-back rules"):
            sc.op("fault.heal", {"id": id}, remove)


def renamed(v: Verdict, name: str) -> Verdict:
    from dataclasses import replace

    return replace(v, name=name)


def scenario_name(nodeid: str) -> str:
    """A scenario's name from its pytest node id: the test function and its parameters."""
    return _slug(nodeid.split("::", 1)[-1])


def start_capture(lab: Lab, settings: Settings, name: str) -> observe.LabCapture | None:
    """Start the capture of a scenario (None in a dry run or with capture off)."""
    if settings.dry_run or not settings.capture:
        return None
    return observe.LabCapture(lab, Path(settings.out_dir) / "pcap" / _slug(name)).start()


def settings_from_options(
    *,
    policy: str | None,
    bound: float | None,
    dry_run: bool,
    fault_seed: int | None,
    out_dir: str | None,
) -> Settings:
    """Settings from the pytest options: an explicit ``--recovery-bound`` wins over the policy's bounds."""
    s = Settings(dry_run=dry_run, fault_seed=fault_seed, policy=None if bound is not None else policy)
    if bound is not None:
        s.bound = bound
    if out_dir:
        s.out_dir = Path(out_dir)
    return s


def allure_id(nodeid: str) -> str:
    """The id the gate's rules match: ``scenarios/test_x.py::test_y[p]`` -> ``scenarios.test_x#test_y[p]``."""
    path, _, name = nodeid.partition("::")
    return f"{path.removesuffix('.py').replace('/', '.')}#{name}"


# -- calls -----------------------------------------------------------------------------------------------

_calls = 0
_calls_lock = threading.Lock()


def place_call(
    sc: Scenario, caller_host: str, pbx: str, to: str, *, hold: float = 0.5, ring_timeout: float = 8.0,
    sip_port: int = 5062,
) -> Any:  # fmt: skip
    """A test call from ``caller_host`` through ``pbx`` to extension ``to``, recorded as ``call.place``:
    ``ok`` when answered, ``fail`` with the SIP status otherwise (docs/history.md). The CallResult."""
    global _calls
    from harness.drivers.caller import caller_for

    caller = caller_for(sc.lab, caller_host, pbx, steps=sc.steps)
    with _calls_lock:
        _calls += 1
        call_id = f"c{_calls}"
    proc = f"caller:{caller_host}:{sip_port}"
    value = {"call": call_id, "to": to, "via": pbx, "from": caller_host}
    if sc.dry_run:
        return caller.call(to, ring_timeout=ring_timeout, hold=hold, sip_port=sip_port)
    assert sc.history is not None
    sc.history.invoke(proc, "call.place", value)
    try:
        res = caller.call(to, ring_timeout=ring_timeout, hold=hold, sip_port=sip_port)
    except BaseException as e:
        sc.history.info(proc, "call.place", {"call": call_id}, error=f"{type(e).__name__}: {e}")
        raise
    if res.answered:
        site = sc.lab.topology.device(pbx).site
        sc.history.ok(proc, "call.place", {"call": call_id, "site": site, **res.to_dict()})
    else:
        why = f"{res.status or ''} {res.reason or res.outcome}".strip()
        sc.history.fail(proc, "call.place", {"call": call_id, **res.to_dict()}, error=why or res.outcome)
    return res
