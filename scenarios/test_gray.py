"""Gray failures (issue 11): the faults that do not kill cleanly. A PBX that hangs, loses power or goes
silent with its link up; traffic between the PBX and the agents lost one way only; the phone leg of the
chain broken while agents are online; a CTI link that loses 5 % or 30 % of its packets; a UL that hangs,
is killed, or is cut off from its peer UL.

Each test's docstring says what the product promises under its fault, and the promise is judged from the
history like every other scenario: scenario.standard_checks and the checkers of harness/checks, and the
placements the scenario waits for or holds are `expectation` records judged by check_expectations. Under
30 % loss, where agents may move, where each agent ends and how often it moved are read from the history
too (harness/checks/moves.py). docs/scenarios.md ("Gray failures") says what each scenario found and how
it was fixed.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from harness.checks import Verdict
from harness.checks.moves import check_moves, final_sites
from harness.scenario import Scenario, agents_extensions, agents_homes, agents_where

FEATURE = "gray failures"
SITE, REMOTE = "sha", "ntg"
LOSS_S = 6.0  # seconds a lossy CTI link is watched: six heartbeats of every agent, 30 reads of each CTI
UL_HOLD_S = 3.0  # seconds online agents are watched while their UL is out (three heartbeats each)


def _everyone_moves(scenario: Scenario, fault: dict[str, Any]) -> None:
    """The fault breaks the chain of every agent of SITE: each ends registered and logged in once at
    REMOTE, in its earlier state, within the bound; nobody is ever active at both sites; after the heal
    nobody returns (no failback) and no stale binding stays behind at SITE."""
    moved = scenario.expect(moved_from=SITE, to=REMOTE)
    with scenario.fault(**fault):
        with scenario.phase("verify: failed over"):
            scenario.wait_placement(moved, f"agents of {SITE} at {REMOTE}")
    with scenario.phase("verify: healed, nobody returns"):
        scenario.converge(moved, f"every agent of {SITE} once at {REMOTE}, no binding left at {SITE}", 10.0)
        scenario.hold(moved, f"nobody returns to {SITE} or stays doubled", 2.0)
    with scenario.phase("verify-revert"):
        scenario.finish()
    overall = scenario.conclude(scenario.standard_checks(expect="surviving"))
    assert overall.valid, scenario.failure_message()


@pytest.mark.unplanned
@pytest.mark.severity("blocker")
def test_pbx_hung(scenario: Scenario) -> None:
    """The PBX is SIGSTOPped: it keeps its sockets and answers nothing (no reset, no ICMP), so the CTI's
    liveness probes time out and the phones' keep-alives go unanswered. Promise: every agent of the site
    fails over to the other site within the bound, and when the PBX resumes (SIGCONT) and works off what
    queued up meanwhile, nobody returns and no agent stays registered at both PBXs."""
    _everyone_moves(scenario, {"kind": "service_pause", "target": f"{SITE}-pbx1", "service": "kamailio"})


@pytest.mark.unplanned
@pytest.mark.requires("pdu")
@pytest.mark.severity("blocker")
def test_pbx_powered_off(scenario: Scenario) -> None:
    """The PBX host's PDU outlet is switched off: kamailio dies at once and its link goes dark (silence,
    not a reset). Promise: every agent fails over within the bound; when power returns, the PBX boots with
    an empty location table and nobody returns to it."""
    _everyone_moves(scenario, {"kind": "power_off", "target": f"{SITE}-pbx1"})


@pytest.mark.unplanned
@pytest.mark.severity("blocker")
def test_pbx_blackholed(scenario: Scenario) -> None:
    """Every packet of the PBX's data address is dropped with its link up (no carrier loss for anyone to
    see). Promise: every agent fails over within the bound; when the blackhole lifts, the PBX still holds
    the bindings the moved phones could not remove, and the site's CTI removes them (the fence's unbind),
    so every agent ends registered once, at the other site."""
    _everyone_moves(scenario, {"kind": "blackhole", "target": f"{SITE}-pbx1"})


ONE_WAY = {  # direction -> (from, to): the packets from `from` to `to` are dropped, the others pass
    "agents_to_pbx": (f"{SITE}-agents1", f"{SITE}-pbx1"),
    "pbx_to_agents": (f"{SITE}-pbx1", f"{SITE}-agents1"),
}


@pytest.mark.unplanned
@pytest.mark.severity("critical")
@pytest.mark.parametrize("direction", list(ONE_WAY))
def test_pbx_agents_one_way(scenario: Scenario, direction: str) -> None:
    """Traffic between the PBX and the agents host is lost in one direction only, while the CTI still
    reaches the PBX and reports it up. Either way the phone leg is broken: a REGISTER or a call's answer
    never arrives, or the PBX's answers and INVITEs never do. Promise: the phones' keep-alive to their
    registrar shows it (stack/phone/keepalive.py), every agent fails over within the bound, and the
    binding left at the PBX is removed when the agent is fenced there."""
    a, b = ONE_WAY[direction]
    _everyone_moves(scenario, {"kind": "partition", "target": a, "b": b, "one_way": True})


@pytest.mark.unplanned
@pytest.mark.severity("critical")
def test_phone_leg_broken_while_online(scenario: Scenario) -> None:
    """Design steps 5-8: the watched chain is Client - CTI - PBX - IP phone, and the phone leg is the
    PBX - phone link. The agents' phones live on the agents host (the lab's stand-alone phones serve no
    agent, so their switch ports are not an agent's phone leg): the agents host is cut from the PBX, both
    ways, after every agent logged in, while the CTI still reaches the PBX. Promise: every agent sees its
    phone unregistered (the keep-alive), confirms it, and fails over within the bound; nobody is lost."""
    _everyone_moves(scenario, {"kind": "partition", "target": f"{SITE}-agents1", "b": f"{SITE}-pbx1"})


@pytest.mark.unplanned
@pytest.mark.severity("critical")
def test_cti_loss_5_percent_moves_nobody(scenario: Scenario) -> None:
    """5 % of the CTI host's packets are dropped, both ways, for LOSS_S seconds (TCP retransmits what the
    heartbeats lose; the CTI's probes of its PBX go over the same lossy link). Promise: nobody moves and
    nobody is lost: every read of every PBX and CTI shows every agent registered and logged in at home,
    throughout the loss and after it."""
    home = scenario.expect()
    with scenario.fault("loss", f"{SITE}-cti1", percent=5):
        with scenario.phase("verify: nobody moved"):
            scenario.hold(home, "every agent stays home, logged in, under 5% loss", LOSS_S)
    with scenario.phase("verify-revert"):
        scenario.finish()
    overall = scenario.conclude(scenario.standard_checks(expect="home", affected=list(home), recovery=False))
    assert overall.valid, scenario.failure_message()


@pytest.mark.unplanned
@pytest.mark.severity("critical")
def test_cti_loss_30_percent_loses_nobody(scenario: Scenario) -> None:
    """30 % of the CTI host's packets are dropped, both ways, for LOSS_S seconds: heartbeats come late or
    not at all, some agents' confirmations fail, some sessions outlive their lease. Promise: agents of the
    site may move to the other site, but each at most once and never back (no flapping); nobody is lost
    (every agent ends registered once and logged in once, at one site, in its earlier state); nobody is
    ever active at both sites; the other site's agents never move."""
    others = {a: s for a, s in scenario.expect().items() if s != SITE}
    with scenario.fault("loss", f"{SITE}-cti1", percent=30):
        with scenario.phase("verify: the other site's agents stay"):
            scenario.hold(others, f"the agents of {REMOTE} stay home under 30% loss at {SITE}", LOSS_S)
    with scenario.phase("verify: every agent once, at one site"):
        _settled(scenario, "every agent registered and logged in once, at one site, after the loss")
    with scenario.phase("verify-revert"):
        scenario.finish()
    verdicts: list[Verdict] = []
    if not scenario.dry_run:
        ev = scenario.events()
        homes = agents_homes(scenario.lab)
        ends = final_sites(ev, homes)
        verdicts = scenario.standard_checks(expect=ends, affected=sorted(homes), recovery=False)
        verdicts.append(check_moves(ev, homes, allowed={SITE: [REMOTE]}))
    overall = scenario.conclude(verdicts)
    assert overall.valid, scenario.failure_message()


