"""Service restored: after a failover, a customer's call reaches an agent through the surviving PBX.

The caller (harness.drivers.caller, pyVoIP, on the surviving site's caller host) registers at the surviving
PBX and calls a moved agent's extension; the call must be answered. Every call placed is recorded in the
history (``call.place``) and judged by ``check_no_lost_call``."""

from __future__ import annotations

import pytest

from harness.scenario import Scenario, agents_where, place_call

FEATURE = "service restored"
SITE, REMOTE = "sha", "ntg"


@pytest.mark.unplanned
@pytest.mark.requires("host:caller")
@pytest.mark.severity("blocker")
def test_service_restored_call_reaches_agent(scenario: Scenario) -> None:
    moved = agents_where(scenario.lab, home=SITE)
    callee = next(a for a in scenario.lab.topology.agents() if a.id == moved[0])
    with scenario.fault("service_kill", f"{SITE}-pbx1", service="kamailio"):
        with scenario.phase("verify: failed over"):
            scenario.wait_placement(
                scenario.expect(moved_from=SITE, to=REMOTE), f"agents of {SITE} at {REMOTE}"
            )
        with scenario.phase(f"verify: a call to {callee.extension} through {REMOTE}-pbx1"):
            place_call(scenario, f"{REMOTE}-caller1", f"{REMOTE}-pbx1", callee.extension)
    with scenario.phase("verify-revert"):
        scenario.finish()
    overall = scenario.conclude(scenario.standard_checks(expect="surviving", calls=True))
    assert overall.valid, scenario.failure_message()
