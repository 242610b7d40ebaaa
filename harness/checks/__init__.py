"""Checkers: pure functions from a history to a verdict.

Every checker has the shape `check_x(history, **params) -> Verdict`, reads nothing but the history (any
iterable of `Op` / `Obs`, e.g. a `History`) and its parameters, and answers `valid`, `invalid` or `unknown`.
`unknown` is an honest answer: when the history holds too little evidence to decide, a checker says so and
why, and never says `valid` (DESIGN.md, Jepsen model). `compose` folds verdicts: invalid beats unknown beats
valid. The observation and operation schemas the checkers read are in docs/history.md.

One module per checker; `verdict` (the answer and its folding), `evidence` (reading the history: roster,
faults, sites, phases) and `timeline` (registration and session tables, event by event) are shared.
A new checker goes in a module of its own here and is exported below.
"""

from harness.checks.blip import check_blip
from harness.checks.calls import check_no_lost_call
from harness.checks.capture_complete import CAPTURE_KINDS, check_capture_complete, depends_on_capture
from harness.checks.evidence import (
    ENDED_STATES,
    EXPECTATION,
    PHASE,
    RESTORABLE_STATES,
    fault_key,
    phase_time,
)
from harness.checks.expectations import check_expectations, expectation_outcome
from harness.checks.healed import check_faults_healed
from harness.checks.logins import check_logins_at
from harness.checks.moves import check_moves, final_sites, site_sequences
from harness.checks.outbound import CALL_DIAL, CALLEE_CALL, check_outbound_calls
from harness.checks.placement import check_placement_between
from harness.checks.recovery import check_recovery_time, percentile
from harness.checks.refusals import check_answered_on_wire, check_refused, wire_answers
from harness.checks.registration import check_single_registration
from harness.checks.schedule_outcome import check_schedule_outcome
from harness.checks.schedule_ran import check_schedule_ran
from harness.checks.split_brain import check_no_split_brain
from harness.checks.verdict import Checker, Result, Verdict, compose, renamed

__all__ = [
    "check_answered_on_wire",
    "wire_answers",
    "CALLEE_CALL",
    "CALL_DIAL",
    "check_outbound_calls",
    "CAPTURE_KINDS",
    "ENDED_STATES",
    "EXPECTATION",
    "PHASE",
    "RESTORABLE_STATES",
    "Checker",
    "Result",
    "Verdict",
    "check_blip",
    "check_capture_complete",
    "check_expectations",
    "check_faults_healed",
    "check_logins_at",
    "check_moves",
    "check_no_lost_call",
    "check_no_split_brain",
    "check_placement_between",
    "check_recovery_time",
    "check_refused",
    "check_schedule_outcome",
    "check_schedule_ran",
    "check_single_registration",
    "compose",
    "depends_on_capture",
    "expectation_outcome",
    "fault_key",
    "final_sites",
    "percentile",
    "phase_time",
    "site_sequences",
    "renamed",
]
