"""Unit tests of the CTI server in-process on 127.0.0.1, with a fake Kamailio JSON-RPC endpoint and a fake
UL epoch service (both aiohttp), so PBX failure, registration changes and fencing are under test control."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from typing import Any

import aiohttp
from aiohttp import web

from stack.common import auth
from stack.cti.client import CtiConnection, CtiError, query
from stack.cti.server import CtiServer

SECRET = "cti-secret"
CTI, RPC, UL, EVENTS = 27880, 27881, 27882, 27883


class FakePbxAndUl:
    """Kamailio's ``ul.dump brief`` / ``ul.lookup`` and the UL's epoch endpoints, in one aiohttp app."""

    def __init__(self) -> None:
        self.registered: set[str] = set()
        self.removed: list[str] = []  # extensions ``ul.rm`` removed
        self.lookups: list[str] = []  # extensions ``ul.lookup`` asked for (the liveness probe's not)
        self.up = True
        self.epochs: dict[str, dict[str, Any]] = {}
        self.runner: web.AppRunner | None = None

    async def rpc(self, request: web.Request) -> web.Response:
        if not self.up:
            await asyncio.sleep(0.5)
        body = await request.json()
        if body["method"] == "ul.rm":
            self.removed.append(body["params"][1])
            self.registered.discard(body["params"][1])
            return web.json_response({"jsonrpc": "2.0", "id": 1, "result": None})
        if body["method"] == "ul.dump":
            aors = [{"AoR": e} for e in sorted(self.registered)]
            return web.json_response(
                {"jsonrpc": "2.0", "id": 1, "result": {"Domains": [{"Domain": {"AoRs": aors}}]}}
            )
        ext = body["params"][1]
        if ext != "cti-liveness-probe":
            self.lookups.append(ext)
        if ext not in self.registered:
            return web.json_response(
                {
                    "jsonrpc": "2.0",
                    "id": 1,
                    "error": {"code": 500, "message": "AOR not found in location table"},
                },
                status=500,  # as Kamailio 5.6 answers (virtual/pbx.py)
            )
        contact = {"Contact": {"Address": f"sip:{ext}@127.0.0.1", "Expires": 60}}
        return web.json_response({"jsonrpc": "2.0", "id": 1, "result": {"AoR": ext, "Contacts": [contact]}})

    async def epoch(self, request: web.Request) -> web.Response:
        cur = self.epochs.get(request.match_info["agent"])
        base = {"reconciled": True, "started": 0}
        return web.json_response({**base, "known": True, **cur} if cur else {**base, "known": False})

    async def h_epochs(self, request: web.Request) -> web.Response:
        body = await request.json()
        return web.json_response({"agents": {a: self.epochs[a] for a in body["agents"] if a in self.epochs}})

    async def start(self) -> None:
        app = web.Application()
        app.add_routes([web.post("/RPC", self.rpc), web.get("/v1/epoch/{agent}", self.epoch),
                        web.post("/v1/epochs", self.h_epochs)])  # fmt: skip
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", RPC).start()
        await web.TCPSite(self.runner, "127.0.0.1", UL).start()


def token(agent: str, ext: str, epoch: int, site: str = "sha", ttl: float = 60) -> str:
    return auth.mint(SECRET, {"agent": agent, "site": site, "epoch": epoch, "ext": ext}, ttl)


def with_cti(body: Any, *, loop: str = "asyncio", **kw: Any) -> None:
    """Run ``body(fake, srv)`` against a started server, on asyncio's loop or (``loop="uvloop"``) on the
    one the daemons run on (stack/common/loop.py)."""

    async def go() -> None:
        fake = FakePbxAndUl()
        await fake.start()
        srv = CtiServer(
            "sha", SECRET, pbx_rpc=f"http://127.0.0.1:{RPC}/RPC", ul_url=f"http://127.0.0.1:{UL}",
            poll_interval=0.1, epoch_interval=0.2, **kw,
        )  # fmt: skip
        srv.pbx.timeout = __import__("aiohttp").ClientTimeout(total=0.15)
        await srv.start("127.0.0.1", CTI)
        try:
            await body(fake, srv)
        finally:
            await srv.stop()
            assert fake.runner is not None
            await fake.runner.cleanup()

    if loop == "uvloop":
        import uvloop

        uvloop.run(asyncio.wait_for(go(), 40))
    else:
        asyncio.run(asyncio.wait_for(go(), 40))


async def agent(fake: FakePbxAndUl, aid: str, ext: str, epoch: int = 100) -> tuple[CtiConnection, list[dict]]:
    events: list[dict[str, Any]] = []
    fake.registered.add(ext)
    fake.epochs[aid] = {"site": "sha", "epoch": epoch, "status": "active"}
    conn = await CtiConnection.open("127.0.0.1", CTI, on_event=events.append)
    ok = await conn.request({"type": "login", "agent": aid, "token": token(aid, ext, epoch)})
    assert ok["type"] == "login_ok" and ok["epoch"] == epoch and ok["epoch_checked"]
    assert (await conn.request({"type": "link_phone", "extension": ext}))["type"] == "link_ok"
    assert (await conn.request({"type": "set_state", "state": "ready"}))["state"] == "ready"
    return conn, events


async def wait_for(cond: Any, timeout: float = 10.0) -> float:
    t0 = time.monotonic()
    while not cond():
        assert time.monotonic() - t0 < timeout, "condition not met"
        await asyncio.sleep(0.01)
    return time.monotonic() - t0


def test_login_link_heartbeat_sessions() -> None:
    async def body(fake: FakePbxAndUl, srv: CtiServer) -> None:
        await wait_for(lambda: srv.pbx.up)
        conn, _ = await agent(fake, "a00001", "10001")
        ack = await conn.request({"type": "heartbeat", "seq": 7})
        assert ack == {"type": "heartbeat_ack", "seq": 7, "pbx_link": "up", "phone": "registered",
                       "state": "ready", "epoch": 100, "id": ack["id"], "at": ack["at"]}  # fmt: skip
        assert abs(ack["at"] / 1000 - time.time()) < 5  # the CTI's clock when it wrote the ack
        sessions = (await query("127.0.0.1", CTI, {"type": "sessions"}))["sessions"]
        assert [(s["agent"], s["state"], s["epoch"], s["extension"]) for s in sessions] == [
            ("a00001", "ready", 100, "10001")
        ]
        st = await query("127.0.0.1", CTI, {"type": "status", "extension": "10001"})
        assert st["pbx_link"] == "up" and st["phone"] == "registered"
        with_err = await CtiConnection.open("127.0.0.1", CTI)
        for msg, code in [
            ({"type": "link_phone", "extension": "10001"}, "not_logged_in"),
            ({"type": "login", "token": token("a00002", "10002", 1)}, "unknown_session"),
        ]:
            try:
                await with_err.request(msg)
                raise AssertionError("accepted")
            except CtiError as err:
                assert err.code == code
        fake.epochs["a00002"] = {"site": "sha", "epoch": 1, "status": "active"}
        await with_err.request({"type": "login", "token": token("a00002", "10002", 1)})
        try:
            await with_err.request({"type": "link_phone", "extension": "10002"})
            raise AssertionError("accepted")
        except CtiError as err:
            assert err.code == "phone_not_registered"
        await conn.close(logout=True)
        await with_err.close()

    with_cti(body)


def test_pbx_down_and_phone_events_pushed_fast() -> None:
    async def body(fake: FakePbxAndUl, srv: CtiServer) -> None:
        await wait_for(lambda: srv.pbx.up)
        conn, events = await agent(fake, "a00001", "10001")
        fake.registered.discard("10001")
        await wait_for(lambda: any(e["event"] == "phone_unregistered" for e in events))
        fake.registered.add("10001")
        await wait_for(lambda: any(e["event"] == "phone_registered" for e in events))
        fake.up = False
        took = await wait_for(lambda: any(e["event"] == "pbx_link_down" for e in events))
        assert took < 1.0  # two polls of 0.1 s with 0.15 s timeouts: well within two heartbeats
        ack = await conn.request({"type": "heartbeat", "seq": 1})
        assert ack["pbx_link"] == "down" and ack["phone"] == "unknown"
        fake.up = True
        await wait_for(lambda: any(e["event"] == "pbx_link_up" for e in events))
        await conn.close()

    with_cti(body)


def test_fencing_replacement_and_admin() -> None:
    async def body(fake: FakePbxAndUl, srv: CtiServer) -> None:
        conn, events = await agent(fake, "a00001", "10001", epoch=100)
        other, _ = await agent(fake, "a00002", "10002", epoch=100)
        # an older token is fenced; the same agent with the current token replaces the old connection
        try:
            await other.request({"type": "login", "token": token("a00001", "10001", 99)})
            raise AssertionError("accepted")
        except CtiError as err:
            assert err.code == "fenced"
        again = await CtiConnection.open("127.0.0.1", CTI)
        await again.request({"type": "login", "token": token("a00001", "10001", 100)})
        await wait_for(lambda: any(e["event"] == "replaced" for e in events) and conn.closed)
        # admin: unsigned refused, signed switch order delivered, fence through the epoch sweep
        adm = await CtiConnection.open("127.0.0.1", CTI)
        try:
            await adm.request({"type": "admin", "op": "switch_order", "agents": ["a00002"], "target": "ntg"})
            raise AssertionError("accepted")
        except CtiError as err:
            assert err.code == "forbidden"
        got: list[dict[str, Any]] = []
        other.on_event = got.append
        msg = auth.sign_message(SECRET, {"type": "admin", "op": "switch_order", "agents": ["a00002", "zz"],
                                         "target": "ntg", "rule": "r1"})  # fmt: skip
        assert (await adm.request(msg))["delivered"] == 1
        await wait_for(lambda: got and got[0]["event"] == "switch_ordered" and got[0]["target"] == "ntg")
        fake.epochs["a00002"] = {"site": "ntg", "epoch": 200, "status": "active"}
        await wait_for(lambda: other.closed and any(e["event"] == "fenced" for e in got))
        assert "a00002" not in srv.sessions
        await adm.close()
        await again.close()

    with_cti(body)


def test_lease_ends_a_silent_session_and_a_late_message_does_not_renew_it() -> None:
    async def body(fake: FakePbxAndUl, srv: CtiServer) -> None:
        srv.lease, srv.lease_late = 0.6, 0.2
        conn, events = await agent(fake, "a00001", "10001")
        for _ in range(4):  # heartbeats keep it alive past the lease
            await asyncio.sleep(0.25)
            await conn.request({"type": "heartbeat", "seq": 1, "t": int(time.monotonic() * 1000)})
        assert "a00001" in srv.sessions
        s = srv.sessions["a00001"]
        heard = s.heard
        # a heartbeat the client sent 1 s ago (a TCP retransmission after a cut heals) does not renew
        await conn.request({"type": "heartbeat", "seq": 2, "t": int((time.monotonic() - 1.0) * 1000)})
        assert s.heard == heard
        took = await wait_for(lambda: "a00001" not in srv.sessions, timeout=2.0)
        assert took < 0.6 + 0.4 and srv.expired == 1
        assert not [e for e in events if e.get("event") == "fenced"]  # nothing pushed
        sessions = await query("127.0.0.1", CTI, {"type": "sessions"})
        assert sessions["sessions"] == [] and sessions["expired"] == 1 and sessions["lease"] == 0.6
        await conn.close()

    with_cti(body)


def test_token_not_valid_before_nbf() -> None:
    async def body(fake: FakePbxAndUl, srv: CtiServer) -> None:
        fake.epochs["a00001"] = {"site": "sha", "epoch": 5, "status": "active"}
        claims = {"agent": "a00001", "site": "sha", "epoch": 5, "ext": "10001", "nbf": time.time() + 0.5}
        tok = auth.mint(SECRET, claims, 60)
        conn = await CtiConnection.open("127.0.0.1", CTI)
        try:
            await conn.request({"type": "login", "token": tok})
            raise AssertionError("accepted before nbf")
        except CtiError as err:
            assert err.code == "not_yet" and 0 < err.reply["retry_after"] <= 0.5
        await wait_for(lambda: time.time() > claims["nbf"], timeout=5.0)
        assert (await conn.request({"type": "login", "token": tok}))["type"] == "login_ok"
        await conn.close()

    with_cti(body)


def test_fence_removes_the_stale_binding_unless_active_here() -> None:
    async def body(fake: FakePbxAndUl, srv: CtiServer) -> None:
        conn, _ = await agent(fake, "a00001", "10001", epoch=100)
        adm = await CtiConnection.open("127.0.0.1", CTI)

        def fence(agent: str, epoch: int, site: str, ext: str) -> dict[str, Any]:
            return auth.sign_message(SECRET, {"type": "admin", "op": "fence", "agent": agent, "epoch": epoch,
                                              "site": site, "extension": ext})  # fmt: skip

        # an older epoch, here or elsewhere (a fence of an older login that arrives late): the agent is
        # legitimately here, nothing is touched
        assert (await adm.request(fence("a00001", 99, "sha", "10001")))["fenced"] is False
        assert (await adm.request(fence("a00001", 98, "ntg", "10001")))["fenced"] is False
        dumps = srv.pbx.dumps  # a removal would have gone out before two more dumps (one per 0.1 s)
        await wait_for(lambda: srv.pbx.dumps >= dumps + 2, timeout=5.0)
        assert fake.removed == [] and "a00001" in srv.sessions and srv.unbound == 0
        # the agent is now active at ntg: session dropped and the extension's binding removed here
        assert (await adm.request(fence("a00001", 200, "ntg", "10001")))["fenced"] is True
        await wait_for(lambda: fake.removed == ["10001"])
        # no session left here (a lease ran out, or reconciliation after the site came back): still unbound
        fake.registered.add("10009")
        assert (await adm.request(fence("a00009", 300, "ntg", "10009")))["fenced"] is False
        await wait_for(lambda: "10009" in fake.removed)
        await adm.close()
        await conn.close()

    with_cti(body)


def test_a_fence_confirms_the_end_of_a_session_that_ended_unconfirmed() -> None:
    """A session that ended by its lease, or whose connection was lost without a logout, ended with
    nothing on the wire; the fence that supersedes it answers ``fenced: true`` (once), so the UL's fence
    says on the wire that the session is gone before the agent's newer session begins elsewhere. A logout
    is its own confirmation, and a fence that does not supersede the session confirms nothing."""

    async def body(fake: FakePbxAndUl, srv: CtiServer) -> None:
        srv.lease, srv.lease_late = 0.6, 0.2
        adm = await CtiConnection.open("127.0.0.1", CTI)

        def fence(agent: str, epoch: int, site: str, ext: str) -> dict[str, Any]:
            return auth.sign_message(SECRET, {"type": "admin", "op": "fence", "agent": agent, "epoch": epoch,
                                              "site": site, "extension": ext})  # fmt: skip

        # by its lease: an older epoch at this site does not supersede it; a newer one elsewhere does, once
        conn1, _ = await agent(fake, "a00001", "10001", epoch=100)
        await wait_for(lambda: "a00001" not in srv.sessions, timeout=5.0)
        assert (await adm.request(fence("a00001", 90, "sha", "10001")))["fenced"] is False
        assert (await adm.request(fence("a00001", 200, "ntg", "10001")))["fenced"] is True
        assert (await adm.request(fence("a00001", 201, "ntg", "10001")))["fenced"] is False
        await conn1.close(logout=False)
        # by a lost connection (no logout)
        srv.lease = 0
        conn2, _ = await agent(fake, "a00002", "10002", epoch=100)
        await conn2.close(logout=False)
        await wait_for(lambda: "a00002" not in srv.sessions)
        reply = await adm.request(fence("a00002", 200, "ntg", "10002"))
        assert reply["fenced"] is True and reply["lapsed"] is True  # ended before: when, the wire cannot say
        # a logout confirmed its own end: nothing left to confirm
        conn3, _ = await agent(fake, "a00003", "10003", epoch=100)
        await conn3.close(logout=True)
        await wait_for(lambda: "a00003" not in srv.sessions)
        assert (await adm.request(fence("a00003", 200, "ntg", "10003")))["fenced"] is False
        # a new session here forgets the old one's unconfirmed end
        conn4, _ = await agent(fake, "a00004", "10004", epoch=100)
        await conn4.close(logout=False)
        await wait_for(lambda: "a00004" not in srv.sessions)
        conn5, _ = await agent(fake, "a00004", "10004", epoch=150)
        await conn5.close(logout=True)
        await wait_for(lambda: "a00004" not in srv.sessions)
        assert (await adm.request(fence("a00004", 200, "ntg", "10004")))["fenced"] is False
        await adm.close()

    with_cti(body)


def test_a_binding_the_pbx_could_not_remove_yet_is_removed_when_it_answers() -> None:
    """A site coming back heals its ports one by one: a fence may reach the CTI while its PBX is still cut
    off. The removal is retried after the next good dump, so no stale binding outlives the fence."""

    async def body(fake: FakePbxAndUl, srv: CtiServer) -> None:
        adm = await CtiConnection.open("127.0.0.1", CTI)
        fake.registered.add("10015")
        await wait_for(lambda: "10015" in srv.pbx.registered)
        real_rpc = srv.pbx._rpc

        async def cut_off(*a: Any, **kw: Any) -> Any:
            raise aiohttp.ClientConnectionError("no route to host")

        srv.pbx._rpc = cut_off  # type: ignore[method-assign]
        msg = {
            "type": "admin",
            "op": "fence",
            "agent": "a00015",
            "epoch": 300,
            "site": "ntg",
            "extension": "10015",
        }
        await adm.request(auth.sign_message(SECRET, msg))
        await wait_for(lambda: "10015" in srv.unbind_pending)
        assert fake.removed == []
        srv.pbx._rpc = real_rpc  # type: ignore[method-assign]
        await wait_for(lambda: fake.removed == ["10015"] and not srv.unbind_pending)
        await adm.close()

    with_cti(body)


def pbx_event(sock: socket.socket, ext: str, event: str, seq: int, boot: str = "b1") -> None:
    """One registration event as the PBX pushes it (tests/test_cti_events.py checks the listener)."""
    body = json.dumps({"event": event, "pbx": "sha-pbx1", "ext": ext, "seq": seq, "boot": boot}).encode()
    sock.sendto(
        f"MESSAGE sip:127.0.0.1:{EVENTS} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bK{seq}\r\n"
        f"From: <sip:pbx@127.0.0.1>;tag=p\r\nTo: <sip:cti@127.0.0.1>\r\nCall-ID: ev{seq}\r\n"
        f"CSeq: 1 MESSAGE\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        + body,
        ("127.0.0.1", EVENTS),
    )


def test_pushed_events_link_without_lookup_and_reach_the_agent_at_once() -> None:
    """With ``pbx_events``: link_phone on a pushed registration asks the PBX nothing; a pushed change
    reaches the linked agent at once (no dump in between: they come every 30 s); an out-of-order event
    is ignored; "not registered" still asks the PBX (events are hints); a new PBX boot is reconciled."""

    async def body(fake: FakePbxAndUl, srv: CtiServer) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            await wait_for(lambda: srv.pbx.up and srv.pbx.dumped)
            dumps = srv.pbx.dumps
            fake.registered.add("10001")
            pbx_event(sock, "10001", "registered", 5)
            await wait_for(lambda: srv.pbx.pushed.get("10001") is True)
            await wait_for(lambda: srv.pbx.dumps == dumps + 1)  # the first boot seen: one reconciliation
            dumps = srv.pbx.dumps
            fake.epochs["a00001"] = {"site": "sha", "epoch": 100, "status": "active"}
            events: list[dict[str, Any]] = []
            conn = await CtiConnection.open("127.0.0.1", CTI, on_event=events.append)
            await conn.request({"type": "login", "agent": "a00001", "token": token("a00001", "10001", 100)})
            assert (await conn.request({"type": "link_phone", "extension": "10001"}))["type"] == "link_ok"
            assert fake.lookups == []
            # a change reaches the agent at once, though the PBX's table (the dump) still lists it
            pbx_event(sock, "10001", "unregistered", 7)
            took = await wait_for(lambda: any(e["event"] == "phone_unregistered" for e in events))
            assert took < 0.2 and "10001" not in srv.pbx.registered
            stale = srv.pbx.stale
            pbx_event(sock, "10001", "registered", 6)  # overtaken by seq 7: ignored
            await wait_for(lambda: srv.pbx.stale == stale + 1)
            assert not any(e["event"] == "phone_registered" for e in events)
            ack = await conn.request({"type": "heartbeat", "seq": 1})
            assert ack["phone"] == "unregistered"
            # events say "not registered": link_phone asks the PBX (the event that says otherwise may be lost)
            assert (await conn.request({"type": "link_phone", "extension": "10001"}))["type"] == "link_ok"
            assert fake.lookups == ["10001"] and srv.pbx.dumps == dumps
            # the PBX restarted (new boot): seq starts again and a reconciling dump follows
            fake.registered.discard("10001")
            pbx_event(sock, "10001", "unregistered", 1, boot="b2")
            await wait_for(lambda: srv.pbx.dumps == dumps + 1 and srv.pbx.boot == "b2")
            await conn.close()
        finally:
            sock.close()

    with_cti(body, pbx_events=("127.0.0.1", EVENTS))
