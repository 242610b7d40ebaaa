"""The CTI's batched epoch check (stack/cti/epochs.py) against a stand-in UL epoch endpoint (aiohttp)."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
from aiohttp import web

from stack.cti.epochs import EpochBatcher


class FakeUl:
    def __init__(self) -> None:
        self.rows = {f"a{i:05d}": {"site": "sha", "epoch": 100 + i, "status": "active"} for i in range(60)}
        self.batches: list[list[str]] = []
        self.delay = 0.02

    async def h_epochs(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.batches.append(list(body["agents"]))
        await asyncio.sleep(self.delay)
        out = {a: self.rows[a] for a in body["agents"] if a in self.rows}
        return web.json_response({"agents": out, "reconciled": True, "started": 12.5})


async def _with_ul(test: Any) -> None:
    ul = FakeUl()
    app = web.Application()
    app.add_routes([web.post("/v1/epochs", ul.h_epochs)])
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    async with aiohttp.ClientSession() as http:
        try:
            await test(ul, EpochBatcher(http, f"http://127.0.0.1:{port}"), port)
        finally:
            await runner.cleanup()


def test_concurrent_logins_share_requests_and_each_gets_its_own_view() -> None:
    async def test(ul: FakeUl, b: EpochBatcher, port: int) -> None:
        agents = [f"a{i:05d}" for i in range(50)] + ["nobody", "a00003"]
        views = await asyncio.gather(*(b.get(a) for a in agents))
        for a, v in zip(agents, views, strict=True):
            assert v is not None and v["agent"] == a and v["reconciled"] is True and v["started"] == 12.5
            if a == "nobody":
                assert v["known"] is False
            else:
                assert v["known"] is True and v["epoch"] == ul.rows[a]["epoch"] and v["site"] == "sha"
        # the first question goes alone, the rest wait for it and go together
        assert b.requests == len(ul.batches) <= 3 and sum(len(x) for x in ul.batches) == 51
        # a quiet CTI asks at once, one agent per request
        assert (await b.get("a00007"))["epoch"] == 107 and ul.batches[-1] == ["a00007"]

    asyncio.run(asyncio.wait_for(_with_ul(test), 10))


def test_ul_down_or_slow_answers_none() -> None:
    async def test(ul: FakeUl, b: EpochBatcher, port: int) -> None:
        ul.delay = 2.0  # longer than the batcher's 1 s timeout
        assert await asyncio.gather(b.get("a00001"), b.get("a00002")) == [None, None]

    asyncio.run(asyncio.wait_for(_with_ul(test), 10))

    async def refused() -> None:
        with socket_port() as port:
            async with aiohttp.ClientSession() as http:
                assert await EpochBatcher(http, f"http://127.0.0.1:{port}").get("a00001") is None

    asyncio.run(asyncio.wait_for(refused(), 10))


def socket_port() -> Any:
    """A port nothing listens on (bound, not listening, for the test's duration)."""
    import contextlib
    import socket

    @contextlib.contextmanager
    def cm() -> Any:
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        try:
            yield s.getsockname()[1]
        finally:
            s.close()

    return cm()
