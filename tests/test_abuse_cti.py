"""The CTI under abuse from the data network (issue 16 item 3), in-process on loopback with the fakes of
tests/test_cti_server.py: connections beyond the caps per source and in total are refused with one error
line, a connection that does not log in is closed after the login timeout, an over-long line closes its
connection, a client that leaves its replies unread is cut; each refusal is counted and logged, and a
logged-in neighbour is served meanwhile. Timeouts are configured short and every wait is a poll with a
generous deadline (no fixed sleeps: the suite runs beside a busy loop on every core)."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
from typing import Any

import pytest
from test_cti_server import CTI, SECRET, FakePbxAndUl, agent, wait_for, with_cti

from stack.common import auth
from stack.cti.client import CtiConnection
from stack.cti.connection import Connection
from stack.cti.server import CtiServer

DEADLINE = 15.0


async def raw(source: str = "127.0.0.1") -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection to the CTI from ``source`` (any 127/8 address is this host's loopback)."""
    return await asyncio.open_connection("127.0.0.1", CTI, local_addr=(source, 0))


async def line(reader: asyncio.StreamReader) -> dict[str, Any]:
    return json.loads(await asyncio.wait_for(reader.readline(), DEADLINE))


async def closed_by_server(reader: asyncio.StreamReader) -> bytes:
    """What the server still sent before it closed (EOF or reset), read with a generous deadline."""
    out = b""
    try:
        while chunk := await asyncio.wait_for(reader.read(65536), DEADLINE):
            out += chunk
    except ConnectionResetError:
        pass
    return out


async def heartbeat_ok(conn: CtiConnection) -> None:
    ack = await conn.request({"type": "heartbeat", "seq": 1}, timeout=DEADLINE)
    assert ack["type"] == "heartbeat_ack"


def test_connections_beyond_the_caps_are_refused_with_a_line(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "stack.cti")

    async def body(fake: FakePbxAndUl, srv: CtiServer) -> None:
        conn, _ = await agent(fake, "a00001", "10001")  # the neighbour, from 127.0.0.1
        mine = [await raw("127.0.0.1") for _ in range(2)]  # 127.0.0.1 now has 3: its cap
        await wait_for(lambda: srv.caps.by_source.get("127.0.0.1") == 3)
        r, w = await raw("127.0.0.1")
        refusal = await line(r)
        assert refusal["type"] == "error" and refusal["code"] == "too_many_connections"
        assert refusal["reason"] == "per_source" and "address" in refusal["message"]
        assert await closed_by_server(r) == b""
        w.close()
        assert srv.refusals.counts["refused_per_source"] == 1
        others = [await raw("127.0.0.2") for _ in range(2)]  # another address: admitted, 5 open in total
        await wait_for(lambda: srv.caps.open == 5)
        r, w = await raw("127.0.0.3")
        refusal = await line(r)
        assert (refusal["code"], refusal["reason"]) == ("too_many_connections", "total")
        w.close()
        assert srv.refusals.counts["refused_total"] == 1
        await heartbeat_ok(conn)  # the logged-in neighbour is served all along
        # a refused connection is not counted; one that ends frees its place
        mine[0][1].close()
        await wait_for(lambda: srv.caps.by_source.get("127.0.0.1") == 2)
        r, w = await raw("127.0.0.1")
        w.write(b'{"type": "status", "id": 7}\n')
        assert (await line(r))["type"] == "status"
        for _, wr in [*mine[1:], *others, (r, w)]:
            wr.close()
        await wait_for(lambda: srv.caps.open == 1 and srv.caps.lingering == 0)
        await conn.close()

    with_cti(body, max_per_source=3, max_connections=5, lease=0)
    logged = [r.getMessage() for r in caplog.records if "refused_" in r.getMessage()]
    assert any("refused_per_source from 127.0.0.1" in m and "cap 3" in m for m in logged), logged
    assert any("refused_total from 127.0.0.3" in m for m in logged), logged


