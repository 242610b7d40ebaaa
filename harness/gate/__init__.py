"""The release gate: from a run's Allure results to ship (0), do not ship (1) or could not judge (2).

A release manager gates a site rollout on this, so it is strict in one direction: it says "ship" only when
every scenario the policy requires passed as often as the policy asks, each with its verdict file and the
history it was computed from, within the policy's bounds. Anything it cannot read, any unknown verdict, any
missing or skipped required scenario, any lab fault and any failure it cannot categorise makes it "could not
judge" (2), never "ship"; a proven defect (a failed scenario whose category is a product defect, a defect
finding, a bound exceeded) makes it "do not ship" (1).

It judges by categories, never by message text: a failed run's category is the `hil.outcome` label the
pytest plugin put on it from the exception's type (`report.apply_outcome`), else the findings of its
verdict files, each of which carries its category and kind (`report.verdicts_payload`).

Modules: `policy` (gate.yaml, validated with pydantic, unknown keys refused), `results` (Allure result and
container files, the verdict files), `runs` (one run's outcome), `judge` (scenarios and the whole verdict),
`render` (table, gate.md, gate.json, JUnit XML), `inputs` (reading files with one-line reasons), `baseline`
(a kept run read as a summary; the regression rule against the policy's baseline). docs/gate.md
is the contract.
"""

from harness.gate.baseline import load_baseline, read_run, regressions, summarize, topology_of
from harness.gate.inputs import GateInputError, Problem, problem_line
from harness.gate.judge import (
    EXIT_NO_SHIP,
    EXIT_SHIP,
    EXIT_UNJUDGED,
    NO_SHIP,
    SHIP,
    UNJUDGED,
    GateReport,
    ScenarioJudgement,
    judge,
    run_gate,
)
from harness.gate.policy import DEFAULT_POLICY, Baseline, Policy, Recovery, Rule, load_policy, recovery_bound
from harness.gate.render import junit_xml, markdown, table, write_outputs
from harness.gate.results import (
    STATUSES,
    Attachment,
    TestRun,
    VerdictFile,
    read_results,
    read_verdicts,
    scenario_id,
)
from harness.gate.runs import Outcome, RunJudgement, judge_run

__all__ = [
    "DEFAULT_POLICY",
    "EXIT_NO_SHIP",
    "EXIT_SHIP",
    "EXIT_UNJUDGED",
    "NO_SHIP",
    "SHIP",
    "STATUSES",
    "UNJUDGED",
    "Attachment",
    "Baseline",
    "GateInputError",
    "GateReport",
    "Outcome",
    "Policy",
    "Problem",
    "Recovery",
    "Rule",
    "RunJudgement",
    "ScenarioJudgement",
    "TestRun",
    "VerdictFile",
    "judge",
    "judge_run",
    "junit_xml",
    "load_baseline",
    "load_policy",
    "markdown",
    "problem_line",
    "read_results",
    "read_run",
    "read_verdicts",
    "recovery_bound",
    "regressions",
    "run_gate",
    "scenario_id",
    "summarize",
    "table",
    "topology_of",
    "write_outputs",
]
