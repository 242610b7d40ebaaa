"""The agent_session change talks to the swarm's admin API without a lab: its requests go to the agents
host's admin port (the topology's, else the one default) and its POSTs carry the harness's one request
signature (harness.ulapi.sign_request), which the stack's own check accepts."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import pytest
import requests

from harness import topology
from harness.credentials import STACK_SECRET_VAR
from harness.faults import FaultRefused
from harness.faults.changes import AgentSession, swarm_admin_port
from harness.ulapi import sign_request
from stack.common import auth

TOPO = topology.load()
SECRET = "s3cret-for-the-test"


class Reply:
    status_code = 200
    text = '{"running": false}'

    def json(self) -> dict[str, Any]:
        return {"running": False}


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str, dict[str, str]]]:
    calls: list[tuple[str, str, dict[str, str]]] = []

    def fake(method: str, url: str, headers: dict[str, str] | None = None, **_kw: Any) -> Reply:
        calls.append((method, url, dict(headers or {})))
        return Reply()

    monkeypatch.setattr(requests, "request", fake)
    monkeypatch.setenv(STACK_SECRET_VAR, SECRET)
    return calls


def session(agent: str = "a00003", verb: str = "logout") -> AgentSession:
    return AgentSession(SimpleNamespace(topology=TOPO), agent, {"verb": verb})  # type: ignore[arg-type]


def test_logout_is_signed_by_the_one_signer_and_the_stack_accepts_it(sent: list[Any]) -> None:
    ch = session()
    ch._inject()
    assert ch.took_effect()  # GET /agents/a00003: not running
    (method, url, headers), (get, _, unsigned) = sent
    host = next(h for h in TOPO.of_kind("host", ch.site) if h.spec.role == "agents")
    path = "/agents/a00003/logout"
    assert (method, url) == ("POST", f"http://{host.control_address}:{host.spec.admin_port}{path}")
    assert auth.check_request(SECRET, "POST", path, b"", headers)
    assert not auth.check_request(SECRET, "POST", "/agents/a00004/logout", b"", headers)
    assert get == "GET" and unsigned == {}


def test_the_one_signer_signs_as_the_stack_does(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(time, "time", lambda: 1700000000.25)
    for method, body in (("POST", b""), ("delete", b""), ("POST", b'{"scope": "agent"}')):
        want = auth.sign_request(SECRET, method, "/v1/rules", body, ts=1700000000.25)
        assert sign_request(SECRET, method, "/v1/rules", body) == want


def test_unsigned_without_the_secret(sent: list[Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(STACK_SECRET_VAR)
    with pytest.raises(FaultRefused, match=STACK_SECRET_VAR):
        session()._inject()
    assert sent == []


def test_the_admin_port_comes_from_the_topology_else_the_default() -> None:
    host = next(h for h in TOPO.of_kind("host", "sha") if h.spec.role == "agents")
    assert swarm_admin_port(host) == host.spec.admin_port == 8081  # the schema's default
    assert swarm_admin_port(SimpleNamespace(spec=SimpleNamespace(admin_port=9181))) == 9181  # type: ignore[arg-type]
    assert session().plan() == [
        ("a00003", f"POST http://{host.control_address}:{host.spec.admin_port}/agents/a00003/logout")
    ]
