"""The emulated phone (stack/phone) against real Kamailio PBXs on 127.0.0.1 (virtual/pbx.py): SIP.

Why real: the phone is only as good as a real registrar and proxy find it: digest accepted, contact
reachable for INVITEs, bindings removed when it moves. What the PBX holds is read over its JSON-RPC
(ul.lookup / ul.dump), never taken from the phone's own word. The management APIs are tested against
the same PBXs in tests/test_phone_kamailio_api.py.
Ports: PBX A SIP 26100 / RPC 26101, PBX B 26102 / 26103 (tests/kamailio_pbx.py), relay 26110,
phone sockets 26130-26141.
"""

from __future__ import annotations

import asyncio
import os
import time

import pytest
from kamailio_pbx import (
    A_RPC,
    A_SIP,
    B_RPC,
    B_SIP,
    EXTS,
    HOST,
    contacts,
    no_contacts,
    until,
)

from sipcore.client import SipUdpClient
from stack.phone.control import LocalPhoneControl, PhoneControl
from stack.phone.ua import Phone, PhoneEvent, SipEndpoint
from virtual import pbx
from virtual.pbx import PbxSpec

pytestmark = pytest.mark.skipif(not os.access(pbx.KAMAILIO, os.X_OK), reason="kamailio not installed")


def test_200_phones_register_with_digest_through_one_endpoint(pbx_a: PbxSpec) -> None:
    async def main() -> None:
        ep = await SipEndpoint.open(HOST, 26130)
        events: list[PhoneEvent] = []
        exts = [str(19000 + i) for i in range(200)]
        phones = [Phone(ep, e, EXTS[e], (HOST, A_SIP), on_event=events.append) for e in exts]
        t0 = time.monotonic()
        results = await asyncio.gather(*(p.register() for p in phones))
        took = time.monotonic() - t0
        assert all(results), f"{results.count(False)} failed"
        assert all(p.registered for p in phones)
        aors = await asyncio.to_thread(pbx.registered_aors, HOST, A_RPC)
        assert set(exts) <= aors
        # The PBX holds each phone's own contact on the shared socket, so it can route INVITEs to it.
        got = await asyncio.to_thread(contacts, A_RPC, "19042")
        assert got == [f"sip:19042@{HOST}:26130"]
        assert [e.kind for e in events].count("registered") == 200
        assert all(e.ts >= t0 for e in events)
        assert took < 10, took
        await asyncio.gather(*(p.unregister() for p in phones))
        aors = await asyncio.to_thread(pbx.registered_aors, HOST, A_RPC)
        assert not set(exts) & aors
        assert [e.kind for e in events].count("unregistered") == 200
        ep.close()

    asyncio.run(main())


def test_wrong_password_fails(pbx_a: PbxSpec) -> None:
    async def main() -> None:
        ep = await SipEndpoint.open(HOST, 26131)
        events: list[PhoneEvent] = []
        phone = Phone(ep, "19250", "not-the-password", (HOST, A_SIP), on_event=events.append)
        assert not await phone.register()
        st = phone.status()
        assert not phone.registered and st["state"] == "failed" and st["last_error"].startswith("403")
        assert [e.kind for e in events] == ["registration_failed"]
        assert events[0].detail["code"] == 403
        assert await asyncio.to_thread(contacts, A_RPC, "19250") == []
        phone.close()
        ep.close()

    asyncio.run(main())


def test_move_to_second_pbx_removes_the_first_binding(pbx_a: PbxSpec, pbx_b: PbxSpec) -> None:
    async def main() -> None:
        ep = await SipEndpoint.open(HOST, 26132)
        events: list[PhoneEvent] = []
        phone = Phone(ep, "19251", EXTS["19251"], (HOST, A_SIP), on_event=events.append)
        ctl: PhoneControl = LocalPhoneControl(phone)
        assert await phone.register()
        assert await asyncio.to_thread(contacts, A_RPC, "19251") == [f"sip:19251@{HOST}:26132"]
        assert await ctl.set_server(HOST, B_SIP)  # == phone.move_to((HOST, B_SIP))
        assert phone.registered and phone.registrar == (HOST, B_SIP)
        assert await asyncio.to_thread(contacts, B_RPC, "19251") == [f"sip:19251@{HOST}:26132"]
        assert await no_contacts(A_RPC, "19251")
        reg = await ctl.registration()
        assert reg == {
            "extension": "19251",
            "registered": True,
            "host": HOST,
            "port": B_SIP,
            "call_state": "idle",
        }
        kinds = [(e.kind, tuple(e.detail["registrar"])) for e in events]
        assert kinds == [
            ("registered", (HOST, A_SIP)),
            ("unregistered", (HOST, A_SIP)),
            ("registered", (HOST, B_SIP)),
        ]
        await phone.unregister()
        phone.close()
        ep.close()

    asyncio.run(main())


