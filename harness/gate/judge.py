"""The gate's verdict: runs grouped by scenario, each scenario judged against the rules that match it, and
the whole run judged for release (ship 0, do not ship 1, could not judge 2; docs/gate.md)."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from harness.gate import baseline as baseline_mod
from harness.gate.inputs import GateInputError, problem_line
from harness.gate.policy import DEFAULT_POLICY, Policy, load_policy
from harness.gate.results import TestRun, read_results
from harness.gate.runs import RunJudgement, judge_run
from harness.report import REPO_ROOT
from harness.report.compare import RunSummary

__all__ = [
    "EXIT_NO_SHIP",
    "EXIT_SHIP",
    "EXIT_UNJUDGED",
    "NO_SHIP",
    "SHIP",
    "UNJUDGED",
    "GateReport",
    "ScenarioJudgement",
    "judge",
    "run_gate",
]

EXIT_SHIP, EXIT_NO_SHIP, EXIT_UNJUDGED = 0, 1, 2
SHIP, NO_SHIP, UNJUDGED = "ship", "do not ship", "could not judge"
_EXIT = {SHIP: EXIT_SHIP, NO_SHIP: EXIT_NO_SHIP, UNJUDGED: EXIT_UNJUDGED}


@dataclass
class ScenarioJudgement:
    scenario: str
    listed: bool
    required: bool
    needed: int
    passes: int
    verdict: Literal["pass", "fail", "flaky", "unjudged", "skipped", "info", "ignored"]
    reasons: list[str]
    rules: list[int]
    labels: dict[str, list[str]]
    figures: dict[str, Any]
    runs: list[RunJudgement]
    regressions: list[str] = field(default_factory=list)  # against the policy's baseline: they block


@dataclass
class GateReport:
    verdict: str
    exit_code: int
    policy: str
    results: str
    generated_at: str
    scenarios: list[ScenarioJudgement] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    baseline: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _against_baseline(
    s: ScenarioJudgement, rs: Sequence[TestRun], base: RunSummary, policy: Policy, results: Path
) -> None:  # fmt: skip
    """A scenario that regressed against the baseline fails, the regression its first reason."""
    then = base.scenarios.get(s.scenario)
    if then is None or policy.baseline is None or s.verdict in ("ignored", "skipped"):
        return
    now = baseline_mod.summarize(rs, results, [])[s.scenario]
    s.regressions = baseline_mod.regressions(now, s.verdict, then, policy.baseline)
    if s.regressions:
        s.reasons[:0] = s.regressions
        if s.verdict != "flaky":
            s.verdict = "fail"


def judge(
    policy: Policy, runs: Sequence[TestRun], results: Path, problems: list[str],
    baseline: RunSummary | None = None,
) -> GateReport:  # fmt: skip
    """Apply the policy to the runs (and to the baseline's scenarios, if it names one); the report's verdict
    and exit code follow docs/gate.md."""
    by_scenario: dict[str, list[TestRun]] = {}
    for r in sorted(runs, key=lambda r: (r.scenario, r.start or 0, r.uuid)):
        by_scenario.setdefault(r.scenario, []).append(r)
    rx = [re.compile(rule.match) for rule in policy.scenarios]
    matched_rules: set[int] = set()
    out: list[ScenarioJudgement] = []
    for sid, rs in by_scenario.items():
        idx = [k for k, c in enumerate(rx) if c.search(sid)]
        matched_rules.update(idx)
        rules = [policy.scenarios[k] for k in idx]
        listed = bool(rules)
        if not listed and policy.unlisted == "ignore":
            out.append(ScenarioJudgement(sid, False, False, 0, 0, "ignored", [], [], rs[0].labels, {}, []))
            continue
        required = any(r.required for r in rules)
        needed = max((r.repeat or policy.repeat for r in rules), default=0)
        judged = [judge_run(r, rules, policy, results, problems) for r in rs]
        passes = sum(j.outcome == "pass" for j in judged)
        figures: dict[str, Any] = {}
        for jr in judged:
            for k, v in jr.figures.items():
                figures[k] = max(figures.get(k, v), v)
        reasons = [f"run {k + 1}: {why}" for k, jr in enumerate(judged) for why in jr.reasons]
        bounds = [r.recovery for r in rules if r.recovery is not None]
        if bounds:
            figures["bound"] = {
                q: min(getattr(b, q) for b in bounds if getattr(b, q) is not None)
                for q in ("p50", "p95", "max")
                if any(getattr(b, q) is not None for b in bounds)
            }
        verdict: Literal["pass", "fail", "flaky", "unjudged", "skipped", "info", "ignored"]
        failed = sum(j.outcome == "defect" for j in judged)
        if failed and passes:
            verdict = "flaky"
            reasons.insert(0, f"flaky: passed {passes} of {len(judged)} runs, failed {failed}")
        elif failed:
            verdict = "fail"
        elif not listed:
            verdict = "info"
        elif any(j.outcome == "incomplete" for j in judged):
            verdict = "unjudged"
        elif passes >= needed:
            verdict = "pass"
        elif passes == 0 and not required:
            verdict = "skipped"
        else:
            verdict = "unjudged"
            reasons.append(f"passed {passes} times, the policy needs {needed}")
        sj = ScenarioJudgement(
            sid, listed, required, needed, passes, verdict, reasons, idx, rs[0].labels, figures, judged
        )
        if baseline is not None:
            _against_baseline(sj, rs, baseline, policy, results)
        out.append(sj)
    missing = [
        f"rule {k + 1} ({rule.match!r}): no scenario in the results matches it"
        for k, rule in enumerate(policy.scenarios)
        if rule.required and k not in matched_rules
    ]
    rep = GateReport(
        verdict=SHIP,
        exit_code=EXIT_SHIP,
        policy="",
        results=str(results),
        generated_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        scenarios=out,
        missing=missing,
        problems=list(problems),
    )
    counted = [s for s in out if s.verdict not in ("ignored",)]
    if len(counted) < policy.min_scenarios:
        rep.missing.append(
            f"{len(counted)} scenarios in the results, the policy needs at least {policy.min_scenarios}"
        )
    if baseline is not None:
        rep.baseline = baseline.path
    if any(s.verdict in ("fail", "flaky") for s in out) and not problems:
        rep.verdict = NO_SHIP
    elif problems or rep.missing or any(s.verdict == "unjudged" for s in out):
        rep.verdict = UNJUDGED
    for s in out:
        if s.verdict == "info" and any(j.outcome == "incomplete" for j in s.runs):
            rep.notes.append(
                f"{s.scenario} (not in the policy) could not be judged; it does not hold the gate"
            )
    rep.exit_code = _EXIT[rep.verdict]
    return rep


def _baseline(policy: Policy, ppath: Path, results: Path) -> RunSummary | None:
    """The policy's baseline, checked to be from this run's topology (when the results are a kept run's)."""
    if policy.baseline is None:
        return None
    base = baseline_mod.load_baseline(policy.baseline.run, REPO_ROOT / "reports", ppath)
    here = baseline_mod.topology_of(results.parent) if (results.parent / "run.json").exists() else None
    if here and base.topology and here != base.topology:
        where = base.path or policy.baseline.run
        raise GateInputError(
            [(where, "", f"the baseline ran on topology {base.topology}, this run on {here}: not comparable")]
        )
    return base


def run_gate(policy_path: str | Path | None, results: str | Path) -> GateReport:
    """Read policy and results and judge; input errors become a "could not judge" report, never a raise."""
    ppath = (
        Path(policy_path)
        if policy_path
        else (Path("gate.yaml") if Path("gate.yaml").exists() else DEFAULT_POLICY)
    )
    now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    try:
        policy = load_policy(ppath)
        base = _baseline(policy, ppath, Path(results))
        runs, probs = read_results(results)
    except GateInputError as e:
        return GateReport(UNJUDGED, EXIT_UNJUDGED, str(ppath), str(results), now, problems=e.lines())
    rep = judge(policy, runs, Path(results), [problem_line(p) for p in probs], base)
    rep.policy = str(ppath)
    return rep
