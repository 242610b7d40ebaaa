"""Split brain: the failed site comes back, and every agent is active at exactly one site.

The site's servers (PBX, CTI, UL) are cut off at their switch ports, so they keep running with what they
held: the agents fail over, and when the ports come back the stale site must reconcile with its peer and
not take its old sessions back. No automatic failback: the agents stay where they went."""

from __future__ import annotations

import pytest

from harness.scenario import Scenario

FEATURE = "split brain"
SITE, REMOTE = "sha", "ntg"


@pytest.mark.unplanned
@pytest.mark.severity("blocker")
def test_split_brain_failed_site_comes_back(scenario: Scenario) -> None:
    moved = scenario.expect(moved_from=SITE, to=REMOTE)
    with scenario.fault("port_down", f"{SITE}-pbx1"), scenario.fault("port_down", f"{SITE}-cti1"):
        with scenario.fault("port_down", f"{SITE}-ul1"):
            with scenario.phase("verify: failed over"):
                scenario.wait_placement(moved, f"agents of {SITE} at {REMOTE}")
    with scenario.phase("verify: the site is back, every agent at exactly one site"):
        # the returning PBX still holds the bindings the phones could not remove while it was cut off;
        # the site's CTI removes them once it learns of the fence (no_split_brain covers sessions throughout)
        scenario.converge(moved, f"the stale bindings at {SITE} removed, every agent once at {REMOTE}", 10.0)
        scenario.hold(moved, f"nobody returns to {SITE} or stays doubled", 6.0)
    with scenario.phase("verify-revert"):
        scenario.finish()
    overall = scenario.conclude(scenario.standard_checks(expect="surviving"))
    assert overall.valid, scenario.failure_message()
