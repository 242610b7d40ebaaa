"""Agent-initiated calls end to end on loopback: a real Kamailio (virtual/kamailio.cfg.tmpl: dialogs, the
trunk, the dial plan), an emulated phone, the test callee (stack/callee.py), the CTI (stack/cti/dial.py)
and the agent client's dialling half (stack/agent/outbound.py).

The agent dials a callee; the phone's INVITE goes through the PBX to the trunk; the callee records the call
with the same Call-ID; the CTI's progress events arrive in order. Then a busy number, a phone that is busy,
and the REFER's refusals (not from the registrar, no ``Refer-Sub: false``, a retransmission).
PBX: SIP 26400 / RPC 26401; phone 26410; callee 26420; CTI 26430.
"""

from __future__ import annotations

import asyncio
import functools
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

from stack.agent.client import AgentClient
from stack.callee import open_callee
from stack.common import auth
from stack.cti.client import CtiConnection, CtiError
from stack.cti.server import CtiServer
from stack.phone.control import LocalPhoneControl
from stack.phone.ua import Phone, SipEndpoint
from tests.kamailio_pbx import start_pbx, until
from virtual.pbx import PbxSpec

HOST = "127.0.0.1"
SIP, RPC, PHONE, CALLEE, CTI = 26400, 26401, 26410, 26420, 26430
EXTS = {"19001": "pw-19001", "19002": "pw-19002", "19091": "pw-19091"}
SECRET = "outbound-secret"


@pytest.fixture(scope="module")
def pbx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PbxSpec]:
    yield from start_pbx(PbxSpec("sha-pbx1", HOST, SIP, RPC, "lab", tmp_path_factory.mktemp("pbx"), EXTS))


class Dialing(AgentClient):
    """The agent client (its dialling half is stack/agent/outbound.py)."""


async def _lab(hold: float = 0.6) -> tuple[Any, ...]:
    ep = await SipEndpoint.open(HOST, PHONE)
    phone = Phone(ep, "19001", EXTS["19001"], (HOST, SIP), 60)
    assert await phone.register()
    cep, callee, trunk = await open_callee((HOST, CALLEE), (HOST, SIP), "19091", EXTS["19091"], None,
                                           answer_after=0.4, hold=hold)  # fmt: skip
    assert await until(lambda: trunk.registered, 5.0)
    srv = CtiServer("sha", SECRET, pbx_rpc=f"http://{HOST}:{RPC}/RPC", ul_url=None, pbx_sip=(HOST, SIP))
    await srv.start(HOST, CTI)
    return ep, phone, cep, callee, trunk, srv


async def _close(ep: Any, phone: Phone, cep: Any, trunk: Phone, srv: CtiServer) -> None:
    await srv.stop()
    await trunk.unregister()
    await phone.unregister()
    for p, e in ((phone, ep), (trunk, cep)):
        p.close()
        e.close()


async def _agent(srv: CtiServer) -> Dialing:
    """An agent client logged in at the CTI with a token of its own, its events on its callback."""
    client = Dialing("a00001", "pw", "19001", "sha", {"sha": "http://127.0.0.1:9"}, LocalPhoneControl(None))  # type: ignore[arg-type]
    client.conn = await CtiConnection.open(
        HOST, CTI, on_event=functools.partial(client._on_event, client._gen)
    )
    tok = auth.mint(SECRET, {"agent": "a00001", "site": "sha", "epoch": 1, "ext": "19001"})
    assert (await client.conn.request({"type": "login", "agent": "a00001", "token": tok}))[
        "type"
    ] == "login_ok"
    client.phase, client.site = "online", "sha"
    return client


def test_agent_dials_a_callee_through_the_pbx(pbx: PbxSpec) -> None:
    async def body() -> None:
        ep, phone, cep, callee, trunk, srv = await _lab()
        try:
            client = await _agent(srv)
            t0 = time.time()
            call = await client.dial("02155500001", timeout=20)
            assert call.states == ["dialing", "ringing", "answered", "ended"], call.view()
            assert call.reason == "hangup" and call.call_id
            # the callee got exactly this call, from the agent's extension, answered and hung up by it
            assert len(callee.records) == 1
            rec = callee.records[0]
            assert (
                rec["call_id"] == call.call_id and rec["from"] == "19001" and rec["number"] == "02155500001"
            )
            assert rec["outcome"] == "answered" and rec["ended_by"] == "callee" and rec["invite_at"] >= t0 - 1
            # the agent's own event log has the same steps
            seen = [e["state"] for e in client.events.recent(50, event="outbound_call")]
            assert seen == call.states
            # a busy number: the call fails, the callee says busy
            call = await client.dial("02155500486", timeout=20)
            assert call.states == ["dialing", "failed"] and call.reason == "not_answered", call.view()
            assert callee.records[-1]["outcome"] == "busy" and callee.records[-1]["call_id"] == call.call_id
            await client.conn.close()
        finally:
            await _close(ep, phone, cep, trunk, srv)

    asyncio.run(asyncio.wait_for(body(), 60))


