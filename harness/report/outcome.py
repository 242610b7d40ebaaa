"""The category of a whole run, from the exception that ended it and its verdicts, carried as Allure labels.

The release gate must tell "do not ship" from "could not judge" without reading assert text. A run that
judged its verdicts carries their findings in its verdict file; a run that ended on an exception carries the
category of that exception as the labels `hil.outcome` (`defect`, `lab`, `incomplete`, `pass`) and
`hil.kind` (one per kind: `device_unreachable`, `assertion`, `lost_agent`, ...). The pytest plugin puts
them on a test when a phase of it raises (`apply_outcome(exc, verdicts)`); a plain script can do the same.

An exception's category comes from its type, never its message:

- a lab type anywhere in its chain (`raise ... from`, or raised while handling one, as
  `pytest.fail(lab_fault_message(e))` in an `except DeviceUnreachable` block is): `lab`;
- a failed check (`AssertionError`, `pytest.fail`): the worst category of the run's findings, else `defect`
  of kind `assertion` (a scenario's own assert about the product);
- an evidence type (the history or a capture could not be read): `incomplete`;
- anything else is a harness error: `incomplete`, never a pass.

Types are matched by class name along the MRO, so this module need not import the virtual lab (which the
harness must not) nor every layer that defines one. A class may also state its own category with the class
attributes `hil_category` and `hil_kind`.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import allure

from harness.checks import Verdict
from harness.report.findings import CATEGORY_RANK, findings, worst

__all__ = [
    "EXCEPTION_KINDS",
    "KIND_LABEL",
    "OUTCOME_LABEL",
    "OUTCOMES",
    "RunOutcome",
    "apply_outcome",
    "outcome_labels",
    "run_outcome",
]

OUTCOME_LABEL = "hil.outcome"
KIND_LABEL = "hil.kind"
Outcome = Literal["defect", "lab", "incomplete", "pass"]
OUTCOMES: tuple[str, ...] = (*CATEGORY_RANK, "pass")

# exception class name -> (category, kind); subclasses inherit through the MRO
EXCEPTION_KINDS: dict[str, tuple[Outcome, str]] = {
    "DeviceUnreachable": ("lab", "device_unreachable"),
    "DeviceError": ("lab", "device_error"),
    "RefusedBySafety": ("lab", "refused_by_safety"),
    "CaptureError": ("lab", "capture_failed"),
    "ObserveError": ("lab", "device_unanswered"),
    "LabError": ("lab", "lab_error"),
    "ServiceError": ("lab", "lab_service"),
    "TopologyError": ("lab", "topology"),
    "SecretMissing": ("lab", "secret_missing"),
    "HistoryError": ("incomplete", "history_unreadable"),
    "DecodeError": ("incomplete", "capture_unreadable"),
}


@dataclass(frozen=True)
class RunOutcome:
    """A run's category and the kinds behind it; `cause` names the exception type, if one ended the run."""

    category: Outcome
    kinds: tuple[str, ...] = ()
    cause: str = ""


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """The exception, then what it was raised from or while handling, and so on (each once)."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        yield e
        e = e.__cause__ or e.__context__


def _declared(e: BaseException) -> tuple[Outcome, str] | None:
    cat, kind = getattr(e, "hil_category", None), getattr(e, "hil_kind", None)
    if cat in OUTCOMES and isinstance(kind, str):
        return cat, kind
    for cls in type(e).__mro__:
        if cls.__name__ in EXCEPTION_KINDS:
            return EXCEPTION_KINDS[cls.__name__]
    return None


def _pytest_outcome(exc: BaseException, name: str) -> bool:
    """Whether `exc` is pytest's skip / xfail / fail exception (pytest is loaded if it raised one)."""
    pytest = sys.modules.get("pytest")
    return pytest is not None and isinstance(exc, getattr(pytest, name).Exception)


def _from_findings(verdicts: Iterable[Verdict | Mapping[str, Any]] | None) -> RunOutcome | None:
    fs = findings(list(verdicts)) if verdicts else []
    cat = worst(fs)
    if cat is None:
        return None
    return RunOutcome(cat, tuple(dict.fromkeys(f.kind for f in fs if f.category == cat)))


def run_outcome(
    exc: BaseException | None, verdicts: Iterable[Verdict | Mapping[str, Any]] | None = None
) -> RunOutcome | None:
    """The run's category (see the module docstring); None for a skip, which has none."""
    if exc is None:
        return _from_findings(verdicts) or RunOutcome("pass")
    if _pytest_outcome(exc, "skip") or _pytest_outcome(exc, "xfail"):
        return None
    chain = list(_chain(exc))
    for e in chain:
        d = _declared(e)
        if d is not None and d[0] == "lab":
            return RunOutcome("lab", (d[1],), type(e).__name__)
    cause = type(exc).__name__
    if isinstance(exc, AssertionError) or _pytest_outcome(exc, "fail"):
        judged = _from_findings(verdicts)
        if judged is not None:
            return RunOutcome(judged.category, judged.kinds, cause)
        return RunOutcome("defect", ("assertion",), cause)
    for e in chain:
        d = _declared(e)
        if d is not None:
            return RunOutcome(d[0], (d[1],), type(e).__name__)
    return RunOutcome("incomplete", ("harness_error",), cause)


def outcome_labels(outcome: RunOutcome) -> list[tuple[str, str]]:
    """The (name, value) Allure labels that carry a run's outcome to the gate."""
    return [(OUTCOME_LABEL, outcome.category), *((KIND_LABEL, k) for k in outcome.kinds)]


def apply_outcome(
    exc: BaseException | None, verdicts: Iterable[Verdict | Mapping[str, Any]] | None = None
) -> RunOutcome | None:
    """Put the run's outcome labels on the running Allure test (nothing without an Allure session).

    Call it when a phase of a test raised (the pytest plugin's `pytest_runtest_makereport`), with the
    scenario's verdicts if it judged any; returns the outcome (None for a skip: no labels).
    """
    outcome = run_outcome(exc, verdicts)
    if outcome is not None:
        for name, value in outcome_labels(outcome):
            allure.dynamic.label(name, value)
    return outcome
