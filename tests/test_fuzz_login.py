"""The unified login's HTTP API under fuzz (issue 16, item 4): stack/login/routes.py through aiohttp's test
client, with garbage and mutated bodies, non-ASCII and non-UTF-8 signatures, tokens and paths, bodies nested
a thousand deep, charsets nobody knows, and validly signed garbage (so the handlers behind the signature
check are reached too). Every answer is below 500, and a refusal says why in JSON."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import given
from hypothesis import strategies as st
from test_fuzz_targets import FUZZ, json_values
from test_login_server import AGENT_SECRET, SECRET, FakeCtiAdmin, directory

from stack.common import auth
from stack.login.server import UnifiedLogin
from stack.login.store import Store

ROUTES = [
    ("GET", "/v1/health"), ("POST", "/v1/login"), ("POST", "/v1/logout"), ("POST", "/v1/allocate"),
    ("POST", "/v1/fence"), ("POST", "/v1/sync"), ("GET", "/v1/epoch/a00001"), ("POST", "/v1/epochs"),
    ("GET", "/v1/sessions?all=1"), ("GET", "/v1/rules"), ("POST", "/v1/rules"), ("DELETE", "/v1/rules/r1"),
    ("POST", "/v1/rules/r1"),
]  # fmt: skip
SIGNED = {"/v1/allocate", "/v1/fence", "/v1/sync", "/v1/rules", "/v1/rules/r1"}
SEED_BODIES: list[dict[str, Any]] = [
    {"agent": "a00001", "password": auth.derive_password(AGENT_SECRET, "a00001"), "avoid": ["ntg"]},
    {"token": auth.mint(SECRET, {"agent": "a00001", "site": "sha", "epoch": 1})},
    {"agent": "a00002", "hold": 1.5},
    {"agent": "a00001", "site": "ntg", "epoch": 9, "extension": "10001", "status": "active", "since": 1.0},
    {"sessions": [], "rules": []},
    {"agents": ["a00001", "a00002"]},
    {"scope": "system", "value": "air", "target": "ntg", "enabled": True},
]
_NASTY_TEXT = st.sampled_from(
    ["\u4e2d\u6587", "\udcff", "\xe9t\xe9", "\x00", "a" * 3000, "", "nan", "inf", "1e309"]
)


@st.composite
def bodies(draw: Any) -> bytes:
    kind = draw(st.integers(0, 3))
    if kind == 0:
        return draw(st.binary(max_size=64))
    if kind == 1:
        return draw(st.sampled_from([b"[" * 1000 + b"]" * 1000, b'{"a":' * 1000 + b"1" + b"}" * 1000, b"[]"]))
    body = dict(draw(st.sampled_from(SEED_BODIES)))
    for _ in range(draw(st.integers(0 if kind == 3 else 1, 3))):
        key = draw(st.sampled_from([*body, "agent", "token", "hold", "avoid", "left", "agents", "epoch"]))
        body[key] = draw(st.one_of(json_values, _NASTY_TEXT))
    return json.dumps(body).encode("utf-8", "surrogatepass")


@st.composite
def requests(draw: Any) -> tuple[str, str, bytes, dict[str, str]]:
    method, path = draw(st.sampled_from(ROUTES))
    if draw(st.integers(0, 5)) == 0:  # a path segment of anything
        path = (
            path.rsplit("/", 1)[0] + "/" + draw(st.sampled_from(["%E4%B8%AD", "%FF", "..", "a" * 500, "%00"]))
        )
    body = draw(bodies())
    headers: dict[str, str] = {}
    sign = draw(st.sampled_from(["valid", "none", "nasty"])) if path.split("?")[0] in SIGNED else "none"
    if sign == "valid":
        headers.update(auth.sign_request(SECRET, method, path.split("?")[0], body))
    elif sign == "nasty":
        headers["X-Hil-Time"] = draw(st.sampled_from(["nan", "inf", "-1", "\xe9", "1" * 400, "0x10"]))
        headers["X-Hil-Sig"] = draw(st.sampled_from(["\xe9" * 64, "\xff", "0" * 64, ""]))
    if draw(st.booleans()):
        headers["Content-Type"] = draw(
            st.sampled_from(
                ["application/json; charset=nope", "text/plain; charset=utf-16", "application/json"]
            )
        )
    return method, path, body, headers


LOOP = asyncio.new_event_loop()


async def start_ul(root: Path) -> TestClient:
    """A UL (its store under ``root``, a fake CTI admin, no peer) served by aiohttp's test server."""
    app = UnifiedLogin(
        "sha", SECRET, directory(), Store(root / "ul.sqlite"), cti=("127.0.0.1", 1), pbx=("127.0.0.1", 2),
        agent_secret=AGENT_SECRET, sip_secret="sip",
    )  # fmt: skip
    app.cti_admin = FakeCtiAdmin()  # type: ignore[assignment]
    c = TestClient(TestServer(app.app()))
    await c.start_server()
    return c


@pytest.fixture(scope="module")
def ul(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """One UL for the module."""
    c = LOOP.run_until_complete(start_ul(tmp_path_factory.mktemp("ul")))
    yield c
    LOOP.run_until_complete(c.close())


def ask(ul: TestClient, method: str, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
    async def go() -> tuple[int, bytes]:
        async with ul.request(method, path, data=body, headers=headers) as r:
            return r.status, await r.read()

    return LOOP.run_until_complete(asyncio.wait_for(go(), 20))


def sign(path: str, body: bytes) -> dict[str, str]:
    return auth.sign_request(SECRET, "POST", path, body)


def check_answer(status: int, text: bytes) -> None:
    assert status < 500, (status, text[:300])
    if status >= 400:
        assert text, status
        if text.startswith(b"{"):
            assert "error" in json.loads(text), text[:300]


@FUZZ
@given(requests())
def test_ul_refuses_bad_requests_with_a_4xx_and_a_reason(
    ul: TestClient, req: tuple[str, str, bytes, dict[str, str]]
) -> None:
    check_answer(*ask(ul, *req))


def test_the_cases_the_issue_names(ul: TestClient) -> None:
    """A non-ASCII signature or token gave a 500 with a traceback; so did a body nested a thousand deep."""
    nope = {"Content-Type": "application/json; charset=nope"}
    cases = [
        ("POST", "/v1/rules", b"{}", {"X-Hil-Time": "1", "X-Hil-Sig": "\xe9" * 64}, 403),
        ("POST", "/v1/logout", json.dumps({"token": "\u4e2d.\u6587"}).encode(), {}, 401),
        ("POST", "/v1/login", b"[" * 1000 + b"]" * 1000, {}, 400),
        ("POST", "/v1/login", b'{"agent": "a00001"}', nope, 400),
        ("POST", "/v1/epochs", b'{"agents": 5}', {}, 400),
        ("POST", "/v1/fence", b'{"agent": []}', sign("/v1/fence", b'{"agent": []}'), 400),
        ("POST", "/v1/allocate", b"[1]", sign("/v1/allocate", b"[1]"), 400),
    ]
    for method, path, body, headers, want in cases:
        status, text = ask(ul, method, path, body, headers)
        assert status == want, (path, status, text)
        assert "error" in json.loads(text)
