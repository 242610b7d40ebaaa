"""A run read as a summary (each scenario's verdict and per-agent times) for `hil compare` and for the
gate's baseline, and the baseline rule: a scenario whose p95 or max grew beyond the policy's ratio of the
baseline's, or that went from pass to fail, is a regression and blocks.

Why here and not in `harness/report/compare.py`: reading the Allure results is the gate's (`results`,
`runs`), and the report layer may not import the gate. The comparison itself is pure and lives there.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import yaml

from harness import report
from harness.gate.inputs import GateInputError, problem_line
from harness.gate.policy import Baseline, Policy
from harness.gate.results import TestRun, read_results, read_verdicts
from harness.gate.runs import judge_run
from harness.report import runs
from harness.report.compare import BASELINE_SCHEMA, RunSummary, ScenarioSummary, scenario_verdict

__all__ = ["load_baseline", "read_run", "regressions", "summarize", "topology_of"]

_PER_AGENT = {"recovery": "per_agent", "detection": "per_agent_detection"}


def _times(runs_: Sequence[TestRun], results: Path) -> dict[str, list[float]]:
    """Every agent's recovery (and detection) seconds from the recovery checker's figures, over the runs."""
    out: dict[str, list[float]] = {}
    for r in runs_:
        for att in r.attachments:
            if att.name != report.VERDICTS_NAME:
                continue
            vf, _problem = read_verdicts(results / att.source)
            for v in vf.verdicts if vf else []:
                if v.name != "recovery_time":
                    continue
                for metric, key in _PER_AGENT.items():
                    per = v.figures.get(key)
                    if isinstance(per, dict):
                        vals = [float(x) for x in per.values() if isinstance(x, int | float)]
                        out.setdefault(metric, []).extend(vals)
    return out


def summarize(
    test_runs: Sequence[TestRun], results: Path, problems: list[str]
) -> dict[str, ScenarioSummary]:  # fmt: skip
    """Each scenario's verdict (by the gate's categories, no policy) and per-agent times."""
    by: dict[str, list[TestRun]] = {}
    for r in sorted(test_runs, key=lambda r: (r.scenario, r.start or 0, r.uuid)):
        by.setdefault(r.scenario, []).append(r)
    out = {}
    for sid, rs in by.items():
        outcomes = [judge_run(r, [], Policy(), results, problems).outcome for r in rs]
        passes = sum(o == "pass" for o in outcomes)
        out[sid] = ScenarioSummary(sid, scenario_verdict(outcomes), len(rs), passes, _times(rs, results))
    return out


def topology_of(run_dir: Path) -> str | None:
    """The name of the topology a run ran on (its kept input, else the manifest's file name)."""
    for f in sorted((run_dir / "inputs").glob("topology-suite*.yaml")) + sorted(
        (run_dir / "inputs").glob("topology-*.yaml")
    ):
        try:
            data = yaml.safe_load(f.read_text())
        except (OSError, ValueError, yaml.YAMLError):
            continue
        if isinstance(data, dict) and isinstance(data.get("name"), str):
            return data["name"]
    try:
        top = json.loads((run_dir / runs.MANIFEST).read_text()).get("topology")
    except (OSError, ValueError, AttributeError):
        return None
    return Path(top).stem if isinstance(top, str) else None


def read_run(ref: str | Path, reports: Path) -> tuple[RunSummary, list[str]]:
    """A kept run's summary and the problems met reading it. A missing, partial or corrupt run directory
    raises GateInputError with one line naming it and why."""
    try:
        run = runs.open_run(ref, reports)
    except runs.RunDirError as e:
        raise GateInputError([(str(e), "", "")]) from None
    results = run.path / "allure-results"
    test_runs, probs = read_results(results)
    problems = [problem_line(p) for p in probs]
    if not test_runs and not problems:
        problems.append(f"{results}: no test results in it (partial run)")
    scen = summarize(test_runs, results, problems)
    vers = run.manifest.get("versions")
    versions = {str(k): str(v) for k, v in vers.items()} if isinstance(vers, dict) else {}
    return RunSummary(run.name, str(run.path), topology_of(run.path), versions, scen), problems


def load_baseline(ref: str, reports: Path, policy_file: Path | None = None) -> RunSummary:
    """The baseline a policy names: a kept run (path, name under reports/runs/, `latest`), or a pinned
    baseline file (`hil baseline RUN --out FILE`). A relative path is tried from the working directory,
    then from the policy's. Anything unusable: GateInputError, one line naming the file and why."""
    cands = [Path(ref)]
    if policy_file is not None and not Path(ref).is_absolute():
        cands.append(policy_file.parent / ref)
    p = next((c for c in cands if c.exists()), None)
    if p is None and (ref == runs.LATEST or (reports / runs.RUNS / ref).exists()):
        p = runs.resolve(ref, reports)
    if p is None:
        where = f" (named by {policy_file})" if policy_file else ""
        raise GateInputError([(ref, "", f"the baseline does not exist{where}")])
    if p.is_dir():
        summary, problems = read_run(p, reports)
        if problems:
            raise GateInputError([(str(p), "", f"the baseline run cannot be read: {problems[0]}")])
        return summary
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise GateInputError([(str(p), "", f"not a baseline: not readable JSON ({e})")]) from None
    if not isinstance(data, dict):
        raise GateInputError([(str(p), "", f"not a baseline: {BASELINE_SCHEMA} JSON object expected")])
    try:
        return RunSummary.from_dict(data)
    except ValueError as e:
        raise GateInputError([(str(p), "", f"not a baseline: {e}")]) from None


def regressions(current: ScenarioSummary, verdict: str, base: ScenarioSummary, rule: Baseline) -> list[str]:
    """Why a scenario regressed against the baseline (empty: it did not). ``verdict`` is the gate's."""
    out = []
    if base.verdict == "pass" and verdict in ("fail", "flaky"):
        out.append(f"regression: the verdict went from pass (baseline) to {verdict}")
    for metric in ("recovery", "detection"):
        now, then = current.dist(metric), base.dist(metric)
        for q in ("p95", "max"):
            ratio = getattr(rule, q)
            a, b = then[q], now[q]
            if ratio is None or a is None or b is None or a <= 0:
                continue
            if b > ratio * a:
                out.append(
                    f"regression: {metric} {q} {b:.3f} s is {b / a:.1f}x the baseline's {a:.3f} s"
                    f" (allowed {ratio:g}x)"
                )
    return out
