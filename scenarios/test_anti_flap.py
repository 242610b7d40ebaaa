"""Anti-flap (design step 8): a cut shorter than the client's secondary confirmation moves nobody."""

from __future__ import annotations

import pytest

from harness.scenario import Scenario

FEATURE = "anti-flap"
SITE = "sha"
BLIP = 0.3  # seconds: shorter than the confirmation window (confirm delay 1 s after 3 missed heartbeats)
WATCH = 6.0  # seconds watched after the blip: heartbeat misses (3 s) + confirmation (1 s) + margin

BLIPS = {"pbx_port": f"{SITE}-pbx1", "cti_port": f"{SITE}-cti1"}


@pytest.mark.unplanned
@pytest.mark.severity("critical")
@pytest.mark.parametrize("where", list(BLIPS))
def test_anti_flap_short_cut_moves_nobody(scenario: Scenario, where: str) -> None:
    """The port is shut for 300 ms (the fault heals itself): every agent stays registered and logged in at
    home through the blip and after it, as every snapshot of every PBX and CTI shows."""
    home = scenario.expect()
    with scenario.fault("port_down", BLIPS[where], duration=BLIP) as f:
        scenario.wait_healed(f, timeout=10.0)
    with scenario.phase("verify: nobody moved"):
        scenario.hold(home, f"every agent stays home after a {BLIP}s cut", WATCH)
    with scenario.phase("verify-revert"):
        scenario.finish()
    overall = scenario.conclude(scenario.standard_checks(expect="home", affected=list(home), recovery=False))
    assert overall.valid, scenario.failure_message()
