"""The main job (`hil run`, `make run`): lab up, the scenario suite, the Allure report, the gate, lab down.

Why the suite runs as a pytest child process: the scenarios are pytest tests (fixtures, markers, Allure
results), and a child keeps the controller that owns the lab alive and in charge if a test crashes. On
Ctrl-C the child gets the SIGINT too (same process group) and heals its faults on the way out; this parent
then heals whatever the fault journal still holds (its controller is gone by then) and takes the lab down.

The scale scenario needs 1,000 agents, so on a smaller virtual lab the job runs it in a second pytest
session on ``topologies/virtual-1k.yaml`` (same Allure results), as `make test` does.

Each run keeps its evidence in a directory of its own, ``reports/runs/<UTC time>-<git describe>/``
(``harness.report.runs``): an earlier run's evidence is never deleted or written to, except by the retention
(``--keep-runs``, ``--keep-size``) after a run that completed. A selection (``-k``, ``-m``, the failures
of an earlier run) is pytest's own; a session that selects nothing is skipped before its lab comes up.

``dry_run``: nothing is brought up or touched. The suite runs with ``--dry-run`` (every fault contributes
its ``plan()``, every driver its steps) and the job prints the whole plan of device actions; its plan goes
to ``reports/dry-run/``, not into a run.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import faults, gate, report
from harness import topology as topology_mod
from harness.gate import secretscan
from harness.lab import virtual as virtual_backend
from harness.lab.session import LabError, open_lab
from harness.report import gateresult, runs, trend
from harness.scenario import format_plan, read_plan
from harness.topology import REPO_ROOT

SCALE_TOPOLOGY = REPO_ROOT / "topologies" / "virtual-1k.yaml"
SCALE_AGENTS = 1000
HISTORY = "history.jsonl"  # Allure 3's history, under reports/ beside the runs: pruning a run keeps it


@dataclass
class Session:
    """One pytest session of the suite and what it reported."""

    name: str
    topology: Path
    markers: str | None
    returncode: int | None = None
    counts: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


class NothingSelected(Exception):
    """``-k``/``-m``/``--last-failed`` pick no scenario of any session: no lab comes up, no run is made."""


@dataclass
class Selection:
    """Which scenarios to run: pytest's ``-k`` and ``-m``, and the failures of an earlier run (its
    pytest cache is copied into the new run's, and pytest's ``--lf`` picks them); and how many times each
    session runs (``repeat``: the gate's ``repeat:`` counts passes, and calls a scenario with mixed results
    flaky)."""

    keyword: str | None = None
    markers: str | None = None
    failed_of: runs.Run | None = None
    repeat: int = 1

    def given(self) -> bool:
        return bool(self.keyword or self.markers or self.failed_of)

    def markers_for(self, session: str | None) -> str | None:
        if not self.markers:
            return session
        return f"({session}) and ({self.markers})" if session else self.markers

    def argv(self) -> list[str]:
        return (["-k", self.keyword] if self.keyword else []) + (["--lf"] if self.failed_of else [])

    def describe(self) -> dict[str, str]:
        d = {"keyword": self.keyword, "markers": self.markers}
        d["last_failed_of"] = self.failed_of.name if self.failed_of else None
        d["repeat"] = str(self.repeat) if self.repeat > 1 else None
        return {k: v for k, v in d.items() if v}


@dataclass
class JobResult:
    sessions: list[Session] = field(default_factory=list)
    run: Path | None = None  # the run directory (None in a dry run, or when nothing was run)
    removed: list[str] = field(default_factory=list)  # what the retention removed
    gate_exit: int | None = None
    report: Path | None = None
    gate_files: dict[str, Any] = field(default_factory=dict)
    interrupted: bool = False
    exit_code: int = 0
    plan: str = ""
    secrets: set[bytes] = field(default_factory=set)  # the labs' own, looked for in the kept run
    cti_ports: set[int] = field(default_factory=set)


def _junit_counts(path: Path) -> dict[str, int]:
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        return {}
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    out = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for s in suites:
        for k in out:
            out[k] += int(s.get(k, 0) or 0)
    out["passed"] = out["tests"] - out["failures"] - out["errors"] - out["skipped"]
    return out


def pytest_argv(
    topology: Path, markers: str | None, results: Path, reports: Path, policy: str | None, dry_run: bool,
    junit: Path, extra: list[str] | None = None,
) -> list[str]:  # fmt: skip
    """The suite's pytest command. Its cache lives in the run (``reports``), so a later run can re-run
    this one's failures without another session's cache in between."""
    argv = [sys.executable, "-m", "pytest", "scenarios", "-q", "-ra"]
    argv += ["-o", f"cache_dir={reports / 'pytest-cache'}"]
    argv += ["--topology", str(topology), "--alluredir", str(results), "--junitxml", str(junit)]
    argv += ["--hil-reports", str(reports)]
    if markers:
        argv += ["-m", markers]
    argv += extra or []
    if policy:
        argv += ["--gate-policy", policy]
    if dry_run:
        argv.append("--dry-run")
    return argv


def _run_child(argv: list[str], out: Callable[[str], None]) -> int:
    """Run pytest and wait. The child has a process group of its own, so a Ctrl-C reaches this parent only;
    the parent then sends the child exactly one SIGINT (a second one would cut pytest's teardown, which is
    where faults heal and captures stop), waits for it, and re-raises."""
    out("$ " + " ".join(argv[2:]))
    proc = subprocess.Popen(argv, cwd=REPO_ROOT, start_new_session=True)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=90)  # pytest tears down: faults heal, the capture stops
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        raise


@contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM (and SIGHUP) end the job the way Ctrl-C does: heal, lab down. SIGINT is restored to Python's
    default even if the job was started with it ignored (a background job of a shell)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def raiser(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    old = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)}
    signal.signal(signal.SIGTERM, raiser)
    signal.signal(signal.SIGHUP, raiser)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)


def _heal_leftovers(topo: topology_mod.Topology, out: Callable[[str], None]) -> None:
    """Heal every change a (now dead) suite left in the journal; say what could not be healed or read."""
    try:
        lab = open_lab(topo, bring_up=False)
        for r in faults.restore(lab):
            if r["result"] == "unreadable":
                out(f"restore: skipped journal line {r['line']}: {r['reason']}")
                continue
            why = r.get("reason") or r.get("error") or ""
            out(f"restore: {r['result']} a leftover {r['kind']} {r['id']} on {r['target']} {why}".rstrip())
    except Exception as e:  # the lab may already be gone: nothing left to heal then
        out(f"restore: {type(e).__name__}: {e}")


def run(
    topology_file: str | None,
    *,
    dry_run: bool = False,
    policy: str | None = None,
    scale: bool = True,
    out: Callable[[str], None] = print,
    reports: Path = REPO_ROOT / "reports",
    select: Selection | None = None,
    keep: runs.Retention | None = None,
) -> JobResult:
    """The whole job; see the module docstring. Returns what happened (exit code in ``exit_code``)."""
    topo = topology_mod.load(topology_file)
    policy = policy or (str(REPO_ROOT / "gate.yaml") if (REPO_ROOT / "gate.yaml").exists() else None)
    select = select or Selection()
    keep = keep or runs.retention()
    res = JobResult()
    if select.failed_of is not None and not runs.last_failed(select.failed_of):
        out(f"nothing to re-run: no scenario failed in {select.failed_of.path}")
        return res

    sessions = [Session("suite", Path(topo.file), None if dry_run else "not scale")]
    if not dry_run and scale and topo.kind == "virtual" and len(topo.agents()) < SCALE_AGENTS:
        if SCALE_TOPOLOGY.exists():
            sessions.append(Session("scale", SCALE_TOPOLOGY, "scale"))
    elif not dry_run and scale:
        sessions[0].markers = None  # this lab is big enough (or physical): scale runs in the same session
    for s in sessions:
        s.markers = select.markers_for(s.markers)
    if select.given() and not dry_run:
        sessions = [s for s in sessions if _selects_any(s, policy, select, out)]
        if not sessions:
            raise NothingSelected(f"the selection ({_describe(select)}) picks no scenario")

    if dry_run:
        run = None
        out_dir = reports / "dry-run"  # a plan, not evidence: replaced by the next dry run
        shutil.rmtree(out_dir, ignore_errors=True)
    else:
        run = runs.create(
            reports, repo=REPO_ROOT, command=[Path(sys.argv[0]).name, *sys.argv[1:]], topology=str(topo.file),
            policy=str(policy or gate.DEFAULT_POLICY), selection=select.describe(),
        )  # fmt: skip
        for s in sessions:
            run.keep_input(s.topology, f"topology-{s.name}.yaml")
        run.keep_input(policy or gate.DEFAULT_POLICY, "policy.yaml")
        out_dir = res.run = run.path
        out(f"run: {run.path}")
    results = out_dir / "allure-results"
    results.mkdir(parents=True, exist_ok=True)
    if select.failed_of is not None:
        shutil.copytree(select.failed_of.path / "pytest-cache", out_dir / "pytest-cache")

    try:
        with _terminate_as_interrupt():
            times = {} if dry_run or select.repeat == 1 else {"repeat": select.repeat}  # a plan is one
            _run_sessions(sessions, res, results, out_dir, policy, dry_run, out, select.argv(), **times)
    except KeyboardInterrupt:
        res.interrupted = True
        res.exit_code = 130
        if run is not None:
            run.finish("interrupted", exit_code=130, sessions=_session_facts(res))
            out(f"run kept (interrupted): {run.path}; reports/latest not moved, nothing pruned")
        return res
    except BaseException as e:  # the lab would not come up, or worse: the run says so, nothing else moves
        if run is not None:
            run.finish("failed", error=f"{type(e).__name__}: {e}", sessions=_session_facts(res))
        raise

    if dry_run:
        res.plan = format_plan(read_plan(out_dir / "plan.jsonl"))
        out(res.plan or "(no plan: no scenario was collected)")
        failed = [s for s in res.sessions if s.returncode not in (0, 5)]
        res.exit_code = 1 if failed else 0
        return res
    assert run is not None
    _judge(res, run.path, results, policy, out)
    if select.given():
        out(f"note: a selection ({_describe(select)}) is not the whole suite: the gate judges what ran")
    run.finish("complete", exit_code=res.exit_code, gate_exit=res.gate_exit, sessions=_session_facts(res))
    _keep(reports, run, keep, res, out)
    return res


def _judge(
    res: JobResult, out_dir: Path, results: Path, policy: str | None, out: Callable[[str], None]
) -> None:  # fmt: skip
    """The gate's verdict, the trend across kept runs, and the HTML report (with history, the gate's
    result and the trend), all inside the run; the trend and Allure's history also in reports/."""
    try:
        rep = gate.run_gate(policy, results)
        out(gate.table(rep))
        for line in rep.problems:
            out(f"gate: {line}")
        res.gate_files = gate.write_outputs(rep, out_dir)
        res.gate_exit = rep.exit_code
    except Exception as e:  # a broken gate must not hide the suite's own result
        out(f"gate: {type(e).__name__}: {e}")
    res.report = _report(out_dir, results, out)
    raw = out_dir / "pcap" / "raw"  # the one place that holds them, by design (docs/reports.md)
    found = secretscan.leaks(
        out_dir, res.secrets | secretscan.capture_secrets(raw.rglob("*.pcap"), res.cti_ports), raw
    )
    for line in found:
        out(f"secrets: {line}")
    if found:
        res.gate_exit = max(res.gate_exit or 0, 1)  # evidence that leaks a secret is not fit to ship
    suite_failed = any(s.returncode not in (0,) for s in res.sessions)
    res.exit_code = res.gate_exit if res.gate_exit is not None else (1 if suite_failed else 0)


