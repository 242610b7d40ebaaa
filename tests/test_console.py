"""The management console (issue 14, item 3) against real ULs in-process: two ULs (sha, ntg) on loopback,
the console mounted on sha's, each site's CTI and PBX played by small stand-ins speaking their wire (the CTI's
``sessions`` line, Kamailio's JSON-RPC). Log-in, roles, CSRF, a site that cannot be seen, the live stream,
and a planned switch added and removed through the UL's signed rule API."""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from stack.common.directory import Directory, expand_agents
from stack.console import Accounts, ConsoleConfig, SiteEndpoints, add_console, console_config, parse_site
from stack.console.config import add_console_args
from stack.console.model import page_view
from stack.console.reader import Part
from stack.login import client as ulc
from stack.login.server import UnifiedLogin
from stack.login.store import Store

SECRET, AGENT_SECRET = "s3cret", "agent-s3cret"
USERS = {"HIL_CONSOLE_USERS": "olga:operator,vic:viewer",
         "HIL_CONSOLE_PASSWORD_OLGA": "olga-pw", "HIL_CONSOLE_PASSWORD_VIC": "vic-pw"}  # fmt: skip
RAW = {
    "agents": {
        "pools": {
            "sha-air": {"home": "sha", "count": 4, "extensions": "10001-10010", "system": "air",
                        "region": "east", "skill_groups": ["domestic", "vip"]},
            "ntg-hotel": {"home": "ntg", "count": 2, "extensions": "0201-0299", "system": "hotel",
                          "region": "south", "skill_groups": ["vip"]},
        }
    }
}  # fmt: skip
DEADLINE = 30.0  # seconds: generous, the suite runs beside a busy loop on every core


def directory() -> Directory:
    return Directory({a.id: a for a in expand_agents(RAW)}, sites=["sha", "ntg"])


def listener() -> socket.socket:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", 0))
    s.listen(64)
    return s


class FakeCtiAdmin:
    async def send(self, op: str, **fields: Any) -> dict[str, Any]:
        return {"type": "admin_ok"}

    async def fence(self, agent: str, epoch: int, site: str, extension: str) -> bool:
        return True

    async def close(self) -> None:
        pass


