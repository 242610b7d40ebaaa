"""harness/checks/moves.py from small histories: each agent's sessions in the order seen (snapshots and
captured CTI messages, a stale read adding nothing), where each ended, and no flapping (home, then at most
one allowed site, never back): valid, invalid (back home, two moves, a site not allowed, never home first)
and unknown (an agent never seen)."""

from __future__ import annotations

from typing import Any

import pytest

from harness.checks.moves import check_moves, final_sites, site_sequences
from harness.history import Event, Obs

HOMES = {"a1": "sha", "a2": "sha", "a3": "ntg"}
ALLOWED = {"sha": ["ntg"]}


def snap(t: float, site: str, sessions: dict[str, int], state: str = "ready") -> Obs:
    """A cti_snapshot of `site` holding `sessions` (agent -> epoch)."""
    ss = [{"agent": a, "state": state, "epoch": ep} for a, ep in sessions.items()]
    return Obs(int(t * 10), t, 1e9 + t, "cti_snapshot", f"{site}-cti1", {"site": site, "sessions": ss})


def cti(t: float, site: str, agent: str, event: str, epoch: int) -> Obs:
    """A captured CTI message of one agent's session at `site`."""
    v: dict[str, Any] = {"site": site, "agent": agent, "event": event, "epoch": epoch, "state": "ready"}
    return Obs(int(t * 10) + 1, t, 1e9 + t, "cti", f"{site}-cti1", v)


def home_then(*later: Event) -> list[Event]:
    """Everyone at home at t=1, then `later`."""
    return [snap(1.0, "sha", {"a1": 1, "a2": 1}), snap(1.0, "ntg", {"a3": 1}), *later]


def test_sequences_from_snapshots_and_messages_stale_reads_add_nothing() -> None:
    h = home_then(
        cti(2.0, "ntg", "a1", "login", 2),
        snap(2.5, "sha", {"a1": 1, "a2": 1}),  # a stale read of a1's old session: nothing new
        cti(3.0, "sha", "a2", "logout", 1),  # an ended session is not a place
        snap(4.0, "ntg", {"a1": 2, "a3": 1}),
    )
    seq = site_sequences(reversed(h))  # read in time order whatever order they come in
    assert seq["a1"] == [("sha", 1), ("ntg", 2)]
    assert seq["a2"] == [("sha", 1)] and seq["a3"] == [("ntg", 1)]
    assert final_sites(h, {**HOMES, "a9": "ntg"}) == {"a1": "ntg", "a2": "sha", "a3": "ntg", "a9": "ntg"}


def test_valid_moved_once_to_an_allowed_site() -> None:
    h = home_then(cti(2.0, "ntg", "a1", "login", 2), snap(3.0, "ntg", {"a1": 2, "a3": 1}))
    v = check_moves(h, HOMES, allowed=ALLOWED)
    assert v.result == "valid", v.reason
    assert v.figures == {"agents": 3, "moved": 1, "flapped": 0, "unseen": 0}


def test_a_new_session_at_the_same_site_is_not_a_move() -> None:
    v = check_moves(home_then(cti(2.0, "sha", "a1", "login", 2)), HOMES, allowed=ALLOWED)
    assert v.result == "valid" and v.figures["moved"] == 0


@pytest.mark.parametrize(
    ("later", "agent", "sites"),
    [
        ([cti(2.0, "ntg", "a1", "login", 2), cti(3.0, "sha", "a1", "login", 3)], "a1", ["sha", "ntg", "sha"]),
        ([cti(2.0, "sha", "a3", "login", 2)], "a3", ["ntg", "sha"]),  # ntg's agents may not move at all
    ],
    ids=["back-home", "not-allowed"],
)
def test_invalid_flapping_or_a_move_not_allowed(later: list[Event], agent: str, sites: list[str]) -> None:
    v = check_moves(home_then(*later), HOMES, allowed=ALLOWED)
    assert v.result == "invalid"
    (w,) = v.witnesses
    assert w["agent"] == agent and w["sites"] == sites and w["home"] == HOMES[agent]


def test_invalid_first_seen_away_from_home() -> None:
    h = [snap(1.0, "ntg", {"a1": 1, "a2": 1, "a3": 1}), snap(1.0, "sha", {})]
    v = check_moves(h, HOMES, allowed=ALLOWED)
    assert v.result == "invalid" and {w["agent"] for w in v.witnesses} == {"a1", "a2"}


def test_unknown_for_an_agent_never_seen_never_valid() -> None:
    h = [snap(1.0, "sha", {"a1": 1}), snap(1.0, "ntg", {"a3": 1})]
    v = check_moves(h, HOMES, allowed=ALLOWED)
    assert v.result == "unknown" and "a2" in v.reason and v.figures["unseen"] == 1
    assert check_moves([], HOMES, allowed=ALLOWED).result == "unknown"
