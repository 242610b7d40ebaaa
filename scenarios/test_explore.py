"""Random fault schedules (issue 11): faults drawn from a fixed seed over every fair-game target, at either
site or both, overlapping, with durations from well under the confirmation window to several times it,
plus logouts and logins, planned switches and calls; each judged against its expected outcome after
Jepsen's end (heal everything, settle, a final read of every PBX and CTI). And every schedule the nemesis
found failing, shrunk and kept as a regression case in scenarios/schedules/*.json, replayed at the same
offsets.

The suite's schedules span at most SPAN seconds (the shipped profile's 60 s is `hil explore`'s), so each
test takes well under a minute: the agents' reset, the span, the profile's settle, the final read."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import allure
import pytest

from harness import checks
from harness.nemesis import expect, generate, profile
from harness.nemesis.schedule import Schedule
from harness.nemesis.schedule import load as load_schedule
from harness.scenario import Scenario
from harness.scenario.explore import run_ops, schedule_checks

FEATURE = "random fault schedules"
# With the kept schedules, within the suite's time budget (seed 2: schedules/open/frozen-cti-stopped.json).
SEEDS = (1,)
SPAN = 15.0  # seconds: the suite's schedules, drawn from the shipped profile with this span
KEPT_DIR = Path(__file__).parent / "schedules"
KEPT = sorted(p.name for p in KEPT_DIR.glob("*.json"))


def suite_profile() -> profile.Profile:
    """The shipped profile with the suite's shorter span (every other field as shipped)."""
    return profile.parse_profile({"name": "suite", "limits": {"span": SPAN}}, "scenarios/test_explore.py")


def run_schedule(scenario: Scenario, sched: Schedule, prof: profile.Profile) -> None:
    """Attach the schedule, run it (every op at its offset, then the final heal), settle for the schedule's
    `settle`, take the final read, and judge: the standard checkers and the schedule's expected outcome."""
    allure.attach(sched.to_json(), name="schedule.json", attachment_type=allure.attachment_type.JSON)
    expectation = expect.expected_outcome(sched, scenario.lab.topology, prof).to_dict()
    scenario.settings = replace(scenario.settings, settle=sched.settle)
    run_ops(scenario, sched, expectation)
    with scenario.phase("final read"):
        scenario.finish()
    overall = scenario.conclude(schedule_checks(scenario, sched, extra=[checks.check_schedule_outcome]))
    assert overall.valid, scenario.failure_message()


# Each case: a seed of the suite's profile, or the name of a kept schedule file (ids seed-1, kept-<name>).
CASES = [pytest.param(seed, id=f"seed-{seed}") for seed in SEEDS] + [
    pytest.param(name, id=f"kept-{name.removesuffix('.json')}") for name in KEPT
]


@pytest.mark.explore
@pytest.mark.severity("critical")
@pytest.mark.parametrize("case", CASES)
def test_schedule(scenario: Scenario, case: int | str) -> None:
    """A schedule drawn from a fixed seed, or one the nemesis once found failing, shrunk and kept (replayed
    at the same offsets): every agent ends online once at a site it may be at, in its state from before;
    agents cut off longer than the window moved, agents cut off shorter stayed; nobody active at two sites
    at once; every fault healed and the lab as it began."""
    if isinstance(case, str):
        sched = load_schedule(KEPT_DIR / case, scenario.lab.topology)
        run_schedule(scenario, sched, profile.load_profile(None))
    else:
        prof = suite_profile()
        run_schedule(scenario, generate.generate(scenario.lab.topology, prof, case), prof)