class Site:
    """One site: a real UL, a stand-in CTI (answers ``sessions``) and PBX (JSON-RPC), each stoppable."""

    def __init__(self, code: str, root: Path) -> None:
        self.code, self.root = code, root
        self.socks = {p: listener() for p in ("ul", "cti", "pbx")}
        self.ports = {p: int(s.getsockname()[1]) for p, s in self.socks.items()}
        self.cti_sessions: list[dict[str, Any]] = []
        self.cti_clients: set[asyncio.StreamWriter] = set()
        self.runners: dict[str, web.AppRunner] = {}
        self.cti_server: asyncio.Server | None = None
        self.ul: UnifiedLogin | None = None

    def port(self, part: str) -> int:
        return self.ports[part]

    @property
    def endpoints(self) -> SiteEndpoints:
        local = "http://127.0.0.1"
        return SiteEndpoints(self.code, f"{local}:{self.port('ul')}", ("127.0.0.1", self.port("cti")),
                             f"{local}:{self.port('pbx')}/RPC")  # fmt: skip

    async def start_ul(self, peer: Site, console: ConsoleConfig | None = None) -> None:
        """The UL served as ``python -m stack.login`` serves it (its runner's limits, its gated listener),
        the console mounted as the daemon mounts it."""
        self.ul = UnifiedLogin(
            self.code, SECRET, directory(), Store(self.root / f"{self.code}.sqlite"),
            cti=("127.0.0.1", self.port("cti")), pbx=("127.0.0.1", 5060), peer_url=peer.endpoints.ul,
            agent_secret=AGENT_SECRET, peer_interval=0.1, peer_timeout=0.5,
        )  # fmt: skip
        self.ul.cti_admin = FakeCtiAdmin()  # type: ignore[assignment]
        app = self.ul.app()
        if console is not None:
            add_console(app, console)
        runner = web.AppRunner(app, access_log=None, **self.ul.gate.runner_kwargs())
        await runner.setup()
        self.socks["ul"].close()  # its port was only reserved: the gate's listener binds it (reuse_address)
        await self.ul.listener(runner, "127.0.0.1", self.port("ul")).start()
        self.runners["ul"] = runner

    async def _serve(self, part: str, app: web.Application) -> None:
        runner = web.AppRunner(app)
        await runner.setup()
        await web.SockSite(runner, self.socks[part]).start()
        self.runners[part] = runner

    async def start_cti(self) -> None:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.cti_clients.add(writer)
            while line := await reader.readline():
                req = json.loads(line)
                reply = {"type": "sessions", "id": req.get("id"), "site": self.code, "pbx_link": "up",
                         "sessions": self.cti_sessions}  # fmt: skip
                writer.write(json.dumps(reply).encode() + b"\n")
                await writer.drain()
            writer.close()

        self.cti_server = await asyncio.start_server(serve, sock=self.socks["cti"])

    async def start_pbx(self) -> None:
        async def rpc(request: web.Request) -> web.Response:
            method = (await request.json())["method"]
            result: Any = {"uptime": 42} if method == "core.uptime" else ["usrloc:registered_users = 3"]
            return web.json_response({"jsonrpc": "2.0", "result": result, "id": 1})

        app = web.Application()
        app.router.add_post("/RPC", rpc)
        await self._serve("pbx", app)

    async def stop(self, part: str) -> None:
        if part == "cti":
            assert self.cti_server is not None
            self.cti_server.close()
            for w in self.cti_clients:
                w.close()
            await self.cti_server.wait_closed()
        else:
            await self.runners.pop(part).cleanup()
        if part == "ul" and self.ul is not None:
            self.ul.store.close()

    async def close(self) -> None:
        for part in list(self.runners):
            await self.stop(part)
        if self.cti_server is not None and self.cti_server.is_serving():
            await self.stop("cti")
        for s in self.socks.values():
            s.close()


class Lab:
    """sha and ntg with the console on sha's UL; ``browser(user)`` is a logged-in client (or anonymous)."""

    def __init__(self, root: Path) -> None:
        self.sha, self.ntg = Site("sha", root), Site("ntg", root)
        self.config = ConsoleConfig("sha", [self.sha.endpoints, self.ntg.endpoints], SECRET,
                                    Accounts.from_env(USERS), key=b"k" * 32, directory=directory(),
                                    interval=0.2, timeout=5.0)  # fmt: skip
        self.clients: list[aiohttp.ClientSession] = []

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.sha.port('ul')}/console"

    async def start(self) -> None:
        for site in (self.sha, self.ntg):
            await site.start_cti()
            await site.start_pbx()
        await self.sha.start_ul(self.ntg, self.config)
        await self.ntg.start_ul(self.sha)

    async def close(self) -> None:
        for c in self.clients:
            await c.close()
        await self.sha.close()
        await self.ntg.close()

    async def browser(self, user: str | None = None, password: str | None = None) -> aiohttp.ClientSession:
        c = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))  # unsafe: cookies of an IP
        self.clients.append(c)
        if user is not None:
            async with c.post(self.base + "/login", data={"user": user, "password": password or f"{user}-pw",
                              "csrf": await self.csrf(c, "/login")}, allow_redirects=False) as r:  # fmt: skip
                assert r.status == 303, await r.text()
        return c

    async def csrf(self, c: aiohttp.ClientSession, path: str = "/") -> str:
        async with c.get(self.base + path) as r:
            m = re.search(r'name="csrf" value="([^"]+)"', await r.text())
        assert m is not None
        return m.group(1)

    async def page(self, c: aiohttp.ClientSession, path: str = "/sites") -> str:
        async with c.get(self.base + path) as r:
            assert r.status == 200
            return await r.text()

    async def until(self, cond: Callable[[], Awaitable[bool]]) -> None:
        end = time.monotonic() + DEADLINE
        while not await cond():
            assert time.monotonic() < end, "condition not met"
            await asyncio.sleep(0.05)


