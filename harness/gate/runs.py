"""Judging one run (one Allure test result) by categories: its status, the `hil.outcome` label the plugin
put on it, and the findings of its verdict files. Never by the text of its message.

- `failed` / `broken`: the run's category is its `hil.outcome` label (`report.apply_outcome`, from the
  exception's type), else the worst category of its verdict files' findings; `defect` blocks the release,
  `lab` and `incomplete` cannot be judged, and a run with no category at all cannot be judged either: an
  unclassified failure is never a pass and never guessed to be the product's.
- its verdict files: every defect finding is a defect, except lost agents and split brain, which are counted
  against the policy's maxima; lab and incomplete findings, a missing file, a missing or mismatching
  history, or a bound without its figure make the run incomplete. A recovery figure over the bound is a
  defect.
"""

from __future__ import annotations

import hashlib
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from harness import report
from harness.checks import Verdict
from harness.checks.recovery import seconds
from harness.gate.inputs import problem_line
from harness.gate.policy import Policy, Rule
from harness.gate.results import Attachment, TestRun, VerdictFile, read_verdicts
from harness.history import History, HistoryError, HistoryWarning

__all__ = ["Outcome", "RunJudgement", "judge_run"]

Outcome = Literal["pass", "defect", "incomplete", "skipped"]
_WORST = {"pass": 0, "skipped": 1, "incomplete": 2, "defect": 3}
_LABEL_RANK = {**report.CATEGORY_RANK, "pass": len(report.CATEGORY_RANK)}
Add = Callable[[Outcome, str], None]


@dataclass
class RunJudgement:
    file: str
    uuid: str
    status: str
    outcome: Outcome
    reasons: list[str] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)
    defects: list[str] = field(default_factory=list)  # the reasons that block the release


def _first_line(s: str) -> str:
    """The message's first line, for people (its category comes from elsewhere)."""
    line = s.strip().splitlines()[0] if s.strip() else ""
    return line.removeprefix("AssertionError: ").removeprefix("Failed: ")


def _why(head: str, msg: str, kinds: Sequence[str]) -> str:
    return head + (f": {msg}" if msg else "") + (f" [{', '.join(kinds)}]" if kinds else "")


def _judge_failure(
    run: TestRun, msg: str, files: Sequence[VerdictFile], add: Add, problems: list[str]
) -> None:
    """A failed or broken run, by its category: the label, else its findings, else none (incomplete)."""
    labels = run.labels.get(report.OUTCOME_LABEL, [])
    for bad in [v for v in labels if v not in _LABEL_RANK]:
        want = ", ".join(_LABEL_RANK)
        problems.append(
            problem_line((run.file, f"labels.{report.OUTCOME_LABEL}", f"must be one of {want}, got {bad!r}"))
        )
    good = [v for v in labels if v in _LABEL_RANK]
    kinds: list[str] = run.labels.get(report.KIND_LABEL, [])
    category: str | None
    if good:
        category = min(good, key=_LABEL_RANK.__getitem__)
    else:
        fs = [f for vf in files for f in vf.findings]
        category = report.worst(fs)
        kinds = list(dict.fromkeys(f.kind for f in fs if f.category == category))
    status = run.status
    if category == "defect":
        add("defect", _why(status, msg, kinds))
    elif category == "lab":
        head = (
            "broken (lab or harness error)" if status == "broken" else f"{status} on the lab, not the product"
        )
        add("incomplete", _why(head, msg, kinds))
    elif category == "incomplete":
        head = "broken (lab or harness error)" if status == "broken" else f"{status}, evidence incomplete"
        add("incomplete", _why(head, msg, kinds))
    elif category == "pass":
        add("incomplete", _why(f"{status}, yet labelled {report.OUTCOME_LABEL}=pass", msg, kinds))
    else:
        head = (
            f"{status} with no category (no {report.OUTCOME_LABEL} label, no finding in"
            f" {report.VERDICTS_NAME}): cannot tell a product defect from a lab fault"
        )
        add("incomplete", _why(head, msg, ()))


def _check_history(sha: str, hist_atts: Mapping[str, Attachment], results: Path, add: Add) -> None:
    """The history the verdicts name must be attached, match their sha256, and read back as a history."""
    if not hist_atts:
        add("incomplete", f"{report.HISTORY_NAME} not attached")
        return
    for src in hist_atts:
        p = results / src
        try:
            data = p.read_bytes()
        except OSError as e:
            add("incomplete", f"{p}: history attachment missing: {e.strerror or e}")
            continue
        if hashlib.sha256(data).hexdigest() != sha:
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", HistoryWarning)
                History.load(p)
        except (HistoryError, ValueError) as e:
            add("incomplete", f"{p}: history does not read back: {e}")
        return
    add("incomplete", f"no attached {report.HISTORY_NAME} matches the sha256 in {report.VERDICTS_NAME}")