def test_dial_refusals(pbx: PbxSpec) -> None:
    async def body() -> None:
        ep, phone, cep, callee, trunk, srv = await _lab(hold=0)
        try:
            client = await _agent(srv)
            for bad in ("", "12", "0215550000a", "+" + "1" * 21, 5):
                with pytest.raises(CtiError) as err:
                    await client.conn.request({"type": "dial", "number": bad})
                assert err.value.code == "bad_request"
            # one call at a time: a second dial while the first rings is refused
            ref = await client.start_dial("02155500480")  # rings until cancelled
            with pytest.raises(CtiError) as err:
                await client.start_dial("02155500002")
            assert err.value.code == "busy"
            assert await until(lambda: client.calls[ref].state == "ringing", 10.0)
            assert phone.call_state == "ringing"
            # the phone hangs up (CANCEL): the CTI reports the call failed, the callee cancelled
            assert await phone.hangup()
            assert await until(lambda: client.calls[ref].state == "failed", 10.0)
            assert callee.records[-1]["outcome"] == "cancelled"
            assert client.calls[ref].states == ["dialing", "ringing", "failed"]
            await client.conn.close()
            # a dial without a session is refused
            conn = await CtiConnection.open(HOST, CTI)
            with pytest.raises(CtiError) as err:
                await conn.request({"type": "dial", "number": "02155500001"})
            assert err.value.code == "not_logged_in"
            await conn.close()
        finally:
            await _close(ep, phone, cep, trunk, srv)

    asyncio.run(asyncio.wait_for(body(), 60))


def test_a_phone_with_a_call_refuses_the_refer_and_the_dial_fails(pbx: PbxSpec) -> None:
    async def body() -> None:
        ep, phone, cep, callee, trunk, srv = await _lab(hold=0)
        try:
            client = await _agent(srv)
            first = await client.start_dial("02155500001")
            assert await until(lambda: client.calls[first].state == "answered", 10.0)
            assert phone.call_state == "in_call"
            srv.dials.clear()  # the CTI forgets the call (as after a restart): the phone is still busy
            call = await client.dial("02155500002", timeout=15)
            assert call.states == ["failed"] and call.reason == "phone_refused", call.view()
            await phone.hangup()
            await client.conn.close()
        finally:
            await _close(ep, phone, cep, trunk, srv)

    asyncio.run(asyncio.wait_for(body(), 60))


def _refer(call_id: str, sub: str | None = "false") -> bytes:
    extra = f"Refer-Sub: {sub}\r\n" if sub else ""
    return (
        f"REFER sip:19002@{HOST}:{PHONE} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {HOST}:9;rport;branch=z9hG4bK{call_id}\r\n"
        f"From: <sip:cti@lab>;tag=1\r\nTo: <sip:19002@lab>\r\nCall-ID: {call_id}\r\nCSeq: 1 REFER\r\n"
        f"Contact: <sip:cti@{HOST}>\r\nRefer-To: <sip:02155500001@lab>\r\n{extra}Content-Length: 0\r\n\r\n"
    ).encode()


def test_refer_rules_of_the_phone(pbx: PbxSpec) -> None:
    """Only the registrar may REFER, only with Refer-Sub: false; a retransmission dials nothing more."""

    async def body() -> None:
        events: list[Any] = []
        ep = await SipEndpoint.open(HOST, PHONE + 1)
        phone = Phone(ep, "19002", EXTS["19002"], (HOST, SIP), 60, on_event=events.append)
        assert await phone.register()
        cep, _, trunk = await open_callee((HOST, CALLEE), (HOST, SIP), "19091", EXTS["19091"], None, hold=0)
        assert await until(lambda: trunk.registered, 5.0)
        loop = asyncio.get_running_loop()

        async def ask(data: bytes, src: str) -> str:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind((src, 0))
            s.setblocking(False)
            try:
                s.sendto(data.replace(b"sip:19002@127.0.0.1:26410", f"sip:19002@{HOST}:{PHONE + 1}".encode()),
                         (HOST, PHONE + 1))  # fmt: skip
                reply = await asyncio.wait_for(loop.sock_recv(s, 4096), 5)
                return reply.split(b"\r\n", 1)[0].decode()
            finally:
                s.close()

        try:
            assert await ask(_refer("x1"), "127.0.0.2") == "SIP/2.0 403 Forbidden"  # not the registrar
            assert (await ask(_refer("x2", None), HOST)).startswith("SIP/2.0 421")
            assert await ask(_refer("x3"), HOST) == "SIP/2.0 202 Accepted"
            assert await until(lambda: any(e.kind == "call_answered" for e in events), 10.0)
            # a retransmission gets the same answer (a new REFER would get 486: the phone has a call)
            assert await ask(_refer("x3"), HOST) == "SIP/2.0 202 Accepted"
            assert [e.kind for e in events].count("outgoing_call") == 1
            assert await ask(_refer("x4"), HOST) == "SIP/2.0 486 Busy Here"  # a call is up
            await phone.hangup()
            await phone.unregister()
            await trunk.unregister()
        finally:
            for p, e in ((phone, ep), (trunk, cep)):
                p.close()
                e.close()

    asyncio.run(asyncio.wait_for(body(), 60))


def test_the_pbx_refuses_a_refer_from_a_client(pbx: PbxSpec) -> None:
    """Only the PBX itself (on the CTI's RPC) REFERs a phone: a REFER sent to the PBX, credentials or not,
    would make another account's phone dial, and is refused."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(5)
    try:
        s.sendto(_refer("x9").replace(f"{HOST}:{PHONE}".encode(), f"{HOST}:{SIP}".encode()), (HOST, SIP))
        assert s.recv(4096).split(b"\r\n", 1)[0] == b"SIP/2.0 403 Forbidden"
    finally:
        s.close()