def run(tmp_path: Path, body: Callable[[Lab], Awaitable[None]]) -> None:
    async def go() -> None:
        lab = Lab(tmp_path)
        try:
            await lab.start()
            await body(lab)
        finally:
            await lab.close()

    asyncio.run(asyncio.wait_for(go(), 90))


def test_log_in_is_required(tmp_path: Path) -> None:
    async def body(lab: Lab) -> None:
        anon = await lab.browser()
        async with anon.get(lab.base + "/", allow_redirects=False) as r:
            assert r.status == 302 and r.headers["Location"] == "/console/login"
        async with anon.get(lab.base, allow_redirects=False) as r:  # /console: to /console/
            assert r.status == 302 and r.headers["Location"] == "/console/"
        async with anon.get(lab.base + "/events") as r:
            assert r.status == 401
        async with anon.post(lab.base + "/rules", data={"scope": "system", "value": "air"}) as r:
            assert r.status == 401
        async with anon.get(lab.base + "/static/htmx.min.js") as r:  # vendored, no CDN
            assert r.status == 200 and "htmx" in (await r.text())[:200]
        # a wrong password: 401 and the form again; an unknown user the same
        for user, pw in (("olga", "nope"), ("mallory", "olga-pw")):
            data = {"user": user, "password": pw, "csrf": await lab.csrf(anon, "/login")}
            async with anon.post(lab.base + "/login", data=data) as r:
                assert r.status == 401 and "wrong user or password" in await r.text()
        # the agents' API of the UL is untouched by the console's middlewares (no cookie, no CSRF)
        async with anon.get(lab.sha.endpoints.ul + "/v1/health") as r:
            assert r.status == 200 and "Set-Cookie" not in r.headers

    run(tmp_path, body)


def test_viewer_sees_both_sites_and_cannot_change_anything(tmp_path: Path) -> None:
    async def body(lab: Lab) -> None:
        lab.sha.cti_sessions = [{"agent": "a00002", "state": "ready"}, {"agent": "a00004", "state": "busy"}]
        vic = await lab.browser("vic")
        page = await lab.page(vic, "/")
        assert "vic (viewer)" in page and "Add a planned switch" not in page
        assert 'id="site-sha"' in page and 'id="site-ntg"' in page and "cannot see" not in page
        assert "3 registered" in page  # each PBX's count, read over its RPC
        assert page.count("not available on this UL") == 4  # ramps and campaigns, at both ULs
        assert re.search(r"<td>vip</td><td>0</td><td>2</td>", page)  # vip at sha's CTI: 2, none at the UL
        data = {"scope": "skill_group", "value": "vip", "target": "ntg", "csrf": await lab.csrf(vic)}
        async with vic.post(lab.base + "/rules", data=data) as r:
            assert r.status == 403 and "role viewer" in await r.text()
        async with vic.post(lab.base + "/rules/x/remove", data={"csrf": data["csrf"]}) as r:
            assert r.status == 403
        assert lab.sha.ul is not None and lab.sha.ul.store.live_rules() == []

    run(tmp_path, body)


def test_csrf_is_required_on_every_post(tmp_path: Path) -> None:
    async def body(lab: Lab) -> None:
        olga = await lab.browser("olga")
        form = {"scope": "skill_group", "value": "vip", "target": "ntg"}
        for extra, headers in (({}, {}), ({"csrf": "forged"}, {}), ({}, {"X-CSRF-Token": "forged"})):
            async with olga.post(lab.base + "/rules", data={**form, **extra}, headers=headers) as r:
                assert r.status == 403 and "CSRF" in await r.text()
        anon = await lab.browser()  # the log-in form too: no token, no log-in
        async with anon.post(lab.base + "/login", data={"user": "olga", "password": "olga-pw"}) as r:
            assert r.status == 403
        assert lab.sha.ul is not None and lab.sha.ul.store.live_rules() == []
        # the token of another session is no good either
        other = await lab.csrf(await lab.browser("olga"))
        async with olga.post(lab.base + "/rules", data={**form, "csrf": other}) as r:
            assert r.status == 403

    run(tmp_path, body)


