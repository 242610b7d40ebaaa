"""harness.observe: the readers against real sockets speaking the devices' protocols (a Kamailio-shaped
JSON-RPC server, a CTI-shaped newline-JSON server on loopback), the wire-to-history mapping, and the poller
writing snapshots the checkers accept. No lab needed: these are the parts a lab run depends on."""

from __future__ import annotations

import json
import socketserver
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest

from harness import checks, observe
from harness.decode import Event
from harness.history import History

UL_DUMP = {
    "Domains": [
        {
            "Domain": {
                "Domain": "location",
                "AoRs": [
                    {"Info": {"AoR": "10001", "Contacts": [
                        {"Contact": {"Address": "sip:10001@198.18.1.100:5060", "Expires": 290}},
                    ]}},
                    {"Info": {"AoR": "10002", "Contacts": [
                        {"Contact": {"Address": "sip:10002@198.18.1.100:5060", "Expires": 100}},
                        {"Contact": {"Address": "sip:10002@198.18.9.9:5060", "Expires": 50}},
                    ]}},
                ],
            }
        }
    ]
}  # fmt: skip


class _Rpc(BaseHTTPRequestHandler):
    fail = False

    def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.fail or body["method"] != "ul.dump" or body["params"]:
            reply, code = (
                {"jsonrpc": "2.0", "error": {"code": 500, "message": "Method Not Found"}, "id": 1},
                500,
            )
        else:
            reply, code = {"jsonrpc": "2.0", "result": UL_DUMP, "id": body["id"]}, 200
        data = json.dumps(reply).encode()
        self.send_response(code)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *a: Any) -> None:
        pass


class _Cti(socketserver.StreamRequestHandler):
    sessions: list[dict[str, Any]] = [
        {"agent": "a00001", "state": "ready", "epoch": 5, "extension": "10001", "since": 1.0, "linked": True},
        {"agent": "a00002", "state": "fenced", "epoch": 4, "extension": "10002"},
    ]

    def handle(self) -> None:
        for line in self.rfile:
            msg = json.loads(line)
            if msg.get("type") == "sessions":
                reply = {"type": "sessions", "id": msg.get("id"), "site": "sha", "sessions": self.sessions}
            else:
                reply = {"type": "error", "code": "unknown_type", "id": msg.get("id")}
            self.wfile.write(json.dumps(reply).encode() + b"\n")


@pytest.fixture
def rpc() -> Iterator[str]:
    srv = HTTPServer(("127.0.0.1", 0), _Rpc)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/RPC"
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def cti() -> Iterator[tuple[str, int]]:
    socketserver.ThreadingTCPServer.allow_reuse_address = True
    srv = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Cti)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield "127.0.0.1", srv.server_address[1]
    srv.shutdown()
    srv.server_close()


def test_pbx_registrations_one_entry_per_contact(rpc: str) -> None:
    regs = observe.pbx_registrations(rpc)
    assert [r["extension"] for r in regs] == ["10001", "10002", "10002"]  # a second contact stays visible
    assert regs[0] == {"extension": "10001", "contact": "sip:10001@198.18.1.100:5060", "expires": 290}


def test_pbx_rpc_error_is_an_observe_error(rpc: str) -> None:
    _Rpc.fail = True
    try:
        with pytest.raises(observe.ObserveError, match="Method Not Found"):
            observe.pbx_registrations(rpc)
    finally:
        _Rpc.fail = False
    with pytest.raises(observe.ObserveError):
        observe.pbx_registrations("http://127.0.0.1:9/RPC", timeout=0.3)  # nothing listens: refused


def test_cti_sessions_trimmed(cti: tuple[str, int]) -> None:
    s = observe.cti_sessions(*cti)
    assert s[0] == {"agent": "a00001", "state": "ready", "epoch": 5, "extension": "10001", "linked": True}
    assert s[1]["state"] == "fenced"


def _ep(kind: str, host: str, port: int) -> observe.Endpoint:
    return observe.Endpoint(kind, f"sha-{kind}1", "sha", host, port)


