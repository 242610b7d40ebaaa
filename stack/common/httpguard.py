"""An aiohttp server that holds under abuse: connections capped per source and in total, a request that
must arrive whole within a deadline, header and body size limits, and every refusal a JSON answer.

Why a guard around aiohttp's protocol: aiohttp has no connection cap (a listen backlog only) and no read
deadline: its keep-alive timeout closes a connection that has not finished its request headers, but it
must stay above the clients' own pool keep-alive (aiohttp's client: 15 s), or a login sent on a pooled
connection just as the server drops it fails. So each connection is wrapped in a thin protocol
(:class:`_Guard`) that admits it against the caps and arms a request deadline at its first byte; the
middleware disarms it when the headers are in and reads the body under what is left of it. A slow client
that dribbles a request is answered 408 and closed after ``request_timeout`` s, whatever it sends.
Parse errors (an over-long header, a broken request line) stay aiohttp's own plain-text 400: no handler
sees them; aiohttp would log each with a traceback at ERROR, which a garbage flood turns into a flood of
tracebacks, so they are counted as ``bad_head`` and logged like the other refusals instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from stack.common.limits import LINGER, ConnectionCaps, Refusals, source_of, total_cap

# What the counters hold (pre-set to 0, so a health reader sees every kind from the start).
REASONS = ("refused_per_source", "refused_total", "request_timeout", "too_large", "bad_body", "bad_head")
HEAD_MAX = 16 * 1024  # bytes of a refused request read before its refusal is sent


@dataclass(frozen=True)
class HttpLimits:
    """What one client may hold of an HTTP service. The defaults carry a 10,000-agent swarm whose
    processes share one connection pool of 256 per UL (stack/agent/ulapi.py) with room to spare."""

    max_connections: int = 4096
    max_per_source: int = 1024
    request_timeout: float = 10.0  # from a request's first byte to its last (0: none)
    idle_timeout: float = 30.0  # between requests on a kept-alive connection: above the clients' 15 s
    max_header: int = 8190  # bytes of the request line and of one header (aiohttp's default)


def _raw_response(status: str, body: dict[str, Any], extra: str = "") -> bytes:
    data = json.dumps(body).encode()
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(data)}\r\n"
        f"{extra}Connection: close\r\n\r\n"
    )
    return head.encode() + data


def _json_error(status: int, error: str, reason: str, *, close: bool = True) -> web.Response:
    resp = web.json_response({"error": error, "reason": reason}, status=status)
    if close:  # what is left of the request on the connection is not worth reading
        resp.force_close()
    return resp


class HttpGate:
    """The caps, the request deadline and the refusals of one HTTP service. Serve it with
    :class:`GuardedSite` and put :meth:`middleware` first in the application's middlewares."""

    def __init__(self, limits: HttpLimits, refusals: Refusals) -> None:
        self.limits = limits
        self.refusals = refusals
        for reason in REASONS:
            refusals.counts.setdefault(reason, 0)
        self.caps = ConnectionCaps(limits.max_per_source, total_cap(limits.max_connections), refusals)
        self._guards: dict[Any, _Guard] = {}  # by transport, for the middleware to find its connection

    def runner_kwargs(self) -> dict[str, Any]:
        """For ``web.AppRunner``: aiohttp's own limits on a request's head and on idle connections, and
        its log of unparseable requests made one of our refusals."""
        return {
            "keepalive_timeout": self.limits.idle_timeout,
            "max_line_size": self.limits.max_header,
            "max_field_size": self.limits.max_header,
            # after a refusal, what is left of the body is read and dropped (so the client sees the answer,
            # not a reset) for this long at most: aiohttp's 10 s would let a dribbler hold on that long
            "lingering_time": LINGER,
            "logger": _ServerLog(self.refusals, logging.getLogger("aiohttp.server")),
        }

    def factory(self, inner: Callable[[], asyncio.Protocol]) -> Callable[[], asyncio.Protocol]:
        """The protocol factory for ``loop.create_server``: aiohttp's, guarded."""
        return lambda: _Guard(self, inner)

    def middleware(self) -> Callable[..., Awaitable[web.StreamResponse]]:
        """Reads the request's body under its deadline (408), within the body limit (413), refusing a
        broken one (400), all in JSON, before any handler sees the request."""
        limits, refusals, guards = self.limits, self.refusals, self._guards

        @web.middleware
        async def guard(
            request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
        ) -> web.StreamResponse:
            g = guards.get(request.transport)
            loop = asyncio.get_running_loop()
            if g is not None:
                deadline = g.begin()
            else:
                deadline = loop.time() + limits.request_timeout
            try:
                refused = await _read_body(request, deadline, limits.request_timeout, refusals)
                if refused is not None:
                    return refused
                return await handler(request)
            except web.HTTPException as exc:
                if exc.status < 400 or exc.content_type == "application/json":
                    raise
                # the router's 404 and 405: in JSON like every other refusal of the application
                error = exc.reason.lower().replace(" ", "_")
                resp = _json_error(exc.status, error, exc.text or exc.reason, close=False)
                if "Allow" in exc.headers:
                    resp.headers["Allow"] = exc.headers["Allow"]
                return resp
            finally:
                if g is not None:
                    g.end()

        return guard