def _report(out_dir: Path, results: Path, out: Callable[[str], None]) -> Path | None:
    """Trend, release-gate result and HTML report; a failure of any is printed, never fatal."""
    extra: list[Path] = []
    try:
        extra = trend.write_trend(out_dir.parent.parent, out_dir)
    except Exception as e:  # a broken trend must not cost the run its report
        out(f"trend: {type(e).__name__}: {e}")
    with tempfile.TemporaryDirectory(prefix="hil-gate-result-") as tmp:
        gateresult.write_gate_result(out_dir, Path(tmp), extra)
        try:
            return report.build_report(
                results, out_dir / "allure-report", name="hil failover lab", extra_results=[tmp],
                history=out_dir.parent.parent / HISTORY, attached=extra,
            )  # fmt: skip
        except report.ReportError as e:
            out(f"report: {e}")
    return None


def _keep(
    reports: Path, run: runs.Run, keep: runs.Retention, res: JobResult, out: Callable[[str], None]
) -> None:  # fmt: skip
    """A completed run becomes ``reports/latest``, and the retention prunes the oldest runs."""
    try:
        runs.point_latest(reports, run)
    except (runs.RunDirError, OSError) as e:
        out(f"latest: {e}")
    removed = runs.prune(reports, keep, run)
    res.removed = [r.line() for r in removed]
    for line in res.removed:
        out(f"retention: {line}")


