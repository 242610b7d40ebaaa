"""Planned switch of online agents (design step 4, issue 3): a rule by business system, city region or skill
group moves exactly the targeted online agents to the other site; the switch back returns them."""

from __future__ import annotations

import threading

import pytest

from harness import checks
from harness.checks import check_placement_between, renamed
from harness.scenario import Scenario, agents_where, place_call, planned_switch, switch_back

FEATURE = "planned switch"
SITE, REMOTE = "sha", "ntg"

RULES = {  # scope, value, the agent attribute it selects by
    "system": ("system", "air"),
    "region": ("region", "north"),
    "skill_group": ("skill_group", "vip"),
}


@pytest.mark.planned_switch
@pytest.mark.severity("critical")
@pytest.mark.parametrize("by", list(RULES))
def test_planned_switch(scenario: Scenario, by: str) -> None:
    """Only the targeted online agents of the site move; everyone else stays where they are. Then the
    switch back returns the moved agents home."""
    scope, value = RULES[by]
    moved = agents_where(scenario.lab, home=SITE, **{scope: value})
    forward = scenario.expect({a: REMOTE for a in moved})
    with planned_switch(scenario, scope, value, REMOTE, moved):
        with scenario.phase("verify: only the targeted agents moved"):
            scenario.wait_placement(forward, f"{len(moved)} agents with {scope}={value} at {REMOTE}")
            scenario.hold(forward, "nobody else moves", 1.0)
    with switch_back(scenario, moved):
        with scenario.phase("verify: switched back"):
            scenario.wait_placement(scenario.expect(), "switched agents back home")
    with scenario.phase("verify-revert"):
        scenario.finish()
    verdicts = []
    if not scenario.dry_run:
        ev = scenario.events()
        everyone = list(scenario.expect())
        rt = checks.depends_on_capture(checks.check_recovery_time)
        bound = scenario.settings.bound
        verdicts = [
            check_placement_between(ev, "switch", "switch-back", expect=forward,
                                    name="placement_after_switch"),
            renamed(rt(ev, bound=bound, expect=dict.fromkeys(moved, REMOTE), affected=moved, fault="switch"),
                    "switch_time"),
            renamed(rt(ev, bound=bound, expect="home", affected=moved, fault="switch-back"),
                    "switch_back_time"),
        ]  # fmt: skip
        verdicts += scenario.standard_checks(expect="home", affected=everyone, recovery=False)
    overall = scenario.conclude(verdicts)
    assert overall.valid, scenario.failure_message()


@pytest.mark.planned_switch
@pytest.mark.requires("host:caller")
@pytest.mark.severity("critical")
def test_planned_switch_agent_on_call_moves_when_call_ends(scenario: Scenario) -> None:
    """An agent on a call when the switch is ordered finishes the call where it is, then moves."""
    scope, value = "region", "north"
    moved = agents_where(scenario.lab, home=SITE, **{scope: value})
    callee = moved[0]
    ext = next(a.extension for a in scenario.lab.topology.agents() if a.id == callee)
    forward = scenario.expect({a: REMOTE for a in moved})
    during_call = scenario.expect({a: REMOTE for a in moved if a != callee})
    call = threading.Thread(
        target=place_call, args=(scenario, f"{SITE}-caller1", f"{SITE}-pbx1", ext), kwargs={"hold": 8.0}
    )
    with scenario.phase(f"apply: {callee} takes a call"):
        call.start()
        scenario.wait_state(callee, SITE, "on_call")
    try:
        with planned_switch(scenario, scope, value, REMOTE, moved):
            with scenario.phase("verify: the others move, the agent on the call stays"):
                scenario.wait_placement(during_call, "all but the agent on the call moved", states=None)
                scenario.hold(during_call, "the agent on the call stays during the call", 1.0)
            with scenario.phase("verify: the call ends, the agent moves"):
                call.join()
                scenario.wait_placement(forward, f"{callee} moved after the call")
    finally:
        call.join()
    with switch_back(scenario, moved):
        with scenario.phase("verify: switched back"):
            scenario.wait_placement(scenario.expect(), "switched agents back home")
    with scenario.phase("verify-revert"):
        scenario.finish()
    verdicts = []
    if not scenario.dry_run:
        ev = scenario.events()
        rt = checks.depends_on_capture(checks.check_recovery_time)
        bound = scenario.settings.bound
        verdicts = [
            renamed(rt(ev, bound=bound, expect=dict.fromkeys(moved, REMOTE), affected=moved, fault="switch"),
                    "switch_time"),
            renamed(rt(ev, bound=bound, expect="home", affected=moved, fault="switch-back"),
                    "switch_back_time"),
        ]  # fmt: skip
        verdicts += scenario.standard_checks(
            expect="home", affected=list(scenario.expect()), recovery=False, calls=True
        )
    overall = scenario.conclude(verdicts)
    assert overall.valid, scenario.failure_message()
