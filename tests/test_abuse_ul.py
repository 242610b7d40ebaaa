"""The unified login under abuse from the data network (issue 16 item 3), served in-process on loopback
exactly as ``python -m stack.login`` serves it (``UnifiedLogin.runner`` and ``.listener``, the gate of
stack/common/httpguard.py): malformed requests to every route get a 4xx (with a JSON reason whenever the
application saw them), never a 500; connections beyond the caps get a JSON 503; a client that dribbles its
request gets a 408 and is closed; each is counted in the health counters and logged, and a well-formed
neighbour on another connection is served meanwhile. Every wait is a poll or a read with a generous
deadline (the suite runs beside a busy loop on every core)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from harness.ulapi import sign_request
from stack.common import auth, directory
from stack.common.httpguard import HttpLimits
from stack.login.server import UnifiedLogin
from stack.login.store import Store

REPO = Path(__file__).resolve().parent.parent
SECRET, AGENT_SECRET = "s3cret", "agent-s3cret"
HOST = "127.0.0.1"
DEADLINE = 15.0

Body = Callable[[UnifiedLogin, int], Awaitable[None]]


def with_ul(tmp_path: Path, body: Body, limits: HttpLimits | None = None) -> None:
    """Run ``body(ul, port)`` against a UL served as its daemon serves it (no peer; its CTI refuses)."""

    async def go() -> None:
        ul = UnifiedLogin(
            "sha", SECRET, directory.load(REPO / "topologies" / "virtual-two-site.yaml"),
            Store(str(tmp_path / "ul.sqlite")), cti=(HOST, 1), pbx=(HOST, 5060), agent_secret=AGENT_SECRET,
            limits=limits,
        )  # fmt: skip
        runner = ul.runner()
        await runner.setup()
        site = ul.listener(runner, HOST, 0)
        await site.start()
        try:
            await body(ul, site.port)
        finally:
            await runner.cleanup()
            ul.store.close()

    asyncio.run(asyncio.wait_for(go(), 60))


async def exchange(port: int, raw: bytes, source: str = HOST) -> tuple[int, bytes, dict[str, str]]:
    """Send ``raw`` on a fresh connection; the status, body and headers of the answer (0 when the server
    closed without one)."""
    r, w = await asyncio.open_connection(HOST, port, local_addr=(source, 0))
    try:
        w.write(raw)
        return await answer(r)
    finally:
        w.close()


async def answer(r: asyncio.StreamReader) -> tuple[int, bytes, dict[str, str]]:
    try:
        head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), DEADLINE)
    except (asyncio.IncompleteReadError, ConnectionError):
        return 0, b"", {}
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:] if x)}
    n = int(headers.get("content-length", "0"))
    body = await asyncio.wait_for(r.readexactly(n), DEADLINE) if n else b""
    return int(lines[0].split()[1]), body, headers


async def until(cond: Callable[[], bool]) -> None:
    """Poll ``cond`` with a generous deadline."""
    loop = asyncio.get_running_loop()
    end = loop.time() + DEADLINE
    while not cond():
        assert loop.time() < end, "condition not met"
        await asyncio.sleep(0.01)


def request(method: str, path: str, body: bytes = b"", headers: dict[str, Any] | None = None) -> bytes:
    hs: dict[str, Any] = {"Host": "ul", "Content-Type": "application/json", **(headers or {})}
    if "Content-Length" not in hs and "Transfer-Encoding" not in hs:
        hs["Content-Length"] = str(len(body))
    head = f"{method} {path} HTTP/1.1\r\n".encode()
    for k, v in hs.items():
        head += k.encode() + b": " + (v if isinstance(v, bytes) else str(v).encode("latin-1")) + b"\r\n"
    return head + b"\r\n" + body


def signed(method: str, path: str, body: bytes) -> bytes:
    return request(method, path, body, sign_request(SECRET, method, path, body))


def good_login(agent: str = "a00001") -> dict[str, Any]:
    return {"agent": agent, "password": auth.derive_password(AGENT_SECRET, agent), "avoid": []}


# Bodies no POST route can use, and per route, bodies with a field missing or of the wrong type.
BAD_BODIES = [
    b"{not json", b"[]", b'"a string"', b"null", b"\xff\xfe{}", b"[" * 5000 + b"]" * 5000,
    b'{"x": ' + b"9" * 5000 + b"}",
]  # fmt: skip
MISTYPED = {
    "/v1/login": [b'{"agent": 5, "password": "x"}', b'{"agent": "a00001", "password": []}',
                  b'{"agent": "a00001"}', b'{"agent": "a00001", "password": "\xe2\x82\xac"}'],
    "/v1/logout": [b'{"token": ["x"]}', b'{"token": "\xe2\x82\xac.\xe2\x82\xac.\xe2\x82\xac"}', b"{}"],
    "/v1/allocate": [b'{"agent": 5}', b'{"agent": "a00001", "hold": "x"}',
                     b'{"agent": "a00001", "hold": 1e999}', b'{"agent": "a00001", "deadline": "soon"}',
                     b'{"agent": "a00001", "deadline": NaN}'],
    "/v1/fence": [b'{"agent": "a00001", "site": 1, "epoch": "x", "extension": null}',
                  b'{"agent": "a00001", "site": "sha", "epoch": 1e999, "extension": "1", "status": "active"}',
                  b"{}"],
    "/v1/sync": [b'{"sessions": 5, "rules": "x"}', b'{"sessions": [5], "rules": []}'],
    "/v1/epochs": [b'{"agents": 7}', b'{"agents": {"a00001": 1}}'],
    "/v1/rules": [b'{"scope": ["system"], "value": {}, "target": 3}',
                  b'{"scope": "system", "value": "", "target": "sha"}',
                  b'{"scope": "system", "value": "air", "target": "mars"}'],
    "/v1/rules/r1": [b'{"enabled": true}'],  # no such rule
}  # fmt: skip
CHUNKED = {"Transfer-Encoding": "chunked"}
SIGNED = {"/v1/allocate", "/v1/fence", "/v1/sync", "/v1/rules", "/v1/rules/r1"}


def malformed() -> list[tuple[str, bytes, bool]]:
    """(what, raw request, whether the application sees it and so must answer in JSON): each must get a
    4xx."""
    out: list[tuple[str, bytes, bool]] = []
    sign = {True: signed, False: lambda m, p, b: request(m, p, b)}
    for path, mistyped in MISTYPED.items():
        for body in [*BAD_BODIES, *mistyped]:
            out.append((f"POST {path} {body[:40]!r}", sign[path in SIGNED]("POST", path, body), True))
        if path in SIGNED:
            out.append((f"unsigned POST {path}", request("POST", path, b"{}"), True))
    weird = {"X-Hil-Time": b"\xff\xfe", "X-Hil-Sig": b"\xe2\x82\xac" * 20}
    bogus = {"Content-Type": "application/json; charset=no-such-charset"}
    for path in MISTYPED:
        out.append((f"non-ASCII signature {path}", request("POST", path, b"[]", weird), True))
        out.append((f"unknown charset {path}", request("POST", path, b'{"agent": "\xe9"}', bogus), True))
    out += [
        ("DELETE unsigned", request("DELETE", "/v1/rules/r1"), True),
        ("DELETE non-ASCII signature", request("DELETE", "/v1/rules/r1", b"", weird), True),
        ("DELETE no such rule", signed("DELETE", "/v1/rules/r1", b""), True),
        ("unknown route", request("GET", "/v1/nothing"), True),
        ("wrong method", request("PUT", "/v1/login", b"{}"), True),
        ("body over the limit", request("POST", "/v1/login", b"x" * (300 * 1024)), True),
        ("declared body over the limit", request("POST", "/v1/login", b"", {"Content-Length": 10**12}), True),
        # refused by aiohttp's parser before any handler: its own plain-text 400
        ("broken chunks", request("POST", "/v1/login", b"zz\r\nxx\r\n0\r\n\r\n", CHUNKED), False),
        ("negative length", request("POST", "/v1/login", b"", {"Content-Length": "-5"}), False),
        ("header too long", request("GET", "/v1/health", b"", {"X-Long": "h" * 9000}), False),
        ("too many headers", request("GET", "/v1/health", b"", {f"X-{i}": "1" for i in range(300)}), False),
        ("request line of garbage", b"\x00\x01GARBAGE\r\n\r\n", False),
        ("non-ASCII method", b"G\xc3\xa9T /v1/health HTTP/1.1\r\nHost: ul\r\n\r\n", False),
        ("path too long", b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: ul\r\n\r\n", False),
        ("HTTP/9", b"GET /v1/health HTTP/9.9\r\nHost: ul\r\n\r\n", False),
    ]  # fmt: skip
    return out


# Odd but well-formed: answered, not refused; never a 5xx either.
ODD = [
    request("GET", "/v1/epoch/%ff%fe%00"), request("GET", "/v1/sessions?all=%ff&all=2"),
    request("GET", "/v1/rules?all=" + "1" * 5000),
    request("POST", "/v1/epochs", b'{"agents": [[], {}, 1e999, null]}'),
]  # fmt: skip


def test_every_malformed_request_is_a_4xx_and_the_neighbour_is_served(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)

    async def body(ul: UnifiedLogin, port: int) -> None:
        url = f"http://{HOST}:{port}"
        async with aiohttp.ClientSession() as http:
            # a slow client mid-request holds its own connection all along
            r_slow, w_slow = await asyncio.open_connection(HOST, port)
            w_slow.write(b"POST /v1/login HTTP/1.1\r\nHost: ul\r\nContent-Length: 100\r\n\r\n{")
            failures = []
            for i, (what, raw, app_saw_it) in enumerate(malformed()):
                status, data, headers = await exchange(port, raw)
                if not 400 <= status < 500:
                    failures.append(f"{what}: {status} {data[:200]!r}")
                elif app_saw_it and "json" not in headers.get("content-type", ""):
                    failures.append(f"{what}: {status} not JSON: {data[:200]!r}")
                elif app_saw_it and "error" not in json.loads(data):
                    failures.append(f"{what}: {status} no reason: {data[:200]!r}")
                if i % 10 == 0:  # a well-formed neighbour on its own (kept-alive) connection
                    async with http.post(url + "/v1/login", json=good_login()) as r:
                        assert r.status == 200, await r.text()
            for raw in ODD:
                status, data, _ = await exchange(port, raw)
                if not 200 <= status < 500:
                    failures.append(f"{raw[:60]!r}: {status} {data[:200]!r}")
            assert not failures, "\n".join(failures)
            async with http.get(url + "/v1/health") as r:
                health = await r.json()
            assert health["counters"]["login"] >= 1
            assert health["counters"]["too_large"] >= 1 and health["counters"]["bad_head"] == 8
            w_slow.close()

    with_ul(tmp_path, body)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], "an error was logged"
    assert "Traceback" not in caplog.text


def test_connections_beyond_the_caps_get_a_json_503(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "stack.login")

    async def body(ul: UnifiedLogin, port: int) -> None:
        held = [await asyncio.open_connection(HOST, port) for _ in range(2)]  # 127.0.0.1: at its cap
        for _, w in held:
            w.write(b"GET /v1/health HTTP/1.1\r\nHost: ul\r\n")  # a request head not finished
        status, data, headers = await exchange(port, request("GET", "/v1/health"))
        assert status == 503 and headers["content-type"].startswith("application/json")
        assert (
            json.loads(data)["error"] == "too_many_connections" and json.loads(data)["reason"] == "per_source"
        )
        assert headers.get("retry-after") == "1"
        # another address is served (the third connection: the total cap), and sees the counter
        status, data, _ = await exchange(port, request("GET", "/v1/health"), source="127.0.0.2")
        assert status == 200 and json.loads(data)["counters"]["refused_per_source"] == 1
        await until(lambda: ul.gate.caps.open == 2)
        second = await asyncio.open_connection(HOST, port, local_addr=("127.0.0.2", 0))
        await until(lambda: ul.gate.caps.open == 3)
        second[1].write(b"GET /v1/health HTTP/1.1\r\nHost: ul\r\n")
        status, data, _ = await exchange(port, request("GET", "/v1/health"), source="127.0.0.3")
        assert (status, json.loads(data)["reason"]) == (503, "total")
        assert ul.counters["refused_total"] == 1
        # a connection that ends frees its place
        second[1].close()
        for _, w in held:
            w.close()
        await until(lambda: ul.gate.caps.open == 0 and ul.gate.caps.lingering == 0)
        assert (await exchange(port, request("GET", "/v1/health")))[0] == 200

    with_ul(tmp_path, body, HttpLimits(max_per_source=2, max_connections=3))
    assert "ul sha: refused_per_source from 127.0.0.1" in caplog.text
    assert "refused_total from 127.0.0.3" in caplog.text


def test_a_slow_client_gets_a_408_and_the_neighbour_is_served(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Silent after connecting, dribbling the head, dribbling the body: each answered 408 (JSON) and closed
    ``request_timeout`` after its first byte; a kept-alive neighbour idle longer than that keeps its
    connection (the idle timeout is another, longer one)."""
    caplog.set_level(logging.WARNING, "stack.login")

    async def body(ul: UnifiedLogin, port: int) -> None:
        url = f"http://{HOST}:{port}"
        loop = asyncio.get_running_loop()
        async with aiohttp.ClientSession() as http:
            async with http.post(url + "/v1/login", json=good_login()) as r:
                assert r.status == 200
            assert ul.gate.caps.open == 1  # the neighbour's pooled connection
            t0 = loop.time()
            silent = await asyncio.open_connection(HOST, port)
            head = await asyncio.open_connection(HOST, port)
            tail = await asyncio.open_connection(HOST, port)
            tail[1].write(b"POST /v1/login HTTP/1.1\r\nHost: ul\r\nContent-Type: application/json\r\n"
                          b"Content-Length: 200\r\n\r\n{")  # fmt: skip
            results: dict[str, tuple[int, bytes, dict[str, str]]] = {}

            async def dribble(name: str, rw: Any, data: bytes) -> None:
                r, w = rw
                for ch in data:
                    w.write(bytes([ch]))
                    try:  # a byte every 50 ms until the server answers
                        results[name] = await asyncio.wait_for(answer(r), 0.05)
                        return
                    except TimeoutError:
                        continue
                results[name] = await answer(r)

            await asyncio.gather(
                dribble("head", head, b"POST /v1/login HTTP/1.1\r\nHost: ul\r\nX-Slow: " + b"z" * 200),
                dribble("tail", tail, b'"agent": "a00001"' + b" " * 200),
            )
            results["silent"] = await answer(silent[0])
            assert loop.time() - t0 >= 0.5
            conns = {"silent": silent, "head": head, "tail": tail}
            for name, (status, data, headers) in results.items():
                assert status == 408, (name, status, data)
                assert headers["content-type"].startswith("application/json")
                assert json.loads(data)["error"] == "request_timeout"
                assert await asyncio.wait_for(conns[name][0].read(), DEADLINE) == b""  # and closed
            # the neighbour's connection, idle all along, is the one that serves it now
            async with http.get(url + "/v1/health") as r:
                counters = (await r.json())["counters"]
            assert counters["request_timeout"] == 3
            for _, w in (silent, head, tail):
                w.close()
            await until(lambda: ul.gate.caps.open == 1)
            async with http.post(url + "/v1/login", json=good_login("a00002")) as r:
                assert r.status == 200
            assert ul.gate.caps.open == 1  # still one: kept alive past the request timeout

    with_ul(tmp_path, body, HttpLimits(request_timeout=0.5))
    assert "ul sha: request_timeout from 127.0.0.1" in caplog.text
