"""Registration events pushed by the PBX to the CTI (stack/cti/pbxevents.py, ``PbxLink.apply_event``).

Unit tests of the listener on loopback UDP (answers read back with the harness's own SIP parser, not the
one under test) and of the ordering rules; then an integration test with a real Kamailio pushing to a
real CTI server: a phone registers, ``link_phone`` succeeds with no ``ul.lookup`` made, and an
unregistration reaches the linked client at once. Ports: 27890-27899.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from sipcore.client import SipUdpClient
from sipcore.message import parse as parse_message
from stack.common import auth
from stack.cti.client import CtiConnection, CtiError
from stack.cti.pbxevents import PbxEventListener, listen, parse_event
from stack.cti.pbxlink import PbxLink
from stack.cti.server import CtiServer
from virtual import pbx
from virtual.pbx import PbxSpec

HOST = "127.0.0.1"
SIP, RPC, EVENTS, CTI, PHONE = 27890, 27891, 27892, 27893, 27894
SECRET = "cti-events-secret"
EXTS = {str(1000 + i): f"pw-{1000 + i}" for i in range(20)}


def message(
    ext: str = "1001",
    event: str = "registered",
    seq: int = 1,
    boot: str = "b1",
    *,
    call_id: str = "ev-1@pbx",
    cseq: int = 10,
    body: bytes | None = None,
    method: str = "MESSAGE",
) -> bytes:
    """A MESSAGE as Kamailio's uac_req_send writes it (virtual/kamailio.cfg.tmpl, route[SEND_EVENT])."""
    if body is None:
        body = json.dumps(
            {"event": event, "pbx": "sha-pbx1", "ext": ext, "contact": f"sip:{ext}@127.0.0.1:5062",
             "expires": 60 if event == "registered" else 0, "source": "127.0.0.1:5062",
             "callid": "reg-1", "cseq": 2, "seq": seq, "boot": boot, "ts": 1764097262}
        ).encode()  # fmt: skip
    head = (
        f"{method} sip:{HOST}:{EVENTS} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK{call_id.split('@')[0]}.{cseq}\r\n"
        f"From: <sip:pbx-sha-pbx1@127.0.0.1:5060>;tag=pbx{cseq}\r\n"
        f"To: <sip:{HOST}:{EVENTS}>\r\n"
        f"CSeq: {cseq} {method}\r\n"
        f"Call-ID: {call_id}\r\n"
        "Max-Forwards: 70\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


class Wire:
    """A listener on an ephemeral loopback port and a UDP socket that talks to it."""

    def __init__(self, proto: PbxEventListener, transport: asyncio.DatagramTransport) -> None:
        self.proto = proto
        self.transport = transport
        self.addr = transport.get_extra_info("sockname")
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((HOST, 0))
        self.sock.setblocking(False)

    @classmethod
    async def open(cls, on_event: Any, sources: set[str] | None = None) -> Wire:
        transport, proto = await listen(HOST, 0, on_event, sources=sources)
        return cls(proto, transport)

    def send(self, data: bytes) -> None:
        self.sock.sendto(data, self.addr)

    async def answer(self, timeout: float = 0.5) -> bytes | None:
        loop = asyncio.get_running_loop()
        try:
            data, _ = await asyncio.wait_for(loop.sock_recvfrom(self.sock, 65535), timeout)
        except TimeoutError:
            return None
        return data

    def close(self) -> None:
        self.transport.close()
        self.sock.close()


def run(coro: Any) -> None:
    asyncio.run(asyncio.wait_for(coro, 30))


# --- the listener ---------------------------------------------------------------------------------


def test_message_answered_200_and_event_handed_on() -> None:
    async def go() -> None:
        got: list[tuple[str, bool, str, int]] = []
        wire = await Wire.open(lambda *ev: got.append(ev))
        try:
            req = message("1001", "registered", seq=7, boot="b1")
            wire.send(req)
            raw = await wire.answer()
            assert raw is not None
            resp, sent = parse_message(raw), parse_message(req)
            assert resp.status == 200 and resp.reason == "OK"
            for h in ("Via", "From", "Call-ID", "CSeq"):
                assert resp.header(h) == sent.header(h), h
            to = resp.header("To") or ""
            assert to.startswith(sent.header("To") or "?") and ";tag=" in to
            assert resp.header("Content-Length") == "0" and resp.body == b""
            assert got == [("1001", True, "b1", 7)]
            wire.send(message("1002", "expired", seq=8, call_id="ev-2@pbx"))
            wire.send(message("1003", "unregistered", seq=9, call_id="ev-3@pbx"))
            assert await wire.answer() and await wire.answer()
            assert got[1:] == [("1002", False, "b1", 8), ("1003", False, "b1", 9)]
            st = wire.proto.stats()
            assert st == {"received": 3, "events": 3, "garbage": 0, "rejected": 0, "foreign": 0}
        finally:
            wire.close()

    run(go())


def test_retransmission_answered_twice_applied_once() -> None:
    async def go() -> None:
        link = PbxLink(None, events=True)
        wire = await Wire.open(link.apply_event)
        try:
            req = message("1001", "registered", seq=3, call_id="same@pbx", cseq=5)
            wire.send(req)
            first = await wire.answer()
            wire.send(req)  # tm retransmits when our 200 was lost
            second = await wire.answer()
            assert first is not None and first == second  # the same answer, To tag included
            assert link.applied == 1 and link.stale == 1 and link.registered == {"1001"}
            assert wire.proto.events == 2
        finally:
            wire.close()

    run(go())


def test_garbage_is_counted_and_never_stops_the_listener() -> None:
    async def go() -> None:
        got: list[tuple[str, bool, str, int]] = []

        def boom(*ev: Any) -> None:
            got.append(ev)
            if ev[0] == "1666":
                raise RuntimeError("handler bug")

        wire = await Wire.open(boom)
        try:
            for junk in (b"\x00\xff\xfe not sip at all", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"\r\n\r\n",
                         b"MESSAGE sip:x SIP/2.0\r\nContent-Length: 0\r\n\r\n"):  # fmt: skip
                wire.send(junk)
                assert await wire.answer(0.2) is None, junk
            for body in (b"not json", b"[1, 2]", b'{"event": "registered", "ext": "1001"}',
                         b'{"event": "moved", "ext": "1001", "boot": "b", "seq": 1}',
                         b'{"event": "registered", "ext": "1001", "boot": "b", "seq": true}'):  # fmt: skip
                wire.send(message(body=body))
                raw = await wire.answer()
                assert raw is not None and parse_message(raw).status == 400, body
            wire.send(message(method="OPTIONS"))
            raw = await wire.answer()
            assert raw is not None
            resp = parse_message(raw)
            assert resp.status == 405 and resp.header("Allow") == "MESSAGE"
            wire.send(b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP x;branch=z9hG4bK1\r\nCSeq: 1 MESSAGE\r\n\r\n")
            assert await wire.answer(0.2) is None  # a response is not answered
            wire.send(message("1666", seq=1, call_id="bug@pbx"))  # the handler raises: still answered
            assert await wire.answer() is not None
            wire.send(message("1001", seq=2, call_id="ok@pbx"))
            raw = await wire.answer()
            assert raw is not None and parse_message(raw).status == 200
            assert got == [("1666", True, "b1", 1), ("1001", True, "b1", 2)]
            st = wire.proto.stats()
            assert st["garbage"] == 8 and st["rejected"] == 1 and st["events"] == 2
        finally:
            wire.close()

    run(go())


def test_datagrams_from_another_host_are_dropped() -> None:
    async def go() -> None:
        got: list[Any] = []
        wire = await Wire.open(lambda *ev: got.append(ev), sources={"198.18.2.10"})
        try:
            wire.send(message())
            assert await wire.answer(0.2) is None
            assert got == [] and wire.proto.foreign == 1
        finally:
            wire.close()

    run(go())


def test_parse_event_shapes() -> None:
    assert parse_event(b'{"event":"expired","ext":"7","boot":"b","seq":0}') == ("7", False, "b", 0)
    assert parse_event(b'{"event":"registered","ext":"","boot":"b","seq":1}') is None
    assert parse_event(b'{"event":"registered","ext":"7","boot":"b","seq":-1}') is None
    assert parse_event(b"\xff\xfe") is None


# --- ordering -------------------------------------------------------------------------------------


def test_out_of_order_events_are_ignored_per_extension() -> None:
    link = PbxLink(None, events=True)
    assert link.apply_event("1001", False, "b1", 6) == (True, True)  # the first boot seen is new
    assert link.apply_event("1001", True, "b1", 5) == (False, False)  # overtaken by seq 6
    assert link.apply_event("1001", False, "b1", 6) == (False, False)  # a repeat
    assert "1001" not in link.registered and link.pushed == {"1001": False}
    assert link.apply_event("1002", True, "b1", 4) == (True, False)  # seq is compared per extension
    assert link.registered == {"1002"} and link.applied == 2 and link.stale == 2


def test_a_new_boot_resets_and_a_late_event_of_the_old_boot_is_dropped() -> None:
    link = PbxLink(None, events=True)
    link.apply_event("1001", True, "b1", 900)
    assert link.apply_event("1001", True, "b2", 1) == (True, True)  # the PBX restarted: seq from 1
    assert link.seqs == {"1001": 1} and link.boot == "b2"
    assert link.apply_event("1001", False, "b1", 901) == (False, False)  # sent before the restart
    assert link.pushed == {"1001": True}
    link.apply_event("1002", True, "b2", 2)
    link.link_restored()  # a restart under the same boot id would show as the link going down
    assert link.apply_event("1001", False, "b2", 1) == (True, False)


def test_a_dump_does_not_undo_an_event_newer_than_its_start() -> None:
    async def go() -> None:
        link = PbxLink("http://unused/RPC", events=True)
        link.apply_event("1003", True, "b1", 1)  # events said registered; the dump will not list it
        link.apply_event("1004", True, "b1", 2)
        gate, asked = asyncio.Event(), asyncio.Event()

        async def rpc(method: str, *params: Any, **kw: Any) -> Any:
            assert (method, params) == ("ul.dump", ("brief",))
            asked.set()
            await gate.wait()
            aors = [{"AoR": e} for e in ("1001", "1004")]  # as of when the PBX began the dump
            return {"Domains": [{"Domain": {"AoRs": aors}}]}

        link._rpc = rpc  # type: ignore[method-assign]
        dump = asyncio.create_task(link.dump())
        await asyncio.wait_for(asked.wait(), 5)  # the dump has begun (its start is taken before it asks)
        link.apply_event("1001", False, "b1", 3)  # unregistered while the dump ran
        link.apply_event("1002", True, "b1", 4)  # registered while the dump ran
        gate.set()
        assert await dump
        assert link.registered == {"1002", "1004"}
        # 1003: the dump (newer than its event) says it is gone: no longer trusted for a link
        assert link.pushed == {"1001": False, "1002": True, "1003": False, "1004": True}
        assert not link.says_registered("1002")  # the link is not known to be up yet
        link.up = True
        assert link.says_registered("1002") and not link.says_registered("1003")

    run(go())


# --- with a real Kamailio -------------------------------------------------------------------------

needs_kamailio = pytest.mark.skipif(not os.access(pbx.KAMAILIO, os.X_OK), reason="kamailio not installed")


@pytest.fixture
def pbx_events(tmp_path: Path) -> Iterator[PbxSpec]:
    spec = PbxSpec("sha-pbx1", HOST, SIP, RPC, "lab", tmp_path, EXTS, event_target=f"{HOST}:{EVENTS}")
    argv = pbx.write_files(spec)
    with open(spec.log_file, "ab") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        pbx.wait_ready(HOST, SIP, 5.0, proc, spec.boot_id)
        yield spec
    finally:
        pbx.stop(proc.pid)
        proc.wait(timeout=5)
        assert not psutil.pid_exists(proc.pid)


@needs_kamailio
def test_pushed_registration_links_without_lookup_and_unregistration_reaches_the_client(
    pbx_events: PbxSpec,
) -> None:
    async def go() -> None:
        srv = CtiServer(
            "sha", SECRET, pbx_rpc=f"http://{HOST}:{RPC}/RPC", ul_url=None, poll_interval=0.2,
            pbx_sip=(HOST, SIP), pbx_events=(HOST, EVENTS), lease=0,
        )  # fmt: skip
        calls: list[tuple[str, tuple[Any, ...]]] = []
        real_rpc = srv.pbx._rpc

        async def counted(method: str, *params: Any, **kw: Any) -> Any:
            if params[-1:] != (PbxLink.PROBE_AOR,):
                calls.append((method, params))
            return await real_rpc(method, *params, **kw)

        srv.pbx._rpc = counted  # type: ignore[method-assign]
        await srv.start(HOST, CTI)
        phone = SipUdpClient(HOST, SIP, source=HOST, local_port=PHONE)
        try:
            while not (srv.pbx.up and srv.pbx.dumped):
                await asyncio.sleep(0.02)
            dumps = srv.pbx.dumps
            ok = await asyncio.to_thread(phone.register, "1001", EXTS["1001"], 60)
            assert ok.status == 200
            t0 = time.monotonic()
            while not srv.pbx.pushed.get("1001"):
                assert time.monotonic() - t0 < 2.0, "no event from kamailio"
                await asyncio.sleep(0.005)
            assert srv.pbx.boot == pbx_events.boot_id and "1001" in srv.pbx.registered
            while srv.pbx.dumps == dumps:  # the first boot seen is reconciled with a dump, once
                assert time.monotonic() - t0 < 2.0, "no dump on a new boot"
                await asyncio.sleep(0.005)
            dumps = srv.pbx.dumps

            events: list[dict[str, Any]] = []
            conn = await CtiConnection.open(HOST, CTI, on_event=events.append)
            tok = auth.mint(SECRET, {"agent": "a00001", "site": "sha", "epoch": 1, "ext": "1001"}, 60)
            assert (await conn.request({"type": "login", "token": tok}))["type"] == "login_ok"
            assert (await conn.request({"type": "link_phone", "extension": "1001"}))["type"] == "link_ok"
            assert not [c for c in calls if c[0] == "ul.lookup"], calls  # answered from the pushed event
            assert srv.pbx.lookups == 0

            t0 = time.monotonic()
            await asyncio.to_thread(phone.register, "1001", EXTS["1001"], 0)
            while not any(e.get("event") == "phone_unregistered" for e in events):
                assert time.monotonic() - t0 < 2.0, "phone_unregistered not pushed"
                await asyncio.sleep(0.005)
            took = time.monotonic() - t0
            assert took < 0.3, f"phone_unregistered after {took:.3f}s"
            assert srv.pbx.dumps == dumps  # the event did it, not a reconciling dump (every 30 s)
            assert srv.events is not None and srv.events.stats()["garbage"] == 0

            # "not registered" is asked of the PBX: a lookup, which finds nothing
            with pytest.raises(CtiError) as err:
                await conn.request({"type": "link_phone", "extension": "1001"})
            assert err.value.code == "phone_not_registered", err.value.reply
            assert srv.pbx.lookups == 1
            await conn.close()
        finally:
            phone.close()
            await srv.stop()

    run(go())