async def _read_body(
    request: web.Request, deadline: float, timeout: float, refusals: Refusals
) -> web.Response | None:
    """Read the request's body (aiohttp keeps it for the handler) by ``deadline``; None when it is in,
    else the refusal: 408 too slow, 413 too large (at once when its length says so), 400 broken."""
    peer = request.remote or "?"
    size, most = request.content_length, request.client_max_size
    if size is not None and size > most:  # said so: not worth waiting for
        refusals.note("too_large", peer, f"a declared body of {size} bytes")
        return _json_error(413, "too_large", f"the body is larger than {most} bytes")
    if not request.body_exists:
        return None
    try:
        async with asyncio.timeout_at(deadline if timeout > 0 else None):
            await request.read()
    except TimeoutError:
        refusals.note("request_timeout", peer, f"body not in after {timeout:g} s")
        return _json_error(408, "request_timeout", "the request body came too slowly")
    except web.HTTPRequestEntityTooLarge:
        refusals.note("too_large", peer, f"body over {most} bytes")
        return _json_error(413, "too_large", f"the body is larger than {most} bytes")
    except HttpProcessingError as err:
        refusals.note("bad_body", peer, type(err).__name__)
        return _json_error(400, "bad_body", f"{type(err).__name__}: {str(err)[:200]}")
    except ConnectionResetError:  # the client left mid-body: gone quietly, as aiohttp treats it
        raise asyncio.CancelledError from None
    return None


class _ServerLog:
    """aiohttp's server logger, but a request it could not parse is a counted refusal (one line at most
    every few seconds), not a traceback at ERROR; a handler's own exception still logs as before."""

    def __init__(self, refusals: Refusals, logger: logging.Logger) -> None:
        self.refusals, self.logger = refusals, logger

    def exception(self, msg: str, *args: Any, exc_info: Any = None, **kw: Any) -> None:
        if not self._refused(args, exc_info):
            self.logger.exception(msg, *args, exc_info=exc_info, **kw)

    def debug(self, msg: str, *args: Any, exc_info: Any = None, **kw: Any) -> None:
        if not self._refused(args, exc_info):  # aiohttp's choice for a first request that is not HTTP
            self.logger.debug(msg, *args, exc_info=exc_info, **kw)

    def _refused(self, args: tuple[Any, ...], exc: Any) -> bool:
        if not isinstance(exc, HttpProcessingError):
            return False
        detail = (str(getattr(exc, "message", "") or exc).strip().splitlines() or [type(exc).__name__])[0]
        self.refusals.note("bad_head", str(args[0]) if args else "?", detail[:120])
        return True

    def __getattr__(self, name: str) -> Any:
        return getattr(self.logger, name)


