"""The site CTI server: agents log in with the UL's token, link their phone, report state, get events.

Why it is built this way:
- One asyncio process serves every agent of a site (5,000 connections) over newline-delimited JSON; a
  malformed or oversized line costs only its own connection, never the others.
- The PBX link has two loops. Liveness: every ``poll_interval`` one ``ul.lookup`` of a probe AOR over
  JSON-RPC (a hash lookup, 0.3 ms whatever the table size; any JSON-RPC answer, even "not found", means
  the PBX is alive); two failures in a row mark the link down and every client hears it at once, well
  inside two heartbeats. Registrations: a bulk ``ul.dump brief`` (one HTTP call for 5,000 agents instead
  of 5,000 lookups), repeated every ``poll_interval`` or, when the dump itself is slow, every four dump
  durations. The two are apart because a dump grows quadratically with the table in Kamailio 5.6 (260 ms
  at 10,000 contacts, seconds on a loaded machine): with one loop, a slow dump timed out, was taken for a
  dead PBX, and pushed ``pbx_link_down`` to thousands of agents that then failed over from a healthy site
  (measured: 613 of 5,000 at the 10,000-agent lab, bench/bench_failover.py).
- Registrations pushed, the dump kept to reconcile (``--pbx-events``): the PBX sends a SIP MESSAGE per
  registration change (stack/cti/pbxevents.py); an event newer by (boot, seq) than the last one applied
  for its extension changes the view and reaches the linked agent at once, and ``link_phone`` on a
  phone an event says is registered costs the PBX nothing. At 10,000 agents the per-link ``ul.lookup``s
  of a failover storm queued behind the dumps in Kamailio's few HTTP workers (379 of 5,000 links failed
  ``pbx_unreachable``, link p50 1.3 s). Events are hints (one may be lost): "not registered" or silence
  still asks the PBX, and a dump at start, on link up, on a new boot and every ``reconcile`` s (30)
  repairs what was missed, without undoing an event newer than the dump's start.
- Tokens are verified offline (HMAC) and then against the UL's current epoch for the agent, so a fenced
  token is refused; a periodic bulk epoch sweep and the UL's ``fence`` admin message evict sessions that
  a newer login elsewhere superseded.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from stack.common import auth, fastjson, sipping
from stack.cti import pbxevents
from stack.cti import protocol as P
from stack.cti.epochs import EpochBatcher

log = logging.getLogger("stack.cti")


@dataclass(eq=False)
class Session:
    """One logged-in agent on one connection."""

    agent: str
    extension: str
    epoch: int
    conn: Connection
    state: str = "not_ready"
    since: float = field(default_factory=time.time)
    login_at: float = field(default_factory=time.time)
    linked: bool = False
    phone: str = "unknown"
    epoch_checked: bool = True
    heard: float = field(default_factory=time.monotonic)  # last message that renewed the lease
    offset: float | None = None  # least (arrival - client send time) seen: tells a late message

    def view(self) -> dict[str, Any]:
        return {
            "agent": self.agent,
            "state": self.state,
            "epoch": self.epoch,
            "extension": self.extension,
            "since": round(self.since, 3),
            "login_at": round(self.login_at, 3),
            "linked": self.linked,
            "phone": self.phone,
        }


class Connection(asyncio.Protocol):
    """One client TCP connection, served as an ``asyncio.Protocol`` (no reader task, no streams: at 10,000
    agents the stream reader/writer machinery was a quarter of a surviving CTI's CPU in a failover storm).

    Lines are split in ``data_received`` and handled one after another, in order. Most messages are
    answered right there, synchronously; ``login`` and ``link_phone`` await I/O (the UL epoch check, the
    PBX lookup) and run as a task, and while one does, what the client sends next waits unparsed in
    ``_buf``, handled when it completes (a message is never handled before the previous one is answered).
    Writes never block the server: a client that stops reading is not read either (its requests wait
    while the transport's write buffer is above its high-water mark, as ``drain()`` did) and is cut when
    the buffer passes HIGH_WATER (pushed events keep coming). Reading pauses when more than PENDING_MAX
    unhandled bytes wait (a client flooding while its login is in flight), so memory stays bounded."""

    HIGH_WATER = 256 * 1024
    PENDING_MAX = 4 * P.MAX_LINE  # unhandled bytes held while a handler awaits, before reading pauses

    def __init__(self, server: CtiServer) -> None:
        self.server = server
        self.transport: asyncio.Transport = None  # type: ignore[assignment]  # set by connection_made
        self.session: Session | None = None
        self.admin = False
        self.errors = 0
        self.closed = False
        self._buf = b""  # bytes not handled yet: a partial line, or (while blocked) whole lines as well
        self._task: asyncio.Task[None] | None = None  # the awaiting handler in progress (login, link_phone)
        self._wpaused = False  # the transport's write buffer is above its high-water mark
        self._rpaused = False  # we paused reading (too many bytes waiting)
        self._eof = False  # the client sent EOF: close once what it sent before is answered

    # ---- the public surface the rest of the server uses -------------------------------------------

    def send(self, msg: dict[str, Any]) -> None:
        if self.closed:
            return
        # The buffer can only pass HIGH_WATER above the transport's own high-water mark (paused).
        if self._wpaused and self.transport.get_write_buffer_size() > self.HIGH_WATER:
            self.close()
            return
        self.transport.write(P.encode(msg))

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self.transport is not None:
                with contextlib.suppress(Exception):
                    self.transport.close()

    # ---- asyncio.Protocol ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.server.conns.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._drop()  # a login still in flight drops its session again when it completes

    def pause_writing(self) -> None:
        self._wpaused = True

    def resume_writing(self) -> None:
        self._wpaused = False
        self._resume()

    def eof_received(self) -> bool:
        self._eof = True
        if self._task is None and not self._wpaused:
            self._at_eof()
        return True  # half-open: the transport stays until the lines sent before EOF are answered

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        if self._task is not None or self._wpaused:
            self._hold(data)
            return
        buf = self._buf + data if self._buf else data
        if b"\n" not in data:  # ``_buf`` holds no newline here: no whole line yet
            if len(buf) > P.MAX_LINE:
                self._too_large()
            else:
                self._buf = buf
            return
        self._buf = b""
        self._feed(buf)

    # ---- lines ------------------------------------------------------------------------------------------

    def _hold(self, data: bytes) -> None:
        """Keep ``data`` for after the handler in progress (or the write pause); pause reading when much
        waits."""
        self._buf += data
        if not self._rpaused and len(self._buf) > self.PENDING_MAX:
            self._rpaused = True
            self.transport.pause_reading()

    def _feed(self, buf: bytes) -> None:
        """Handle the whole lines in ``buf`` in order; stop (keeping the rest) when one starts an awaiting
        handler or the write side is paused."""
        lines = buf.split(b"\n")
        rest = lines.pop()
        for i, line in enumerate(lines):
            self._line(line)
            if self.closed:
                self._drop()  # ended by its own message (logout, too many errors): as ``_serve`` did
                return
            if self._task is not None or self._wpaused:
                tail = lines[i + 1 :]
                self._hold(b"\n".join(tail) + b"\n" + rest if tail else rest)
                return
        if len(rest) > P.MAX_LINE:
            self._too_large()
        else:
            self._buf = rest

    def _resume(self) -> None:
        """The handler in progress finished or the write side drained: handle what waited."""
        if self.closed or self._task is not None or self._wpaused:
            return
        buf, self._buf = self._buf, b""
        if b"\n" in buf:
            self._feed(buf)
        elif len(buf) > P.MAX_LINE:
            self._too_large()
        else:
            self._buf = buf
        if self.closed or self._task is not None or self._wpaused:
            return
        if self._rpaused:
            self._rpaused = False
            self.transport.resume_reading()
        if self._eof:
            self._at_eof()

    def _at_eof(self) -> None:
        """EOF with nothing in progress: a last unterminated line is handled (as ``readline`` returned
        it), then the connection ends."""
        rest, self._buf = self._buf, b""
        if rest and not self.closed:
            self._line(rest)
        if self._task is None and not self._wpaused:
            self._end()

    def _too_large(self) -> None:
        self._buf = b""
        self.send(P.error("too_large"))
        self._end()

    def _end(self) -> None:
        """The connection is done on our side: its session ends now (as ``_serve``'s ``finally`` did)."""
        self._drop()
        self.close()

    def _drop(self) -> None:
        srv = self.server
        s = self.session
        if s is not None and srv.sessions.get(s.agent) is s:
            del srv.sessions[s.agent]
        srv.conns.discard(self)

    def _line(self, line: bytes) -> None:
        """One line: decoded and handled at once, or handed to a task when its handler awaits."""
        if len(line) > P.MAX_LINE:
            self._too_large()
            return
        if not line or line.isspace():
            return
        srv = self.server
        try:
            req = P.decode(line)
        except ValueError:
            self.errors += 1
            self.send(P.error("bad_json"))
            if self.errors >= srv.max_errors:
                self._end()
            return
        kind = req.get("type")
        if self.session is not None and kind != "logout":
            srv._renew(self.session, req)
        if kind == "login" or kind == "link_phone":
            self._task = asyncio.get_running_loop().create_task(self._awaiting(req, kind))
            return
        try:
            reply = srv._handle_now(self, req, kind)
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            self._bad_request(req, err)
            return
        except Exception:
            log.exception("cti %s: handling %r", srv.site, kind)
            self._end()
            return
        if reply is not None:
            self.send(reply)

    def _bad_request(self, req: dict[str, Any], err: Exception) -> None:
        self.errors += 1
        self.send(P.error("bad_request", req, detail=str(err)[:200]))
        if self.errors >= self.server.max_errors:
            self._end()

    async def _awaiting(self, req: dict[str, Any], kind: str) -> None:
        """``login`` or ``link_phone``; then what the client sent meanwhile."""
        srv = self.server
        try:
            if kind == "login":
                reply = await srv._login(self, req)
            else:
                reply = await srv._link(self, req)
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            self._task = None
            self._bad_request(req, err)
        except Exception:
            self._task = None
            log.exception("cti %s: handling %r", srv.site, kind)
            self._end()
        else:
            self._task = None
            self.send(reply)
        if self.closed:
            self._drop()  # closed or lost meanwhile: a session this login made must not outlive it
            return
        self._resume()


class PbxLink:
    """Live view of the site PBX: link up/down (a cheap probe) and the registered extensions (bulk dump,
    and with ``events`` the registration events the PBX pushes)."""

    PROBE_AOR = "cti-liveness-probe"  # never registered: Kamailio answers "not found", which is an answer
    OLD_BOOTS = 8  # boots of earlier PBX runs remembered, so their late events are not taken for new ones

    def __init__(
        self,
        rpc_url: str | None,
        *,
        interval: float = 0.5,
        timeout: float = 0.4,
        fail_after: int = 2,
        dump_timeout: float = 5.0,
        dump_factor: float = 4.0,
        sip: tuple[str, int] | None = None,
        events: bool = False,
        reconcile: float = 30.0,
    ) -> None:
        self.rpc_url = rpc_url
        self.interval = interval
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self.fail_after = fail_after
        self.dump_timeout = aiohttp.ClientTimeout(total=dump_timeout)
        self.dump_factor = dump_factor
        self.up: bool | None = None
        self.registered: set[str] = set()
        self.fails = 0
        self.last_ok = 0.0
        self.polls = 0
        self.dumps = 0
        self.dump_seconds = 0.0  # how long the last bulk dump took
        self.dumped = False  # a dump has succeeded: ``registered`` means something
        self.sip = sip  # (host, port) for the SIP OPTIONS half of the liveness probe, or None
        # Extensions a direct lookup found registered, and when: a dump that began before that moment
        # cannot know of them and must not take them away (it would tell a freshly linked agent its phone
        # is unregistered, and send it back to where it came from: seen at 10,000 agents).
        # With events, the same holds for an event: a dump that began before it must not undo it. So both
        # record here when they last changed an extension, and a dump keeps those extensions as they are.
        self.confirmed: dict[str, float] = {}
        # Pushed registration events (``events``): the PBX run they describe, and per extension the seq
        # and the state of the last one applied. ``pushed`` is what events (or a newer dump) say now.
        self.events = events
        self.reconcile = reconcile  # seconds between reconciling dumps when events are on
        self.boot: str | None = None
        self.old_boots: list[str] = []
        self.seqs: dict[str, int] = {}
        self.pushed: dict[str, bool] = {}
        self.applied = 0  # events applied (newer than the last for their extension)
        self.stale = 0  # events dropped as older, repeated or from an earlier PBX run
        self.lookups = 0  # direct per-extension ``ul.lookup``s (link_phone), the probe not counted
        self._http: aiohttp.ClientSession | None = None

    async def _rpc(self, method: str, *params: Any, timeout: aiohttp.ClientTimeout | None = None) -> Any:
        assert self.rpc_url and self._http
        payload = {"jsonrpc": "2.0", "method": method, "params": list(params), "id": 1}
        async with self._http.post(self.rpc_url, json=payload, timeout=timeout or self.timeout) as resp:
            reply = await resp.json(content_type=None)
        if not isinstance(reply, dict):
            raise ValueError("JSON-RPC reply is not an object")
        if "error" in reply:
            raise RpcError(int(reply["error"].get("code", 0)), str(reply["error"].get("message", "")))
        return reply.get("result")

    async def start(self) -> None:
        self._http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=8))

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()

    async def _rpc_alive(self) -> bool:
        try:
            await self._rpc("ul.lookup", "location", self.PROBE_AOR)
        except RpcError:
            return True  # "AOR not found" (or any JSON-RPC error): the PBX answered
        except (TimeoutError, aiohttp.ClientError, ValueError, AttributeError, OSError):
            return False
        return True

    async def _sip_alive(self) -> bool:
        assert self.sip is not None
        return await sipping.options(self.sip[0], self.sip[1], self.timeout.total or 0.4) is not None

    async def probe(self) -> bool:
        """One liveness probe; True when the PBX answered. ``up`` turns False after ``fail_after`` misses.

        With ``sip`` set, a SIP OPTIONS goes out beside the JSON-RPC lookup and either answer will do: the
        RPC is served by Kamailio's HTTP worker, which queues behind a slow bulk dump, so under load an
        RPC probe alone timed out and a healthy PBX was reported down (10,000 agents, ntg's CTI)."""
        self.polls += 1
        checks = [self._rpc_alive()] + ([self._sip_alive()] if self.sip else [])
        if not any(await asyncio.gather(*checks)):
            self.fails += 1
            if self.fails >= self.fail_after:
                self.up = False
            return False
        self.fails = 0
        self.up = True
        self.last_ok = time.monotonic()
        return True

    async def dump(self) -> bool:
        """One bulk read of the registered extensions (``registered``); True when it worked."""
        self.dumps += 1
        t0 = time.monotonic()
        try:
            res = await self._rpc("ul.dump", "brief", timeout=self.dump_timeout)
            regs = set()
            for dom in (res or {}).get("Domains", []):
                for aor in dom.get("Domain", {}).get("AoRs", []) or []:
                    if "Info" not in aor:  # Kamailio 5.6 "brief": {"AoR": ext}, a record with a contact
                        regs.add(str(aor.get("AoR")))
                        continue
                    info = aor["Info"]
                    if any(_live(c.get("Contact", {})) for c in info.get("Contacts", []) or []):
                        regs.add(str(info.get("AoR")))
        except (TimeoutError, aiohttp.ClientError, ValueError, RpcError, AttributeError, OSError):
            return False
        finally:
            self.dump_seconds = time.monotonic() - t0
        # What a lookup or an event told us since the dump began is newer than the dump: keep it.
        self.confirmed = {e: t for e, t in self.confirmed.items() if t >= t0}
        newer = self.confirmed.keys()
        regs = (regs - newer) | {e for e in newer if e in self.registered}
        for ext, reg in self.pushed.items():
            if reg and ext not in regs and ext not in newer:
                self.pushed[ext] = False  # an unregistration event was lost: ask the PBX at the next link
        self.registered = regs
        self.dumped = True
        return True

    def confirm(self, ext: str) -> None:
        """A direct lookup just found ``ext`` registered."""
        self.confirmed[ext] = time.monotonic()
        self.registered.add(ext)

    def forget(self, ext: str) -> None:
        """``ext``'s binding was just removed (``ul.rm``)."""
        self.confirmed[ext] = time.monotonic()
        self.registered.discard(ext)
        self.pushed.pop(ext, None)

    def apply_event(self, ext: str, registered: bool, boot: str, seq: int) -> tuple[bool, bool]:
        """One pushed registration event; (applied, new_boot). Applied when its (boot, seq) is newer
        than the last event applied for ``ext``; a new boot (the PBX restarted: its location table
        started empty) forgets every earlier event, and the caller should reconcile with a dump."""
        new_boot = False
        if boot != self.boot:
            if boot in self.old_boots:
                self.stale += 1
                return False, False  # a late MESSAGE from before the restart
            if self.boot is not None:
                self.old_boots = [*self.old_boots, self.boot][-self.OLD_BOOTS :]
            self.boot, new_boot = boot, True
            self.seqs.clear()
            self.pushed.clear()
        if seq <= self.seqs.get(ext, -1):
            self.stale += 1
            return False, new_boot  # out of order or a retransmission
        self.seqs[ext] = seq
        self.pushed[ext] = registered
        self.confirmed[ext] = time.monotonic()
        if registered:
            self.registered.add(ext)
        else:
            self.registered.discard(ext)
        self.applied += 1
        return True, new_boot

    def link_restored(self) -> None:
        """The link came back after being down: events may have been lost meanwhile, and the PBX may have
        restarted under the same boot id (its seq then starts again from 1), so forget what events said
        and take the next ones as they come; the dump this triggers sets the view right."""
        self.seqs.clear()
        self.pushed.clear()

    def says_registered(self, ext: str) -> bool:
        """Whether the last pushed event for ``ext`` (not contradicted by a newer dump) says registered,
        with the link up: then ``link_phone`` needs no lookup."""
        return self.events and bool(self.up) and self.pushed.get(ext, False)

    def dump_pause(self, settled: bool = False) -> float:
        """Seconds between bulk dumps: ``interval``, or longer when a dump is slow (it costs the PBX).
        With events, once a dump has ``settled`` the view, only every ``reconcile`` seconds."""
        base = self.reconcile if self.events and settled else self.interval
        return max(base, self.dump_factor * self.dump_seconds)

    async def poll(self) -> bool:
        """Probe, then dump when the PBX answered (both loops in one call, for scripts and tests)."""
        if not await self.probe():
            return False
        await self.dump()
        return True

    async def lookup(self, ext: str) -> bool:
        """Whether ``ext`` is registered now (a direct ``ul.lookup``); raises PbxUnreachable."""
        self.lookups += 1
        try:
            res = await self._rpc("ul.lookup", "location", ext, timeout=aiohttp.ClientTimeout(total=1.0))
        except RpcError as err:
            # Kamailio 5.6 says {"code": 500, "message": "AOR not found in location table"}
            if err.code == 404 or "not found" in str(err).lower():
                return False
            raise PbxUnreachable(str(err)) from None
        except (TimeoutError, aiohttp.ClientError, ValueError, OSError) as err:
            raise PbxUnreachable(str(err) or type(err).__name__) from None
        return any(_live(c.get("Contact", {})) for c in (res or {}).get("Contacts", []) or [])


def _live(contact: dict[str, Any]) -> bool:
    exp = contact.get("Expires")
    return exp == "permanent" or (isinstance(exp, int | float) and exp > 0)


class RpcError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{code} {message}")
        self.code = code


class PbxUnreachable(Exception):
    pass


class CtiServer:
    """A site's CTI: sessions by agent, the PBX link, the UL epoch check and the admin messages."""

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
    ) -> None:
        self.site = site
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
        log.info("cti %s listening on %s:%s", self.site, host, port)

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

    # ---- PBX link and epoch sweep -------------------------------------------------------------------

    async def _poll_loop(self) -> None:
        """Liveness: a cheap probe every ``interval``; link changes go to every client at once."""
        while True:
            t0 = time.monotonic()
            was_up = self.pbx.up
            await self.pbx.probe()
            if self.pbx.up != was_up and self.pbx.up is not None:
                self._broadcast({"type": "event", "event": "pbx_link_up" if self.pbx.up else "pbx_link_down"})
                log.warning("cti %s: PBX link %s", self.site, "up" if self.pbx.up else "down")
                if self.pbx.up:
                    if was_up is False:
                        self.pbx.link_restored()
                    self._dump_now.set()
            await asyncio.sleep(max(0.0, self.pbx.interval - (time.monotonic() - t0)))

    async def _dump_loop(self) -> None:
        """Registrations: a bulk dump while the link is up, paced by how long a dump takes. With events,
        a reconciliation: at start, on link up, on a new PBX boot, and every ``reconcile`` s."""
        while True:
            self._dump_now.clear()  # a request made during the dump below asks for another one
            settled = False
            if self.pbx.up:
                before = self.pbx.registered
                if await self.pbx.dump() and self.pbx.up:
                    settled = True
                    self._phone_changes(before)
                    for ext in list(self.unbind_pending):
                        if ext in self.pbx.registered:
                            await self.unbind(ext)
                        else:
                            self.unbind_pending.discard(ext)
            settled = settled and not self.unbind_pending
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._dump_now.wait(), self.pbx.dump_pause(settled))

    def _pbx_event(self, ext: str, registered: bool, boot: str, seq: int) -> None:
        """A registration event from the PBX: applied if newer, and the linked agent told at once."""
        applied, new_boot = self.pbx.apply_event(ext, registered, boot, seq)
        if new_boot:
            log.info("cti %s: PBX boot %s: reconciling registrations", self.site, boot)
            self._dump_now.set()
        if not applied:
            return
        now = "registered" if registered else "unregistered"
        for s in self._sessions_of(ext):
            if now != s.phone and self.pbx.up:
                s.phone = now
                if s.linked:
                    s.conn.send({"type": "event", "event": f"phone_{now}", "extension": ext})

    def _sessions_of(self, ext: str) -> list[Session]:
        live = [s for s in self._by_ext.get(ext, ()) if self.sessions.get(s.agent) is s]
        if live:
            self._by_ext[ext] = live
        else:
            self._by_ext.pop(ext, None)
        return live

    def _pbx_hosts(self) -> set[str] | None:
        """The PBX's addresses (RPC and SIP hosts) events are accepted from; None (any) for a name."""
        hosts = {urlsplit(self.pbx.rpc_url).hostname if self.pbx.rpc_url else None}
        hosts.add(self.pbx.sip[0] if self.pbx.sip else None)
        out: set[str] = set()
        for h in hosts - {None}:
            try:
                out.add(str(ipaddress.ip_address(h)))
            except ValueError:
                return None
        return out or None

    def _phone_changes(self, before: set[str]) -> None:
        regs = self.pbx.registered
        if regs is before:
            return
        for s in self.sessions.values():
            now = "registered" if s.extension in regs else "unregistered"
            if now != s.phone:
                s.phone = now
                if s.linked:
                    s.conn.send({"type": "event", "event": f"phone_{now}", "extension": s.extension})

    def _broadcast(self, msg: dict[str, Any]) -> None:
        for s in self.sessions.values():
            s.conn.send(msg)

    def phone_state(self, ext: str) -> str:
        if not self.pbx.rpc_url or not self.pbx.up or not self.pbx.dumped:
            return "unknown"
        return "registered" if ext in self.pbx.registered else "unregistered"

    def link_state(self) -> str:
        return "up" if self.pbx.up else "down"

    async def _epoch_loop(self) -> None:
        assert self._http is not None and self.ul_url
        while True:
            await asyncio.sleep(self.epoch_interval)
            if not self.sessions:
                continue
            try:
                async with self._http.post(
                    self.ul_url + "/v1/epochs",
                    json={"agents": list(self.sessions)},
                    timeout=aiohttp.ClientTimeout(total=2.0),
                ) as r:
                    if r.status != 200:
                        continue
                    cur = (await r.json()).get("agents", {})
            except (TimeoutError, aiohttp.ClientError, ValueError, OSError):
                continue
            for agent, s in list(self.sessions.items()):
                c = cur.get(agent)
                if c and (c["epoch"] > s.epoch or c["site"] != self.site or c["status"] != "active"):
                    self.fence(agent, int(c["epoch"]), c["site"])
                elif c:
                    s.epoch_checked = True

    def fence(self, agent: str, epoch: int, site: str, extension: str | None = None) -> bool:
        """Evict the agent's session if ``epoch`` supersedes it; tell the client why. When the agent is
        not (or no longer) active here, its extension's binding at this site's PBX is removed too."""
        s = self.sessions.get(agent)
        if s is not None and epoch <= s.epoch and site == self.site:
            return False  # the agent is legitimately active here: keep session and binding
        ext = extension or (s.extension if s is not None else None)
        if ext and site != self.site and self.pbx.rpc_url:
            asyncio.ensure_future(self.unbind(ext))
        if s is None:
            return False
        del self.sessions[agent]
        s.conn.session = None
        s.conn.send({"type": "event", "event": "fenced", "epoch": epoch, "site": site})
        s.conn.close()
        log.info("cti %s: %s fenced by epoch %s at %s", self.site, agent, epoch, site)
        return True

    async def unbind(self, ext: str) -> bool:
        """Remove ``ext``'s registration from this site's PBX (``ul.rm location <ext>``), unless an agent
        active here now uses it; True when removed."""
        if any(s.extension == ext for s in self.sessions.values()):
            return False
        try:
            await self.pbx._rpc("ul.rm", "location", ext, timeout=aiohttp.ClientTimeout(total=2.0))
        except RpcError:
            return False  # 404: nothing registered
        except (TimeoutError, aiohttp.ClientError, ValueError, AttributeError, OSError) as err:
            # the PBX may still be cut off (a site coming back heals its ports one by one): retry after
            # the next successful dump, or the stale binding outlives the fence
            self.unbind_pending.add(ext)
            log.warning("cti %s: could not remove the binding of %s yet: %s", self.site, ext, err)
            return False
        self.unbind_pending.discard(ext)
        self.pbx.forget(ext)
        self.unbound += 1
        log.info("cti %s: removed the stale binding of %s from the PBX", self.site, ext)
        return True

    async def _lease_loop(self) -> None:
        """End the sessions whose lease ran out; skip a round when this loop itself ran late (unread
        heartbeats may be waiting in the sockets)."""
        tick = min(0.25, self.lease / 4)
        last = time.monotonic()
        while True:
            await asyncio.sleep(tick)
            now = time.monotonic()
            if now - last < tick + self.lease / 4:
                self.expire_leases(now)
            last = now

    def expire_leases(self, now: float | None = None) -> int:
        """End every session not heard from for ``lease`` s (nothing is pushed: its client is gone)."""
        now = time.monotonic() if now is None else now
        cutoff = now - self.lease
        # One comprehension over the sessions (4 sweeps a second over 10,000 sessions at a loaded site:
        # the per-item loop was 6 % of a busy CTI's CPU in the 10,000-agent failover profile).
        gone = [s for s in self.sessions.values() if s.heard < cutoff]
        for s in gone:
            del self.sessions[s.agent]
            s.conn.session = None
            s.conn.close()
            log.info(
                "cti %s: %s lease expired (epoch %s, %.1fs silent)",
                self.site,
                s.agent,
                s.epoch,
                now - s.heard,
            )
        self.expired += len(gone)
        return len(gone)

    def _renew(self, s: Session, req: dict[str, Any]) -> None:
        """A message from the client renews its session's lease as of when the client sent it (in this
        server's clock: its send time plus the least transit seen). A message held up by TCP retransmission
        after a short cut still proves the client was alive then; one held up longer than the lease (a
        long cut healing) renews nothing, so it cannot revive a session."""
        now = time.monotonic()
        sent = req.get("t")
        if isinstance(sent, int | float) and not isinstance(sent, bool):
            off = now - sent / 1000.0
            if s.offset is None or off < s.offset:
                s.offset = off
            if off - s.offset > self.lease_late:
                s.heard = max(s.heard, sent / 1000.0 + s.offset)
                return
        s.heard = now

    # ---- connections ------------------------------------------------------------------------------

    def _handle_now(self, conn: Connection, req: dict[str, Any], kind: Any) -> dict[str, Any] | None:
        """The reply to a message whose handling does not await (all but ``login`` and ``link_phone``,
        which ``Connection._awaiting`` runs as a task): answered in ``data_received``, with no task."""
        if kind == "heartbeat":
            s = conn.session
            if s is None:
                return P.error("not_logged_in", req)
            ack = {
                "type": "heartbeat_ack",
                "seq": req.get("seq"),
                "pbx_link": self.link_state(),
                "phone": self.phone_state(s.extension),
                "state": s.state,
                "epoch": s.epoch,
            }
            if "id" in req:
                ack["id"] = req["id"]
            return ack
        rid = {"id": req["id"]} if "id" in req else {}
        if kind == "set_state":
            s = conn.session
            if s is None:
                return P.error("not_logged_in", req)
            state = req["state"]
            if state not in P.STATES:
                return P.error("bad_request", req, detail=f"state must be one of {P.STATES}")
            if state != s.state:
                s.state, s.since = state, time.time()
            return {"type": "state_ok", "state": s.state, **rid}
        if kind == "status":
            ext = req.get("extension")
            out = {"type": "status", "site": self.site, "pbx_link": self.link_state(), **rid}
            if isinstance(ext, str):
                out["phone"] = self.phone_state(ext)
            return out
        if kind == "sessions":
            if self.lease > 0:
                self.expire_leases()
            return {
                "type": "sessions",
                "site": self.site,
                "pbx_link": self.link_state(),
                "lease": self.lease,
                "expired": self.expired,
                "sessions": [s.view() for s in self.sessions.values()],
                **rid,
            }
        if kind == "logout":
            s = conn.session
            if s is not None and self.sessions.get(s.agent) is s:
                del self.sessions[s.agent]
            conn.session = None
            conn.send({"type": "logout_ok", **rid})
            conn.close()
            return None
        if kind == "admin":
            return self._admin(req)
        return P.error("unknown_type", req)

    async def _login(self, conn: Connection, req: dict[str, Any]) -> dict[str, Any]:
        token = req["token"]
        if not isinstance(token, str):
            raise TypeError("token must be a string")
        try:
            claims = auth.verify(self.secret, token)
        except auth.TokenError as err:
            return P.error(err.code, req)
        if claims["site"] != self.site:
            return P.error("wrong_site", req)
        nbf = claims.get("nbf")
        if isinstance(nbf, int | float) and time.time() < nbf:
            # The UL could not confirm that the old site dropped the agent: wait for its lease.
            return P.error("not_yet", req, retry_after=round(nbf - time.time(), 3))
        agent, epoch = str(claims["agent"]), int(claims["epoch"])
        if req.get("agent", agent) != agent:
            return P.error("token_invalid", req, detail="agent does not match the token")
        checked = True
        if self.ul_url:
            cur = await self._epochs.get(agent) if self._epochs is not None else None
            if cur is None:
                checked = False  # UL unreachable: the offline check stands; the sweep checks later
            elif not cur.get("known"):
                return P.error("unknown_session", req)
            elif cur["epoch"] > epoch or cur["site"] != self.site or cur["status"] != "active":
                return P.error("fenced", req, current_epoch=cur["epoch"], current_site=cur["site"])
            elif not cur.get("reconciled", True) and float(claims.get("iat", 0)) < cur.get("started", 0):
                return P.error("reconciling", req)
        old = self.sessions.get(agent)
        if old is not None:
            if old.epoch > epoch:
                return P.error("fenced", req, current_epoch=old.epoch, current_site=self.site)
            if old.conn is not conn:
                old.conn.session = None
                old.conn.send({"type": "event", "event": "replaced", "epoch": epoch})
                old.conn.close()
        prev = conn.session
        if prev is not None and prev.agent != agent and self.sessions.get(prev.agent) is prev:
            del self.sessions[prev.agent]
        s = Session(agent, str(claims.get("ext", "")), epoch, conn, epoch_checked=checked)
        if old is not None and old.epoch == epoch:
            s.state, s.since = old.state, old.since
        s.phone = self.phone_state(s.extension)
        conn.session = s
        self.sessions[agent] = s
        self._by_ext[s.extension] = [*self._sessions_of(s.extension), s]
        return {
            "type": "login_ok",
            "agent": agent,
            "site": self.site,
            "epoch": epoch,
            "extension": s.extension,
            "state": s.state,
            "pbx_link": self.link_state(),
            "epoch_checked": checked,
            "lease": self.lease,
            **({"id": req["id"]} if "id" in req else {}),
        }

    async def _link(self, conn: Connection, req: dict[str, Any]) -> dict[str, Any]:
        s = conn.session
        if s is None:
            return P.error("not_logged_in", req)
        ext = req.get("extension", s.extension)
        if ext != s.extension:
            return P.error("wrong_extension", req)
        if not self.pbx.rpc_url:
            return P.error("pbx_unreachable", req)
        if self.pbx.says_registered(ext):
            # The PBX pushed this registration: nothing to ask it (a storm of lookups queues behind the
            # dumps in Kamailio's HTTP workers). Silence or "not registered" is still asked: events are
            # hints, and the one announcing this phone may be the one that was lost.
            s.linked, s.phone = True, "registered"
            return {"type": "link_ok", "extension": ext, **({"id": req["id"]} if "id" in req else {})}
        try:
            ok = await self.pbx.lookup(ext)
        except PbxUnreachable as err:
            return P.error("pbx_unreachable", req, detail=str(err)[:200])
        if not ok:
            return P.error("phone_not_registered", req)
        if conn.session is not s:  # fenced or replaced while we asked the PBX
            return P.error("fenced", req)
        s.linked, s.phone = True, "registered"
        # The bulk view may lag the direct lookup by a dump or two; do not report a fresh link as lost.
        self.pbx.confirm(ext)
        return {"type": "link_ok", "extension": ext, **({"id": req["id"]} if "id" in req else {})}

    def _admin(self, req: dict[str, Any]) -> dict[str, Any]:
        if not auth.check_message(self.secret, req):
            return P.error("forbidden", req)
        op = req["op"]
        rid = {"id": req["id"]} if "id" in req else {}
        if op == "switch_order":
            target, rule = str(req["target"]), req.get("rule")
            n = 0
            for agent in req["agents"]:
                s = self.sessions.get(agent)
                if s is not None:
                    s.conn.send({"type": "event", "event": "switch_ordered", "target": target, "rule": rule})
                    n += 1
            return {"type": "admin_ok", "op": op, "delivered": n, **rid}
        if op == "fence":
            ext = req.get("extension")
            done = self.fence(str(req["agent"]), int(req["epoch"]), str(req["site"]), ext and str(ext))
            return {"type": "admin_ok", "op": op, "fenced": done, **rid}
        return P.error("bad_request", req, detail="unknown admin op")
