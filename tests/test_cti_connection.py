"""The CTI server's connections (stack/cti/connection.py), in-process on 127.0.0.1 with the fakes of
tests/test_cti_server.py: a bad line costs only its own connection, lines are answered in order even
while a login awaits, and a client that stops reading is not read and then cut."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from typing import Any

import pytest
from test_cti_server import CTI, SECRET, FakePbxAndUl, agent, token, wait_for, with_cti

from stack.common import auth
from stack.cti.client import CtiConnection
from stack.cti.connection import Connection
from stack.cti.server import CtiServer


def test_garbage_and_oversized_lines_cost_only_their_connection() -> None:
    async def body(fake: FakePbxAndUl, srv: CtiServer) -> None:
        conn, _ = await agent(fake, "a00001", "10001")
        reader, writer = await asyncio.open_connection("127.0.0.1", CTI)
        writer.write(b'\xff\xfe\n[]\n{"type": 5}\n{"type": "set_state", "state": "x"}\n')
        codes = [json.loads(await reader.readline())["code"] for _ in range(4)]
        assert codes == ["bad_json", "bad_json", "unknown_type", "not_logged_in"]
        writer.write(b"{" * 20000 + b"\n")
        assert json.loads(await reader.readline())["code"] == "too_large"
        writer.close()
        r2, w2 = await asyncio.open_connection("127.0.0.1", CTI)
        w2.write(b"nope\n" * 5)
        for _ in range(5):
            assert json.loads(await r2.readline())["code"] == "bad_json"
        assert await r2.read() == b""  # too many errors: closed
        w2.close()
        ack = await conn.request({"type": "heartbeat", "seq": 2})
        assert ack["pbx_link"] == "up" and "a00001" in srv.sessions
        await conn.close()

    with_cti(body)


def lines(*msgs: dict[str, Any]) -> bytes:
    return b"".join(json.dumps(m).encode() + b"\n" for m in msgs)


async def replies(reader: asyncio.StreamReader, n: int) -> list[dict[str, Any]]:
    return [json.loads(await asyncio.wait_for(reader.readline(), 5)) for _ in range(n)]


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_a_message_after_an_awaiting_login_waits_for_it(loop: str) -> None:
    """The server answers most messages in ``data_received``; ``login`` awaits the UL (and ``link_phone``
    the PBX) in a task. What follows on the same connection, even in the same segment, is handled only
    after it: a heartbeat right behind a login is acknowledged, not refused ``not_logged_in``."""

    async def body(fake: FakePbxAndUl, srv: CtiServer) -> None:
        await wait_for(lambda: srv.pbx.up and srv.pbx.dumped)
        fake.registered.add("10001")
        fake.epochs["a00001"] = {"site": "sha", "epoch": 100, "status": "active"}
        await wait_for(lambda: "10001" in srv.pbx.registered)
        reader, writer = await asyncio.open_connection("127.0.0.1", CTI)
        writer.write(
            lines(
                {"type": "login", "token": token("a00001", "10001", 100), "id": 1},
                {"type": "heartbeat", "seq": 1, "id": 2},
                {"type": "link_phone", "extension": "10001", "id": 3},
                {"type": "set_state", "state": "ready", "id": 4},
                {"type": "heartbeat", "seq": 2, "id": 5},
            )
        )
        got = await replies(reader, 5)
        assert [(r["type"], r["id"]) for r in got] == [("login_ok", 1), ("heartbeat_ack", 2), ("link_ok", 3),
                                                       ("state_ok", 4), ("heartbeat_ack", 5)]  # fmt: skip
        assert got[1]["state"] == "not_ready" and got[4]["state"] == "ready"
        assert fake.lookups == ["10001"]  # link_phone asked the PBX (it awaited) before set_state ran
        # a logout right behind a login: the session the login made is the one logged out
        fake.epochs["a00002"] = {"site": "sha", "epoch": 7, "status": "active"}
        writer.write(lines({"type": "login", "token": token("a00002", "10002", 7), "id": 6},
                           {"type": "logout", "id": 7}))  # fmt: skip
        assert [r["type"] for r in await replies(reader, 2)] == ["login_ok", "logout_ok"]
        assert await asyncio.wait_for(reader.read(), 5) == b""
        assert not srv.sessions  # a00001's ended with a00002's login on its connection, a00002's logged out
        writer.close()

    with_cti(body, loop=loop)


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_many_lines_in_one_segment_are_all_answered_in_order(loop: str) -> None:
    """Thousands of lines in one write, with awaiting logins among them (what arrives meanwhile waits,
    past PENDING_MAX with reading paused): every one answered, in order; then EOF after a last line
    without its newline, which is answered too (as ``readline`` returned it) before the server closes."""

    async def body(fake: FakePbxAndUl, srv: CtiServer) -> None:
        await wait_for(lambda: srv.pbx.up)  # else its pbx_link_up event may come among the replies
        fake.epochs["a00001"] = {"site": "sha", "epoch": 100, "status": "active"}
        reader, writer = await asyncio.open_connection("127.0.0.1", CTI)
        login = {"type": "login", "token": token("a00001", "10001", 100)}
        msgs: list[dict[str, Any]] = [{"type": "status", "extension": "10001"}, login]
        msgs += [{"type": "heartbeat", "seq": i, "pad": "x" * 40} for i in range(3000)]
        msgs += [{"type": "set_state", "state": "ready"}, login, {"type": "heartbeat", "seq": -1}]
        msgs = [{**m, "id": i} for i, m in enumerate(msgs)]
        data = lines(*msgs)
        assert len(data) > 2 * srv_conn_pending_max()
        writer.write(data + b'\n  \n{"type": "status", "id": "last"}')  # blank lines ignored
        writer.write_eof()
        got = await replies(reader, len(msgs) + 1)
        assert [r["id"] for r in got] == [m["id"] for m in msgs] + ["last"]
        want = [
            "status",
            "login_ok",
            *["heartbeat_ack"] * 3000,
            "state_ok",
            "login_ok",
            "heartbeat_ack",
            "status",
        ]
        assert [r["type"] for r in got] == want
        assert [r["seq"] for r in got[2:3002]] == list(range(3000))
        assert got[-2]["state"] == "ready"  # the second login (same epoch) kept the state
        rest = await asyncio.wait_for(reader.read(), 5)  # EOF answered: the session ends, said, and closed
        assert [json.loads(x)["event"] for x in rest.splitlines()] == ["ended"]
        await wait_for(lambda: not srv.conns and not srv.sessions)
        writer.close()

    with_cti(body, loop=loop)


def srv_conn_pending_max() -> int:
    return Connection.PENDING_MAX


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_a_client_that_stops_reading_is_not_read_and_then_cut(loop: str) -> None:
    """A client that sends but never reads: once its replies fill the write buffer, its requests wait
    (no more replies are made for it), and the events pushed to it past HIGH_WATER cut it; others go on."""

    async def body(fake: FakePbxAndUl, srv: CtiServer) -> None:
        conn, _ = await agent(fake, "a00001", "10001")
        fake.epochs["a00002"] = {"site": "sha", "epoch": 1, "status": "active"}
        loop = asyncio.get_running_loop()
        sock = socket.socket()  # a raw socket, never read (a StreamReader would read 128 KiB ahead)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await loop.sock_connect(sock, ("127.0.0.1", CTI))
        await loop.sock_sendall(sock, lines({"type": "login", "token": token("a00002", "10002", 1)}))
        await wait_for(lambda: "a00002" in srv.sessions)
        slow = srv.sessions["a00002"].conn
        assert slow.transport is not None  # the server's send buffer small too: the test stays quick
        slow.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        many = lines({"type": "sessions"}) * 50  # replies far longer than the requests
        t0 = time.monotonic()
        while not slow._wpaused:
            assert time.monotonic() - t0 < 5, "the write side never paused"
            await loop.sock_sendall(sock, many)
            await asyncio.sleep(0.005)
        assert not slow.closed
        waiting = len(slow._buf)
        await loop.sock_sendall(sock, many)
        await wait_for(lambda: len(slow._buf) > waiting or slow.closed)
        assert len(slow._buf) > waiting and not slow.closed  # not handled: waits for the client to read
        adm = await CtiConnection.open("127.0.0.1", CTI)
        order = {"type": "admin", "op": "switch_order", "agents": ["a00002"] * 1500, "target": "ntg"}
        for _ in range(100):
            await adm.request(auth.sign_message(SECRET, order))  # each signed anew: a replay is refused
            if slow.closed:
                break
        assert slow.closed and slow.transport.is_closing()
        # (its session ends with its lease, or when the client goes: the buffer it never read holds the
        # transport open, as with the stream writer before)
        assert (await conn.request({"type": "heartbeat", "seq": 1}))["type"] == "heartbeat_ack"
        sock.close()
        await adm.close()
        await conn.close()

    with_cti(body, loop=loop)
