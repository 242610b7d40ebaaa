"""An agent's outbound call in a scenario: the dial at its desk, what its CTI told it, the callees' records.

Why here and not in the scenario module: the dial is a stack event the harness drives through the agent's
swarm (its signed admin API, the same client a nemesis logout uses: harness/faults/changes.py swarm_call),
recorded as a ``call.dial`` operation whose completion is what the agent's CTI told it (``call_progress``,
the swarm's ``outbound_call`` events); the callees' records (stack/callee.py, on the caller hosts) become
``callee_call`` observations, the outbound checker's other witness (harness/checks/outbound.py).
"""

from __future__ import annotations

import json
import time
from typing import Any

import requests

from harness.checks.outbound import CALL_DIAL, CALLEE_CALL
from harness.drivers import driver_for
from harness.faults.changes import swarm_call
from harness.scenario.run import Scenario

__all__ = ["CALLEE_RECORD", "callee_records", "dial", "wait_call_end"]

CALLEE_RECORD = "callee.jsonl"  # in the caller host's run directory (virtual) or its workdir (physical)
FINAL = ("ended", "failed")


def dial(sc: Scenario, agent: str, number: str) -> tuple[str, str | None]:
    """The agent dials ``number`` at its desk; recorded as ``call.dial`` (process ``agent:<id>``). Returns
    (process, the call's reference or None when refused: then the operation has failed)."""
    ext = next(a.extension for a in sc.lab.topology.agents() if a.id == agent)
    proc = f"agent:{agent}"
    assert sc.history is not None
    sc.history.invoke(proc, CALL_DIAL, {"call": "d1", "agent": agent, "extension": ext, "number": number})
    body = json.dumps({"number": number}).encode()
    try:
        r = swarm_call(sc.lab, agent, "POST", f"/agents/{agent}/dial", body)
    except requests.RequestException as e:
        sc.history.info(proc, CALL_DIAL, {"call": "d1"}, error=f"swarm unreachable: {e}")
        raise
    if r.status_code != 200:
        sc.history.fail(proc, CALL_DIAL, {"call": "d1"}, error=f"HTTP {r.status_code}: {r.text[:200]}")
        return proc, None
    return proc, str(r.json()["dial"])


def _progress(sc: Scenario, agent: str, ref: str) -> list[dict[str, Any]]:
    """What the agent's CTI told it of call ``ref`` so far (the swarm's ``outbound_call`` events)."""
    query = {"agent": agent, "event": "outbound_call", "n": 500}
    r = swarm_call(sc.lab, agent, "GET", "/events", params=query)
    return [e for e in r.json().get("events", []) if e.get("dial") == ref]


def wait_call_end(sc: Scenario, agent: str, proc: str, ref: str, timeout: float) -> list[str]:
    """Poll until the call has ended or failed; its completion records the states the agent was told."""
    assert sc.history is not None
    deadline = time.monotonic() + timeout
    seen: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        seen = _progress(sc, agent, ref)
        if any(e.get("state") in FINAL for e in seen):
            states = [str(e["state"]) for e in seen]
            call_id = next((e.get("call_id") for e in reversed(seen) if e.get("call_id")), None)
            sc.history.ok(proc, CALL_DIAL, {"dial": ref, "states": states, "call_id": call_id})
            return states
        time.sleep(0.2)
    sc.history.info(proc, CALL_DIAL, {"dial": ref, "states": [e.get("state") for e in seen]}, error="no end")
    return []


def _record_text(sc: Scenario, host: Any) -> str:
    """A caller host's callee record: in the virtual lab's run directory, or over SFTP from the host's
    workdir (its own SSH, as the test caller's results), the connection closed after."""
    if sc.lab.virtual:
        path = sc.lab.backend.state_dir() / host.name / CALLEE_RECORD
        return path.read_text() if path.exists() else ""
    with driver_for(sc.lab, host.name) as drv:
        sftp = drv.client.open_sftp()
        try:
            with sftp.open(f"{host.spec.workdir.rstrip('/')}/{CALLEE_RECORD}", "r") as f:
                return f.read().decode(errors="replace")
        except OSError:
            return ""
        finally:
            sftp.close()


def callee_records(sc: Scenario, since: float) -> int:
    """Every call the sites' callees recorded since ``since`` (wall time), observed into the history as
    ``callee_call`` (the checker's other witness). The number recorded."""
    assert sc.history is not None
    n = 0
    for host in (d for d in sc.lab.topology.of_kind("host") if d.spec.role == "caller"):
        for line in _record_text(sc, host).splitlines():
            rec = json.loads(line) if line.startswith("{") else {}
            if rec.get("event") == "call" and float(rec.get("invite_at", 0)) >= since:
                sc.history.observe(CALLEE_CALL, host.name, rec)
                n += 1
    return n