def test_a_connection_that_does_not_log_in_is_closed(caplog: pytest.LogCaptureFixture) -> None:
    """Silent, or dribbling a line that never ends: closed with ``login_timeout``. Logged in, or proven
    by a signed admin message (the UL's persistent connection): kept, however quiet."""
    caplog.set_level(logging.WARNING, "stack.cti")

    async def body(fake: FakePbxAndUl, srv: CtiServer) -> None:
        conn, _ = await agent(fake, "a00001", "10001")
        adm = await CtiConnection.open("127.0.0.1", CTI)
        order = {"type": "admin", "op": "switch_order", "agents": [], "target": "ntg"}
        assert (await adm.request(auth.sign_message(SECRET, order)))["type"] == "admin_ok"
        t0 = time.monotonic()
        silent = await raw()
        dribbler = await raw()
        dribbled = b""  # a line that never ends, a byte every 50 ms, until the server answers
        r, w = dribbler
        for ch in b'{"type": "login", "agent": "a00009", "token": "' + b"x" * 100:
            w.write(bytes([ch]))
            try:
                dribbled = await asyncio.wait_for(r.readline(), 0.05)
                break
            except TimeoutError:
                continue
        refusal = json.loads(dribbled)
        assert refusal["code"] == "login_timeout" and "no login" in refusal["message"]
        assert await closed_by_server(r) == b""
        refusal = await line(silent[0])
        assert refusal["code"] == "login_timeout" and "no login" in refusal["message"]
        assert await closed_by_server(silent[0]) == b""
        assert time.monotonic() - t0 >= 0.5
        assert srv.refusals.counts["login_timeout"] == 2
        # the agent and the admin connection, older than the strangers, are still served
        await heartbeat_ok(conn)
        assert (await adm.request(auth.sign_message(SECRET, order)))["type"] == "admin_ok"
        for _, w in (silent, dribbler):
            w.close()
        await adm.close()
        await conn.close()

    with_cti(body, login_timeout=0.5, lease=0)
    assert any("login_timeout from 127.0.0.1" in r.getMessage() for r in caplog.records)


def test_a_status_query_every_so_often_keeps_a_connection_without_login() -> None:
    """The timeout counts silence, not age: a client asking ``status`` within it is answered (as the
    agent's retried ``not_yet`` login is), and closed once it falls silent."""

    async def body(fake: FakePbxAndUl, srv: CtiServer) -> None:
        r, w = await raw()
        t0 = time.monotonic()
        while time.monotonic() - t0 < 1.5:  # three login timeouts long
            w.write(b'{"type": "status", "id": 1}\n')
            assert (await line(r))["type"] == "status"
            await asyncio.sleep(0.1)
        assert (await line(r))["code"] == "login_timeout"
        w.close()

    with_cti(body, login_timeout=0.5)


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_an_over_long_line_closes_only_its_connection(loop: str) -> None:
    """A line past ``max_line`` without its newline: ``too_large`` and closed as soon as it passes the
    limit, not after the server read all of it."""

    async def body(fake: FakePbxAndUl, srv: CtiServer) -> None:
        conn, _ = await agent(fake, "a00001", "10001")
        r, w = await raw()
        w.write(b'{"type": "status", "pad": "' + b"x" * 900 + b'"}\n')  # under the limit: answered
        assert (await line(r))["type"] == "status"
        w.write(b"y" * 16 * 1024)  # no newline, ever: cut once past the limit, not at a newline
        assert (await line(r))["code"] == "too_large"
        assert await closed_by_server(r) == b""
        assert srv.refusals.counts["too_large"] == 1
        w.close()
        await heartbeat_ok(conn)
        await conn.close()

    with_cti(body, loop=loop, max_line=1024, lease=0)


def server_side(srv: CtiServer, sock: socket.socket) -> Connection:
    port = sock.getsockname()[1]
    return next(c for c in srv.conns if c.transport.get_extra_info("peername")[1] == port)


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_a_client_that_leaves_its_replies_unread_is_cut(loop: str) -> None:
    """Its output waits unread past ``stall_timeout``: aborted (what it never read is freed), counted;
    the neighbour is served meanwhile."""

    async def body(fake: FakePbxAndUl, srv: CtiServer) -> None:
        conn, _ = await agent(fake, "a00001", "10001")
        ev = asyncio.get_running_loop()
        sock = socket.socket()  # a raw socket never read
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await ev.sock_connect(sock, ("127.0.0.1", CTI))
        await wait_for(lambda: any(c.transport.get_extra_info("peername")[1] == sock.getsockname()[1]
                                   for c in srv.conns))  # fmt: skip
        slow = server_side(srv, sock)
        slow.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        t0 = time.monotonic()
        while not slow._wpaused and not slow.closed:
            assert time.monotonic() - t0 < DEADLINE, "the write side never paused"
            await ev.sock_sendall(sock, b'{"type": "status", "id": 1}\n' * 200)
            await asyncio.sleep(0.005)
        await wait_for(lambda: slow.closed and slow.transport.is_closing(), DEADLINE)
        assert srv.refusals.counts.get("stalled") == 1
        await wait_for(lambda: slow not in srv.conns and srv.caps.by_source.get("127.0.0.1") == 1)
        await heartbeat_ok(conn)
        sock.close()
        await conn.close()

    with_cti(body, loop=loop, stall_timeout=0.5, login_timeout=0, lease=0)
