"""Security (issue 16, item 6): an attacker on an agents host, judged from the wire.

The attacker runs INSIDE the agents host (its network namespace, its data address; over SSH on the host
itself on a physical lab), as software on an agent's desktop would: its probes are harness/tools/probe.py,
its flood the `flood` fault (harness/faults/flood.py, through the injector like every other fault). What
the attacker saw is recorded as operations (`attack.*`); what the servers answered is read back from the
capture (the CTI's answers on the attacker's own connections, harness/observe/wire.py, found by the local
ports the probe reports: check_answered_on_wire), so a refusal counts only when the wire shows it. The
PBX's RPC is not on a captured port: what the attacker got (a refusal, a 403) and what the CTI's host got
(an answer) are the evidence there.

During the floods the usual failover promise is judged by the usual checkers (as test_unplanned), on the
capture as it is: the garbage the attacker sends is malformed by design, and the decoder counts it as
garbage, not capture loss, because the servers refused everything on its connections
(harness/decode/garbage.py); what it counted is kept in the flood's verdict.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pytest

from harness import checks, observe
from harness.checks import Verdict, check_refused
from harness.checks.refusals import check_answered_on_wire, wire_answers
from harness.credentials import STACK_SECRET_VAR
from harness.faults import FaultRefused
from harness.faults.flood import FLOOD_PORTS, check_ssh_host, run_as_host
from harness.history import CAPTURE_STATS, Event, Obs, pair_ops
from harness.scenario import Scenario
from harness.ulapi import sign_request

FEATURE = "security"
SITE, REMOTE = "sha", "ntg"
ATTACKER = f"{SITE}-agents1"


# -- the attacker's probes ---------------------------------------------------------------------------


def _altered(token: str, agent: str) -> str:
    """A token whose claims were edited after signing (another agent, a later expiry): its MAC no longer
    matches the body."""
    body, _, sig = token.partition(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    claims.update(agent=agent, exp=int(time.time()) + 86400)
    raw = base64.urlsafe_b64encode(json.dumps(claims, separators=(",", ":")).encode()).rstrip(b"=")
    return f"{raw.decode()}.{sig}"


def _signed_admin(msg: dict[str, Any]) -> str:
    """A CTI admin message signed as the UL signs them (docs/cti-protocol.md: ts, nonce, HMAC over the
    canonical JSON): what an attacker on the path would capture and replay."""
    body = dict(msg, ts=round(time.time(), 3), nonce=secrets.token_hex(12))
    canon = json.dumps(body, separators=(",", ":"), sort_keys=True).encode()
    body["sig"] = hmac.new(os.environ[STACK_SECRET_VAR].encode(), canon, hashlib.sha256).hexdigest()
    return json.dumps(body)


def _attacker_runs_here(sc: Scenario, *hosts: str) -> None:
    """The attacker is a process run as the agents host (and a probe as the CTI's host): on the virtual
    lab in its namespace, on a physical one over SSH on the host itself (harness/faults/flood.py); a
    physical lab whose topology gives no SSH way in to them skips the scenario, saying why."""
    if sc.lab.virtual:
        return
    for host in (ATTACKER, *hosts):
        try:
            check_ssh_host(sc.lab, host)
        except FaultRefused as e:
            pytest.skip(f"{sc.lab.topology.name}: {e}")


Attack = tuple[str, dict[str, Any], Callable[[Mapping[str, Any]], str | None]]  # (f, probe, judge)


def _attack(sc: Scenario, host: str, attacks: Sequence[Attack]) -> dict[str, dict[str, Any]]:
    """Run ``attacks`` in order as ``host`` (one probe process) and record each as an operation of its
    own: ``judge(result)`` is the code it was refused with (the op fails with it), or None (served, ok).
    Planned, not sent, in a dry run. Returns each attack's result by its ``f``."""
    if sc.dry_run:
        for f, probe, _ in attacks:
            sc.plan.append({"device": host, "action": f, "commands": [json.dumps(probe)[:200]]})
        return {}
    assert sc.history is not None
    for f, probe, _ in attacks:  # one history process per attack: each op's invoke pairs with its end
        sc.history.invoke(
            f"attacker:{host}:{f}", f, {"probe": probe["op"], "at": f"{probe['host']}:{probe['port']}"}
        )
    results = run_as_host(sc.lab, host, "harness.tools.probe", [p for _, p, _ in attacks])
    for (f, _, judge), result in zip(attacks, results, strict=True):
        err = judge(result)
        if err:
            sc.history.fail(f"attacker:{host}:{f}", f, result, error=err)
        else:
            sc.history.ok(f"attacker:{host}:{f}", f, result)
    return {f: r for (f, _, _), r in zip(attacks, results, strict=True)}


def _login(agent: str, token: str) -> str:
    return json.dumps({"type": "login", "id": 1, "agent": agent, "token": token})


def _codes(result: Mapping[str, Any]) -> str | None:
    """The CTI error codes a probe got (``forbidden:replayed``), None when it got none."""
    errs = [
        f"{r.get('code')}:{r.get('reason')}" if r.get("reason") else str(r.get("code"))
        for r in result.get("replies", [])
        if isinstance(r, dict) and r.get("type") == "error"
    ]
    if result.get("error"):
        return f"no_answer: {result['error']}"
    if not result.get("replies"):
        return "no_reply"
    return ",".join(errs) or None


def _signed_ul_request(ul: Any, rule_id: str) -> str:
    """A signed ``DELETE /v1/rules/<id>`` as the harness's UL client sends it (X-Hil-Time, X-Hil-Sig), for a
    rule that does not exist: served, it removes nothing (404 after the signature is accepted), so the
    lab is not changed outside the injector; replayed, the same bytes must be refused (403 replayed)."""
    path = f"/v1/rules/{rule_id}"
    headers = sign_request(os.environ[STACK_SECRET_VAR], "DELETE", path)
    lines = [f"DELETE {path} HTTP/1.1", f"Host: {ul.spec.address}:{ul.spec.port}", "Content-Length: 0"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return "\r\n".join([*lines, "Connection: close", "", ""])


def _http_refused(result: Mapping[str, Any]) -> str | None:
    """``http_403:replayed`` when the UL refused the request (status and the reason it gave), None when it
    was served (any answer past the signature check: a 404 for the absent rule counts as served)."""
    status, body = result.get("status"), result.get("body")
    if result.get("outcome") != "answered":
        return str(result.get("outcome") or result.get("error"))
    if status in (401, 403):
        reason = body.get("reason") if isinstance(body, dict) else None
        return f"http_{status}:{reason}" if reason else f"http_{status}"
    return None


def _rpc_refused(result: Mapping[str, Any]) -> str | None:
    """The RPC did not serve the attacker: connection refused, no answer, or an HTTP 4xx."""
    if result.get("outcome") == "answered" and isinstance(result.get("status"), int):
        return f"http_{result['status']}" if result["status"] >= 400 else None
    return str(result.get("outcome") or result.get("error"))


@pytest.mark.security
@pytest.mark.severity("critical")
def test_attacker_on_agents_host_refused(scenario: Scenario) -> None:
    """From an agent's desktop: a login with a forged token and one with an altered token are refused
    (token_invalid) while the real agent stays logged in; a signed CTI admin message and a signed UL
    admin request, each replayed byte for byte, are refused (forbidden / 403: replayed) after the
    original was served once; the PBX's RPC refuses
    the desktop (its data address does not serve it, its management address answers 403) and answers
    the CTI's host. Nobody is disturbed."""
    _attacker_runs_here(scenario, f"{SITE}-cti1")
    topo = scenario.lab.topology
    agent = next(a for a in topo.agents() if a.home == SITE)
    other = next(a for a in topo.agents() if a.home == SITE and a.id != agent.id)
    cti, pbx, ul = topo.device(f"{SITE}-cti1"), topo.device(f"{SITE}-pbx1"), topo.device(f"{SITE}-ul1")
    ul_req = {"op": "http", "host": str(ul.spec.address), "port": ul.spec.port}
    ul_delete = _signed_ul_request(ul, f"k3-absent-{secrets.token_hex(4)}")
    forged = observe.forged_token(agent.id, SITE, agent.extension)
    admin = _signed_admin(
        {"type": "admin", "op": "switch_order", "agents": [], "target": REMOTE, "rule": "k3"}
    )
    exchange = {"op": "exchange", "host": str(cti.spec.address), "port": cti.spec.port}
    rpc = {"op": "rpc", "port": pbx.spec.rpc_port, "method": "core.version"}
    attacks: list[Attack] = [
        ("attack.cti_login_forged", {**exchange, "lines": [_login(agent.id, forged)]}, _codes),
        (
            "attack.cti_login_altered",
            {**exchange, "lines": [_login(agent.id, _altered(forged, other.id))]},
            _codes,
        ),
        ("attack.cti_admin_original", {**exchange, "lines": [admin]}, _codes),
        ("attack.cti_admin_replayed", {**exchange, "lines": [admin]}, _codes),  # the same bytes again
        ("attack.ul_admin_original", {**ul_req, "request": ul_delete}, _http_refused),
        ("attack.ul_admin_replayed", {**ul_req, "request": ul_delete}, _http_refused),  # the same bytes
        ("attack.pbx_rpc_data", {**rpc, "host": str(pbx.spec.address)}, _rpc_refused),
        ("attack.pbx_rpc_mgmt", {**rpc, "host": str(pbx.spec.mgmt)}, _rpc_refused),
    ]
    with scenario.phase("apply: attacks from the agents host"):
        _attack(scenario, ATTACKER, attacks)
        _attack(scenario, cti.name, [("cti_host.pbx_rpc", {**rpc, "host": str(pbx.spec.mgmt)}, _rpc_refused)])
    wanted = {
        "attack.cti_login_forged": "token_invalid",
        "attack.cti_login_altered": "token_invalid",
        "attack.cti_admin_original": "admin_ok",
        "attack.cti_admin_replayed": "forbidden:replayed",
    }
    with scenario.phase("verify: refused, nobody disturbed"):
        scenario.hold(scenario.expect(), "every agent stays logged in at home", 2.0, states=("ready",))
    with scenario.phase("verify-revert"):
        scenario.finish()
    verdicts = scenario.standard_checks(expect="home", affected=list(scenario.expect()), recovery=False)
    if not scenario.dry_run:
        ev = scenario.events()
        verdicts += [
            check_refused(ev, "attack.cti_login_forged", ["token_invalid"]),
            check_refused(ev, "attack.cti_login_altered", ["token_invalid"]),
            check_refused(ev, "attack.cti_admin_replayed", ["forbidden:replayed"]),
            check_refused(ev, "attack.ul_admin_replayed", ["http_403:replayed"]),
            _accepted(ev, "attack.ul_admin_original"),
            check_refused(ev, "attack.pbx_rpc_data", ["refused", "timeout", "unreachable", "http_4"]),
            check_refused(ev, "attack.pbx_rpc_mgmt", ["refused", "timeout", "unreachable", "http_4"]),
            _accepted(ev, "attack.cti_admin_original"),
            _accepted(ev, "cti_host.pbx_rpc"),
            check_answered_on_wire(ev, str(topo.device(ATTACKER).spec.address), wanted),
        ]
    overall = scenario.conclude(verdicts)
    assert overall.valid, scenario.failure_message()


def _accepted(ev: Sequence[Any], f: str) -> Verdict:
    """Every ``f`` operation was served (ok): the legitimate side of a refusal, so that the refusal is no
    door closed to everybody."""
    name = f"served_{f.replace('.', '_')}"
    pairs = [p for p in pair_ops(ev)[0] if p.invoke.f == f]
    if not pairs:
        return Verdict(name, "unknown", f"no {f} operation in the history")
    bad = [
        {"outcome": p.outcome, "error": p.completion and p.completion.error}
        for p in pairs
        if p.outcome != "ok"
    ]
    if bad:
        return Verdict(name, "invalid", f"{len(bad)} of {len(pairs)} {f} not served", bad)
    return Verdict(name, "valid", f"all {len(pairs)} {f} served")


# -- floods during a failover ------------------------------------------------------------------------

# per target: 100 slow clients, 20 idle ones; 200 garbage messages a second in all
FLOOD = {"slow": 100, "idle": 20, "every": 3.0, "rate": 200.0}
FLOOD_ALONE_S = 4.0  # seconds flooded before the failure: every slow client has sent a byte or two
CUT_KINDS = ("http", "cti")  # servers with a deadline for a request (UL) or a login (CTI): 10 s each
CUT_DEADLINE_S = 30.0  # after the failover: three times those deadlines, for a busy machine
# The PBX (kamailio) cuts a connection idle for tcp_connection_lifetime (20 s, virtual/kamailio.cfg.tmpl);
# a client trickling bytes only where it has a deadline for a whole message (5.8+: tcp_msg_read_timeout).
PBX_KIND = "sip"
VICTIMS = [f"{REMOTE}-ul1", f"{REMOTE}-cti1", f"{REMOTE}-pbx1"]  # where the failed site's agents go


GARBAGE_FIGURES = ("garbage_streams", "garbage_messages", "garbage_bytes")


def _garbage(events: Sequence[Event]) -> dict[str, dict[str, int]]:
    """What the decoder counted as garbage at each capture point (the flood's refused streams)."""
    out: dict[str, dict[str, int]] = {}
    for e in events:
        if isinstance(e, Obs) and e.kind == CAPTURE_STATS and isinstance(e.value, dict):
            dec = e.value.get("decode") or {}
            point = str(e.value.get("capture") or e.source)
            out[point] = {k: int(dec.get(k, 0)) for k in GARBAGE_FIGURES}
    return out


@pytest.mark.security
@pytest.mark.unplanned
@pytest.mark.severity("critical")
def test_failover_under_flood(scenario: Scenario) -> None:
    """An attacker on the failed site's agents host floods the surviving site's UL, CTI and PBX (SIP)
    with slow clients (a byte every few seconds, never a whole message) and garbage (random bytes,
    lines that are not JSON, broken HTTP and SIP); the flood alone moves nobody; then the site's PBX is
    killed. Promise, as without the flood: every agent of the site ends registered and logged in once at
    the other site, in its earlier state, within the usual bound (test_unplanned's); nobody is active at
    both; the faults are healed."""
    _attacker_runs_here(scenario)
    attacker_ip = str(scenario.lab.topology.device(ATTACKER).spec.address)
    moved = scenario.expect(moved_from=SITE, to=REMOTE)
    with scenario.fault("flood", ATTACKER, at=VICTIMS, **FLOOD) as flood:
        with scenario.phase("verify: the flood alone moves nobody"):
            scenario.hold(scenario.expect(), "every agent stays home while the flood runs", FLOOD_ALONE_S)
        with scenario.fault("service_kill", f"{SITE}-pbx1", service="kamailio") as kill:
            with scenario.phase("verify: failed over under the flood"):
                scenario.wait_placement(moved, f"agents of {SITE} at {REMOTE}, under the flood")
        with scenario.phase("verify: the UL, the CTI and the PBX cut the slow clients"):
            _wait_cut(scenario, flood)
    with scenario.phase("verify-revert"):
        scenario.finish()
    verdicts: list[Verdict] = []
    if not scenario.dry_run:
        ev = scenario.events()
        timeouts = sum(a.count("login_timeout") for a in wire_answers(ev, attacker_ip, FLOOD_PORTS).values())
        rt = checks.depends_on_capture(checks.check_recovery_time)
        sb = checks.depends_on_capture(checks.check_no_split_brain)
        verdicts = [
            checks.check_single_registration(ev, expect="surviving"),
            sb(ev),
            rt(ev, bound=scenario.settings.bound, expect="surviving", fault=kill.id),
            checks.check_faults_healed(ev),
            checks.check_capture_complete(ev),
            checks.check_expectations(ev),
            _flood_ran(flood.summary, _garbage(ev)),
            _slow_clients_cut(flood.summary, timeouts),
            _pbx_cut_idle(scenario, flood.summary, attacker_ip),
        ]
    overall = scenario.conclude(verdicts)
    assert overall.valid, scenario.failure_message()


def _flood_ran(summary: Mapping[str, Any] | None, garbage: Mapping[str, Any]) -> Verdict:
    """The flood did what it says: slow clients held open and garbage sent at every target (else the
    scenario proved nothing about floods: unknown). Its figures: the flood's own counters per target, and
    what the decoder counted as garbage at each capture point."""
    name = "flood_ran"
    per = (summary or {}).get("summary") or {}
    if not per:
        return Verdict(name, "unknown", "the flood left no summary")
    idle = [
        t
        for t, c in per.items()
        if not c.get("slow_opened") or not (c.get("garbage_sent") or c.get("garbage_sent_udp"))
    ]
    figures = {"targets": per, "seconds": (summary or {}).get("seconds"), "garbage": dict(garbage)}
    if idle:
        return Verdict(name, "unknown", f"the flood never reached {', '.join(idle)}", [], figures)
    return Verdict(name, "valid", f"slow clients and garbage at all {len(per)} targets", [], figures)


def _cut(counters: Mapping[str, Any]) -> dict[str, int]:
    """Per target of a server with a deadline: how many slow connections it has cut so far (all of the
    first ``slow`` at least once is the promise)."""
    return {
        t: int(c.get("slow_closed_by_server", 0))
        for t, c in counters.items()
        if t.split("=", 1)[0] in CUT_KINDS
    }


def _wait_cut(sc: Scenario, flood: Any) -> None:
    """Poll the flood's counters until the UL and the CTI have cut each of its first slow clients (their
    request and login deadlines), or CUT_DEADLINE_S after the flood began; what was seen is recorded."""
    if sc.dry_run or sc.history is None:
        return
    slow, idle = int(FLOOD["slow"]), int(FLOOD["idle"])
    deadline = time.monotonic() + CUT_DEADLINE_S

    def done() -> bool:
        cut, pbx = _cut(flood.counters()), _idle_cut(flood.counters())
        return bool(cut) and all(n >= slow for n in cut.values()) and pbx >= idle

    while time.monotonic() < deadline and not done():
        time.sleep(0.2)
    counters = flood.counters()
    seen = {"cut": _cut(counters), "slow": slow, "pbx_idle_cut": _idle_cut(counters), "idle": idle}
    sc.history.info("scenario", "flood.slow_clients_cut", seen)


def _idle_cut(counters: Mapping[str, Any]) -> int:
    """How many of the flood's idle connections the PBX has cut so far (its own count)."""
    return sum(int(c.get("idle_closed_by_server", 0)) for t, c in counters.items() if t.startswith(PBX_KIND))


def _slow_clients_cut(summary: Mapping[str, Any] | None, cti_timeouts_on_wire: int) -> Verdict:
    """The UL and the CTI cut every one of the flood's first slow clients (a request that never ends, a
    login that never comes), and the CTI said why on the wire (``login_timeout``). A PBX keeps an idle
    TCP connection as long as its configuration says (kamailio: tcp_connection_lifetime): not judged."""
    name = "slow_clients_cut"
    per = (summary or {}).get("summary") or {}
    slow = int(FLOOD["slow"])
    cut = _cut(per)
    figures = {"cut": cut, "slow": slow, "cti_login_timeout_lines_on_wire": cti_timeouts_on_wire}
    if len(cut) < len(CUT_KINDS):
        return Verdict(name, "unknown", "the flood left no counters for the UL and the CTI", [], figures)
    bad = [{"target": t, "cut": n, "slow": slow} for t, n in cut.items() if n < slow]
    if not cti_timeouts_on_wire:
        bad.append({"target": "cti", "problem": "no login_timeout line to the flood on the wire"})
    if bad:
        return Verdict(name, "invalid", f"slow clients left open: {bad}", bad, figures)
    return Verdict(name, "valid", f"every slow client cut by the UL and the CTI ({cut})", [], figures)


def _pbx_cut_idle(sc: Scenario, summary: Mapping[str, Any] | None, attacker_ip: str) -> Verdict:
    """The PBX cut every one of the flood's idle clients, as the wire shows: a FIN or RST from its SIP
    port to a flood connection that had sent nothing. Its cuts of trickling clients are a figure: Kamailio
    5.6 restarts its idle timer at every byte and never cuts them (5.8+ does: tcp_msg_read_timeout)."""
    name = "pbx_cut_slow_clients"
    pbx = sc.lab.topology.device(f"{REMOTE}-pbx1")
    lo, hi = FLOOD_PORTS
    closes = [
        c
        for d in sc.decoded.values()
        for c in d.closes
        if c.src_ip == str(pbx.spec.address) and c.src_port == pbx.spec.sip_port
        and c.dst_ip == attacker_ip and lo <= c.dst_port <= hi
    ]  # fmt: skip
    idle_cut = {(c.dst_port, round(c.time, 3)) for c in closes if not c.peer_bytes}
    idle = int(FLOOD["idle"])
    figures = {
        "idle": idle,
        "idle_cut_on_wire": len(idle_cut),
        "cut_after_bytes_on_wire": len(closes) - len(idle_cut),  # trickling or garbage clients
        "flood_counted": _idle_cut((summary or {}).get("summary") or {}),
    }
    if not sc.decoded:
        return Verdict(name, "unknown", "no capture decoded", [], figures)
    if len(idle_cut) < idle:
        why = f"the PBX cut {len(idle_cut)} of the flood's {idle} idle clients on the wire"
        return Verdict(name, "invalid", why, [figures], figures)
    return Verdict(
        name, "valid", f"the PBX cut all {idle} idle clients ({len(idle_cut)} on the wire)", [], figures
    )