def test_call_through_kamailio_rings_answers_and_bye_ends(pbx_a: PbxSpec) -> None:
    async def main() -> None:
        ep = await SipEndpoint.open(HOST, 26133)
        ev_a: list[PhoneEvent] = []
        ev_b: list[PhoneEvent] = []
        a = Phone(ep, "19252", EXTS["19252"], (HOST, A_SIP), on_event=ev_a.append)
        b = Phone(ep, "19253", EXTS["19253"], (HOST, A_SIP), on_event=ev_b.append, auto_answer=0.3)
        c = Phone(ep, "19254", EXTS["19254"], (HOST, A_SIP), busy=True)
        assert all(await asyncio.gather(a.register(), b.register(), c.register()))

        dial = asyncio.ensure_future(a.call("19253"))
        assert await until(lambda: b.call_state == "ringing", 10)
        assert a.call_state == "ringing" and not dial.done()
        assert await dial
        assert await until(lambda: b.call_state == "in_call", 10)
        assert a.call_state == "in_call"
        assert a.status()["call"]["peer"] == "19253" and b.status()["call"]["direction"] == "incoming"
        assert await a.hangup()
        assert await until(lambda: b.call_state == "idle", 10)
        assert a.call_state == "idle"
        assert [e.kind for e in ev_b] == ["registered", "incoming_call", "call_answered", "call_ended"]
        assert [e.kind for e in ev_a][1:] == ["outgoing_call", "call_answered", "call_ended"]
        assert ev_b[-1].detail["reason"] == "remote_bye" and ev_a[-1].detail["reason"] == "local_bye"
        ring_to_answer = ev_b[2].ts - ev_b[1].ts
        assert 0.25 < ring_to_answer < 3.0, ring_to_answer

        # The callee hangs up this time (BYE from the UAS side along the record-route).
        assert await a.call("19253")
        assert await until(lambda: b.call_state == "in_call", 10)
        assert await b.hangup()
        assert await until(lambda: a.call_state == "idle", 10)
        assert ev_a[-1].detail["reason"] == "remote_bye"

        # Busy phone: 486 relayed back, the call fails cleanly.
        assert not await a.call("19254")
        assert ev_a[-1].kind == "call_ended" and ev_a[-1].detail["code"] == 486
        # Unregistered target: the PBX answers 480.
        assert not await a.call("19255")
        assert ev_a[-1].detail["code"] == 480
        for p in (a, b, c):
            await p.unregister()
            p.close()
        ep.close()

    asyncio.run(main())


def test_cancel_while_ringing_and_decline(pbx_a: PbxSpec) -> None:
    async def main() -> None:
        ep = await SipEndpoint.open(HOST, 26141)
        ev_a: list[PhoneEvent] = []
        ev_b: list[PhoneEvent] = []
        a = Phone(ep, "19262", EXTS["19262"], (HOST, A_SIP), on_event=ev_a.append)
        b = Phone(ep, "19263", EXTS["19263"], (HOST, A_SIP), on_event=ev_b.append, auto_answer=None)
        assert all(await asyncio.gather(a.register(), b.register()))
        # The caller gives up while it rings: CANCEL through the PBX, 487 back, both idle.
        dial = asyncio.ensure_future(a.call("19263"))
        assert await until(lambda: b.call_state == "ringing", 10)
        assert await a.hangup()
        assert not await asyncio.wait_for(dial, 5)
        assert await until(lambda: b.call_state == "idle", 10)
        assert ev_b[-1].kind == "call_ended" and ev_b[-1].detail["reason"] == "cancelled"
        # The callee declines: 603 relayed to the caller.
        dial = asyncio.ensure_future(a.call("19263"))
        assert await until(lambda: b.call_state == "ringing", 10)
        assert await b.hangup()
        assert not await asyncio.wait_for(dial, 5)
        assert ev_a[-1].kind == "call_ended" and ev_a[-1].detail["code"] == 603
        # Answering by hand (auto_answer None) works too.
        dial = asyncio.ensure_future(a.call("19263"))
        assert await until(lambda: b.call_state == "ringing", 10)
        assert b.answer()
        assert await asyncio.wait_for(dial, 5)
        assert await until(lambda: b.call_state == "in_call", 10)
        assert await a.hangup()
        assert await until(lambda: b.call_state == "idle", 10)
        for p in (a, b):
            await p.unregister()
            p.close()
        ep.close()

    asyncio.run(main())


