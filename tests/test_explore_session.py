"""The `agent_session` change on the virtual lab: one agent logged out through its swarm's signed admin API,
seen gone from the CTI from outside, and logged in again by the heal; journaled and recorded like every
change; an unsigned request is refused by the swarm; an agent that is not one is refused before anything
is sent."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from harness import observe
from harness.faults import FaultRefused, Injector
from harness.history import History
from harness.lab import Lab
from harness.scenario import reset_agents

pytestmark = pytest.mark.lab

AGENT = "a00003"


@pytest.fixture
def injector(lab: Lab, tmp_path: Path) -> Iterator[Injector]:
    inj = Injector(lab, journal_path=tmp_path / "j.jsonl", history=History(tmp_path / "h.jsonl"))
    yield inj
    inj.close()


def _session_at(lab: Lab, agent: str) -> list[str]:
    view = observe.read_view(observe.endpoints(lab))
    return sorted(site for site, table in view.sessions.items() if agent in table)


def _wait_sessions(lab: Lab, agent: str, want: list[str], timeout: float = 20.0) -> bool:
    eps = observe.endpoints(lab)
    ok, _ = observe.wait_view(
        eps, lambda v: sorted(s for s, t in v.sessions.items() if agent in t) == want, timeout
    )
    return ok


def test_logout_then_heal_logs_in_again(lab: Lab, injector: Injector, tmp_path: Path) -> None:
    reset_agents(lab)
    home = next(a.home for a in lab.topology.agents() if a.id == AGENT)
    assert _session_at(lab, AGENT) == [home]
    ch = injector.make("agent_session", AGENT, verb="logout")
    with injector.apply(ch):
        assert _wait_sessions(lab, AGENT, []), "the agent's CTI session did not end after its logout"
    assert _wait_sessions(lab, AGENT, [home]), "the agent did not log in again at home after the heal"
    fs = [(e.type, e.f) for e in History.load(tmp_path / "h.jsonl").events]
    assert ("ok", "change.apply") in fs and ("ok", "change.revert") in fs
    assert injector.journal.read().records[-1]["op"] == "heal"


def test_unsigned_logout_is_refused_by_the_swarm(lab: Lab) -> None:
    host = next(h for h in lab.topology.of_kind("host", "sha") if h.spec.role == "agents")
    r = requests.post(
        f"http://{host.control_address}:{host.spec.admin_port}/agents/{AGENT}/logout", timeout=5
    )
    assert r.status_code == 403
    assert requests.get(
        f"http://{host.control_address}:{host.spec.admin_port}/agents/{AGENT}", timeout=5
    ).json()["running"]


@pytest.mark.parametrize(
    ("target", "verb", "why"),
    [("a99999", "logout", "not an agent"), (AGENT, "dance", "verb must be")],
)
def test_refused_before_anything_is_sent(
    lab: Lab, injector: Injector, target: str, verb: str, why: str
) -> None:
    with pytest.raises(FaultRefused, match=why):
        injector.inject(injector.make("agent_session", target, verb=verb))
    journal = injector.journal
    assert not journal.path.exists() or not [r for r in journal.read().records if r["op"] == "inject"]
