"""The nemesis: random fault schedules drawn from a seed and a profile, their expected outcome, and the
shrinking of a failing one to a small case a person can read (DESIGN.md, after Jepsen and FoundationDB).

A schedule is data (`schedule.Schedule`, JSON `hil-schedule/1`); running one on a lab is the scenario
runner's job (harness.scenario), judging it the checkers' (harness.checks).
"""

from harness.nemesis.expect import Expectation, expected_outcome
from harness.nemesis.profile import Profile, ProfileError, load_profile
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
from harness.nemesis.shrink import ShrinkResult

# `generate` and `shrink` are left as modules here (harness.nemesis.generate.generate, .shrink.shrink):
# a function of the same name bound on the package would hide the module from `from harness.nemesis import
# generate`.

__all__ = [
    "FAULT_KINDS",
    "KINDS",
    "SCHEMA",
    "STACK_KINDS",
    "Expectation",
    "Op",
    "Profile",
    "ProfileError",
    "Schedule",
    "ScheduleError",
    "ShrinkResult",
    "expected_outcome",
    "load",
    "load_profile",
    "parse",
]
