"""The CTI's check of a login's epoch against the unified login, batched.

Why batched: every CTI login asks the UL for the agent's current epoch (a fenced token must be refused).
One HTTP request per login was 15 % of the surviving CTI's CPU in a 10,000-agent failover storm
(py-spy, docs/performance.md). Here a login's question goes out at once when no request is in flight;
while one is, the questions that arrive wait for it and then go out together in one ``POST /v1/epochs``.
A quiet CTI adds no latency, and a busy one sends fewer, larger requests.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

from stack.common import fastjson


async def post_epochs(
    http: aiohttp.ClientSession, url: str, agents: list[str], timeout: aiohttp.ClientTimeout
) -> dict[str, Any] | None:
    """The UL's answer to ``POST /v1/epochs`` (``url``) about ``agents``, or None when it gave none (no
    connection, a timeout, a status other than 200, a body that is not a JSON object)."""
    try:
        async with http.post(url, json={"agents": agents}, timeout=timeout) as r:
            if r.status != 200:
                return None
            body = await r.json(loads=fastjson.loads)
    except (TimeoutError, aiohttp.ClientError, ValueError, OSError):
        return None
    return body if isinstance(body, dict) else None


class EpochBatcher:
    """``await get(agent)`` -> the UL's view ``{"known", "epoch", "site", "status", "reconciled",
    "started"}`` (as ``GET /v1/epoch/<agent>`` gives it), or None when the UL did not answer."""

    def __init__(
        self, http: aiohttp.ClientSession, ul_url: str, *, timeout: float = 1.0, max_batch: int = 500
    ) -> None:
        self.http = http
        self.url = ul_url.rstrip("/") + "/v1/epochs"
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self.max_batch = max_batch
        self._waiting: dict[str, list[asyncio.Future[dict[str, Any] | None]]] = {}
        self._busy = False
        self.requests = 0  # HTTP requests made (for tests and the bench)
        self.asked = 0  # agents asked about

    async def get(self, agent: str) -> dict[str, Any] | None:
        fut: asyncio.Future[dict[str, Any] | None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(agent, []).append(fut)
        if not self._busy:
            self._busy = True
            asyncio.ensure_future(self._drain())
        return await fut

    async def _drain(self) -> None:
        try:
            while self._waiting:
                await asyncio.sleep(0)  # let the questions of this loop iteration join the batch
                batch = dict(list(self._waiting.items())[: self.max_batch])
                for agent in batch:
                    del self._waiting[agent]
                views = await self._ask(list(batch))
                for agent, futs in batch.items():
                    view = None if views is None else views.get(agent, {"known": False, "agent": agent})
                    for f in futs:
                        if not f.done():
                            f.set_result(view)
        finally:
            self._busy = False

    async def _ask(self, agents: list[str]) -> dict[str, dict[str, Any]] | None:
        self.requests += 1
        self.asked += len(agents)
        body = await post_epochs(self.http, self.url, agents, self.timeout)
        if body is None or not isinstance(body.get("agents"), dict):
            return None
        extra = {"reconciled": body.get("reconciled", True), "started": body.get("started", 0)}
        return {
            str(a): {"known": True, "agent": str(a), **row, **extra}
            for a, row in body["agents"].items()
            if isinstance(row, dict)
        } | {a: {"known": False, "agent": a, **extra} for a in agents if a not in body["agents"]}
