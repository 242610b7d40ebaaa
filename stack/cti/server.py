"""The site CTI server: agents log in with the UL's token, link their phone, report state, get events.

Why it is built this way:
- One asyncio process serves every agent of a site (5,000 connections) over newline-delimited JSON; a
  malformed or oversized line costs only its own connection, never the others (stack/cti/connection.py).
- The PBX link has two loops, liveness (a cheap probe) and registrations (a bulk dump, or with
  ``--pbx-events`` the registrations Kamailio pushes, the dump kept to reconcile): stack/cti/pbxlink.py
  and stack/cti/pbxwatch.py say why.
- Tokens are verified offline (HMAC) and then against the UL's current epoch for the agent, so a fenced
  token is refused (stack/cti/handlers.py); a periodic bulk epoch sweep, the UL's ``fence`` admin message
  and a lease evict sessions that a newer login elsewhere superseded or whose client went silent
  (stack/cti/sessions.py).
- Anyone on the data network can connect: connections are capped per source address and in total,
  a connection that does not log in is closed after ``login_timeout`` s of silence, a line is at most
  ``max_line`` bytes, and a client that leaves its output unread is cut (stack/cti/connection.py,
  stack/common/limits.py). The defaults hold a 10,000-agent lab with one agents host per site.

This module wires those parts into one server and runs it; ``python -m stack.cti`` starts one.
"""

from __future__ import annotations

import asyncio
import logging
import time

import aiohttp

from stack.common import fastjson
from stack.common.limits import ConnectionCaps, Refusals, total_cap
from stack.cti import pbxevents
from stack.cti import protocol as P
from stack.cti.connection import Connection
from stack.cti.epochs import EpochBatcher
from stack.cti.handlers import Handlers
from stack.cti.pbxlink import PbxLink, PbxUnreachable, RpcError
from stack.cti.pbxwatch import PbxWatch
from stack.cti.sessions import Session, SessionTable

__all__ = ["Connection", "CtiServer", "PbxLink", "PbxUnreachable", "RpcError", "Session"]

log = logging.getLogger("stack.cti")

# Connections from one address: one per agent plus the secondary confirmation's short ones, for every
# agent of a 10,000-agent lab on one host; in total, what the open-file limit allows up to 20,000.
MAX_PER_SOURCE = 12_000
MAX_CONNECTIONS = 20_000
LOGIN_TIMEOUT = 10.0  # a client retrying a not_yet login waits at most 5 s between lines
STALL_TIMEOUT = 30.0


class CtiServer(Handlers, SessionTable, PbxWatch):
    """A site's CTI: sessions by agent (stack/cti/sessions.py), the PBX link (stack/cti/pbxwatch.py), the
    UL epoch check and the admin messages (stack/cti/handlers.py). The state they share is set here."""

    def __init__(
        self,
        site: str,
        secret: str,
        *,
        pbx_rpc: str | None,
        ul_url: str | None,
        poll_interval: float = 0.5,
        pbx_fail_after: int = 2,
        pbx_sip: tuple[str, int] | None = None,
        pbx_events: tuple[str, int] | None = None,
        reconcile_interval: float = 30.0,
        epoch_interval: float = 2.0,
        max_errors: int = 5,
        lease: float = 2.5,
        lease_late: float = 0.5,
        max_connections: int = MAX_CONNECTIONS,
        max_per_source: int = MAX_PER_SOURCE,
        login_timeout: float = LOGIN_TIMEOUT,
        max_line: int = P.MAX_LINE,
        stall_timeout: float = STALL_TIMEOUT,
    ) -> None:
        self.site = site
        # What a connection may hold (stack/cti/connection.py); ``refusals.counts`` what was refused or cut.
        self.refusals = Refusals(log, f"cti {site}")
        self.caps = ConnectionCaps(max_per_source, total_cap(max_connections), self.refusals)
        self.login_timeout = login_timeout
        self.max_line = max_line
        self.stall_timeout = stall_timeout
        self.secret = secret
        self.ul_url = ul_url.rstrip("/") if ul_url else None
        self.pbx = PbxLink(
            pbx_rpc,
            interval=poll_interval,
            fail_after=pbx_fail_after,
            sip=pbx_sip,
            events=pbx_events is not None,
            reconcile=reconcile_interval,
        )
        # ``pbx_events``: (address, UDP port) where the PBX pushes registration events; None: poll only.
        self.pbx_events = pbx_events
        self.events: pbxevents.PbxEventListener | None = None
        self._events_transport: asyncio.DatagramTransport | None = None
        # Sessions by extension, for an event to find its agent without a walk over 5,000 sessions.
        # Written at login only; an entry whose session has ended is dropped when next read.
        self._by_ext: dict[str, list[Session]] = {}
        self.epoch_interval = epoch_interval
        self.max_errors = max_errors
        # Lease: a session that hears nothing from its client for ``lease`` s ends here (a CTI cut off
        # from its agents must not keep them logged in while they work at the other site). A message that
        # arrives more than ``lease_late`` s later than the client's clock says it should renews it only as
        # of its send time (TCP retransmissions after a cut heals). 0 disables the lease.
        self.lease = lease
        self.lease_late = lease_late
        self.expired = 0  # sessions ended by their lease
        # agent -> epoch of its last session here that ended unconfirmed (lease, lost connection), until a
        # fence supersedes it (stack/cti/sessions.py)
        self.lapsed: dict[str, int] = {}
        self.unbound = 0  # PBX bindings removed after a fence
        self.unbind_pending: set[str] = set()  # extensions whose removal failed: retried after each dump
        self.sessions: dict[str, Session] = {}
        self.conns: set[Connection] = set()
        self._server: asyncio.Server | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._http: aiohttp.ClientSession | None = None
        self._epochs: EpochBatcher | None = None
        self._dump_now = asyncio.Event()
        self.started = time.time()

    # ---- life cycle -------------------------------------------------------------------------------

    async def start(self, host: str | list[str], port: int) -> None:
        await self.pbx.start()
        self._http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=16), json_serialize=fastjson.dumps
        )
        if self.ul_url:
            self._epochs = EpochBatcher(self._http, self.ul_url)
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: Connection(self), host, port, backlog=1024)
        if self.pbx_events is not None:
            self._events_transport, self.events = await pbxevents.listen(
                *self.pbx_events, self._pbx_event, sources=self._pbx_hosts()
            )
            log.info("cti %s: PBX registration events on udp %s:%s", self.site, *self.pbx_events)
        if self.pbx.rpc_url:
            self._tasks.append(asyncio.create_task(self._poll_loop()))
            self._tasks.append(asyncio.create_task(self._dump_loop()))
        if self.ul_url:
            self._tasks.append(asyncio.create_task(self._epoch_loop()))
        if self.lease > 0:
            self._tasks.append(asyncio.create_task(self._lease_loop()))
        caps = self.caps
        log.info("cti %s listening on %s:%s (connections: at most %d per source, %d in total)",
                 self.site, host, port, caps.per_source, caps.total)  # fmt: skip

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        if self._server is not None:
            self._server.close()
        if self._events_transport is not None:
            self._events_transport.close()
        for c in list(self.conns):
            c.close()
        await self.pbx.close()
        if self._http is not None:
            await self._http.close()
