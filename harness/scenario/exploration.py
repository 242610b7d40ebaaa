"""Exploring: schedules drawn from seeds run one after another on one lab, each judged; an invalid one is
shrunk on the lab to a small schedule that still fails, and both are kept with the command that replays it.

What `hil explore` and `hil bench explore` call (the commands stay thin)::

    inputs = load_inputs(topology_file, profile_file, replay_file)      # InputError: exit 2, lab untouched
    schedules = draw(inputs, range(seed, seed + n))                     # drawn before the lab is touched
    with Explorer(lab, inputs, settings, say=print) as ex:
        results = ex.explore(schedules, on_result=...)                   # or ex.replay(inputs.replay, ...)

Between two schedules the lab is healed and checked clean (every process running and answering, every
link up: harness.scenario.readiness), and every agent brought home and ready (a swarm restart): a
schedule starts from the lab as it was built, whatever the last one left. Each schedule is one scenario
(`explore-<seed>`): its history, pcaps and verdict file go where every scenario's go (reports/).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from harness import checks, faults, report
from harness import topology as topology_mod
from harness.capture import CaptureError
from harness.checks import Verdict
from harness.drivers.base import DeviceError, DeviceUnreachable
from harness.lab import Lab
from harness.nemesis import expect, generate, profile, shrink
from harness.nemesis.schedule import Schedule, ScheduleError
from harness.nemesis.schedule import load as load_schedule
from harness.observe import ObserveError
from harness.scenario.explore import OpRecord, interruptible, run_ops, schedule_checks
from harness.scenario.readiness import reset_agents, wait_lab_clean
from harness.scenario.run import Scenario
from harness.scenario.session import start_capture
from harness.scenario.settings import REPORTS, LabNotReady, Settings, slug
from harness.topology import Topology, TopologyError

__all__ = [
    "EXPLORE_DIR",
    "SHRINK_BUDGET",
    "Explorer",
    "InputError",
    "Inputs",
    "ScheduleResult",
    "draw",
    "load_inputs",
]

log = logging.getLogger("hil.explore")

EXPLORE_DIR = REPORTS / "explore"
SHRINK_BUDGET = 24  # lab runs a shrink may take (each is a whole schedule: reset, run, settle, judge)
# What makes one schedule's run a lab fault rather than a verdict on the product.
LAB_FAULTS = (LabNotReady, DeviceUnreachable, DeviceError, ObserveError, CaptureError)


class InputError(Exception):
    """A topology, profile or replay file that does not load: one line per problem, nothing touched."""

    def __init__(self, lines: list[str]) -> None:
        self.problems = lines
        super().__init__("\n".join(lines))

    def lines(self) -> list[str]:
        return list(self.problems)


def _publish(results: Iterable[Any], keep_raw: bool) -> None:
    """A redacted copy of each capture beside the evidence, as a scenario's attachments get (the raw one
    stays under pcap/raw/, or goes on a physical lab); a capture that cannot be redacted is logged, never
    published raw, and never stops the exploration."""
    for r in results:
        path = Path(r.pcap_path)
        if not path.exists():
            continue
        try:
            report.publish_pcap(path, keep_raw)
        except Exception as e:  # noqa: BLE001 - evidence is a courtesy here; the verdict is already made
            log.warning("capture %s not published: %s", path, e)


@dataclass
class Inputs:
    """Everything a run needs from files, loaded and checked before the lab is touched."""

    topology: Topology
    profile: Any  # harness.nemesis.profile.Profile
    profile_file: str | None = None
    replay: Schedule | None = None
    replay_file: str | None = None


def load_inputs(
    topology_file: str | None, profile_file: str | None = None, replay_file: str | None = None
) -> Inputs:
    """Load the topology, the profile and the replay file; every problem is an InputError line naming the
    file, the field and what is wrong."""
    try:
        topo = topology_mod.load(topology_file)
    except TopologyError as e:
        raise InputError(e.lines()) from None
    try:
        prof = profile.load_profile(profile_file)
    except profile.ProfileError as e:
        raise InputError(e.lines()) from None
    sched = None
    if replay_file is not None:
        try:
            sched = load_schedule(replay_file, topo)
        except ScheduleError as e:
            raise InputError(e.lines()) from None
    return Inputs(topo, prof, profile_file, sched, replay_file)


def draw(inputs: Inputs, seeds: Iterable[int]) -> list[Schedule]:
    """Every seed's schedule, drawn before the first one runs, so nothing is left to fail once the lab has
    been touched."""
    return [generate.generate(inputs.topology, inputs.profile, s) for s in seeds]


@dataclass
class ScheduleResult:
    """One schedule's run: its verdicts, its ops as they ran, and (if it failed and was shrunk) its files."""

    name: str
    schedule: Schedule
    verdict: Verdict
    verdicts: list[Verdict]
    ops: list[OpRecord]
    seconds: float
    history: Path
    findings: list[dict[str, Any]] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)  # original / shrunk schedule files
    replay: str | None = None  # the command that replays the (shrunk) schedule
    shrink: dict[str, Any] = field(default_factory=dict)  # runs, steps, seconds, ops before / after

    @property
    def result(self) -> str:
        return self.verdict.result

    def line(self) -> str:
        """One line for the progress output: seed, verdict, ops, time, and what was wrong."""
        late = sum(1 for r in self.ops if r.late is not None and r.late > 0.5)
        kinds = sorted({str(f.get("kind")) for f in self.findings})
        extra = f" ({', '.join(kinds)})" if kinds else ""
        late_s = f", {late} late" if late else ""
        return f"{self.name}: {self.result.upper()}{extra}: {len(self.ops)} ops{late_s}, {self.seconds:.0f} s"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "seed": self.schedule.seed,
            "result": self.result,
            "reason": self.verdict.reason,
            "seconds": round(self.seconds, 1),
            "ops": [r.to_dict() for r in self.ops],
            "findings": self.findings,
            "verdicts": {v.name: v.result for v in self.verdicts},
            "history": str(self.history),
            "files": self.files,
            "replay": self.replay,
            "shrink": self.shrink,
        }