def test_view_placement_and_stale_data_dropped(rpc: str, cti: tuple[str, int]) -> None:
    host, port = rpc.split("//")[1].split("/")[0].split(":")
    eps = [_ep("pbx", host, int(port)), _ep("cti", *cti)]
    v = observe.read_view(eps)
    assert v.complete(eps)
    exts = {"a00001": "10001", "a00002": "10002"}
    bad = v.misplaced({"a00001": "sha", "a00002": "sha"}, exts)
    assert list(bad) == ["a00002"]  # two contacts, and its session is fenced (over)
    assert bad["a00002"]["registered_at"] == ["sha", "sha"] and bad["a00002"]["sessions_at"] == []
    assert list(v.missing({"a00001": "sha", "a00002": "sha"}, exts, states=None)) == ["a00002"]  # fenced
    assert list(v.missing({"a00001": "ntg"}, exts)) == ["a00001"]
    v.forget(eps[0], "gone")  # a PBX that stops answering: its table is not trusted any more
    assert v.placement("a00001", "10001")[0] == [] and not v.complete(eps)


def test_observer_writes_snapshots_the_checkers_read(
    rpc: str, cti: tuple[str, int], tmp_path: Path, eventually: Any
) -> None:
    host, port = rpc.split("//")[1].split("/")[0].split(":")
    eps = [_ep("pbx", host, int(port)), _ep("cti", *cti)]
    tries = {"dead": 0}

    class Dead(observe.Endpoint):
        def read_timed(self, timeout: float) -> tuple[dict[str, Any], float, float]:
            tries["dead"] += 1
            return super().read_timed(timeout)

    eps.append(Dead("pbx", "ntg-pbx1", "ntg", "127.0.0.1", 9))  # never answers
    h = History(tmp_path / "h.jsonl")
    obs = observe.Observer(lab=None, history=h, hz=20, timeout=0.2, eps=eps)  # type: ignore[arg-type]

    def recorded(kind: str) -> int:
        return sum(1 for e in list(h.events) if e.type == "obs" and e.kind == kind)

    with obs:
        assert obs.wait_until(lambda v: "pbx:sha" in v.at and "cti:sha" in v.at, 30)
        # a few polls of each, and the dead PBX tried again and again (its error is still recorded once)
        assert eventually(lambda: recorded("pbx_snapshot") >= 3 and recorded("cti_snapshot") >= 3)
        assert eventually(lambda: tries["dead"] >= 3)
    h.close()
    kinds = [e.kind for e in History.load(h.path) if e.type == "obs"]
    assert kinds.count("pbx_snapshot") >= 3 and kinds.count("cti_snapshot") >= 3
    assert kinds.count("observe_error") == 1  # recorded once when it stops answering, not per poll
    snap = next(e for e in History.load(h.path) if e.type == "obs" and e.kind == "pbx_snapshot")
    assert snap.source == "sha-pbx1" and snap.value["site"] == "sha" and len(snap.value["registrations"]) == 3
    # the checkers take these snapshots as they are: a00002 has two registrations -> invalid
    roster = {
        "a00001": {"site": "sha", "extension": "10001"},
        "a00002": {"site": "sha", "extension": "10002"},
    }
    v = checks.check_single_registration(
        History.load(h.path), expect="home", roster=roster, affected=list(roster)
    )
    assert v.result == "invalid" and [w["agent"] for w in v.witnesses] == ["a00002"]
    assert v.witnesses[0]["registered_at"] == ["sha", "sha"]


def _cti_ev(t: float, src: tuple[str, int], dst: tuple[str, int], body: dict[str, Any]) -> Event:
    return Event(t, 1, "cti", "tcp", src[0], src[1], dst[0], dst[1], type=body.get("type"), body=body)


