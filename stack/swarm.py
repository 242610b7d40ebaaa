"""The agent swarm: every agent of a site's pools (agent client + emulated phone) in one asyncio process.

``python -m stack.swarm --topology FILE --site sha [--ul URL --peer-ul URL] [--sip-bind ADDR:PORT]
[--admin ADDR:PORT] [--admin-secret-env VAR] [--rate N --burst N] [--limit N] [--log FILE]``

Why one process: 10,000 agents as 10,000 processes would cost gigabytes and measure the OS, not the stack.
All phones share one UDP socket (stack.phone.ua.SipEndpoint), all clients one HTTP connection pool to the
ULs. How fast a failover storm comes in is the receiving UL's decision (its admission control defers what
it cannot take, stack/login/admission.py). ``--rate`` is a safety ceiling (a token bucket), still on by
default at 400/s: the UL does not yet see its CTI's load, and without the ceiling a 10,000-agent PBX kill
overloaded ntg's CTI (467 of 4,883 agents recovered in 90 s, 535 healthy agents moved; docs/performance.md).
``--rate 0`` leaves the pace to the UL alone, as the 1,000-agent figures were measured.

The admin endpoint (aiohttp) lists each agent's site, registered PBX, CTI, state and the times of its last
transitions, and the recent structured events.

It also lets the lab controller make one agent log out or log in again (``POST /agents/<id>/logout`` and
``/login``), as the person at that desk would: a nemesis schedule's stack events. Those two change the
system under test, so they are signed like the UL's admin requests (X-Hil-Time, X-Hil-Sig over method, path,
time and body hash with the lab's stack secret); without a secret configured they are refused.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import logging
import os
import resource
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from sipcore.probe import options_ping_async
from stack.agent.client import AgentClient, Timers, TokenBucket, UlHttp
from stack.common import auth, directory
from stack.common.addr import hostport
from stack.common.daemon import secret_from_env, serve, until_signalled
from stack.common.eventlog import EventLog
from stack.cti import client as cti_client
from stack.phone.control import LocalPhoneControl
from stack.phone.ua import Phone, SipEndpoint

log = logging.getLogger("stack.swarm")
START_RATE = 400.0  # agents per second whose first login starts (the default spread of the start-up)


class SharedProbe:
    """A probe shared by every client of the process: one in flight per target, its answer reused for
    ``ttl`` seconds. ``probe(host, port, timeout)`` is any coroutine function.

    When a PBX fails, thousands of clients confirm at the same moment, and the answer is the same for all
    of them. Used for the SIP OPTIONS re-check (each client used to open its own UDP socket: 5,000 sockets
    in a second at 10,000 agents, a tenth of the swarm's CPU in the failover profile) and for the CTI's
    report of its PBX link (each client used to open its own TCP connection to ask it). The probe still
    goes over its own socket, apart from the phones' and the sessions'.
    """

    def __init__(self, probe: Callable[[str, int, float], Awaitable[Any]], ttl: float = 0.5) -> None:
        self.probe = probe
        self.ttl = ttl
        self._cache: dict[tuple[str, int], tuple[float, asyncio.Future[Any]]] = {}

    async def __call__(self, host: str, port: int, timeout: float) -> Any:
        key, now = (host, port), time.monotonic()
        hit = self._cache.get(key)
        if hit is None or (hit[1].done() and now - hit[0] >= self.ttl):
            hit = (now, asyncio.ensure_future(self.probe(host, port, timeout)))
            self._cache[key] = hit
        return await asyncio.shield(hit[1])


async def cti_link_up(host: str, port: int, timeout: float) -> bool:
    """Whether the CTI at ``host:port`` answers and says its PBX link is up (a fresh connection)."""
    try:
        st = await cti_client.query(host, port, {"type": "status"}, timeout)
    except cti_client.CtiError:
        return False
    return st.get("pbx_link") == "up"


class Swarm:
    """The agents of one site, their phones, and the admin view over them."""

    def __init__(
        self,
        site: str,
        agents: list[directory.Agent],
        uls: dict[str, str],
        home_pbx: tuple[str, int],
        *,
        agent_secret: str,
        sip_secret: str,
        timers: Timers,
        events: EventLog,
        rate: float,
        burst: float,
        expires: int = 300,
        initial_state: str = "ready",
        admin_secret: str | None = None,
    ) -> None:
        self.site = site
        self.agents = agents
        self.uls = uls
        self.home_pbx = home_pbx
        self.agent_secret, self.sip_secret = agent_secret, sip_secret
        self.timers = timers
        self.events = events
        self.pacer = TokenBucket(rate, burst) if rate > 0 else None  # a ceiling only if asked for
        self.expires = expires
        self.initial_state = initial_state
        self.admin_secret = admin_secret
        self.ul = UlHttp()
        self.options = SharedProbe(options_ping_async)
        self.cti_link = SharedProbe(cti_link_up)
        self.endpoint: SipEndpoint | None = None
        self.clients: dict[str, AgentClient] = {}
        self.phones: dict[str, Phone] = {}
        self.tasks: dict[str, asyncio.Task[None]] = {}  # each client's life (done: logged out, or fenced)
        self.by_id = {a.id: a for a in agents}
        self._session_locks: dict[str, asyncio.Lock] = {}  # one logout/login at a time per agent
        self.started = time.monotonic()

    async def start(self, sip_bind: tuple[str, int], contact_host: str | None = None) -> None:
        self.endpoint = await SipEndpoint.open(sip_bind[0], sip_bind[1], contact_host=contact_host)
        for a in self.agents:
            phone = Phone(
                self.endpoint, a.extension, auth.derive_password(self.sip_secret, a.extension),
                self.home_pbx, self.expires,
            )  # fmt: skip
            self.phones[a.id], self.clients[a.id] = phone, self._client(a, phone, self.timers)
        for aid, c in self.clients.items():
            self.tasks[aid] = c.start()
        gc.freeze()  # thousands of long-lived objects: keep the collector from walking them again and again

    def _client(self, a: directory.Agent, phone: Phone, timers: Timers) -> AgentClient:
        return AgentClient(
            a.id, auth.derive_password(self.agent_secret, a.id), a.extension, a.home, self.uls,
            LocalPhoneControl(phone), timers=timers, events=self.events, ul_api=self.ul,
            pacer=self.pacer, initial_state=self.initial_state, sip_options=self.options,
            cti_link=self.cti_link,
        )  # fmt: skip

    async def logout(self, aid: str) -> None:
        """The agent logs out (CTI and UL told, the client stopped); its phone stays registered, as a desk
        phone does. Logging out an agent that is logged out already changes nothing."""
        async with self._session_locks.setdefault(aid, asyncio.Lock()):
            c = self.clients[aid]
            if self.running(aid):
                self.events.emit("admin_logout", agent=aid, site=c.site)
                await c.stop(logout=True)

    async def login(self, aid: str) -> None:
        """The agent starts its client again: a fresh login from home (design steps 1-6), at once (no
        start-up jitter: a person pressed the button). An agent whose client runs is left as it is."""
        async with self._session_locks.setdefault(aid, asyncio.Lock()):
            if self.running(aid):
                return
            timers = dataclasses.replace(self.timers, jitter=0)
            client = self._client(self.by_id[aid], self.phones[aid], timers)
            self.clients[aid] = client
            self.events.emit("admin_login", agent=aid, site=None)
            self.tasks[aid] = client.start()

    def running(self, aid: str) -> bool:
        """Whether the agent's client is alive (logging in, online, failing over), not logged out."""
        task = self.tasks.get(aid)
        return task is not None and not task.done()

    async def stop(self) -> None:
        await asyncio.gather(*(c.stop() for c in self.clients.values()), return_exceptions=True)
        await asyncio.gather(*(p.unregister() for p in self.phones.values()), return_exceptions=True)
        for p in self.phones.values():
            p.close()
        if self.endpoint is not None:
            self.endpoint.close()
        await self.ul.close()

    def summary(self) -> dict[str, Any]:
        phases: dict[str, int] = {}
        sites: dict[str, int] = {}
        for c in self.clients.values():
            phases[c.phase] = phases.get(c.phase, 0) + 1
            key = c.site or "none"
            sites[key] = sites.get(key, 0) + 1
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return {
            "site": self.site,
            "agents": len(self.clients),
            "phases": phases,
            "at_site": sites,
            "registered_phones": sum(1 for p in self.phones.values() if p.registered),
            "failovers": sum(c.failovers for c in self.clients.values()),
            "switches": sum(c.switches for c in self.clients.values()),
            "ul_deferrals": sum(c.deferrals for c in self.clients.values()),
            "uptime": round(time.monotonic() - self.started, 3),
            "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 3),
            "max_rss_mib": round(usage.ru_maxrss / 1024, 1),
            "sip": dict(self.endpoint.stats) if self.endpoint else {},
        }

    def agent_view(self, aid: str) -> dict[str, Any]:
        c, p = self.clients[aid], self.phones[aid]
        return {
            **c.view(),
            "running": self.running(aid),
            "phone": {"registered": p.registered, "registrar": list(p.registrar), "call_state": p.call_state},
        }

    # ---- admin HTTP -----------------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application()
        app.add_routes(
            [
                web.get("/health", self.h_health),
                web.get("/agents", self.h_agents),
                web.get("/agents/{id}", self.h_agent),
                web.post("/agents/{id}/state", self.h_state),
                web.post("/agents/{id}/logout", self.h_logout),
                web.post("/agents/{id}/login", self.h_login),
                web.post("/agents/{id}/dial", self.h_dial),
                web.get("/events", self.h_events),
            ]
        )
        return app

    async def h_health(self, request: web.Request) -> web.Response:
        return web.json_response(self.summary())

    async def h_agents(self, request: web.Request) -> web.Response:
        q = request.query
        out = []
        for aid, c in self.clients.items():
            if ("phase" in q and c.phase != q["phase"]) or ("site" in q and c.site != q["site"]):
                continue
            out.append(self.agent_view(aid))
        return web.json_response({"site": self.site, "agents": out})

    async def h_agent(self, request: web.Request) -> web.Response:
        aid = request.match_info["id"]
        if aid not in self.clients:
            raise web.HTTPNotFound(text='{"error": "no such agent"}', content_type="application/json")
        view = self.agent_view(aid)
        view["events"] = self.events.recent(int(request.query.get("n", 50)), agent=aid)
        return web.json_response(view)

    async def h_state(self, request: web.Request) -> web.Response:
        """The agent sets ready / not_ready (what a human does on the softphone's buttons)."""
        aid = request.match_info["id"]
        if aid not in self.clients:
            raise web.HTTPNotFound(text='{"error": "no such agent"}', content_type="application/json")
        body = await request.json()
        try:
            await self.clients[aid].set_state(str(body.get("state")))
        except ValueError as err:
            raise web.HTTPBadRequest(text=f'{{"error": "{err}"}}', content_type="application/json") from None
        return web.json_response(self.agent_view(aid))

    async def _signed_agent(self, request: web.Request) -> str:
        """The agent a signed admin request names (403 unsigned or badly signed, 404 no such agent)."""
        body = await request.read()
        if not self.admin_secret or not auth.check_request(
            self.admin_secret, request.method, request.path, body, request.headers
        ):
            raise web.HTTPForbidden(
                text='{"error": "admin request not signed"}', content_type="application/json"
            )
        aid = request.match_info["id"]
        if aid not in self.clients:
            raise web.HTTPNotFound(text='{"error": "no such agent"}', content_type="application/json")
        return aid

    async def h_logout(self, request: web.Request) -> web.Response:
        aid = await self._signed_agent(request)
        await self.logout(aid)
        return web.json_response(self.agent_view(aid))

    async def h_login(self, request: web.Request) -> web.Response:
        aid = await self._signed_agent(request)
        await self.login(aid)
        return web.json_response(self.agent_view(aid))

    async def h_dial(self, request: web.Request) -> web.Response:
        """The agent dials a number (the softphone's dial pad); signed: it changes the lab. Answers with the
        call's reference at once; its progress is in /events (``outbound_call``)."""
        aid = await self._signed_agent(request)
        body = await request.json()
        try:
            ref = await self.clients[aid].start_dial(str(body.get("number", "")))
        except cti_client.CtiError as err:
            why = f'{{"error": "{err.code}"}}'
            raise web.HTTPConflict(text=why, content_type="application/json") from None
        return web.json_response({"agent": aid, "dial": ref})

    async def h_events(self, request: web.Request) -> web.Response:
        q = request.query
        match = {k: q[k] for k in ("agent", "event") if k in q}
        return web.json_response({"events": self.events.recent(int(q.get("n", 200)), **match)})


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    d = Timers()
    ap = argparse.ArgumentParser(
        prog="python -m stack.swarm", description="All agents of a site in one process"
    )
    ap.add_argument("--topology", required=True)
    ap.add_argument("--site", required=True, help="run the agents whose pool's home is this site")
    ap.add_argument("--ul", default=None, help="this site's UL URL (default: from the topology)")
    ap.add_argument("--peer-ul", default=None, help="the other site's UL URL (default: from the topology)")
    ap.add_argument("--pbx", type=hostport, default=None, help="home PBX HOST:PORT (default: topology)")
    ap.add_argument("--sip-bind", type=hostport, default=("0.0.0.0", 0), help="phones' UDP ADDR:PORT")
    ap.add_argument("--contact-host", default=None, help="address phones put in Contact")
    ap.add_argument("--admin", type=hostport, default=("127.0.0.1", 0), help="admin HTTP ADDR:PORT")
    ap.add_argument(
        "--admin-secret-env",
        default="LAB_STACK_SECRET",
        help="variable holding the secret that signs admin logouts/logins (unset: they are refused)",
    )
    ap.add_argument("--agent-secret-env", default="LAB_AGENT_PASSWORD")
    ap.add_argument("--sip-secret-env", default="LAB_SIP_SECRET")
    ap.add_argument("--limit", type=int, default=None, help="only the first N agents of the site")
    ap.add_argument("--pool", action="append", default=None, help="only these pools (repeatable)")
    ap.add_argument(
        "--rate",
        type=float,
        default=400.0,
        help="a safety ceiling on UL logins per second (token bucket; default 400 until the UL's admission "
        "control sees the CTI's load); 0: none, the UL's admission control alone paces a storm",
    )
    ap.add_argument("--burst", type=float, default=100.0, help="the ceiling's burst (with --rate)")
    ap.add_argument("--expires", type=int, default=300, help="REGISTER expiry the phones ask for")
    ap.add_argument("--initial-state", choices=("ready", "not_ready"), default="ready")
    ap.add_argument("--heartbeat", type=float, default=d.heartbeat)
    ap.add_argument("--heartbeat-misses", type=int, default=d.heartbeat_misses)
    ap.add_argument("--confirm-delay", type=float, default=d.confirm_delay)
    ap.add_argument("--confirm-timeout", type=float, default=d.confirm_timeout)
    ap.add_argument("--retry-delay", type=float, default=d.retry_delay)
    ap.add_argument(
        "--jitter",
        type=float,
        default=None,
        help="spread of the first logins (default: agents/400 s, or agents/rate with --rate; 1 s at least)",
    )
    ap.add_argument("--log", default=None, help="JSON-lines event log file")
    ap.add_argument("--ring", type=int, default=100_000, help="events kept in memory for /events")
    ap.add_argument("--log-level", default="WARNING")
    return ap.parse_args(argv)


async def run(args: argparse.Namespace) -> None:
    topo = directory.load(args.topology)
    agents = [a for a in topo.of_site(args.site) if args.pool is None or a.pool in args.pool]
    agents = agents[: args.limit] if args.limit else agents
    peer = next((s for s in topo.sites if s != args.site), args.site)
    uls = {s: f"http://{svc.address}:{svc.port}" for s, svc in topo.ul.items()}
    if args.ul:
        uls[args.site] = args.ul
    if args.peer_ul:
        uls[peer] = args.peer_ul
    home = args.pbx or (topo.pbx[args.site].address, topo.pbx[args.site].port)
    agent_secret = secret_from_env(args.agent_secret_env, status=1)
    sip_secret = secret_from_env(args.sip_secret_env, status=1)
    # The desks start over a few seconds (agents / 400 per second, as when the swarm paced itself): the
    # admission control protects the UL, not yet the CTI and the PBX, and 5,000 logins per site within a
    # second left the 10,000-agent lab churning at start-up for minutes.
    spread = len(agents) / (args.rate if args.rate > 0 else START_RATE)
    jitter = args.jitter if args.jitter is not None else max(1.0, spread)
    timers = Timers(
        heartbeat=args.heartbeat,
        heartbeat_misses=args.heartbeat_misses,
        confirm_delay=args.confirm_delay,
        confirm_timeout=args.confirm_timeout,
        retry_delay=args.retry_delay,
        jitter=jitter,
    )
    events = EventLog(size=args.ring, path=args.log)
    swarm = Swarm(
        args.site, agents, uls, home,
        agent_secret=agent_secret, sip_secret=sip_secret,
        timers=timers, events=events, rate=args.rate, burst=args.burst, expires=args.expires,
        initial_state=args.initial_state, admin_secret=os.environ.get(args.admin_secret_env) or None,
    )  # fmt: skip
    runner = web.AppRunner(swarm.app(), access_log=None)
    await runner.setup()
    admin = web.TCPSite(runner, args.admin[0], args.admin[1])
    await admin.start()
    await swarm.start(args.sip_bind, args.contact_host)
    port = runner.addresses[0][1] if runner.addresses else args.admin[1]
    await until_signalled(f"READY swarm {args.site} agents={len(agents)} admin={args.admin[0]}:{port}")
    await swarm.stop()
    await runner.cleanup()
    events.close()


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    return serve(args, run(args))


if __name__ == "__main__":
    sys.exit(main())