def _describe(select: Selection) -> str:
    return ", ".join(f"{k} {v}" for k, v in select.describe().items())


def _session_facts(res: JobResult) -> list[dict[str, Any]]:
    return [
        {"name": s.name, "topology": str(s.topology), "markers": s.markers, "returncode": s.returncode,
         "counts": s.counts, "seconds": round(s.seconds, 1)}
        for s in res.sessions
    ]  # fmt: skip


def _selects_any(
    s: Session, policy: str | None, select: Selection, out: Callable[[str], None]
) -> bool:  # fmt: skip
    """Whether the selection picks any scenario of this session, asked before its lab comes up (pytest
    --collect-only, a few seconds). For a re-run, a session picks only the earlier run's failures it holds:
    pytest's --lf would run the whole session when none of them is in it. A collection error counts as a
    yes: the session itself reports it."""
    with tempfile.TemporaryDirectory(prefix="hil-select-") as tmp:
        scratch = Path(tmp)
        argv = pytest_argv(s.topology, s.markers, scratch / "r", scratch, policy, False, scratch / "j.xml")
        extra = ["-k", select.keyword] if select.keyword else []
        p = subprocess.run(argv + extra + ["--collect-only"], cwd=REPO_ROOT, capture_output=True, text=True)
    if p.returncode not in (0, 5):
        return True
    picked = {line.strip() for line in p.stdout.splitlines() if "::" in line}
    if select.failed_of is not None:
        picked &= set(runs.last_failed(select.failed_of))
    if not picked:
        out(f"{s.name}: the selection picks no scenario on {s.topology.name}; session skipped")
    return bool(picked)


