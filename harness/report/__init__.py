"""What a run leaves for people and for the release gate: findings and their categories, Allure attachments,
labels, environment and categories, and the HTML report.

Scenarios call (docs/gate.md has the contract):

- `failure_message(verdicts)` for their asserts: one line per finding, each starting with a prefix of
  `findings` (product defect, lab fault, evidence incomplete), which the report's categories match.
- `attach_run(history, verdicts, ...)` once per scenario, before asserting (`attachments`): the verdict file
  (`verdictfile`: `hil-verdicts.json`, every finding with its machine-readable category and kind, what
  `hil gate` reads), the history, the pcaps, a ladder diagram, a timeline, a histogram, device logs and the
  topology.
- `apply_labels(...)` for epic / feature / story / severity / site (`labels`).

The pytest plugin calls `apply_outcome(exc, verdicts)` when a test phase raises (`outcome`): the run's
category by the exception's type, as the Allure labels `hil.outcome` / `hil.kind`. The session writes
`environment.properties` and `categories.json` once (`environment`, `categories`), and `hil report` runs
`build_report` (`build`, Allure 3).

Everything except the `attach_*`/`apply_*` calls is pure or writes only the files it is given, so it runs
from a plain script too; without an Allure-enabled pytest session the attach and label calls do nothing.
"""

from harness.report.attachments import (
    HISTOGRAM_NAME,
    KEEP_RAW_ENV,
    LADDER_NAME,
    PCAP_MIME,
    TIMELINE_NAME,
    TOPOLOGY_NAME,
    attach_run,
    keep_raw_pcaps,
    publish_pcap,
)
from harness.report.build import REPO_ROOT, ReportError, ReportInputError, allure_cli, build_report
from harness.report.categories import CATEGORIES, write_categories
from harness.report.environment import environment_facts, properties_text, write_environment
from harness.report.findings import (
    CATEGORY_RANK,
    DEFECT,
    DEFECT_DOUBLE_REGISTRATION,
    DEFECT_LOST_AGENT,
    DEFECT_LOST_CALL,
    DEFECT_OTHER,
    DEFECT_OVER_BOUND,
    DEFECT_SPLIT_BRAIN,
    DEFECT_WRONG_SITE,
    EVIDENCE_INCOMPLETE,
    INCOMPLETE_UNKNOWN,
    KINDS,
    LAB_CAPTURE_DROPS,
    LAB_DEVICE_UNREACHABLE,
    LAB_FAULT,
    LAB_FAULT_NOT_HEALED,
    Category,
    Finding,
    as_verdict,
    failure_message,
    findings,
    lab_fault_message,
    leaves,
    worst,
)
from harness.report.labels import SEVERITIES, apply_labels, labels
from harness.report.outcome import (
    EXCEPTION_KINDS,
    KIND_LABEL,
    OUTCOME_LABEL,
    OUTCOMES,
    RunOutcome,
    apply_outcome,
    outcome_labels,
    run_outcome,
)
from harness.report.verdictfile import (
    HISTORY_NAME,
    VERDICTS_NAME,
    VERDICTS_SCHEMA,
    attach_verdicts,
    verdicts_payload,
)

__all__ = [
    "KEEP_RAW_ENV",
    "keep_raw_pcaps",
    "publish_pcap",
    "CATEGORIES",
    "CATEGORY_RANK",
    "DEFECT",
    "DEFECT_DOUBLE_REGISTRATION",
    "DEFECT_LOST_AGENT",
    "DEFECT_LOST_CALL",
    "DEFECT_OTHER",
    "DEFECT_OVER_BOUND",
    "DEFECT_SPLIT_BRAIN",
    "DEFECT_WRONG_SITE",
    "EVIDENCE_INCOMPLETE",
    "EXCEPTION_KINDS",
    "HISTOGRAM_NAME",
    "HISTORY_NAME",
    "INCOMPLETE_UNKNOWN",
    "KINDS",
    "KIND_LABEL",
    "LAB_CAPTURE_DROPS",
    "LAB_DEVICE_UNREACHABLE",
    "LAB_FAULT",
    "LAB_FAULT_NOT_HEALED",
    "LADDER_NAME",
    "OUTCOMES",
    "OUTCOME_LABEL",
    "PCAP_MIME",
    "REPO_ROOT",
    "SEVERITIES",
    "TIMELINE_NAME",
    "TOPOLOGY_NAME",
    "VERDICTS_NAME",
    "VERDICTS_SCHEMA",
    "Category",
    "Finding",
    "ReportError",
    "ReportInputError",
    "RunOutcome",
    "allure_cli",
    "apply_labels",
    "apply_outcome",
    "as_verdict",
    "attach_run",
    "attach_verdicts",
    "build_report",
    "environment_facts",
    "failure_message",
    "findings",
    "lab_fault_message",
    "labels",
    "leaves",
    "outcome_labels",
    "properties_text",
    "run_outcome",
    "verdicts_payload",
    "worst",
    "write_categories",
    "write_environment",
]
