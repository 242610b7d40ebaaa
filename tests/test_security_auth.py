"""Issue 16, items 1 and 2: replays refused, secrets required at start, secrets compared in constant time,
tokens good without their UL only within their lease. Each refusal is clear, logged, and nothing crashes."""

from __future__ import annotations

import ast
import asyncio
import logging
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from harness.ulapi import sign_request as harness_sign_request
from stack.common import auth
from stack.cti.client import CtiConnection, CtiError
from stack.cti.server import CtiServer
from stack.login.__main__ import parse as ul_parse
from stack.login.__main__ import secrets_of

REPO = Path(__file__).resolve().parent.parent
SECRET = "s3cret"
HOST = "127.0.0.1"


# -- the nonce window -----------------------------------------------------------------------------------


def test_nonce_window_refuses_a_nonce_twice_and_forgets_it_after_the_window() -> None:
    w = auth.NonceWindow(skew=1.0, cap=3)
    assert w.admit("a", now=0.0) is None
    assert w.admit("a", now=1.9) == "replayed"
    assert w.admit("a", now=2.0) is None  # 2 * skew later: no signature of then can still pass
    assert w.admit("b", now=2.0) is None and w.admit("c", now=2.0) is None
    assert w.admit("d", now=2.5) == "replay_window_full"  # bounded: refused, not remembered
    assert len(w) == 3
    assert w.admit("d", now=4.1) is None and len(w) == 1  # the expired ones went with the window


# -- signed HTTP requests (the UL's admin API, peer orders, the swarm's admin) ------------------------------


def test_a_replayed_signed_request_is_refused_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    w = auth.NonceWindow()
    h = auth.sign_request(SECRET, "POST", "/v1/rules", b"{}")
    assert auth.request_refusal(SECRET, "POST", "/v1/rules", b"{}", h, window=w) is None
    with caplog.at_level(logging.WARNING, logger="hil.auth"):
        assert auth.request_refusal(SECRET, "POST", "/v1/rules", b"{}", h, window=w) == "replayed"
    assert "replayed" in caplog.text and "/v1/rules" in caplog.text
    # a forgery is refused before it can fill the window
    bad = dict(h, **{"X-Hil-Sig": "0" * 64})
    assert auth.request_refusal(SECRET, "POST", "/v1/rules", b"{}", bad, window=w) == "bad_signature"
    assert len(w) == 1
    old = auth.sign_request(SECRET, "POST", "/v1/rules", b"{}", ts=time.time() - 120)
    assert auth.request_refusal(SECRET, "POST", "/v1/rules", b"{}", old, window=w) == "stale"
    assert auth.request_refusal(SECRET, "POST", "/v1/rules", b"{}", {}, window=w) == "unsigned"
    nan = {"X-Hil-Time": "nan", "X-Hil-Sig": "x"}
    assert auth.request_refusal(SECRET, "POST", "/v1/rules", b"{}", nan, window=w) == "stale"


def test_two_requests_signed_alike_are_two_requests() -> None:
    w = auth.NonceWindow()
    for _ in range(50):  # each signature is new: nothing an honest client sends is taken for a replay
        h = harness_sign_request(SECRET, "DELETE", "/v1/rules/r1")
        assert auth.request_refusal(SECRET, "DELETE", "/v1/rules/r1", b"", h, window=w) is None


async def _post(url: str, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, Any]]:
    import aiohttp

    async with aiohttp.ClientSession() as http:
        async with http.post(url, data=body, headers=headers) as r:
            return r.status, await r.json(content_type=None)


