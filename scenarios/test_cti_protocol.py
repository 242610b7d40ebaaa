"""Stack-level checks of the CTI on the virtual lab (issue 3): a forged token is refused, and garbage from
one connection disturbs no other agent. Spoken over the CTI's wire protocol (docs/cti-protocol.md) on its
management address; the agents' placement is judged from the PBXs' and CTIs' snapshots as always."""

from __future__ import annotations

import json

import pytest

from harness import observe
from harness.checks import check_refused
from harness.scenario import Scenario

FEATURE = "CTI protocol"
SITE = "sha"


def _cti(scenario: Scenario) -> tuple[str, int]:
    d = scenario.lab.topology.of_kind("cti", SITE)[0]
    return d.control_address, d.spec.port


def _send(scenario: Scenario, f: str, value: dict, lines: list[bytes]) -> list:
    """Record one exchange as an operation: ok with the replies, or fail with the error codes it got;
    either way whether the CTI closed the connection, for the checkers."""
    host, port = _cti(scenario)
    if scenario.dry_run:
        scenario.plan.append(
            {
                "device": f"{SITE}-cti1",
                "action": f,
                "commands": [ln[:80].decode(errors="replace") for ln in lines],
            }
        )
        return []
    h = scenario.history
    assert h is not None
    h.invoke("client:cti", f, value)
    replies = observe.cti_exchange(host, port, lines)
    errors = [r.get("code") for r in replies if isinstance(r, dict) and r.get("type") == "error"]
    seen = {"replies": replies[:10], "closed": "closed" in replies}
    if errors:
        h.fail("client:cti", f, seen, error=",".join(str(e) for e in errors))
    else:
        h.ok("client:cti", f, seen)
    return replies


@pytest.mark.severity("critical")
def test_cti_forged_token_refused(scenario: Scenario) -> None:
    """A login with a token not signed by the UL's key is refused; the real agent stays logged in."""
    agent = next(a for a in scenario.lab.topology.agents() if a.home == SITE)
    token = observe.forged_token(agent.id, SITE, agent.extension)
    msg = {"type": "login", "id": 1, "agent": agent.id, "token": token}
    with scenario.phase("apply: forged login"):
        _send(scenario, "cti.login_forged", {"agent": agent.id}, [json.dumps(msg).encode() + b"\n"])
    with scenario.phase("verify: refused, nobody disturbed"):
        scenario.hold(scenario.expect(), "every agent stays logged in at home", 3.0, states=("ready",))
    with scenario.phase("verify-revert"):
        scenario.finish()
    verdicts = scenario.standard_checks(expect="home", affected=list(scenario.expect()), recovery=False)
    if not scenario.dry_run:
        verdicts.append(check_refused(scenario.events(), "cti.login_forged", ["token_invalid"]))
    overall = scenario.conclude(verdicts)
    assert overall.valid, scenario.failure_message()


@pytest.mark.severity("normal")
def test_cti_garbage_disturbs_nobody(scenario: Scenario) -> None:
    """Malformed lines get error replies and then a closed connection, an oversized line a closed
    connection; meanwhile every agent stays registered, logged in and ready at home."""
    garbage = [b"this is not json\n", b"[1, 2, 3]\n", b'{"type": 7}\n', b"\xff\xfe\n", b"{{{{\n", b"nope\n"]
    oversized = [b'{"type": "heartbeat", "pad": "' + b"x" * 20000 + b'"}\n']
    with scenario.phase("apply: garbage and an oversized line"):
        _send(scenario, "cti.garbage", {"lines": len(garbage)}, garbage)
        _send(scenario, "cti.oversized", {"bytes": len(oversized[0])}, oversized)
    with scenario.phase("verify: nobody disturbed"):
        scenario.hold(scenario.expect(), "every agent stays logged in at home", 3.0, states=("ready",))
    with scenario.phase("verify-revert"):
        scenario.finish()
    verdicts = scenario.standard_checks(expect="home", affected=list(scenario.expect()), recovery=False)
    if not scenario.dry_run:
        ev = scenario.events()
        # refused, and the misbehaving connection closed: judged from the history like the rest
        codes = ["bad_json", "bad_request", "unknown_type"]
        verdicts.append(check_refused(ev, "cti.garbage", codes, closed=True))
        verdicts.append(check_refused(ev, "cti.oversized", ["too_large"], closed=True))
    overall = scenario.conclude(verdicts)
    assert overall.valid, scenario.failure_message()