def test_cti_messages_become_session_events() -> None:
    cti = ("198.18.1.20", 7000)
    agent_c, ul_c, old_c = ("198.18.1.100", 40001), ("198.18.1.30", 40002), ("198.18.1.100", 40003)
    evs = [
        _cti_ev(1.0, agent_c, cti, {"type": "login", "id": 1, "agent": "a00001", "token": "t"}),
        _cti_ev(
            1.1,
            cti,
            agent_c,
            {"type": "login_ok", "id": 1, "agent": "a00001", "epoch": 7, "state": "not_ready"},
        ),
        _cti_ev(1.2, cti, agent_c, {"type": "state_ok", "id": 2, "state": "ready"}),
        _cti_ev(1.3, cti, agent_c, {"type": "heartbeat_ack", "id": 3, "state": "ready", "epoch": 7}),
        _cti_ev(
            1.4, cti, old_c, {"type": "heartbeat_ack", "id": 9, "state": "ready"}
        ),  # login before capture
        _cti_ev(2.0, ul_c, cti, {"type": "admin", "op": "fence", "agent": "a00009", "id": 4}),
        _cti_ev(2.1, cti, ul_c, {"type": "admin_ok", "op": "fence", "fenced": True, "id": 4}),
        _cti_ev(3.0, cti, agent_c, {"type": "event", "event": "fenced", "epoch": 9, "site": "ntg"}),
        _cti_ev(3.1, cti, agent_c, {"type": "logout_ok", "id": 5}),
        _cti_ev(3.2, cti, agent_c, {"type": "error", "id": 6, "code": "token_invalid"}),
    ]
    out = observe.cti_observations(evs, {"198.18.1.20": ("sha-cti1", "sha")})
    vals = [(e.time, dev, v) for e, dev, v in out]
    assert vals[0] == (
        1.1,
        "sha-cti1",
        {"event": "login", "state": "not_ready", "site": "sha", "agent": "a00001", "epoch": 7},
    )
    assert [v["event"] for _, _, v in vals] == ["login", "state", "state", "fenced", "fenced", "logout"]
    assert vals[3][2] == {"event": "fenced", "site": "sha", "agent": "a00009"}  # confirmed by admin_ok
    assert (
        vals[4][2]["agent"] == "a00001" and vals[4][2]["site"] == "sha"
    )  # the session's site, not the new one


def test_cti_blip_evidence_is_mapped_too() -> None:
    """What tells a blip was seen (issue 11, check_blip): the client's heartbeats, the CTI's pushed
    link-down report, its ack saying the link is down, and a re-check's status on a fresh connection."""
    cti = ("198.18.1.20", 7000)
    agent_c, fresh_c = ("198.18.1.100", 40001), ("198.18.1.100", 40009)
    evs = [
        _cti_ev(1.0, agent_c, cti, {"type": "login", "id": 1, "agent": "a00001", "token": "t"}),
        _cti_ev(1.1, cti, agent_c, {"type": "login_ok", "id": 1, "agent": "a00001", "epoch": 7}),
        _cti_ev(2.0, agent_c, cti, {"type": "heartbeat", "id": 2, "seq": 1}),
        _cti_ev(2.1, cti, agent_c, {"type": "event", "event": "pbx_link_down"}),
        _cti_ev(2.2, cti, agent_c, {"type": "heartbeat_ack", "id": 2, "state": "ready", "pbx_link": "down"}),
        _cti_ev(2.3, fresh_c, cti, {"type": "status", "id": 1, "extension": "10001"}),
    ]
    out = observe.cti_observations(evs, {"198.18.1.20": ("sha-cti1", "sha")})
    vals = [v for _, _, v in out]
    assert vals[1] == {"event": "heartbeat", "site": "sha", "agent": "a00001"}
    assert vals[2] == {"event": "pbx_link_down", "site": "sha", "agent": "a00001", "epoch": 7}
    assert vals[3]["event"] == "state" and vals[3]["pbx_link"] == "down"
    assert vals[4] == {"event": "status", "site": "sha", "extension": "10001"}


def test_sip_messages_get_the_pbx_site() -> None:
    reg_ok = Event(
        5.0, 3, "sip", "udp", "198.18.2.10", 5060, "198.18.1.100", 5060,
        status=200, cseq_method="REGISTER", extension="10001", registrar="198.18.2.10", expires=300,
    )  # fmt: skip
    other = Event(5.1, 4, "sip", "udp", "198.18.1.100", 5060, "198.18.1.50", 5060, method="OPTIONS")
    out = observe.sip_observations([reg_ok, other], {"198.18.2.10": ("ntg-pbx1", "ntg")})
    assert len(out) == 1
    _, dev, v = out[0]
    assert dev == "ntg-pbx1" and v["site"] == "ntg" and v["status"] == 200 and v["expires"] == 300


def test_forged_token_is_shaped_like_a_real_one() -> None:
    tok = observe.forged_token("a00001", "sha", "10001")
    body, sig = tok.split(".")
    import base64

    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    assert claims["agent"] == "a00001" and claims["site"] == "sha" and claims["exp"] > time.time()
    assert len(base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4))) == 32


def test_cti_exchange_reports_close(cti: tuple[str, int]) -> None:
    got = observe.cti_exchange(*cti, [b'{"type": "nope", "id": 1}\n'], timeout=0.5)
    assert got[0]["code"] == "unknown_type" and "closed" not in got  # quiet, not closed


