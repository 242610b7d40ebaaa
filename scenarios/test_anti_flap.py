"""Anti-flap (design step 8): a break shorter than the client's confirmation window moves nobody, and one
longer than it moves everybody. Judged from the wire, not from what the fault's command meant.

Why measured and not commanded: a fault's duration is the harness's intention. A port shut for "300 ms" is
a switch CLI round trip, a verification and another round trip long, about a second on the wire, which is
as long as the window itself. So every blip here is measured from the capture (harness.checks.check_blip):
the faulted device's answers, from the last before the fault to the first after the heal, per link and per
agent, with the clients' side of it where the capture holds it (unanswered heartbeats, the CTI's link-down
report, the clients' re-checks). The short breaks are made with faults that take hold within a tenth of a
second (a blackhole, a SIGSTOP), and a break that was not below (above) the window on the wire proves
nothing and is judged unknown.

The window is the product's promise, from the agent client's defaults (stack/agent/state.py
``Timers.window``, which the swarm runs): the CTI's answers may stop for up to 1.1 s and move nobody; a
stop of over 2.1 s moves every agent it hit; between the two an agent moves if its heartbeat fell in the
break. For the PBX the CTI is the watcher (a probe every 0.5 s, the link down after two misses) and the
client re-checks 0.6 s after the CTI's report: a break under 1.0 s of the PBX's answers moves nobody.
"""

from __future__ import annotations

import allure
import pytest

from harness.checks import check_blip
from harness.scenario import Scenario

FEATURE = "anti-flap"
SITE, REMOTE = "sha", "ntg"
HEARTBEAT = 1.0  # the clients' heartbeat interval (s): tells a missed answer in an agent's stream
CTI_WINDOW = (1.1, 2.1)  # Timers().window: (breaks of the CTI's answers that move nobody, everybody)
PBX_WINDOW = (1.0, 2.5)  # the CTI's probing (0.9-1.4 s to report) and the client's 0.6 s re-check
WATCH = 5.0  # seconds watched after a short break: the window's far edge, the re-check, and margin

# The sweep over the CTI's window: two breaks below its near edge, two above its far edge.
SWEEP = {
    "0.3x": 0.3 * CTI_WINDOW[0],
    "0.6x": 0.6 * CTI_WINDOW[0],
    "1.5x": 1.5 * CTI_WINDOW[1],
    "3x": 3.0 * CTI_WINDOW[1],
}


def _short_break(
    scenario: Scenario,
    kind: str,
    target: str,
    seconds: float,
    window: tuple[float, float],
    may_hide: bool = False,
    **params: str,
) -> None:
    """The break heals itself after ``seconds``; every agent stays registered and logged in at home through
    it and after it (every read of every PBX and CTI), and the wire shows a break below the window.

    ``may_hide``: a break shorter than the quietest gap of the device's own messages (the PBX answers the
    CTI's probe every 0.5 s) falls between two of them about a third of the time, and the wire cannot show
    it (the blip checker says so: unknown). Then the reads alone judge that nobody moved, and the blip
    verdict is kept in the report as information, not as the scenario's evidence."""
    home = scenario.expect()
    with scenario.fault(kind, target, duration=seconds, **params) as f:
        scenario.wait_healed(f, timeout=10.0)
    with scenario.phase("verify: nobody moved"):
        scenario.hold(home, f"every agent stays home after a {seconds:.2f}s {kind} of {target}", WATCH)
    with scenario.phase("verify-revert"):
        scenario.finish()
    blip = check_blip(scenario.events(), window=window, expect="stay", heartbeat=HEARTBEAT)
    checks = scenario.standard_checks(expect="home", affected=list(home), recovery=False)
    unseen = may_hide and blip.result == "unknown" and "was not seen" in blip.reason
    # A pause the host held itself lasted what it was asked (``hold``); when the device's own messages are
    # too sparse around it (its CTI's probes late on a loaded machine: 1.64 s in a fresh-clone run beside
    # `make run`), the wire cannot bound it below the window: then too the reads alone judge.
    unseen = unseen or ("hold" in params and blip.result == "unknown" and "not below" in blip.reason)
    if unseen:
        allure.attach(f"{blip.reason} {blip.figures}", name="blip (not seen on the wire)")
    overall = scenario.conclude(checks if unseen else [blip, *checks])
    assert overall.valid, scenario.failure_message()


def _long_break(scenario: Scenario, target: str, seconds: float) -> None:
    """The CTI is blackholed for ``seconds``: every agent of its site fails over to the other site within
    the bound, once, in its earlier state; nobody is active at both; the wire shows a break above the
    window."""
    moved = scenario.expect(moved_from=SITE, to=REMOTE)
    with scenario.fault("blackhole", target, duration=seconds) as f:
        with scenario.phase("verify: everybody moved"):
            scenario.wait_placement(moved, f"agents of {SITE} at {REMOTE} during a {seconds:.2f}s break")
        scenario.wait_healed(f, timeout=seconds + 10.0)
    with scenario.phase("verify-revert"):
        scenario.finish()
    blip = check_blip(scenario.events(), window=CTI_WINDOW, expect="move", heartbeat=HEARTBEAT)
    overall = scenario.conclude([blip, *scenario.standard_checks(expect="surviving")])
    assert overall.valid, scenario.failure_message()


@pytest.mark.unplanned
@pytest.mark.severity("critical")
@pytest.mark.parametrize("factor", list(SWEEP))
def test_cti_break_sweep(scenario: Scenario, factor: str) -> None:
    """The CTI blackholed (link up, every packet dropped) for a fraction or a multiple of the window:
    below its near edge nobody moves, above its far edge everybody does."""
    seconds = SWEEP[factor]
    if seconds < CTI_WINDOW[0]:
        _short_break(scenario, "blackhole", f"{SITE}-cti1", seconds, CTI_WINDOW)
    else:
        _long_break(scenario, f"{SITE}-cti1", seconds)


@pytest.mark.unplanned
@pytest.mark.severity("critical")
def test_pbx_hang_shorter_than_the_window_moves_nobody(scenario: Scenario) -> None:
    """The PBX hangs (SIGSTOP) for 300 ms: the CTI's probes and the phones' keep-alives go unanswered that
    long, the CTI reports nothing (one probe at most missed), and nobody moves."""
    pbx = f"{SITE}-pbx1"
    # held by the host itself: a heal over SSH under load made the 300 ms pause last up to 1.4 s
    params = {"service": "kamailio", "hold": "0.3"}
    _short_break(scenario, "service_pause", pbx, 0.3, PBX_WINDOW, may_hide=True, **params)