class Explorer:
    """Runs schedules on one lab: each from a lab healed and clean with every agent home and ready."""

    def __init__(
        self,
        lab: Lab,
        inputs: Inputs,
        settings: Settings | None = None,
        *,
        say: Callable[[str], None] = log.info,
        out_dir: Path = EXPLORE_DIR,
        shrink_budget: int = SHRINK_BUDGET,
    ) -> None:
        self.lab = lab
        self.inputs = inputs
        self.settings = settings or Settings()
        self.say = say
        self.out_dir = Path(out_dir)
        self.shrink_budget = shrink_budget
        self.injector: faults.Injector | None = None
        self._signals: AbstractContextManager[None] = nullcontext()

    def __enter__(self) -> Explorer:
        # SIGTERM and SIGHUP raise KeyboardInterrupt as Ctrl-C does, for the whole run (a reset, a settle,
        # a shrink), so every `finally` heals on the way out, not only the schedule's own.
        self._signals = interruptible()
        self._signals.__enter__()
        # The session's injector: heals what a dead run left, holds each switch's SPAN session until the end.
        self.injector = faults.Injector(self.lab, out=log.info)
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if self.injector is not None:
                self.injector.close()
                self.injector = None
        finally:
            self._signals.__exit__(None, None, None)

    # -- one schedule ---------------------------------------------------------------------------------
    def expectation(self, schedule: Schedule) -> dict[str, Any]:
        return expect.expected_outcome(schedule, self.inputs.topology, self.inputs.profile).to_dict()

    def ready(self) -> None:
        """The lab as built: healed and clean (a leftover in the journal healed first), then checked."""
        try:
            wait_lab_clean(self.lab)
        except LabNotReady:
            faults.restore(self.lab)
            wait_lab_clean(self.lab, timeout=30.0)

    def run_one(self, schedule: Schedule, name: str) -> ScheduleResult:
        """Run one schedule as a scenario and judge it (verdict file under reports/verdicts/). A lab that
        will not get ready, a device that does not answer or a capture that will not start makes this
        schedule's result unknown (a lab fault, named), and the run goes on to the next."""
        t0 = time.monotonic()
        name = slug(name)
        try:
            return self._run(schedule, name, t0)
        except LAB_FAULTS as e:
            why = f"lab fault before the verdict: {type(e).__name__}: {e}"
            self.say(f"{name}: {why}")
            v = Verdict("lab_ready", "unknown", why[:500], [], {})
            history = Path(self.settings.out_dir) / "histories" / f"{name}.jsonl"
            return ScheduleResult(
                name, schedule, v, [v], [], time.monotonic() - t0, history,
                findings=[f.to_dict() for f in report.findings([v])],
            )  # fmt: skip

    def _run(self, schedule: Schedule, name: str, t0: float) -> ScheduleResult:
        self.ready()
        settings = replace(self.settings, settle=schedule.settle)
        capture = start_capture(self.lab, settings, name, injector=self.injector)
        try:
            reset_agents(self.lab, timeout=settings.ready_timeout)
            sc = Scenario(self.lab, name, settings, capture=capture)
            sc.start()
            interrupted = True
            try:
                ops = run_ops(sc, schedule, self.expectation(schedule))
                interrupted = False
            finally:
                sc.finish(final_read=not interrupted)
            verdicts = schedule_checks(sc, schedule, extra=[checks.check_schedule_outcome])
            overall = sc.judge(verdicts)
        finally:
            if capture is not None:
                capture.stop()
                _publish(capture.results, report.keep_raw_pcaps(self.lab.topology.kind))
        return ScheduleResult(
            name,
            schedule,
            overall,
            verdicts,
            ops,
            time.monotonic() - t0,
            sc.history_path,
            findings=[f.to_dict() for f in report.findings(verdicts)],
        )

    # -- many, shrinking what fails ------------------------------------------------------------------
    def explore(
        self,
        schedules: Iterable[Schedule],
        *,
        shrink_invalid: bool = True,
        on_result: Callable[[ScheduleResult], None] | None = None,
    ) -> list[ScheduleResult]:
        """Run each drawn schedule (see :func:`draw`); shrink each invalid one (unless told not to)."""
        out = []
        for sched in schedules:
            res = self.run_one(sched, f"explore-{sched.seed}")
            if res.result == "invalid":
                self.keep(res, f"{sched.seed}", shrink_invalid)
            out.append(res)
            if on_result is not None:
                on_result(res)
        return out

    def replay(self, schedule: Schedule, name: str, *, shrink_invalid: bool = False) -> ScheduleResult:
        """Run a schedule from a file as it is (same ops, same offsets); shrink it if asked and invalid
        (kept as `<name>.replay.json` and `.replay.min.json`, beside whatever the file was)."""
        res = self.run_one(schedule, f"replay-{name}")
        if res.result == "invalid" and shrink_invalid:
            self.keep(res, f"{name}.replay", True)
        return res

    def keep(self, res: ScheduleResult, stem: str, shrink_it: bool) -> None:
        """Write the failing schedule (`<stem>.json`), shrink it on the lab, write the shrunk one
        (`<stem>.min.json`), and name the command that replays it."""
        original = res.schedule.write(self.out_dir / f"{stem}.json")
        res.files["original"] = str(original)
        res.replay = f"hil explore --replay {original}"
        if not shrink_it:
            return
        t0 = time.monotonic()
        k = 0

        wanted = failure(res.verdicts)

        def fails(candidate: Schedule) -> bool:
            """The candidate fails the same way (one failure in common with the original): a shrink that
            slipped to another failure would hide the first one (Hypothesis keeps to one failure too)."""
            nonlocal k
            k += 1
            r = self.run_one(candidate, f"shrink-{stem}-{k}")
            same = bool(failure(r.verdicts) & wanted)
            got = "the same failure" if same else f"{r.result} {sorted(failure(r.verdicts))}"
            self.say(f"  shrink run {k}: {len(candidate.ops)} ops: {got}")
            return same

        self.say(f"{res.line()}: running it again before shrinking it")
        if not fails(res.schedule):
            # A failure that does not come back on the same schedule cannot be shrunk (every candidate
            # would "pass"): it is kept as it is, its histories say what happened, and the budget is saved.
            self.say(f"{res.name} did not fail the same way again: kept as it is, not shrunk")
            res.shrink = {
                "failure": sorted(wanted),
                "reproduced": False,
                "runs": 1,
                "seconds": round(time.monotonic() - t0, 1),
                "ops_before": len(res.schedule.ops),
                "ops_after": len(res.schedule.ops),
            }
            return
        self.say(f"{res.name} fails again: shrinking it, at most {self.shrink_budget} runs")
        got = shrink.shrink(res.schedule, fails, self.shrink_budget, self.say, topo=self.inputs.topology)
        small = got.schedule
        path = small.write(self.out_dir / f"{stem}.min.json")
        res.files["shrunk"] = str(path)
        res.replay = f"hil explore --replay {path}"
        res.shrink = {
            "failure": sorted(wanted),
            "reproduced": True,
            "runs": got.runs + 1,
            "steps": got.steps,
            "seconds": round(time.monotonic() - t0, 1),
            "ops_before": len(res.schedule.ops),
            "ops_after": len(small.ops),
        }