UL_FAULTS = {"hung": "service_pause", "killed": "service_kill"}


@pytest.mark.unplanned
@pytest.mark.severity("critical")
@pytest.mark.parametrize("how", list(UL_FAULTS))
def test_ul_fails(scenario: Scenario, how: str) -> None:
    """The site's UL hangs (SIGSTOP: connections are accepted by the kernel and never answered) or is
    killed (SIGKILL; systemd starts it again at the heal, from its SQLite state). The UL is not in any
    online agent's chain. Promise: online agents stay where they are for the whole outage; agents that log
    in afresh (the site's swarm restarted) find the UL's health check unanswered and log in at the remote
    UL (step 2); when the UL is back (and works off what queued up, when it was hung) it reconciles with
    its peer, and nobody is doubled or sent back."""
    agents = agents_where(scenario.lab, home=SITE)
    with scenario.fault(UL_FAULTS[how], f"{SITE}-ul1", service="hil-login"):
        with scenario.phase("verify: online agents stay"):
            scenario.hold(scenario.expect(), f"online agents stay home while the UL is {how}", UL_HOLD_S)
        with scenario.phase("verify: new logins go remote"):
            scenario.swarm("restart", [SITE])
            scenario.wait_placement(scenario.expect(moved_from=SITE, to=REMOTE), f"new logins at {REMOTE}")
    with scenario.phase("verify: the UL is back, nobody moves"):
        scenario.hold(scenario.expect(moved_from=SITE, to=REMOTE), "nobody sent back or doubled", 1.5)
    with scenario.phase("verify-revert"):
        scenario.finish()
    overall = scenario.conclude(scenario.standard_checks(expect="surviving", affected=agents))
    assert overall.valid, scenario.failure_message()


