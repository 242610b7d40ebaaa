"""Login (design steps 1-6): local; local UL down -> remote; CTI registration refused -> remote; phone
linkage fails -> remote.

Each scenario stops the site's swarm first (its agents log out cleanly, on the wire), makes the fault, then
starts the swarm again: the fresh logins are what is judged, from the PBXs, the CTIs and the capture.
"""

from __future__ import annotations

from typing import Any

import pytest

from harness.checks import check_logins_at
from harness.scenario import Scenario, agents_where

FEATURE = "login"
SITE, REMOTE = "sha", "ntg"


def _fresh_logins(scenario: Scenario, fault: dict[str, Any] | None) -> None:
    agents = agents_where(scenario.lab, home=SITE)
    where = SITE if fault is None else REMOTE
    expected = scenario.expect() if fault is None else scenario.expect(moved_from=SITE, to=REMOTE)
    with scenario.phase("apply: swarm stopped"):
        scenario.swarm("stop", [SITE])
    if fault is None:
        with scenario.phase("apply: fresh logins"):
            scenario.swarm("start", [SITE])
        with scenario.phase("verify"):
            scenario.wait_placement(expected, f"agents of {SITE} logged in at {where}")
    else:
        with scenario.fault(**fault):
            with scenario.phase("apply: fresh logins"):
                scenario.swarm("start", [SITE])
            with scenario.phase("verify"):
                scenario.wait_placement(expected, f"agents of {SITE} logged in at {where}")
    with scenario.phase("verify-revert"):
        scenario.finish()
    if fault is None:
        verdicts = scenario.standard_checks(expect="home", affected=agents, recovery=False)
    else:
        verdicts = scenario.standard_checks(expect="surviving")
    if not scenario.dry_run:
        verdicts.append(check_logins_at(scenario.events(), agents, where, after_phase="apply: swarm stopped"))
    overall = scenario.conclude(verdicts)
    assert overall.valid, scenario.failure_message()


@pytest.mark.severity("blocker")
def test_login_local(scenario: Scenario) -> None:
    """With everything up, every agent logs in at its own site."""
    _fresh_logins(scenario, None)


@pytest.mark.severity("critical")
def test_login_local_ul_down_goes_remote(scenario: Scenario) -> None:
    """Step 2: the local UL does not answer, so the client logs in at the remote UL directly."""
    _fresh_logins(scenario, {"kind": "service_stop", "target": f"{SITE}-ul1", "service": "hil-login"})


@pytest.mark.severity("critical")
def test_login_cti_refused_goes_remote(scenario: Scenario) -> None:
    """Step 6: the local CTI refuses the registration (its port is closed), so the client logs in again at
    the remote UL."""
    _fresh_logins(scenario, {"kind": "service_stop", "target": f"{SITE}-cti1", "service": "hil-cti"})


@pytest.mark.severity("critical")
def test_login_phone_linkage_fails_goes_remote(scenario: Scenario) -> None:
    """Step 6: the phone cannot register at the local PBX (agents host and PBX partitioned; the CTI still
    reaches its PBX), so phone linkage fails and the client logs in again at the remote UL."""
    _fresh_logins(scenario, {"kind": "partition", "target": f"{SITE}-agents1", "b": f"{SITE}-pbx1"})