def failure(verdicts: list[Verdict]) -> set[str]:
    """What a run's failure is, as words a shrink compares: each invalid verdict's name, and for the
    schedule's outcome each witness's problem (`lost`, `moved`, `doubled`, `split brain`...)."""
    out: set[str] = set()
    for v in verdicts:
        if v.result != "invalid":
            continue
        if v.name != "schedule_outcome":
            out.add(v.name)
            continue
        for w in v.witnesses:
            if isinstance(w, dict) and "problem" in w:
                out.add(f"outcome: {str(w['problem']).split(':')[0].split(',')[0]}")
            elif isinstance(w, dict) and w.get("name"):
                out.add(str(w["name"]))  # a verdict it folded in (no_split_brain)
    return out


def summary(results: list[ScheduleResult], **about: Any) -> dict[str, Any]:
    """The JSON of a run of schedules: how many were valid, invalid or not judged, how long each took,
    what was wrong with each, and the files and replay commands of the failing ones."""
    by = {k: sum(1 for r in results if r.result == k) for k in ("valid", "invalid", "unknown")}
    seconds = sum(r.seconds for r in results)
    return {
        "schema": "hil-explore/1",
        **about,
        "schedules": len(results),
        **by,
        "seconds": round(seconds, 1),
        "schedules_per_hour": round(3600 * len(results) / seconds, 1) if seconds else None,
        "results": [r.to_dict() for r in results],
    }