@pytest.mark.unplanned
@pytest.mark.severity("critical")
def test_ul_cut_from_peer(scenario: Scenario) -> None:
    """The site's UL and its peer cannot reach each other (both ways); every chain is whole. Promise:
    nobody moves; agents that log in afresh at the site still land at home (the UL cannot have its peer
    confirm that no older session lives there, so the token waits out the old session's lease: `hold`);
    when the ULs see each other again they reconcile, and every agent is registered and logged in once,
    at home."""
    home = scenario.expect()
    with scenario.fault("partition", f"{SITE}-ul1", b=f"{REMOTE}-ul1"):
        with scenario.phase("verify: nobody moves"):
            scenario.hold(home, "online agents stay home while the ULs are apart", UL_HOLD_S)
        with scenario.phase("verify: fresh logins stay home"):
            scenario.swarm("restart", [SITE])
            scenario.wait_placement(home, f"fresh logins at {SITE}")
    with scenario.phase("verify-revert"):
        scenario.finish()
    overall = scenario.conclude(scenario.standard_checks(expect="home", affected=list(home), recovery=False))
    assert overall.valid, scenario.failure_message()


# -- waiting for agents to settle under a fault that lets them move ----------------------------------------


def _settled(scenario: Scenario, what: str, quiet: float = 2.5, timeout: float = 20.0) -> None:
    """Wait until the reads show every agent registered once and logged in once, at one site (either), and
    that placement unchanged for ``quiet`` seconds; then record it as an expectation (converge). A move
    still in flight when the fault heals (a confirmation that began before the heal, up to about a second;
    then the agent waits out the old site's lease before its login elsewhere, up to lease + margin, 3.5 s)
    must land before the final read, or that read catches the agent between its two sites. Which site each
    agent is at comes from these reads only to say what to converge on; the verdicts are the checkers'."""
    if scenario.dry_run or scenario.observer is None:
        return
    obs = scenario.observer
    exts = agents_extensions(scenario.lab)

    def once_somewhere(view: Any) -> dict[str, str] | None:
        found = {}
        for agent, ext in exts.items():
            reg_at, sess_at, _ = view.placement(agent, ext)
            if len(reg_at) != 1 or reg_at != sess_at:
                return None
            found[agent] = reg_at[0]
        return found

    deadline = time.monotonic() + timeout
    seen, last, since = obs.reads, None, time.monotonic()
    while time.monotonic() < deadline:
        seen, found = obs.after_read(seen, once_somewhere, timeout=0.5)
        now = time.monotonic()
        if found is None or found != last:
            last, since = found, now
        elif now - since >= quiet:
            break
    scenario.converge(last or agents_homes(scenario.lab), what, 5.0)