def test_operator_adds_and_removes_a_rule_through_the_ul(tmp_path: Path) -> None:
    async def body(lab: Lab) -> None:
        sha, ntg = lab.sha.ul, lab.ntg.ul
        assert sha is not None and ntg is not None
        await lab.until(lambda: asyncio.sleep(0, sha.reconciled and ntg.reconciled))
        olga = await lab.browser("olga")
        csrf = await lab.csrf(olga)
        hx = {"HX-Request": "true"}
        data = {"scope": "skill_group", "value": "vip", "target": "ntg", "csrf": csrf}
        async with olga.post(lab.base + "/rules", data=data, headers=hx) as r:
            text = await r.text()
            assert r.status == 200 and "added: skill_group=vip to ntg" in text and "replicated" in text
        [rule] = sha.store.live_rules()
        assert (rule.scope, rule.value, rule.target) == ("skill_group", "vip", "ntg")
        assert [r.id for r in ntg.store.live_rules()] == [rule.id]  # the UL replicated it
        assert f'id="rule-{rule.id}"' in await lab.page(olga)
        # bad input: a clear reason, nothing sent (plain form: 400; htmx: the reason as the answer)
        async with olga.post(lab.base + "/rules", data={**data, "scope": "planet"}) as r:
            assert r.status == 400 and "scope must be one of" in await r.text()
        async with olga.post(lab.base + "/rules", data={**data, "target": "mars"}, headers=hx) as r:
            assert "target must be one of sha, ntg" in await r.text()
        async with olga.post(lab.base + "/rules/nosuch/remove", data={"csrf": csrf}, headers=hx) as r:
            assert "HTTP 404" in await r.text()
        assert len(sha.store.live_rules()) == 1
        # removed with a plain form post: a redirect to the page, which no longer lists it
        url = f"{lab.base}/rules/{rule.id}/remove"
        async with olga.post(url, data={"csrf": csrf}, allow_redirects=False) as r:
            assert r.status == 303
        assert sha.store.live_rules() == [] and ntg.store.live_rules() == []
        assert f'id="rule-{rule.id}"' not in await lab.page(olga)

    run(tmp_path, body)


def test_a_site_that_cannot_be_seen_is_named_and_the_rest_works(tmp_path: Path) -> None:
    async def body(lab: Lab) -> None:
        vic = await lab.browser("vic")
        assert "cannot see" not in await lab.page(vic)
        await lab.ntg.stop("ul")

        async def says(text: str) -> bool:
            return text in await lab.page(vic)

        await lab.until(lambda: says("cannot see ntg UL since"))
        page = await lab.page(vic)
        assert re.search(r"cannot see ntg UL since \d\d:\d\d:\d\d UTC: connection failed", page)
        assert "cannot see sha" not in page and "3 registered" in page  # sha and ntg's PBX still seen
        await lab.ntg.stop("cti")
        await lab.ntg.stop("pbx")
        await lab.until(lambda: says("cannot see site ntg since"))
        page = await lab.page(vic)
        assert "UL: connection failed" in page and "CTI: connection refused" in page
        assert 'class="site blind" id="site-ntg"' in page and 'class="site" id="site-sha"' in page

    run(tmp_path, body)


