"""Outbound calling, agent-initiated (issue 14): an agent dials a number during a planned switch of its
region; the others move at once, the agent finishes its call where it is and then moves, as an agent on an
inbound call does. The call is judged from the capture at the agent's PBX (its phone's INVITE and what the
PBX answered) against the record of the callee that got it (stack/callee.py, on the caller host), by
harness/checks/outbound.py.

The dial is the agent's own action at its desk: the swarm's signed admin API (``POST /agents/<id>/dial``),
recorded as a ``call.dial`` operation whose completion is what the agent's CTI told it (``call_progress``).
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import pytest
import requests

from harness import checks
from harness.checks import Verdict, renamed
from harness.checks.outbound import CALL_DIAL, CALLEE_CALL, check_outbound_calls
from harness.credentials import STACK_SECRET_VAR
from harness.drivers import driver_for
from harness.scenario import Scenario, agents_where, planned_switch, switch_back
from harness.ulapi import sign_request

FEATURE = "outbound calling"
SITE, REMOTE = "sha", "ntg"
HOLD_S = (
    6  # the callee hangs up after this long: numbers ending in 77HH are held HH seconds (stack/callee.py)
)
NUMBER = f"021555577{HOLD_S:02d}"[-11:]
FINAL = ("ended", "failed")
CALLEE_RECORD = "callee.jsonl"  # in the caller host's run directory (virtual) or its workdir (physical)


def _swarm(sc: Scenario, agent: str) -> str:
    """The admin URL of the swarm that runs ``agent`` (the agents host of its home site)."""
    home = next(a.home for a in sc.lab.topology.agents() if a.id == agent)
    host = next(d for d in sc.lab.topology.of_kind("host", home) if d.spec.role == "agents")
    return f"http://{host.control_address}:{int(host.spec.admin_port)}"


def dial(sc: Scenario, agent: str, number: str) -> tuple[str, str | None]:
    """The agent dials ``number`` at its desk; recorded as ``call.dial`` (process ``agent:<id>``). Returns
    (process, the call's reference or None when refused: then the operation has failed)."""
    ext = next(a.extension for a in sc.lab.topology.agents() if a.id == agent)
    proc = f"agent:{agent}"
    assert sc.history is not None
    sc.history.invoke(proc, CALL_DIAL, {"call": "d1", "agent": agent, "extension": ext, "number": number})
    path = f"/agents/{agent}/dial"
    body = json.dumps({"number": number}).encode()
    headers = {
        "Content-Type": "application/json",
        **sign_request(os.environ[STACK_SECRET_VAR], "POST", path, body),
    }
    try:
        r = requests.post(_swarm(sc, agent) + path, data=body, headers=headers, timeout=5)
    except requests.RequestException as e:
        sc.history.info(proc, CALL_DIAL, {"call": "d1"}, error=f"swarm unreachable: {e}")
        raise
    if r.status_code != 200:
        sc.history.fail(proc, CALL_DIAL, {"call": "d1"}, error=f"HTTP {r.status_code}: {r.text[:200]}")
        return proc, None
    return proc, str(r.json()["dial"])


def progress(sc: Scenario, agent: str, ref: str) -> list[dict[str, Any]]:
    """What the agent's CTI told it of call ``ref`` so far (the swarm's ``outbound_call`` events)."""
    query = {"agent": agent, "event": "outbound_call", "n": 500}
    r = requests.get(_swarm(sc, agent) + "/events", params=query, timeout=5)
    return [e for e in r.json().get("events", []) if e.get("dial") == ref]


def wait_call_end(sc: Scenario, agent: str, proc: str, ref: str, timeout: float) -> list[str]:
    """Poll until the call has ended or failed; its completion records the states the agent was told."""
    assert sc.history is not None
    deadline = time.monotonic() + timeout
    seen: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        seen = progress(sc, agent, ref)
        if any(e.get("state") in FINAL for e in seen):
            states = [str(e["state"]) for e in seen]
            call_id = next((e.get("call_id") for e in reversed(seen) if e.get("call_id")), None)
            sc.history.ok(proc, CALL_DIAL, {"dial": ref, "states": states, "call_id": call_id})
            return states
        time.sleep(0.2)
    sc.history.info(proc, CALL_DIAL, {"dial": ref, "states": [e.get("state") for e in seen]}, error="no end")
    return []


def callee_records(sc: Scenario, since: float) -> int:
    """Every call the sites' callees recorded since ``since`` (wall time), observed into the history as
    ``callee_call`` (the checker's other witness). The number recorded."""
    assert sc.history is not None
    n = 0
    for host in (d for d in sc.lab.topology.of_kind("host") if d.spec.role == "caller"):
        if sc.lab.virtual:
            path = sc.lab.backend.state_dir() / host.name / CALLEE_RECORD
            text = path.read_text() if path.exists() else ""
        else:  # the caller host's workdir, over SFTP (the host's own SSH, as the caller's results)
            sftp = driver_for(sc.lab, host.name).client.open_sftp()
            try:
                with sftp.open(f"{host.spec.workdir.rstrip('/')}/{CALLEE_RECORD}", "r") as f:
                    text = f.read().decode(errors="replace")
            except OSError:
                text = ""
            finally:
                sftp.close()
        for line in text.splitlines():
            rec = json.loads(line) if line.startswith("{") else {}
            if rec.get("event") == "call" and float(rec.get("invite_at", 0)) >= since:
                sc.history.observe(CALLEE_CALL, host.name, rec)
                n += 1
    return n


@pytest.mark.outbound
@pytest.mark.planned_switch
@pytest.mark.requires("host:caller")
@pytest.mark.severity("critical")
def test_agent_call_during_planned_switch(scenario: Scenario) -> None:
    """An agent on a call it dialled stays through a planned switch of its region until the call ends,
    then moves; the call is on the wire at its PBX as the agent was told, and at the callee."""
    scope, value = "region", "north"
    moved = agents_where(scenario.lab, home=SITE, **{scope: value})
    agent = moved[0]
    forward = scenario.expect({a: REMOTE for a in moved})
    during_call = scenario.expect({a: REMOTE for a in moved if a != agent})
    since = time.time() - 1
    proc, ref, states = "", None, []
    with scenario.phase(f"apply: {agent} dials {NUMBER}"):
        if not scenario.dry_run:
            proc, ref = dial(scenario, agent, NUMBER)
            assert ref is not None, "the agent's dial was refused"
        scenario.wait_state(agent, SITE, "on_call")
    with planned_switch(scenario, scope, value, REMOTE, moved):
        with scenario.phase("verify: the others move, the agent on its call stays"):
            scenario.wait_placement(during_call, "all but the agent on the call moved", states=None)
            scenario.hold(during_call, "the agent on the call stays during the call", 1.0)
        with scenario.phase("verify: the call ends, the agent moves"):
            if ref is not None:
                states = wait_call_end(scenario, agent, proc, ref, HOLD_S + 15)
                callee_records(scenario, since)  # written when the callee hung up, before the call ended
            scenario.wait_placement(forward, f"{agent} moved after its call")
    with switch_back(scenario, moved):
        with scenario.phase("verify: switched back"):
            scenario.wait_placement(scenario.expect(), "switched agents back home")
    with scenario.phase("verify-revert"):
        scenario.finish()
    verdicts = []
    if not scenario.dry_run:
        answered = "answered" in states and states[-1:] == ["ended"]
        told = Verdict(
            "outbound_call_answered", "valid" if answered else "invalid", f"the agent was told {states}"
        )
        ev = scenario.events()
        rt = checks.depends_on_capture(checks.check_recovery_time)
        bound = scenario.settings.bound
        verdicts = [
            renamed(rt(ev, bound=bound, expect=dict.fromkeys(moved, REMOTE), affected=moved, fault="switch"),
                    "switch_time"),
            check_outbound_calls(ev),
            told,
        ]  # fmt: skip
        verdicts += scenario.standard_checks(expect="home", affected=list(scenario.expect()), recovery=False)
    overall = scenario.conclude(verdicts)
    assert overall.valid, scenario.failure_message()
