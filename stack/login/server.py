"""The unified login (UL) of one site: authenticates agents, applies planned-switch rules, allocates CTI
and PBX resources at this site or asks the peer site's UL to, and fences the agent's older session.

Why it is built this way:
- Login is design steps 3-4: a matching enabled rule whose target is the other site sends the request to
  the peer's ``/v1/allocate``; an unreachable peer falls back to a local allocation, said in the reply.
- Fencing: every allocation takes a new epoch above any known for the agent and tells the peer
  (``/v1/fence``), which evicts its own session through its CTI. When the peer cannot be told, the two
  ULs reconcile (``/v1/sync``, both directions) as soon as they see each other again, and a restarted UL
  answers ``reconciled: false`` until then, so its CTI refuses tokens issued before the restart.
- Rules and sessions live in SQLite (stack/login/store.py) and survive restarts; rule changes replicate
  to the peer, and each UL orders its own CTI to switch the online agents a new rule moves away.
- UL-to-UL and admin (rule-changing) requests are HMAC-signed with the lab secret; reads are open.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import Any

import aiohttp
from aiohttp import web

from stack.common import auth
from stack.common.directory import Agent, Directory
from stack.cti.client import CtiConnection, CtiError
from stack.login.store import SCOPES, Rule, SessionRow, Store

log = logging.getLogger("stack.login")


class PeerUnavailable(Exception):
    pass


class CtiAdmin:
    """A persistent, signed admin connection from the UL to its site's CTI (reconnects on demand)."""

    def __init__(self, host: str, port: int, secret: str) -> None:
        self.host, self.port, self.secret = host, port, secret
        self._conn: CtiConnection | None = None
        self._lock = asyncio.Lock()
        self._down_until = 0.0  # after a failed connect, skip for a while: a dead CTI must not stall logins
        self._refused = False  # the last connect was refused: no CTI process, so no sessions either

    async def send(self, op: str, **fields: Any) -> dict[str, Any] | None:
        msg = auth.sign_message(self.secret, {"type": "admin", "op": op, **fields})
        for _ in range(2):
            async with self._lock:
                if self._conn is None or self._conn.closed:
                    if time.monotonic() < self._down_until:
                        return None
                    try:
                        self._conn = await CtiConnection.open(self.host, self.port, timeout=1.0)
                        self._refused = False
                    except CtiError as err:
                        self._refused = err.refused
                        self._down_until = time.monotonic() + 2.0
                        return None
                conn = self._conn
            try:
                return await conn.request(msg, timeout=2.0)
            except CtiError as err:
                if err.code not in ("disconnected", "timeout"):
                    return err.reply
                await conn.close()
        return None

    async def fence(self, agent: str, epoch: int, site: str, extension: str) -> bool:
        """Have the CTI drop the agent's session; True once it surely holds none (it said so, or no CTI
        process listens: a refused connection)."""
        reply = await self.send("fence", agent=agent, epoch=epoch, site=site, extension=extension)
        if reply is None:
            return self._refused
        return reply.get("type") == "admin_ok"

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()


