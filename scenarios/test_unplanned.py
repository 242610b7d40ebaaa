"""Unplanned failures (design steps 7-8): the client watches Client-CTI-PBX-phone, confirms a break, and
fails over to the other site by itself. Judged from the PBXs, the CTIs and the capture, never the stack."""

from __future__ import annotations

import pytest

from harness.scenario import Scenario, agents_where, uplink

FEATURE = "unplanned failover"
SITE, REMOTE = "sha", "ntg"

FAILOVERS = {
    "pbx_killed": {"kind": "service_kill", "target": f"{SITE}-pbx1", "service": "kamailio"},
    "pbx_port_shut": {"kind": "port_down", "target": f"{SITE}-pbx1"},
    "cti_killed": {"kind": "service_kill", "target": f"{SITE}-cti1", "service": "hil-cti"},
    "cti_port_shut": {"kind": "port_down", "target": f"{SITE}-cti1"},
}


@pytest.mark.unplanned
@pytest.mark.severity("blocker")
@pytest.mark.parametrize("case", list(FAILOVERS))
def test_failover(scenario: Scenario, case: str) -> None:
    """Every agent of the failed site ends registered and logged in once at the other site, in its earlier
    state, within the bound; no agent is ever active at both; the fault is healed and the lab is as before."""
    with scenario.fault(**FAILOVERS[case]):
        with scenario.phase("verify"):
            scenario.wait_placement(
                scenario.expect(moved_from=SITE, to=REMOTE), f"agents of {SITE} at {REMOTE}"
            )
    with scenario.phase("verify-revert"):
        scenario.finish()
    overall = scenario.conclude(scenario.standard_checks(expect="surviving"))
    assert overall.valid, scenario.failure_message()


@pytest.mark.unplanned
@pytest.mark.severity("critical")
def test_ul_down_online_agents_stay_new_logins_go_remote(scenario: Scenario) -> None:
    """The local UL goes down: agents already online keep working where they are (nothing in their chain
    broke); agents that log in afresh (the site's swarm restarted) go to the remote UL."""
    agents = agents_where(scenario.lab, home=SITE)
    with scenario.fault("service_stop", f"{SITE}-ul1", service="hil-login"):
        with scenario.phase("verify: online agents stay"):
            scenario.hold(scenario.expect(), "online agents stay home while the UL is down", 6.0)
        with scenario.phase("verify: new logins go remote"):
            scenario.swarm("restart", [SITE])
            scenario.wait_placement(scenario.expect(moved_from=SITE, to=REMOTE), f"new logins at {REMOTE}")
    with scenario.phase("verify-revert"):
        scenario.finish()
    overall = scenario.conclude(scenario.standard_checks(expect="surviving", affected=agents))
    assert overall.valid, scenario.failure_message()


@pytest.mark.unplanned
@pytest.mark.severity("critical")
def test_site_isolated(scenario: Scenario) -> None:
    """The site's uplink is shut: each site keeps serving its own agents (every agent's chain is local), so
    nobody moves and nobody ends up active at both sites; when the uplink returns the ULs reconcile."""
    with scenario.fault("port_down", uplink(scenario.lab, SITE)):
        with scenario.phase("verify"):
            scenario.hold(scenario.expect(), "every agent stays home while the sites are apart", 6.0)
    with scenario.phase("verify-revert"):
        scenario.finish()
    overall = scenario.conclude(
        scenario.standard_checks(expect="home", affected=list(scenario.expect()), recovery=False)
    )
    assert overall.valid, scenario.failure_message()
