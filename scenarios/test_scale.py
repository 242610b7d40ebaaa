"""Scale: 1,000 online agents, a PBX fails, every agent of its site recovers at the other within the bound.

Runs in its own pytest session on topologies/virtual-1k.yaml (``-m scale --topology ...``); on a smaller
lab it is skipped with the reason."""

from __future__ import annotations

import pytest

from harness.scenario import Scenario

FEATURE = "scale"
SITE, REMOTE = "sha", "ntg"


@pytest.mark.scale
@pytest.mark.unplanned
@pytest.mark.severity("critical")
def test_scale_pbx_killed(scenario: Scenario) -> None:
    with scenario.fault("service_kill", f"{SITE}-pbx1", service="kamailio"):
        with scenario.phase("verify"):
            scenario.wait_placement(
                scenario.expect(moved_from=SITE, to=REMOTE), f"agents of {SITE} at {REMOTE}"
            )
    with scenario.phase("verify-revert"):
        scenario.finish()
    overall = scenario.conclude(scenario.standard_checks(expect="surviving"))
    assert overall.valid, scenario.failure_message()
