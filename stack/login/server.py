"""The unified login (UL) of one site: authenticates agents, applies planned-switch rules, allocates CTI
and PBX resources at this site or asks the peer site's UL to, and fences the agent's older session.

Why it is built this way:
- Login is design steps 3-4: a matching enabled rule whose target is the other site sends the request to
  the peer's ``/v1/allocate``; an unreachable peer falls back to a local allocation, said in the reply.
- Fencing: every allocation takes a new epoch above any known for the agent and tells the peer
  (``/v1/fence``), which evicts its own session through its CTI. When the peer cannot be told, the two
  ULs reconcile (stack/login/peer.py).
- Rules and sessions live in SQLite (stack/login/store.py) and survive restarts; rule changes replicate
  to the peer, and each UL orders its own CTI to switch the online agents a new rule moves away.
- The HTTP API is stack/login/routes.py; UL-to-UL and admin (rule-changing) requests are HMAC-signed with
  the lab secret; reads are open.
- It listens on the data network, beside every agent's desktop: connections are capped per source and in
  total, a request must arrive whole within a deadline, heads and bodies are bounded, and what is refused
  is counted in the health counters (stack/common/httpguard.py; serve the app with :meth:`listener`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import aiohttp
from aiohttp import web

from stack.common import auth
from stack.common.directory import Agent, Directory
from stack.common.httpguard import GuardedSite, HttpGate, HttpLimits
from stack.common.limits import Refusals
from stack.console import ConsoleConfig, add_console
from stack.login.ctiadmin import CtiAdmin
from stack.login.peer import PeerSync, PeerUnavailable
from stack.login.routes import Routes
from stack.login.store import SCOPES, Rule, SessionRow, Store

__all__ = ["CtiAdmin", "PeerUnavailable", "UnifiedLogin"]

log = logging.getLogger("stack.login")


class UnifiedLogin(Routes, PeerSync):
    """State and behaviour of one site's UL; :meth:`app` is its aiohttp application (stack/login/routes.py),
    the exchange with the peer UL is stack/login/peer.py."""

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
        token_lease: float = auth.TOKEN_LEASE,
        peer_interval: float = 1.0,
        peer_timeout: float = 1.0,
        lease: float = 2.5,
        lease_margin: float = 1.0,
        clock_skew: float = 1.0,
        limits: HttpLimits | None = None,
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
        self.token_lease = token_lease  # how long a CTI cut off from this UL may accept its tokens
        self.peer_interval = peer_interval
        self.peer_timeout = aiohttp.ClientTimeout(total=peer_timeout)
        # The CTIs' session lease, and what to add to it (the CTI's lease sweep and late-message
        # tolerance): an old session nobody could confirm dropped is surely gone lease + margin after
        # its client last sent it anything.
        self.lease, self.lease_margin = lease, lease_margin
        # How far a client's clock may be behind this UL's: a login whose client-given deadline passed more
        # than this ago is one its client gave up on (docs/cti-protocol.md, UL API).
        self.clock_skew = clock_skew
        self.started = time.time()
        self.reconciled = self.peer_url is None
        self.peer_up: bool | None = None
        self.cti_admin = CtiAdmin(cti[0], cti[1], secret)
        self._http: aiohttp.ClientSession | None = None
        self._tasks: list[asyncio.Task[None]] = []
        kinds = ("login", "local", "remote", "fallback", "fenced", "refused", "late", "deferred")
        self.counters = dict.fromkeys(kinds, 0)
        # connection caps, request deadline, body and head limits; refusals counted with the others
        self.gate = HttpGate(limits or HttpLimits(), Refusals(log, f"ul {site}", self.counters))

    def app(self) -> web.Application:
        """The HTTP API (stack/login/routes.py) behind the gate's middleware, which reads each body first,
        under the request's deadline (stack/common/httpguard.py)."""
        app = super().app()
        app.middlewares.insert(0, self.gate.middleware())
        return app

    def runner(self, console: ConsoleConfig | None = None) -> web.AppRunner:
        """The application's runner, with aiohttp's own head limits and idle timeout from the gate; with
        ``console``, the management console mounted at /console/ (stack/console)."""
        app = self.app()
        if console is not None:
            add_console(app, console)
        return web.AppRunner(app, access_log=None, **self.gate.runner_kwargs())

    def listener(self, runner: web.BaseRunner, host: str, port: int) -> GuardedSite:
        """Where to serve it: a TCP site whose every connection passes the gate (its caps)."""
        return GuardedSite(runner, host, port, self.gate, backlog=1024)

    # ---- life cycle ------------------------------------------------------------------------------------

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
        token = auth.mint(self.secret, claims, self.token_ttl, self.token_lease)
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
                        # past it this UL has given up and allocates here: the peer must not allocate too
                        "deadline": round(time.time() + float(self.peer_timeout.total or 0.0), 3),
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