def test_a_logout_is_the_session_end_when_the_cti_wrote_its_answer() -> None:
    """Not when the client asked: under loss past the capture point the CTI read the logout later, and a
    snapshot between the two still listed the session (explore-58). The answer's `at` dates it."""
    cti = ("198.18.1.20", 7000)
    a = ("198.18.1.100", 40001)
    evs = [
        _cti_ev(1.0, a, cti, {"type": "login", "id": 1, "agent": "a00001", "token": "t"}),
        _cti_ev(
            1.1,
            cti,
            a,
            {"type": "login_ok", "id": 1, "agent": "a00001", "epoch": 7, "state": "ready", "at": 1100},
        ),  # fmt: skip
        _cti_ev(2.0, a, cti, {"type": "logout", "id": 2}),
        _cti_ev(9.0, cti, a, {"type": "logout_ok", "id": 2, "at": 3000}),  # written at 3.0, held 6 s
    ]
    out = observe.cti_observations(evs, {"198.18.1.20": ("sha-cti1", "sha")})
    got = [(e.time, v["event"], v.get("held")) for e, _, v in out]
    assert got == [(1.1, "login", None), (9.0, "logout", 6.0)]


def test_a_logout_answered_lapsed_is_no_exact_end() -> None:
    cti = ("198.18.1.20", 7000)
    a = ("198.18.1.100", 40001)
    evs = [
        _cti_ev(1.0, a, cti, {"type": "login", "id": 1, "agent": "a00001", "token": "t"}),
        _cti_ev(1.1, cti, a, {"type": "login_ok", "id": 1, "agent": "a00001", "epoch": 7, "state": "ready"}),
        _cti_ev(2.0, a, cti, {"type": "logout", "id": 2}),
        _cti_ev(18.0, cti, a, {"type": "logout_ok", "id": 2, "lapsed": True}),
    ]
    out = observe.cti_observations(evs, {"198.18.1.20": ("sha-cti1", "sha")})
    assert [(e.time, v["event"]) for e, _, v in out][-1] == (18.0, "lapsed")


def test_a_cti_message_held_back_says_how_long() -> None:
    """The CTI stamps what it writes (`at`, its clock in ms); the least capture-minus-stamp over its
    messages is the clock offset, and a message captured later than that says how long TCP held it."""
    cti = ("198.18.1.20", 7000)
    a = ("198.18.1.100", 40001)
    base = 5000.0  # the CTI's clock runs 5000 s behind the capture's
    evs = [
        _cti_ev(1.0, a, cti, {"type": "login", "id": 1, "agent": "a00001", "token": "t"}),
        _cti_ev(
            1.1,
            cti,
            a,
            {
                "type": "login_ok",
                "id": 1,
                "agent": "a00001",
                "epoch": 7,
                "state": "ready",
                "at": int((1.1 - base) * 1000),
            },
        ),  # fmt: skip
        _cti_ev(2.0, a, cti, {"type": "heartbeat", "id": 2}),
        _cti_ev(
            20.0, cti, a, {"type": "heartbeat_ack", "id": 2, "state": "ready", "at": int((2.0 - base) * 1000)}
        ),  # fmt: skip
    ]
    out = observe.cti_observations(evs, {"198.18.1.20": ("sha-cti1", "sha")})
    got = [(e.time, v["event"], v.get("held")) for e, _, v in out if v["event"] in ("login", "state")]
    assert got == [(1.1, "login", None), (20.0, "state", 18.0)]


def test_a_session_that_ended_with_its_connection_is_a_logout() -> None:
    cti = ("198.18.1.20", 7000)
    a = ("198.18.1.100", 40001)
    evs = [
        _cti_ev(1.0, a, cti, {"type": "login", "id": 1, "agent": "a00001", "token": "t"}),
        _cti_ev(1.1, cti, a, {"type": "login_ok", "id": 1, "agent": "a00001", "epoch": 7, "state": "ready"}),
        _cti_ev(1.2, cti, a, {"type": "event", "event": "ended", "reason": "eof"}),
    ]
    out = observe.cti_observations(evs, {"198.18.1.20": ("sha-cti1", "sha")})
    assert [(e.time, v["event"]) for e, _, v in out] == [(1.1, "login"), (1.2, "logout")]