class _Guard(asyncio.Protocol):
    """One connection: admitted against the caps (else a JSON 503 once its request head is in), its
    request deadline, and everything else passed to aiohttp's protocol unchanged."""

    def __init__(self, gate: HttpGate, make_inner: Callable[[], asyncio.Protocol]) -> None:
        self.gate = gate
        self.make_inner = make_inner
        self.inner: asyncio.Protocol | None = None
        self.transport: asyncio.Transport | None = None
        self.source = ""
        self.deadline = 0.0
        self.busy = False  # a handler has the request (its head is in)
        self._timer: asyncio.TimerHandle | None = None
        self._refused: str | None = None
        self._lingering = False
        self._head = b""

    # ---- asyncio.Protocol ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        gate = self.gate
        self.source = source_of(transport)
        why = gate.caps.admit(self.source)
        if why is not None:
            self._refused = why
            wait = gate.caps.linger()
            if wait <= 0:
                self._refuse()
            else:
                self._lingering = True
                self._timer = asyncio.get_running_loop().call_later(wait, self._refuse)
            return
        self.inner = self.make_inner()
        gate._guards[transport] = self
        self._arm()  # the first request too must arrive whole in time
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self.inner is None:
            if self._refused is not None and self.transport is not None and not self.transport.is_closing():
                self._head += data
                if b"\r\n\r\n" in self._head or len(self._head) > HEAD_MAX:
                    self._refuse()
            return
        if self._timer is None and not self.busy:
            self._arm()
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        if self.inner is None:
            self._refuse()
            return False
        return self.inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.inner is not None:
            self.gate._guards.pop(self.transport, None)
            self.gate.caps.release(self.source)
            self.inner.connection_lost(exc)
        elif self._lingering:
            self._lingering = False
            self.gate.caps.unlinger()

    def pause_writing(self) -> None:
        if self.inner is not None:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.inner is not None:
            self.inner.resume_writing()

    # ---- the request deadline -----------------------------------------------------------------------

    def _arm(self) -> None:
        timeout = self.gate.limits.request_timeout
        if timeout > 0:
            loop = asyncio.get_running_loop()
            self.deadline = loop.time() + timeout
            self._timer = loop.call_at(self.deadline, self._timed_out)

    def begin(self) -> float:
        """A request's head is in (the middleware): its deadline, for reading the body."""
        self.busy = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
            return self.deadline
        # it came in while the previous one was handled: its clock starts now
        return asyncio.get_running_loop().time() + self.gate.limits.request_timeout

    def end(self) -> None:
        self.busy = False  # the next request's first byte arms the deadline again

    def _timed_out(self) -> None:
        self._timer = None
        t = self.transport
        if self.busy or t is None or t.is_closing():
            return
        timeout = self.gate.limits.request_timeout
        self.gate.refusals.note("request_timeout", self.source, f"request not in after {timeout:g} s")
        body = {
            "error": "request_timeout",
            "reason": f"the request did not arrive whole within {timeout:g} s",
        }
        with contextlib.suppress(Exception):
            t.write(_raw_response("408 Request Timeout", body))
        t.close()

    def _refuse(self) -> None:
        """The answer to a connection beyond a cap, then close."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        t = self.transport
        if t is None or t.is_closing():
            return
        why = self._refused or "total"
        where = "from this address" if why == "per_source" else "to this server"
        body = {"error": "too_many_connections", "reason": why, "detail": f"too many connections {where}"}
        with contextlib.suppress(Exception):
            t.write(_raw_response("503 Service Unavailable", body, "Retry-After: 1\r\n"))
        t.close()


class GuardedSite(web.BaseSite):
    """``web.TCPSite``, with every connection passed through the gate."""

    def __init__(self, runner: web.BaseRunner, host: str, port: int, gate: HttpGate, *, backlog: int = 1024):
        super().__init__(runner, backlog=backlog)
        self.host, self.wanted_port, self.gate = host, port, gate

    @property
    def port(self) -> int:
        if self._server is not None and self._server.sockets:  # type: ignore[attr-defined]
            return int(self._server.sockets[0].getsockname()[1])  # type: ignore[attr-defined]
        return self.wanted_port

    @property
    def name(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        self._server = await asyncio.get_running_loop().create_server(
            self.gate.factory(server), self.host, self.wanted_port, backlog=self._backlog, reuse_address=True
        )