def _run_sessions(
    sessions: list[Session], res: JobResult, results: Path, reports: Path, policy: str | None, dry_run: bool,
    out: Callable[[str], None], extra: list[str] | None = None, repeat: int = 1,
) -> None:  # fmt: skip
    """Each pytest session of the suite on its lab: up, leftovers healed, pytest (``repeat`` times, into
    the same Allure results: each repetition is one more result of each scenario), down (if ours)."""
    for s in sessions:
        stopo = topology_mod.load(s.topology)
        t0 = time.monotonic()
        handle, owned = (None, False) if dry_run else _bring_up(stopo, out)
        try:
            if not dry_run:
                res.secrets |= secretscan.lab_secrets(stopo, handle.environment() if handle else None)
                res.cti_ports |= {d.spec.port for d in stopo.of_kind("cti")}
                _heal_leftovers(stopo, out)  # a killed earlier run may have left a fault in place
            for k in range(1, repeat + 1):
                if repeat > 1:
                    out(f"{s.name}: repetition {k} of {repeat}")
                    if k > 1:
                        _heal_leftovers(stopo, out)
                junit = reports / (f"junit-{s.name}.xml" if k == 1 else f"junit-{s.name}-{k}.xml")
                junit.unlink(missing_ok=True)  # a killed session must not report the last run's counts
                argv = pytest_argv(s.topology, s.markers, results, reports, policy, dry_run, junit, extra)
                rc = _run_child(argv, out)
                s.returncode = rc if s.returncode in (None, 0) else s.returncode
                for key, n in _junit_counts(junit).items():
                    s.counts[key] = s.counts.get(key, 0) + n
        except KeyboardInterrupt:
            out("interrupted: healing faults and taking the lab down")
            if not dry_run:
                _heal_leftovers(stopo, out)
            raise
        finally:
            if owned:
                _take_down(handle, out)
                _keep_lab_logs(handle, reports / "lab-logs" / s.name)
        s.seconds = time.monotonic() - t0
        res.sessions.append(s)


