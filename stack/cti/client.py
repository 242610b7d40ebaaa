"""Client side of the CTI protocol: request/reply by ``id`` plus a callback for pushed events.

Used by the agent client (one long-lived connection per agent, and short fresh ones for the secondary
confirmation) and by tests and the harness-facing ``sessions`` query.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Callable
from typing import Any

from stack.cti import protocol as P


class CtiError(Exception):
    """An error reply (``code`` from the protocol) or a broken connection (``code`` = "disconnected";
    ``refused`` when nothing listened at all)."""

    def __init__(self, code: str, reply: dict[str, Any] | None = None, refused: bool = False) -> None:
        super().__init__(code if reply is None else f"{code}: {reply.get('message', '')}")
        self.code = code
        self.reply = reply or {}
        self.refused = refused


class _Lines(asyncio.Protocol):
    """Splits the byte stream into lines and hands them to the connection (no reader task: a swarm keeps
    5,000 connections, and a task woken per heartbeat ack was a large part of its CPU)."""

    def __init__(self, conn: CtiConnection) -> None:
        self.conn = conn
        self.buf = b""

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        if b"\n" not in data:
            self.buf = buf
            if len(buf) > P.MAX_LINE * 8:
                self.conn.abort()
            return
        *lines, self.buf = buf.split(b"\n")
        for line in lines:
            self.conn.on_line(line)

    def connection_lost(self, exc: Exception | None) -> None:
        self.conn.shutdown()


class CtiConnection:
    """One TCP connection to a CTI server (open it with :meth:`open`)."""

    def __init__(
        self,
        on_event: Callable[[dict[str, Any]], None] | None = None,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        self.on_event = on_event
        self.on_close = on_close
        self.transport: asyncio.Transport | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.closed = False

    @classmethod
    async def open(
        cls,
        host: str,
        port: int,
        *,
        timeout: float = 2.0,
        on_event: Callable[[dict[str, Any]], None] | None = None,
        on_close: Callable[[], None] | None = None,
    ) -> CtiConnection:
        conn = cls(on_event, on_close)
        loop = asyncio.get_running_loop()
        try:
            transport, _ = await asyncio.wait_for(
                loop.create_connection(lambda: _Lines(conn), host, port), timeout
            )
        except (TimeoutError, OSError) as err:
            raise CtiError(
                "disconnected",
                {"message": str(err) or type(err).__name__},
                refused=isinstance(err, ConnectionRefusedError),
            ) from None
        conn.transport = transport  # type: ignore[assignment]
        return conn

    def on_line(self, line: bytes) -> None:
        try:
            msg = P.decode(line)
        except ValueError:
            return
        rid = msg.get("id")
        fut = self._pending.pop(rid, None) if isinstance(rid, int) else None
        if fut is not None:
            if not fut.done():
                fut.set_result(msg)
        elif msg.get("type") == "event" and self.on_event is not None:
            self.on_event(msg)

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()
        self.shutdown()

    def shutdown(self) -> None:
        if self.closed:
            return
        self.closed = True
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(CtiError("disconnected"))
        self._pending.clear()
        if self.transport is not None:
            with contextlib.suppress(Exception):
                self.transport.close()
        if self.on_close is not None:
            self.on_close()

    async def request(self, msg: dict[str, Any], timeout: float = 2.0) -> dict[str, Any]:
        """Send ``msg`` and return the reply; raise CtiError for an error reply, loss or timeout."""
        if self.closed or self.transport is None:
            raise CtiError("disconnected")
        rid = next(self._ids)
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[dict[str, Any]] = loop.create_future()
        self._pending[rid] = fut
        # A timer on the future, not asyncio.wait_for: wait_for wraps every call in a task and cancels it
        # on the way out, which was a quarter of a 10,000-agent swarm's CPU at steady state (heartbeats).
        timer = loop.call_later(timeout, _expire, fut)
        try:
            self.transport.write(P.encode({**msg, "id": rid}))
            reply = await fut
        except TimeoutError:
            raise CtiError("timeout") from None
        except OSError:
            raise CtiError("disconnected") from None
        finally:
            timer.cancel()
            self._pending.pop(rid, None)
        if reply.get("type") == "error":
            raise CtiError(str(reply.get("code")), reply)
        return reply

    async def close(self, logout: bool = False) -> None:
        """Close the connection (saying ``logout`` first when asked and still possible)."""
        if logout and not self.closed:
            with contextlib.suppress(CtiError):
                await self.request({"type": "logout"}, timeout=0.5)
        self.on_close = None
        self.shutdown()


def _expire(fut: asyncio.Future[Any]) -> None:
    if not fut.done():
        fut.set_exception(TimeoutError())


async def query(host: str, port: int, msg: dict[str, Any], timeout: float = 2.0) -> dict[str, Any]:
    """One request on a fresh connection (``status``, ``sessions``, admin messages)."""
    conn = await CtiConnection.open(host, port, timeout=timeout)
    try:
        return await conn.request(msg, timeout=timeout)
    finally:
        await conn.close()
