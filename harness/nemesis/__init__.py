"""The nemesis: random fault schedules drawn from a seed and a profile, their expected outcome, and the
shrinking of a failing one to a small case a person can read (DESIGN.md, after Jepsen and FoundationDB).

A schedule is data (`schedule.Schedule`, JSON `hil-schedule/1`); running one on a lab is the scenario
runner's job (harness.scenario), judging it the checkers' (harness.checks).
"""

from harness.nemesis.schedule import (
    FAULT_KINDS,
    KINDS,
    SCHEMA,
    STACK_KINDS,
    Op,
    Schedule,
    ScheduleError,
    load,
    parse,
)

__all__ = [
    "FAULT_KINDS",
    "KINDS",
    "SCHEMA",
    "STACK_KINDS",
    "Op",
    "Schedule",
    "ScheduleError",
    "load",
    "parse",
]
