"""Outbound calling, agent-initiated (issue 14): an agent dials a number during a planned switch of its
region; the others move at once, the agent finishes its call where it is and then moves, as an agent on an
inbound call does. The call is judged from the capture at the agent's PBX (its phone's INVITE and what the
PBX answered) against the record of the callee that got it (stack/callee.py, on the caller host), by
harness/checks/outbound.py.

The dial is the agent's own action at its desk: the swarm's signed admin API (``POST /agents/<id>/dial``),
recorded as a ``call.dial`` operation whose completion is what the agent's CTI told it (``call_progress``).
"""

from __future__ import annotations

import time

import pytest

from harness import checks
from harness.checks import Verdict, renamed
from harness.checks.outbound import check_outbound_calls
from harness.scenario import Scenario, agents_where, planned_switch, switch_back
from harness.scenario.outbound import callee_records, dial, wait_call_end

FEATURE = "outbound calling"
SITE, REMOTE = "sha", "ntg"
HOLD_S = (
    6  # the callee hangs up after this long: numbers ending in 77HH are held HH seconds (stack/callee.py)
)
NUMBER = f"021555577{HOLD_S:02d}"[-11:]


@pytest.mark.outbound
@pytest.mark.planned_switch
@pytest.mark.requires("host:caller")
@pytest.mark.severity("critical")
def test_agent_call_during_planned_switch(scenario: Scenario) -> None:
    """An agent on a call it dialled stays through a planned switch of its region until the call ends,
    then moves; the call is on the wire at its PBX as the agent was told, and at the callee."""
    scope, value = "region", "north"
    moved = agents_where(scenario.lab, home=SITE, **{scope: value})
    agent = moved[0]
    forward = scenario.expect({a: REMOTE for a in moved})
    during_call = scenario.expect({a: REMOTE for a in moved if a != agent})
    since = time.time() - 1
    proc, ref, states = "", None, []
    with scenario.phase(f"apply: {agent} dials {NUMBER}"):
        if not scenario.dry_run:
            proc, ref = dial(scenario, agent, NUMBER)
            assert ref is not None, "the agent's dial was refused"
        scenario.wait_state(agent, SITE, "on_call")
    with planned_switch(scenario, scope, value, REMOTE, moved):
        with scenario.phase("verify: the others move, the agent on its call stays"):
            scenario.wait_placement(during_call, "all but the agent on the call moved", states=None)
            scenario.hold(during_call, "the agent on the call stays during the call", 1.0)
        with scenario.phase("verify: the call ends, the agent moves"):
            if ref is not None:
                states = wait_call_end(scenario, agent, proc, ref, HOLD_S + 15)
                callee_records(scenario, since)  # written when the callee hung up, before the call ended
            scenario.wait_placement(forward, f"{agent} moved after its call")
    with switch_back(scenario, moved):
        with scenario.phase("verify: switched back"):
            scenario.wait_placement(scenario.expect(), "switched agents back home")
    with scenario.phase("verify-revert"):
        scenario.finish()
    verdicts = []
    if not scenario.dry_run:
        answered = "answered" in states and states[-1:] == ["ended"]
        told = Verdict(
            "outbound_call_answered", "valid" if answered else "invalid", f"the agent was told {states}"
        )
        ev = scenario.events()
        rt = checks.depends_on_capture(checks.check_recovery_time)
        bound = scenario.settings.bound
        verdicts = [
            renamed(rt(ev, bound=bound, expect=dict.fromkeys(moved, REMOTE), affected=moved, fault="switch"),
                    "switch_time"),
            check_outbound_calls(ev),
            told,
        ]  # fmt: skip
        verdicts += scenario.standard_checks(expect="home", affected=list(scenario.expect()), recovery=False)
    overall = scenario.conclude(verdicts)
    assert overall.valid, scenario.failure_message()
