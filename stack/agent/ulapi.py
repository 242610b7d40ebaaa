"""The unified login's HTTP API as the agent client uses it, shared by every client of a process.

Why shared: in a storm of thousands of logins the UL must see one health probe per process, not
thousands, and a UL that answered a moment ago is taken as up whatever one slow probe says.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from typing import Any

import aiohttp

from stack.common import fastjson


class UlUnavailable(Exception):
    """The UL could not be reached or answered with a server error."""


class UlRefused(Exception):
    """The UL refused the agent (bad credentials, unknown agent)."""


class UlDeferred(Exception):
    """The UL deferred the login (429): come back after ``retry_after`` seconds with ``ticket``, the
    agent's place in the site's queue. Not a failure: nothing was allocated and nothing refused."""

    def __init__(self, retry_after: float, ticket: int | None, position: int | None = None) -> None:
        super().__init__(f"deferred {retry_after:.3f} s (ticket {ticket}, position {position})")
        self.retry_after, self.ticket, self.position = retry_after, ticket, position


# What a deferral's wait may be: a retry-after missing, negative, not a number or absurd (a broken or
# hostile UL) is clamped into this range with a logged warning, never obeyed as it stands.
RETRY_AFTER_MIN, RETRY_AFTER_MAX, RETRY_AFTER_DEFAULT = 0.02, 30.0, 1.0
log = logging.getLogger("stack.agent")


def retry_after_of(reply: Any, header: str | None) -> float:
    """The wait a 429 asks for: the body's ``retry_after`` (sub-second), else the ``Retry-After`` header
    (whole seconds), clamped into [RETRY_AFTER_MIN, RETRY_AFTER_MAX]."""
    raw: Any = reply.get("retry_after") if isinstance(reply, dict) else None
    if raw is None and header is not None:
        raw = header.strip()
    try:
        value = float(raw) if raw is not None and not isinstance(raw, bool) else math.nan
    except (TypeError, ValueError):
        value = math.nan
    if not math.isfinite(value):
        log.warning("UL deferral without a usable retry-after (%r): waiting %.1f s", raw, RETRY_AFTER_DEFAULT)
        return RETRY_AFTER_DEFAULT
    if not RETRY_AFTER_MIN <= value <= RETRY_AFTER_MAX:
        clamped = min(RETRY_AFTER_MAX, max(RETRY_AFTER_MIN, value))
        log.warning("UL retry-after %r out of range: waiting %.3f s", raw, clamped)
        return clamped
    return value


class UlHttp:
    """The UL API over HTTP (aiohttp), shared by every client of a process."""

    def __init__(self, session: aiohttp.ClientSession | None = None, health_ttl: float = 1.0) -> None:
        self._session = session
        # One health check per UL per ``health_ttl`` for the whole process, shared by every client: in a
        # storm of thousands of logins the UL sees one probe, not thousands.
        self.health_ttl = health_ttl
        self._health: dict[str, tuple[float, asyncio.Future[bool]]] = {}
        # When a UL last answered anything (a login reply counts): a UL that answered a moment ago is up,
        # whatever one slow health probe says. Without this, one probe timing out under a login storm
        # (the UL busy, or this process's loop late) sent every agent that asked within ``health_ttl``
        # to the remote UL: 536 of 10,000 agents started at the wrong site (bench/bench_failover.py).
        self._answered: dict[str, float] = {}

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=256), json_serialize=fastjson.dumps
            )
        return self._session

    async def health(self, url: str, timeout: float) -> bool:
        now = time.monotonic()
        if now - self._answered.get(url, -1e9) < self.health_ttl:
            return True
        cached = self._health.get(url)
        if cached is not None and (not cached[1].done() or now - cached[0] < self.health_ttl):
            return await asyncio.shield(cached[1])
        fut = asyncio.ensure_future(self._probe(url, timeout))
        self._health[url] = (now, fut)
        return await asyncio.shield(fut)

    async def _probe(self, url: str, timeout: float) -> bool:
        # A timeout is asked once more with twice the time before the UL counts as down: a refused
        # connection or a 5xx answers at once, so a dead UL costs no more; a merely busy one is not
        # taken for dead.
        for limit in (timeout, 2 * timeout):
            try:
                async with self._http().get(
                    url + "/v1/health", timeout=aiohttp.ClientTimeout(total=limit)
                ) as r:
                    if r.status == 200:
                        self._answered[url] = time.monotonic()
                        return True
                    return False
            except TimeoutError:
                continue
            except (aiohttp.ClientError, OSError):
                return False
        return False

    async def login(
        self,
        url: str,
        agent: str,
        password: str,
        avoid: list[str],
        timeout: float,
        left: dict[str, Any] | None = None,
        ticket: int | None = None,
    ) -> dict[str, Any]:
        """The UL's registration information; raises UlDeferred (429: come back later), UlRefused, or
        UlUnavailable. Each call carries a fresh deadline, so a deferred login that comes back is not
        refused as late (408 deadline_passed)."""
        # Past this moment (wall clock) the client has given up: a UL that reads the request later (held up
        # by a cut, retransmitted when it healed) must not allocate a session nobody will use (explore-82).
        body: dict[str, Any] = {
            "agent": agent,
            "password": password,
            "avoid": avoid,
            "deadline": round(time.time() + timeout, 3),
        }
        if left:
            body["left"] = left  # {site, seconds}: how long since this client last sent the old CTI anything
        if ticket is not None:
            body["ticket"] = ticket  # its place in the UL's queue (the UL keeps it by agent; this is a hint)
        try:
            async with self._http().post(
                url + "/v1/login", json=body, timeout=aiohttp.ClientTimeout(total=timeout)
            ) as r:
                reply = await r.json(content_type=None, loads=fastjson.loads)
                if r.status < 500:
                    self._answered[url] = time.monotonic()
                if r.status == 429:
                    raise UlDeferred(
                        retry_after_of(reply, r.headers.get("Retry-After")),
                        _int_or_none(reply.get("ticket") if isinstance(reply, dict) else None),
                        _int_or_none(reply.get("position") if isinstance(reply, dict) else None),
                    )
                if r.status in (400, 401, 403, 404):
                    raise UlRefused(f"{r.status} {reply}")
                if r.status != 200:
                    raise UlUnavailable(f"{r.status} {reply}")
                return reply
        except (TimeoutError, aiohttp.ClientError, OSError, ValueError) as err:
            raise UlUnavailable(str(err) or type(err).__name__) from None

    async def logout(self, url: str, token: str, timeout: float) -> None:
        """Best effort: tell the UL the session ended (a dead UL learns it from the next login)."""
        try:
            limit = aiohttp.ClientTimeout(total=timeout)
            async with self._http().post(url + "/v1/logout", json={"token": token}, timeout=limit):
                pass
        except (TimeoutError, aiohttp.ClientError, OSError):
            pass

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