def _seconds(x: Any) -> bool:
    """A figure a bound can be checked against: a finite number (NaN is over no bound: it proves nothing)."""
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def _recovery_bounds(
    j: RunJudgement, run: TestRun, rules: Sequence[Rule], recoveries: Sequence[Verdict], add: Add
) -> None:
    for v in recoveries:
        for q in ("p50", "p95", "max"):
            if _seconds(v.figures.get(q)):
                j.figures[q] = max(j.figures.get(q, 0.0), float(v.figures[q]))
    for rule in rules:
        if rule.recovery is None or run.status == "skipped":
            continue
        if not recoveries:
            add("incomplete", f"no recovery_time verdict to check the bound of rule {rule.match!r}")
            continue
        for v in recoveries:
            for q in ("p50", "p95", "max"):
                bound = getattr(rule.recovery, q)
                if bound is None:
                    continue
                val = v.figures.get(q)
                if val is None:
                    add("incomplete", f"recovery_time has no {q} figure ({v.reason})")
                elif not _seconds(val):
                    add("incomplete", f"recovery_time's {q} figure is not a number of seconds: {val!r}")
                elif val > bound:
                    add("defect", f"{q} recovery {seconds(val)} over the policy bound {seconds(bound)}")


def judge_run(
    run: TestRun, rules: Sequence[Rule], policy: Policy, results: Path, problems: list[str]
) -> RunJudgement:
    """One run's outcome and reasons (the module docstring says how)."""
    j = RunJudgement(run.file, run.uuid, run.status, "pass")
    outcome: list[Outcome] = []

    def add(o: Outcome, why: str) -> None:
        outcome.append(o)
        j.reasons.append(why)
        if o == "defect":
            j.defects.append(why)

    read = [
        (att, *read_verdicts(results / att.source))
        for att in run.attachments
        if att.name == report.VERDICTS_NAME
    ]
    files = [vf for _att, vf, _problem in read if vf is not None]
    msg = _first_line(run.message)
    if run.status == "skipped":
        add("skipped", f"skipped: {msg}" if msg else "skipped")
    elif run.status in ("failed", "broken"):
        _judge_failure(run, msg, files, add, problems)
    elif run.status != "passed":
        add("incomplete", f"status {run.status}")

    if not read and any(r.verdicts for r in rules) and run.status != "skipped":
        add("incomplete", f"no {report.VERDICTS_NAME} attached")
    hist_atts = {a.source: a for a in run.attachments if a.name == report.HISTORY_NAME}
    lost: set[str] = set()
    split: set[str] = set()
    recoveries: list[Verdict] = []
    for _att, vf, problem in read:
        if vf is None:
            line = problem_line(problem or ("", "", "unreadable"))
            problems.append(line)
            add("incomplete", line)
            continue
        if vf.history_sha256 is None:
            add("incomplete", f"{report.VERDICTS_NAME} names no history: the verdict cannot be checked again")
        else:
            _check_history(vf.history_sha256, hist_atts, results, add)
        for f in vf.findings:
            if f.kind == "lost_agent":
                lost.update(f.agents or (f"?{len(lost)}",))
            elif f.kind == "split_brain":
                split.update(f.agents or (f"?{len(split)}",))
            else:
                add("defect" if f.category == "defect" else "incomplete", f.line())
        for v in vf.unexplained:
            add("incomplete", f"{vf.path}: verdict {v.name} is {v.result} but no finding names it")
        recoveries += [v for v in vf.verdicts if v.name == "recovery_time"]
    if lost:
        j.figures["lost_agents"] = len(lost)
        if len(lost) > policy.max_lost_agents:
            who = ", ".join(sorted(lost)[:5])
            add("defect", f"{len(lost)} lost agents (policy allows {policy.max_lost_agents}): {who}")
    if split:
        j.figures["split_brain"] = len(split)
        if len(split) > policy.max_split_brain:
            add("defect", f"{len(split)} agents in a split brain (policy allows {policy.max_split_brain})")
    _recovery_bounds(j, run, rules, recoveries, add)
    j.outcome = max(outcome, key=lambda o: _WORST[o]) if outcome else "pass"
    return j
