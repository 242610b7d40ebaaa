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
    """An error reply (``code`` from the protocol) or a broken connection (``code`` = "disconnected")."""

    def __init__(self, code: str, reply: dict[str, Any] | None = None) -> None:
        super().__init__(code if reply is None else f"{code}: {reply.get('message', '')}")
        self.code = code
        self.reply = reply or {}


class CtiConnection:
    """One TCP connection to a CTI server."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        on_event: Callable[[dict[str, Any]], None] | None = None,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        self.reader, self.writer = reader, writer
        self.on_event = on_event
        self.on_close = on_close
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.closed = False
        self._task = asyncio.create_task(self._read())

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
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(host, port, limit=P.MAX_LINE * 8), timeout
            )
        except (TimeoutError, OSError) as err:
            raise CtiError("disconnected", {"message": str(err) or type(err).__name__}) from None
        return cls(reader, writer, on_event, on_close)

    async def _read(self) -> None:
        try:
            while True:
                line = await self.reader.readline()
                if not line:
                    break
                try:
                    msg = P.decode(line)
                except ValueError:
                    continue
                rid = msg.get("id")
                fut = self._pending.pop(rid, None) if isinstance(rid, int) else None
                if fut is not None:
                    if not fut.done():
                        fut.set_result(msg)
                elif msg.get("type") == "event" and self.on_event is not None:
                    self.on_event(msg)
        except (OSError, ValueError, asyncio.IncompleteReadError):
            pass
        finally:
            self._shutdown()

    def _shutdown(self) -> None:
        if self.closed:
            return
        self.closed = True
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(CtiError("disconnected"))
        self._pending.clear()
        with contextlib.suppress(Exception):
            self.writer.close()
        if self.on_close is not None:
            self.on_close()

    async def request(self, msg: dict[str, Any], timeout: float = 2.0) -> dict[str, Any]:
        """Send ``msg`` and return the reply; raise CtiError for an error reply, loss or timeout."""
        if self.closed:
            raise CtiError("disconnected")
        rid = next(self._ids)
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[dict[str, Any]] = loop.create_future()
        self._pending[rid] = fut
        # A timer on the future, not asyncio.wait_for: wait_for wraps every call in a task and cancels it
        # on the way out, which was a quarter of a 10,000-agent swarm's CPU at steady state (heartbeats).
        timer = loop.call_later(timeout, _expire, fut)
        try:
            self.writer.write(P.encode({**msg, "id": rid}))
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
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._task
        self._shutdown()


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