class UnifiedLogin:
    """State and behaviour of one site's UL; :meth:`app` is its aiohttp application."""

    def __init__(
        self,
        site: str,
        secret: str,
        directory: Directory,
        store: Store,
        *,
        cti: tuple[str, int],
        pbx: tuple[str, int],
        peer_url: str | None = None,
        agent_secret: str | None = None,
        sip_secret: str | None = None,
        token_ttl: float = 12 * 3600.0,
        peer_interval: float = 1.0,
        peer_timeout: float = 1.0,
        lease: float = 2.5,
        lease_margin: float = 1.0,
    ) -> None:
        self.site = site
        self.secret = secret
        self.directory = directory
        self.store = store
        self.cti, self.pbx = cti, pbx
        self.peer_url = peer_url.rstrip("/") if peer_url else None
        self.agent_secret = agent_secret
        self.sip_secret = sip_secret
        self.token_ttl = token_ttl
        self.peer_interval = peer_interval
        self.peer_timeout = aiohttp.ClientTimeout(total=peer_timeout)
        # The CTIs' session lease, and what to add to it (the CTI's lease sweep and late-message
        # tolerance): an old session nobody could confirm dropped is surely gone lease + margin after
        # its client last sent it anything.
        self.lease, self.lease_margin = lease, lease_margin
        self.started = time.time()
        self.reconciled = self.peer_url is None
        self.peer_up: bool | None = None
        self.cti_admin = CtiAdmin(cti[0], cti[1], secret)
        self._http: aiohttp.ClientSession | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._bg: set[asyncio.Future[Any]] = set()
        self.counters = {"login": 0, "local": 0, "remote": 0, "fallback": 0, "fenced": 0, "refused": 0}

    # ---- life cycle ------------------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(client_max_size=256 * 1024)
        app.add_routes(
            [
                web.get("/v1/health", self.h_health),
                web.post("/v1/login", self.h_login),
                web.post("/v1/logout", self.h_logout),
                web.post("/v1/allocate", self.h_allocate),
                web.post("/v1/fence", self.h_fence),
                web.post("/v1/sync", self.h_sync),
                web.get("/v1/epoch/{agent}", self.h_epoch),
                web.post("/v1/epochs", self.h_epochs),
                web.get("/v1/sessions", self.h_sessions),
                web.get("/v1/rules", self.h_rules),
                web.post("/v1/rules", self.h_rule_add),
                web.delete("/v1/rules/{id}", self.h_rule_remove),
                web.post("/v1/rules/{id}", self.h_rule_update),
            ]
        )
        app.on_startup.append(self._on_startup)
        app.on_cleanup.append(self._on_cleanup)
        return app

    async def _on_startup(self, app: web.Application) -> None:
        self._http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64))
        if self.peer_url:
            self._tasks.append(asyncio.create_task(self._peer_loop()))

    async def _on_cleanup(self, app: web.Application) -> None:
        for t in self._tasks:
            t.cancel()
        await self.cti_admin.close()
        if self._http is not None:
            await self._http.close()

    def _spawn(self, coro: Any) -> None:
        """Run a notification in the background, keeping a reference so it is not collected."""
        task = asyncio.ensure_future(coro)
        self._bg.add(task)
        task.add_done_callback(self._bg.discard)

    # ---- peer ------------------------------------------------------------------------------------------

    async def _peer(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """A signed request to the peer UL; raises PeerUnavailable on any failure to get a 200."""
        if not self.peer_url or self._http is None:
            raise PeerUnavailable("no peer configured")
        data = json.dumps(body or {}).encode()
        headers = {"Content-Type": "application/json", **auth.sign_request(self.secret, method, path, data)}
        try:
            async with self._http.request(
                method, self.peer_url + path, data=data, headers=headers, timeout=self.peer_timeout
            ) as r:
                reply = await r.json(content_type=None)
                if r.status != 200:
                    raise PeerUnavailable(f"peer answered {r.status}: {reply}")
                return reply
        except (TimeoutError, aiohttp.ClientError, ValueError, OSError) as err:
            self.peer_up = False
            raise PeerUnavailable(str(err) or type(err).__name__) from None

    async def _peer_loop(self) -> None:
        """Watch the peer; reconcile at start and every time it comes back."""
        assert self._http is not None and self.peer_url
        while True:
            try:
                async with self._http.get(self.peer_url + "/v1/health", timeout=self.peer_timeout) as r:
                    ok = r.status == 200
            except (TimeoutError, aiohttp.ClientError, OSError):
                ok = False
            if ok and (self.peer_up is not True or not self.reconciled):
                try:
                    await self.reconcile()
                    self.peer_up = True
                except PeerUnavailable as err:
                    log.warning("ul %s: reconcile failed: %s", self.site, err)
            elif not ok:
                if self.peer_up:
                    log.warning("ul %s: peer down", self.site)
                self.peer_up = False
            await asyncio.sleep(self.peer_interval)

    async def reconcile(self) -> None:
        """Exchange sessions and rules with the peer; fence what the peer has newer."""
        mine = {
            "sessions": [s.view() for s in self.store.sessions.values()],
            "rules": [r.view() for r in self.store.rules.values()],
        }
        theirs = await self._peer("POST", "/v1/sync", mine)
        await self._merge(theirs)
        if not self.reconciled:
            log.info("ul %s: reconciled with peer", self.site)
        self.reconciled = True

    async def _merge(self, body: dict[str, Any]) -> None:
        lost: list[SessionRow] = []
        for raw in body.get("sessions", []):
            row = SessionRow(**{k: raw[k] for k in SessionRow.__dataclass_fields__})
            old = self.store.merge_session(row)
            if old is not None and old.site == self.site and old.status == "active" and row.site != self.site:
                lost.append(row)
        new_rules = []
        for raw in body.get("rules", []):
            rule = Rule(**{k: raw[k] for k in Rule.__dataclass_fields__})
            if self.store.merge_rule(rule) and rule.enabled and not rule.removed:
                new_rules.append(rule)
        for row in lost:
            self.counters["fenced"] += 1
            await self.cti_admin.fence(row.agent, row.epoch, row.site, row.extension)
        for rule in new_rules:
            await self.order_switch(rule)

    # ---- allocation --------------------------------------------------------------------------------------

    def attrs(self, agent: Agent) -> dict[str, str]:
        return {scope: agent.attribute(scope) for scope in SCOPES}

    def hold_for(self, quiet: dict[str, Any] | None, site: str) -> float:
        """Seconds before an old session at ``site`` that nobody confirmed dropped has surely ended by its
        lease: lease + margin, less how long the client has been silent there (``quiet``, its word)."""
        silent = 0.0
        if isinstance(quiet, dict) and quiet.get("site") == site:
            with contextlib.suppress(TypeError, ValueError):
                silent = max(0.0, float(quiet.get("seconds", 0.0)))
        return round(max(0.0, self.lease + self.lease_margin - silent), 3)

    async def allocate_here(
        self,
        agent: Agent,
        via: str,
        tell_peer: bool,
        quiet: dict[str, Any] | None = None,
        hold: float = 0.0,
    ) -> dict[str, Any]:
        """A session at this site with a fresh epoch. With ``tell_peer`` the peer fences its own session
        first (synchronously, through its CTI); when that is not confirmed, the token is not valid before
        the old session's lease has surely run out (``nbf``, ``hold`` seconds from now)."""
        epoch = self.store.next_epoch(agent.id)
        row = SessionRow(agent.id, self.site, epoch, agent.extension, "active", time.time(), via)
        self.store.put_session(row)
        if tell_peer and self.peer_url:
            dropped = False
            if self.peer_up is not False:
                with contextlib.suppress(PeerUnavailable):
                    reply = await self._peer("POST", "/v1/fence", row.view())
                    if reply.get("stale"):  # the peer holds a newer epoch (clock skew): go above it
                        row.epoch = self.store.next_epoch(agent.id, int(reply["epoch"]))
                        self.store.put_session(row)
                        reply = await self._peer("POST", "/v1/fence", row.view())
                    dropped = bool(reply.get("dropped"))
            if not dropped:
                peer = next((s for s in self.directory.sites if s != self.site), "")
                hold = max(hold, self.hold_for(quiet, peer))
        claims: dict[str, Any] = {
            "agent": agent.id,
            "site": self.site,
            "epoch": row.epoch,
            "ext": agent.extension,
        }
        if hold > 0:
            claims["nbf"] = round(time.time() + hold, 3)
        token = auth.mint(self.secret, claims, self.token_ttl)
        sip_pw = auth.derive_password(self.sip_secret, agent.extension) if self.sip_secret else None
        return {
            "agent": agent.id,
            "site": self.site,
            "epoch": row.epoch,
            "token": token,
            "expires": round(time.time() + self.token_ttl, 3),
            "extension": agent.extension,
            "sip": {"user": agent.extension, "password": sip_pw},
            "cti": {"host": self.cti[0], "port": self.cti[1]},
            "pbx": {"host": self.pbx[0], "port": self.pbx[1]},
            "via": via,
            "hold": round(hold, 3),
        }

    async def login(
        self, agent: Agent, avoid: list[str], quiet: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Design step 4: a planned-switch rule decides where; the result is registration information."""
        self.counters["login"] += 1
        rule = self.store.match(self.attrs(agent))
        note = None
        want_remote = (rule is not None and rule.target != self.site and rule.target not in avoid) or (
            self.site in avoid
        )
        if rule is not None and rule.target in avoid and rule.target != self.site:
            note = f"rule {rule.id} targets {rule.target}, which the client avoids: allocated at {self.site}"
        if want_remote:
            # The agent leaves this site: its session here is dropped before the peer may activate it.
            hold = 0.0
            cur = self.store.sessions.get(agent.id)
            if cur is not None and cur.site == self.site and cur.status == "active":
                target = rule.target if rule is not None and rule.target != self.site else ""
                target = target or next((s for s in self.directory.sites if s != self.site), "")
                self.counters["fenced"] += 1
                if not await self.cti_admin.fence(agent.id, cur.epoch + 1, target, agent.extension):
                    hold = self.hold_for(quiet, self.site)
            try:
                reg = await self._peer(
                    "POST",
                    "/v1/allocate",
                    {
                        "agent": agent.id,
                        "rule": rule.id if rule else None,
                        "requested_by": self.site,
                        "hold": hold,
                    },
                )
                row = SessionRow(
                    agent.id, reg["site"], int(reg["epoch"]), agent.extension, "active", time.time(), "remote"
                )
                self.store.merge_session(row)
                self.counters["remote"] += 1
                return {**reg, "via": "remote", "rule": rule.id if rule else None, "note": note}
            except PeerUnavailable as err:
                self.counters["fallback"] += 1
                where = rule.target if rule else "the peer site"
                note = f"planned switch to {where}: remote UL unreachable ({err}); allocated at {self.site}"
        self.counters["local"] += 1
        reg = await self.allocate_here(agent, "local", tell_peer=True, quiet=quiet)
        return {**reg, "rule": rule.id if rule else None, "note": note}

    async def order_switch(self, rule: Rule) -> int:
        """Tell this site's CTI to move the online agents ``rule`` sends elsewhere; returns how many."""
        if rule.target == self.site or not rule.enabled or rule.removed:
            return 0
        agents = []
        for row in self.store.sessions.values():
            if row.site != self.site or row.status != "active":
                continue
            a = self.directory.agents.get(row.agent)
            if a is not None and self.store.match(self.attrs(a)) is rule:
                agents.append(a.id)
        if agents:
            reply = await self.cti_admin.send("switch_order", agents=agents, target=rule.target, rule=rule.id)
            log.info(
                "ul %s: rule %s orders %d agents to %s (cti: %s)",
                self.site,
                rule.id,
                len(agents),
                rule.target,
                reply,
            )
        return len(agents)

    # ---- HTTP handlers ------------------------------------------------------------------------------------

    async def _signed(self, request: web.Request) -> dict[str, Any]:
        body = await request.read()
        if not auth.check_request(self.secret, request.method, request.path, body, request.headers):
            raise web.HTTPForbidden(text=json.dumps({"error": "forbidden"}), content_type="application/json")
        return json.loads(body or b"{}")

    @staticmethod
    async def _json(request: web.Request) -> dict[str, Any]:
        try:
            body = await request.json()
        except ValueError:
            raise _bad("body is not JSON") from None
        if not isinstance(body, dict):
            raise _bad("body must be a JSON object")
        return body

    async def h_health(self, request: web.Request) -> web.Response:
        active = sum(1 for s in self.store.sessions.values() if s.site == self.site and s.status == "active")
        return web.json_response(
            {
                "ok": True,
                "site": self.site,
                "reconciled": self.reconciled,
                "peer": {None: "unknown", True: "up", False: "down"}[self.peer_up],
                "sessions": active,
                "rules": len(self.store.live_rules()),
                "started": self.started,
                "counters": self.counters,
            }
        )

    async def h_login(self, request: web.Request) -> web.Response:
        body = await self._json(request)
        agent = self.directory.agents.get(str(body.get("agent")))
        password = body.get("password")
        good = (
            agent is not None
            and isinstance(password, str)
            and (self.agent_secret is None or password == auth.derive_password(self.agent_secret, agent.id))
        )
        if not good or agent is None:
            self.counters["refused"] += 1
            return web.json_response({"error": "bad_credentials"}, status=401)
        avoid = body.get("avoid") or []
        if not isinstance(avoid, list):
            raise _bad("avoid must be a list of site codes")
        quiet = body.get("left")
        return web.json_response(
            await self.login(agent, [str(s) for s in avoid], quiet if isinstance(quiet, dict) else None)
        )

    async def h_logout(self, request: web.Request) -> web.Response:
        body = await self._json(request)
        try:
            claims = auth.verify(self.secret, str(body.get("token")))
        except auth.TokenError as err:
            return web.json_response({"error": err.code}, status=401)
        row = self.store.sessions.get(claims["agent"])
        if row is None or row.epoch != claims["epoch"] or row.site != self.site:
            return web.json_response({"ok": False, "reason": "not the current session"})
        row = SessionRow(row.agent, row.site, row.epoch, row.extension, "logged_out", time.time(), row.via)
        self.store.put_session(row)
        with contextlib.suppress(PeerUnavailable):
            await self._peer("POST", "/v1/fence", row.view())
        return web.json_response({"ok": True})

    async def h_allocate(self, request: web.Request) -> web.Response:
        body = await self._signed(request)
        agent = self.directory.agents.get(str(body.get("agent")))
        if agent is None:
            return web.json_response({"error": "unknown_agent"}, status=404)
        try:
            hold = max(0.0, float(body.get("hold") or 0.0))
        except (TypeError, ValueError):
            raise _bad("hold must be a number") from None
        reg = await self.allocate_here(agent, "remote", tell_peer=False, hold=hold)
        self.counters["login"] += 1
        return web.json_response(reg)

    async def h_fence(self, request: web.Request) -> web.Response:
        raw = await self._signed(request)
        row = SessionRow(**{k: raw[k] for k in SessionRow.__dataclass_fields__})
        old = self.store.merge_session(row)
        cur = self.store.sessions.get(row.agent)
        dropped = True  # nothing active here to drop
        if old is not None and old.site == self.site and old.status == "active" and row.site != self.site:
            # Synchronous: the peer activates the agent only once this site's CTI has dropped it.
            self.counters["fenced"] += 1
            dropped = await self.cti_admin.fence(row.agent, row.epoch, row.site, row.extension)
        stale = old is None and cur is not None and cur.epoch > row.epoch
        return web.json_response(
            {"ok": True, "stale": stale, "epoch": cur.epoch if cur else row.epoch, "dropped": dropped}
        )

    async def h_sync(self, request: web.Request) -> web.Response:
        body = await self._signed(request)
        if "sessions" not in body:  # a rule replication: nothing to send back
            await self._merge(body)
            return web.json_response({"ok": True})
        mine = {
            "sessions": [s.view() for s in self.store.sessions.values()],
            "rules": [r.view() for r in self.store.rules.values()],
        }
        await self._merge(body)
        # A full exchange is a reconciliation in both directions: the peer is up and we are in step.
        self.reconciled, self.peer_up = True, True
        return web.json_response(mine)

    def _epoch_view(self, agent: str) -> dict[str, Any]:
        row = self.store.sessions.get(agent)
        if row is None:
            return {"known": False, "agent": agent}
        return {"known": True, "agent": agent, "site": row.site, "epoch": row.epoch, "status": row.status}

    async def h_epoch(self, request: web.Request) -> web.Response:
        out = self._epoch_view(request.match_info["agent"])
        return web.json_response({**out, "reconciled": self.reconciled, "started": self.started})

    async def h_epochs(self, request: web.Request) -> web.Response:
        body = await self._json(request)
        out = {}
        for a in body.get("agents", []):
            row = self.store.sessions.get(str(a))
            if row is not None:
                out[row.agent] = {"site": row.site, "epoch": row.epoch, "status": row.status}
        return web.json_response({"agents": out, "reconciled": self.reconciled, "started": self.started})

    async def h_sessions(self, request: web.Request) -> web.Response:
        everything = request.query.get("all") in ("1", "true", "yes")
        rows = [
            s.view()
            for s in self.store.sessions.values()
            if everything or (s.site == self.site and s.status == "active")
        ]
        return web.json_response({"site": self.site, "reconciled": self.reconciled, "sessions": rows})

    async def h_rules(self, request: web.Request) -> web.Response:
        everything = request.query.get("all") in ("1", "true", "yes")
        rules = self.store.rules.values() if everything else self.store.live_rules()
        return web.json_response({"site": self.site, "rules": [r.view() for r in rules]})

    async def h_rule_add(self, request: web.Request) -> web.Response:
        body = await self._signed(request)
        scope, value, target = body.get("scope"), body.get("value"), body.get("target")
        if scope not in SCOPES:
            raise _bad(f"scope must be one of {SCOPES}")
        if not isinstance(value, str) or not value:
            raise _bad("value must be a non-empty string")
        if target not in self.directory.sites:
            raise _bad(f"target must be one of {self.directory.sites}")
        rule = self.store.add_rule(scope, value, target, bool(body.get("enabled", True)))
        replicated = await self._replicate(rule)
        moved = await self.order_switch(rule)
        return web.json_response({"rule": rule.view(), "replicated": replicated, "ordered_here": moved})

    async def h_rule_update(self, request: web.Request) -> web.Response:
        body = await self._signed(request)
        rule = self.store.rules.get(request.match_info["id"])
        if rule is None or rule.removed:
            return web.json_response({"error": "no such rule"}, status=404)
        if "enabled" in body:
            rule.enabled = bool(body["enabled"])
        rule.updated = max(time.time(), rule.updated + 1e-3)
        self.store.put_rule(rule)
        replicated = await self._replicate(rule)
        moved = await self.order_switch(rule)
        return web.json_response({"rule": rule.view(), "replicated": replicated, "ordered_here": moved})

    async def h_rule_remove(self, request: web.Request) -> web.Response:
        await self._signed(request)
        rule = self.store.rules.get(request.match_info["id"])
        if rule is None or rule.removed:
            return web.json_response({"error": "no such rule"}, status=404)
        rule.removed, rule.enabled = True, False
        rule.updated = max(time.time(), rule.updated + 1e-3)
        self.store.put_rule(rule)
        replicated = await self._replicate(rule)
        return web.json_response({"rule": rule.view(), "replicated": replicated})

    async def _replicate(self, rule: Rule) -> bool:
        try:
            await self._peer("POST", "/v1/sync", {"rules": [rule.view()]})
            return True
        except PeerUnavailable:
            return False  # the next reconcile carries it


def _bad(text: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(text=json.dumps({"error": text}), content_type="application/json")