def test_the_ul_refuses_a_replayed_rule_with_a_reason(tmp_path: Path) -> None:
    from stack.common import directory
    from stack.login.server import UnifiedLogin
    from stack.login.store import Store

    topo = REPO / "topologies" / "virtual-two-site.yaml"

    async def go() -> None:
        ul = UnifiedLogin(
            "sha", SECRET, directory.load(topo), Store(str(tmp_path / "ul.sqlite")),
            cti=(HOST, 1), pbx=(HOST, 5060), agent_secret="agents",
        )  # fmt: skip
        runner = web.AppRunner(ul.app(), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, HOST, 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        url = f"http://{HOST}:{port}/v1/rules"
        try:
            body = b'{"scope": "agent", "target": "a00001", "to": "ntg"}'
            h = {
                "Content-Type": "application/json",
                **harness_sign_request(SECRET, "POST", "/v1/rules", body),
            }
            first, _ = await _post(url, h, body)
            assert first != 403
            status, reply = await _post(url, h, body)
            assert (status, reply) == (403, {"error": "forbidden", "reason": "replayed"})
            again = {
                "Content-Type": "application/json",
                **harness_sign_request(SECRET, "POST", "/v1/rules", body),
            }
            assert (await _post(url, again, body))[0] == first  # signed anew: a new request
        finally:
            await runner.cleanup()
            ul.store.close()

    asyncio.run(asyncio.wait_for(go(), 30))


# -- CTI admin messages --------------------------------------------------------------------------------------


def test_a_replayed_admin_message_is_refused() -> None:
    w = auth.NonceWindow()
    msg = auth.sign_message(SECRET, {"type": "admin", "op": "fence", "agent": "a1", "epoch": 3})
    assert auth.message_refusal(SECRET, {**msg, "id": 1}, window=w) is None
    assert auth.message_refusal(SECRET, {**msg, "id": 2}, window=w) == "replayed"  # another id: same message
    assert auth.message_refusal(SECRET, {**msg, "nonce": "other"}, window=w) == "bad_signature"
    no_nonce = {k: v for k, v in msg.items() if k != "nonce"}
    assert auth.message_refusal(SECRET, no_nonce, window=w) == "unsigned"
    assert auth.message_refusal(SECRET, {**msg, "ts": True}, window=w) == "stale"


def with_cti(body: Callable[[CtiServer, int], Awaitable[None]], ul_url: str | None) -> None:
    async def go() -> None:
        srv = CtiServer("sha", SECRET, pbx_rpc=None, ul_url=ul_url, epoch_interval=60.0)
        await srv.start(HOST, 0)
        try:
            await body(srv, srv.port)
        finally:
            await srv.stop()

    asyncio.run(asyncio.wait_for(go(), 30))


def test_the_cti_refuses_a_replayed_admin_message(caplog: pytest.LogCaptureFixture) -> None:
    async def body(srv: CtiServer, port: int) -> None:
        adm = await CtiConnection.open(HOST, port)
        try:
            msg = auth.sign_message(
                SECRET, {"type": "admin", "op": "switch_order", "agents": [], "target": "ntg"}
            )
            assert (await adm.request(dict(msg)))["type"] == "admin_ok"
            with caplog.at_level(logging.WARNING, logger="hil.auth"):
                with pytest.raises(CtiError) as err:
                    await adm.request(dict(msg))
            assert err.value.code == "forbidden" and err.value.reply["reason"] == "replayed"
            assert "replayed" in caplog.text
            status = await adm.request({"type": "status"})  # the connection is still served
            assert status["type"] == "status"
        finally:
            await adm.close()

    with_cti(body, None)


# -- tokens with a lease -------------------------------------------------------------------------------


def _token(lease: float, agent: str = "a00001") -> str:
    return auth.mint(SECRET, {"agent": agent, "site": "sha", "epoch": 7, "ext": "10001"}, 3600, lease)


def test_a_token_carries_a_short_lease() -> None:
    claims = auth.verify(SECRET, _token(auth.TOKEN_LEASE))
    assert 0 < claims["lease"] <= 600 and auth.within_lease(claims)
    assert not auth.within_lease(claims, now=claims["iat"] + claims["lease"])
    assert not auth.within_lease({**claims, "lease": "x"})


def test_a_token_past_its_lease_is_refused_when_the_ul_is_unreachable(
    caplog: pytest.LogCaptureFixture,
) -> None:
    dead_ul = f"http://{HOST}:1"  # nothing listens: refused at once

    async def body(srv: CtiServer, port: int) -> None:
        old = await CtiConnection.open(HOST, port)
        with caplog.at_level(logging.INFO, logger="stack.cti"):
            with pytest.raises(CtiError) as err:
                await old.request({"type": "login", "token": _token(0.0)})
            assert err.value.code == "token_expired"
            fresh = await CtiConnection.open(HOST, port)
            ok = await fresh.request({"type": "login", "token": _token(60.0, "a00002")})
        assert ok["type"] == "login_ok" and ok["epoch_checked"] is False
        assert "past its lease" in caplog.text and "accepted unchecked" in caplog.text
        await old.close()
        await fresh.close(logout=True)

    with_cti(body, dead_ul)


def test_a_token_past_its_lease_is_accepted_when_the_ul_vouches_for_it() -> None:
    async def epochs(request: web.Request) -> web.Response:
        agents = (await request.json())["agents"]
        view = {
            "site": "sha",
            "epoch": 7,
            "status": "active",
            "known": True,
            "reconciled": True,
            "started": 0,
        }
        return web.json_response({"agents": {a: view for a in agents}})

    async def go() -> None:
        app = web.Application()
        app.add_routes([web.post("/v1/epochs", epochs)])
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, HOST, 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        srv = CtiServer("sha", SECRET, pbx_rpc=None, ul_url=f"http://{HOST}:{port}", epoch_interval=60.0)
        await srv.start(HOST, 0)
        try:
            conn = await CtiConnection.open(HOST, srv.port)
            ok = await conn.request({"type": "login", "token": _token(0.0)})
            assert ok["type"] == "login_ok" and ok["epoch_checked"] is True
            await conn.close(logout=True)
        finally:
            await srv.stop()
            await runner.cleanup()

    asyncio.run(asyncio.wait_for(go(), 30))


# -- secrets at start-up, compared in constant time ----------------------------------------------------------

UL_ARGS = ["--site", "sha", "--bind", "127.0.0.1:0", "--db", "/nonexistent/ul.sqlite", "--topology", "x.yaml",
           "--cti", "127.0.0.1:7000", "--pbx", "127.0.0.1:5060", "--secret-env", "G1_STACK"]  # fmt: skip


def _ul(extra: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in ("G1_STACK", "G1_AGENT")}
    argv = [sys.executable, "-m", "stack.login", *UL_ARGS, *extra]
    return subprocess.run(argv, cwd=REPO, env={**base, **env}, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(
    ("extra", "env", "names"),
    [
        ([], {"G1_STACK": "s"}, "--agent-secret-env is required"),
        (
            ["--agent-secret-env", "G1_AGENT"],
            {"G1_STACK": "s"},
            "agent secret: environment variable G1_AGENT",
        ),
        (
            ["--agent-secret-env", "G1_AGENT"],
            {"G1_AGENT": "a"},
            "stack secret: environment variable G1_STACK",
        ),
    ],
)
def test_a_ul_without_a_secret_refuses_to_start(extra: list[str], env: dict[str, str], names: str) -> None:
    proc = _ul(extra, env)
    assert proc.returncode == 2 and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and names in lines[0], proc.stderr


def test_the_secrets_parse_in_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("G1_STACK", "s")
    monkeypatch.setenv("G1_AGENT", "a")
    assert secrets_of(ul_parse([*UL_ARGS, "--agent-secret-env", "G1_AGENT"])) == ("s", "a")


def test_a_cti_without_its_secret_refuses_to_start() -> None:
    env = {k: v for k, v in os.environ.items() if k != "G1_STACK"}
    argv = [
        sys.executable,
        "-m",
        "stack.cti",
        "--site",
        "sha",
        "--bind",
        "127.0.0.1:0",
        "--secret-env",
        "G1_STACK",
    ]
    proc = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "G1_STACK" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_same_is_constant_time_and_never_raises() -> None:
    assert auth.same("abc", "abc") and not auth.same("abc", "abd")
    assert not auth.same("\xe9", "e") and not auth.same("a", b"a\xff")


SECRET_NAMES = ("secret", "password", "sig", "token", "good", "want", "ha1", "expected")


OWN = ["stack/common/auth.py", "stack/cti/handlers.py", "harness/ulapi.py"]
OWN += sorted(str(p.relative_to(REPO)) for p in (REPO / "stack/login").glob("*.py"))


@pytest.mark.parametrize("path", OWN)
def test_no_secret_is_compared_with_equals(path: str) -> None:
    """Every comparison of a secret goes through hmac.compare_digest (auth.same): grep for ``==``."""
    tree = ast.parse((REPO / path).read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare) and any(isinstance(op, ast.Eq | ast.NotEq) for op in node.ops):
            sides = [node.left, *node.comparators]  # the operands: ``token.count(".")`` compares no secret
            names = {n.id for n in sides if isinstance(n, ast.Name)}
            names |= {n.attr for n in sides if isinstance(n, ast.Attribute)}
            hit = {n for n in names if any(s in n.lower() for s in SECRET_NAMES)}
            assert not hit, f"{path}:{node.lineno}: {hit} compared with == (use auth.same)"


def test_check_request_keeps_a_process_wide_window_for_servers_that_only_ask_yes_or_no() -> None:
    """The swarm's admin API calls ``check_request``: protected from replays with no window of its own."""
    h = auth.sign_request(SECRET, "POST", "/agents/a00001/logout", b"")
    assert auth.check_request(SECRET, "POST", "/agents/a00001/logout", b"", h)
    assert not auth.check_request(SECRET, "POST", "/agents/a00001/logout", b"", h)