def test_options_answered(pbx_a: PbxSpec) -> None:
    async def main() -> None:
        ep = await SipEndpoint.open(HOST, 26134)
        phone = Phone(ep, "19256", EXTS["19256"], (HOST, A_SIP))

        def probe() -> int:
            with SipUdpClient(HOST, 26134, source=HOST, local_port=26135) as ua:
                uri = f"sip:19256@{HOST}:26134"
                req = ua.build_request("OPTIONS", uri, f"<sip:probe@{HOST}>;tag=p1", f"<{uri}>")
                return ua.transaction(req, 2.0)[-1].status

        assert await asyncio.to_thread(probe) == 200
        phone.close()
        ep.close()

    asyncio.run(main())


def test_refresh_happens_before_expiry(pbx_a: PbxSpec) -> None:
    async def main() -> None:
        ep = await SipEndpoint.open(HOST, 26136)
        phone = Phone(ep, "19257", EXTS["19257"], (HOST, A_SIP), expires=6)
        assert await phone.register()
        assert phone.status()["expires"] == 6
        t0 = time.monotonic()
        cseq0 = (await asyncio.to_thread(pbx.lookup, HOST, A_RPC, "19257"))[0]["CSeq"]
        assert await until(lambda: phone.counts[1] >= 1, 6)  # refreshed at 50-80 % of 6 s
        refreshed_after = time.monotonic() - t0
        assert 2.5 < refreshed_after < 5.5, refreshed_after
        await asyncio.sleep(max(0.0, 6.5 - (time.monotonic() - t0)))  # past the first expiry
        now = await asyncio.to_thread(pbx.lookup, HOST, A_RPC, "19257")
        assert now and now[0]["CSeq"] > cseq0 and now[0]["Expires"] > 0
        assert phone.registered
        await phone.unregister()
        phone.close()
        ep.close()

    asyncio.run(main())


class DropFirst(asyncio.DatagramProtocol):
    """A UDP relay towards the PBX that drops the first ``n`` packets from the phone."""

    def __init__(self, n: int, upstream: tuple[str, int]) -> None:
        self.n = n
        self.upstream = upstream
        self.client: tuple[str, int] | None = None
        self.dropped = 0
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        assert self.transport is not None
        if addr == self.upstream:
            if self.client is not None:
                self.transport.sendto(data, self.client)
            return
        self.client = addr
        if self.dropped < self.n:
            self.dropped += 1
            return
        self.transport.sendto(data, self.upstream)


def test_retransmission_survives_lost_registers(pbx_a: PbxSpec) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        relay_t, relay = await loop.create_datagram_endpoint(
            lambda: DropFirst(2, (HOST, A_SIP)), local_addr=(HOST, 26110)
        )
        ep = await SipEndpoint.open(HOST, 26137)
        phone = Phone(ep, "19258", EXTS["19258"], (HOST, 26110))
        t0 = time.monotonic()
        assert await phone.register()
        took = time.monotonic() - t0
        assert relay.dropped == 2 and ep.stats["retransmits"] >= 2
        assert 1.0 < took < 4.0, took  # retransmitted at ~0.5 s and ~1.5 s (T1 doubling, jittered)
        assert await asyncio.to_thread(contacts, A_RPC, "19258") == [f"sip:19258@{HOST}:26137"]
        await phone.unregister()
        phone.close()
        ep.close()
        relay_t.close()

    asyncio.run(main())


def test_cti_unbind_removes_the_binding_with_ul_rm(pbx_a: PbxSpec) -> None:
    """The CTI's removal of a fenced agent's stale registration (``ul.rm location <ext>``) against a real
    Kamailio 5.6: the binding is gone, and a second removal is harmless."""
    from stack.cti.server import CtiServer

    async def main() -> None:
        ep = await SipEndpoint.open(HOST, 26140)
        phone = Phone(ep, "19260", EXTS["19260"], (HOST, A_SIP))
        assert await phone.register()
        assert await asyncio.to_thread(contacts, A_RPC, "19260")
        cti = CtiServer("sha", "s", pbx_rpc=f"http://{HOST}:{A_RPC}/RPC", ul_url=None, lease=0)
        await cti.pbx.start()
        try:
            assert await cti.unbind("19260")
            assert await asyncio.to_thread(contacts, A_RPC, "19260") == []
            await cti.unbind("19260")  # nothing left: Kamailio answers without an error, nothing breaks
            assert await asyncio.to_thread(contacts, A_RPC, "19260") == []
        finally:
            await cti.pbx.close()
            phone.close()
            ep.close()

    asyncio.run(main())