def _bring_up(topo: topology_mod.Topology, out: Callable[[str], None]) -> tuple[Any, bool]:
    """The lab up (a virtual one), and whether this job brought it up (and so must take it down)."""
    if topo.kind != "virtual":
        return None, False
    running = virtual_backend.find()
    if running is not None and running.name == topo.name:
        out(f"lab {topo.name} is already up: using it (and leaving it up)")
        return running, False
    if running is not None:
        raise LabError(f"lab {running.name} is up; the job needs {topo.name}: run `hil lab down` first")
    t0 = time.monotonic()
    b = virtual_backend.bring_up(topo)
    out(f"lab {b.name} is up in {time.monotonic() - t0:.1f} s")
    return b, True


def _take_down(handle: Any, out: Callable[[str], None]) -> None:
    t0 = time.monotonic()
    virtual_backend.take_down(handle)
    out(f"lab {handle.name} is down in {time.monotonic() - t0:.1f} s")


def _keep_lab_logs(handle: Any, dest: Path) -> None:
    """The lab archives its logs (keeper, kamailio, UL, CTI, swarm) under reports/lab-logs/ when it goes down,
    the last lab's only: the run keeps its own copy."""
    run_dir = getattr(getattr(handle, "handle", None), "run_dir", None)
    src = REPO_ROOT / "reports" / "lab-logs" / Path(run_dir).name if run_dir else None
    if src is not None and src.is_dir():
        try:
            shutil.copytree(src, dest, dirs_exist_ok=True)
        except OSError:  # logs are a courtesy: never let them hide the session's own result
            pass


def summary(res: JobResult, reports: Path = REPO_ROOT / "reports") -> str:
    """The short summary at the end of the job: sessions, gate verdict, and where the report is."""
    lines = []
    for s in res.sessions:
        c = s.counts
        counts = (
            ", ".join(f"{c.get(k, 0)} {k}" for k in ("passed", "failures", "errors", "skipped")) if c else ""
        )
        lines.append(
            f"{s.name} ({s.topology.name}): pytest exit {s.returncode}, {counts} in {s.seconds:.0f} s"
        )
    where = res.run or reports
    if res.gate_exit is not None:
        word = {0: "SHIP", 1: "DO NOT SHIP", 2: "COULD NOT JUDGE"}.get(res.gate_exit, str(res.gate_exit))
        lines.append(f"gate: {word} (exit {res.gate_exit}); {where / 'gate.md'}")
    if res.report is not None:
        lines.append(f"report: {res.report}  (open: {_allure_hint(res.report)})")
    if res.run is not None:
        lines.append(f"run: {res.run} (reports/latest); evidence: histories/, pcap/, verdicts/ in it")
    else:
        lines.append(f"evidence: {reports / 'histories'}, {reports / 'pcap'}, {reports / 'verdicts'}")
    lines += [f"retention: {line}" for line in res.removed]
    return "\n".join(lines)


def _allure_hint(index: Path) -> str:
    try:
        return f"{report.allure_cli()} open {index.parent}"
    except Exception:
        return str(index)