def test_the_event_stream_delivers_a_change(tmp_path: Path) -> None:
    async def body(lab: Lab) -> None:
        vic = await lab.browser("vic")
        async with vic.get(lab.base + "/events") as r:
            assert r.status == 200 and r.headers["Content-Type"].startswith("text/event-stream")

            async def next_event() -> str:
                lines = []
                while (line := (await r.content.readline()).decode()).strip():  # a blank line ends it
                    lines.append(line)
                return "".join(lines)

            first = await next_event()
            assert first.startswith("event: sites\r\n") and 'id="site-ntg"' in first
            rep = await asyncio.to_thread(
                ulc.add_rule, lab.sha.endpoints.ul, SECRET, "system", "air", "ntg"
            )  # as `hil switch add` does, not through the console
            end = time.monotonic() + DEADLINE
            while f'id="rule-{rep["rule"]["id"]}"' not in await next_event():
                assert time.monotonic() < end, "the stream never showed the new rule"

    run(tmp_path, body)


def test_site_options_and_accounts() -> None:
    s = parse_site("ntg,ul=http://198.18.2.30:8080/,cti=198.18.2.20:7000,pbx=http://198.19.0.31:5071/RPC")
    assert s == SiteEndpoints(
        "ntg", "http://198.18.2.30:8080", ("198.18.2.20", 7000), "http://198.19.0.31:5071/RPC"
    )
    assert parse_site("sha") == SiteEndpoints("sha")
    for bad in (
        "",
        "ul=http://x",
        "sha,ul=ftp://x",
        "sha,cti=nohost",
        "sha,db=x",
        "sha,ul=http://a,ul=http://b",
    ):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_site(bad)
    ap = argparse.ArgumentParser()
    ap.add_argument("--site")
    add_console_args(ap)
    assert console_config(ap.parse_args(["--site", "sha"]), SECRET) is None  # no console unless asked
    args = ap.parse_args(["--site", "sha", "--console-site", "ntg,ul=http://n:1", "--console-site", "sha"])
    config = console_config(args, SECRET, env=USERS)
    assert config is not None and [s.code for s in config.sites] == ["sha", "ntg"] and len(config.key) == 32
    accounts = config.accounts
    assert accounts.check("olga", "olga-pw") == "operator" and accounts.check("vic", "vic-pw") == "viewer"
    assert accounts.check("olga", "vic-pw") is None and accounts.check("nobody", "") is None
    with pytest.raises(ValueError, match="root:admin"):
        Accounts.from_env({"HIL_CONSOLE_USERS": "root:admin"})
    assert Accounts.from_env({"HIL_CONSOLE_USERS": "eve:viewer"}).users == {}  # no password variable


def test_the_page_model_of_a_ul_without_ramps() -> None:
    sites = [SiteEndpoints("sha", "http://u"), SiteEndpoints("ntg", "http://v")]
    config = ConsoleConfig("sha", sites, SECRET, Accounts(), key=b"k" * 32, directory=directory())
    health = {"peer": "up", "reconciled": True, "sessions": 1}
    ul = Part(True, {"health": health, "sessions": [{"agent": "a00001", "site": "sha"}], "rules": [],
                     "ramps": {"ramps": [{"id": "r1", "percent": 10}]}, "campaigns": None})  # fmt: skip
    cti = Part(True, {"sessions": [{"agent": "a00003", "state": "ready"}]})
    off = Part(False, error="not configured", configured=False)
    down = Part(False, error="connection refused")
    parts = {"sha": {"ul": ul, "cti": cti, "pbx": off}, "ntg": {"ul": down, "cti": off, "pbx": off}}
    trouble = {"sha": {}, "ntg": {"ul": (3600.0, "connection refused")}}
    view = page_view(config, parts, trouble, {"sha": {}, "ntg": {}}, 1.0)
    sha, ntg = view["sites"]
    assert sha["ramps"] == {"available": True, "rows": [{"id": "r1", "percent": 10}]}
    assert sha["campaigns"] == {"available": False, "reason": "not available on this UL"}
    rows = {r["group"]: r for r in sha["agents"]["rows"]}
    assert rows["domestic"]["states"] == {"ready": 1, "ul only": 1}  # a00001: at the UL, not at the CTI
    assert ntg["blind"] and ntg["notes"] == ["cannot see site ntg since 01:00:00 UTC: UL: connection refused"]
    assert ntg["ramps"]["reason"] == "the UL cannot be read"
