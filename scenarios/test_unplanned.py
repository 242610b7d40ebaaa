"""Unplanned failures (design steps 7-8): the client watches Client-CTI-PBX-phone, confirms a break, and
fails over to the other site by itself. Judged from the PBXs, the CTIs and the capture, never the stack.

Every failure is made at each site in turn (issue 11): sha (Cisco IOS switch, Yealink phone) fails over to
ntg, and ntg (Huawei VRP switch, Poly phone) to sha, so neither site's switch dialect, address plan or
PBX/CTI pair is only ever the survivor.
"""

from __future__ import annotations

from typing import Any

import pytest

from harness.scenario import Scenario, agents_where, uplink

FEATURE = "unplanned failover"
OTHER = {"sha": "ntg", "ntg": "sha"}  # the failed site -> the surviving one
SITES = list(OTHER)

FAILOVERS = {  # case -> the fault, at the failed site (its devices are named <site>-<role>1)
    "pbx_killed": {"kind": "service_kill", "role": "pbx", "service": "kamailio"},
    "pbx_port_shut": {"kind": "port_down", "role": "pbx"},
    "cti_killed": {"kind": "service_kill", "role": "cti", "service": "hil-cti"},
    "cti_port_shut": {"kind": "port_down", "role": "cti"},
}


def _fault(case: str, site: str) -> dict[str, Any]:
    f = dict(FAILOVERS[case])
    f["target"] = f"{site}-{f.pop('role')}1"
    return f


@pytest.mark.unplanned
@pytest.mark.severity("blocker")
@pytest.mark.parametrize("case", list(FAILOVERS))
@pytest.mark.parametrize("site", SITES)
def test_failover(scenario: Scenario, site: str, case: str) -> None:
    """Every agent of the failed site ends registered and logged in once at the other site, in its earlier
    state, within the bound; no agent is ever active at both; the fault is healed and the lab is as before."""
    with scenario.fault(**_fault(case, site)):
        with scenario.phase("verify"):
            scenario.wait_placement(
                scenario.expect(moved_from=site, to=OTHER[site]), f"agents of {site} at {OTHER[site]}"
            )
    with scenario.phase("verify-revert"):
        scenario.finish()
    overall = scenario.conclude(scenario.standard_checks(expect="surviving"))
    assert overall.valid, scenario.failure_message()


@pytest.mark.unplanned
@pytest.mark.severity("critical")
@pytest.mark.parametrize("site", SITES)
def test_ul_down_online_agents_stay_new_logins_go_remote(scenario: Scenario, site: str) -> None:
    """The local UL goes down: agents already online keep working where they are (nothing in their chain
    broke); agents that log in afresh (the site's swarm restarted) go to the remote UL."""
    agents = agents_where(scenario.lab, home=site)
    remote = OTHER[site]
    with scenario.fault("service_stop", f"{site}-ul1", service="hil-login"):
        with scenario.phase("verify: online agents stay"):
            scenario.hold(scenario.expect(), "online agents stay home while the UL is down", 6.0)
        with scenario.phase("verify: new logins go remote"):
            scenario.swarm("restart", [site])
            scenario.wait_placement(scenario.expect(moved_from=site, to=remote), f"new logins at {remote}")
    with scenario.phase("verify-revert"):
        scenario.finish()
    overall = scenario.conclude(scenario.standard_checks(expect="surviving", affected=agents))
    assert overall.valid, scenario.failure_message()


@pytest.mark.unplanned
@pytest.mark.severity("critical")
@pytest.mark.parametrize("site", SITES)
def test_site_isolated(scenario: Scenario, site: str) -> None:
    """The site's uplink is shut: each site keeps serving its own agents (every agent's chain is local), so
    nobody moves and nobody ends up active at both sites; when the uplink returns the ULs reconcile."""
    with scenario.fault("port_down", uplink(scenario.lab, site)):
        with scenario.phase("verify"):
            scenario.hold(scenario.expect(), "every agent stays home while the sites are apart", 6.0)
    with scenario.phase("verify-revert"):
        scenario.finish()
    overall = scenario.conclude(
        scenario.standard_checks(expect="home", affected=list(scenario.expect()), recovery=False)
    )
    assert overall.valid, scenario.failure_message()
