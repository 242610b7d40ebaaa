"""The agent client: design login steps 1-6, the watch of Client-CTI-PBX-phone (7) and the confirmed,
automatic failover (8), plus planned switches ordered through the CTI.

Why it is built this way:
- Every dependency is injected (UL API, CTI connector, SIP OPTIONS probe, phone control, clock-driven
  timers), so each branch of the flow is unit-tested with in-process fakes and the swarm runs thousands
  of clients in one event loop.
- A break seen on the watched chain (missed heartbeats, a CTI event, the CTI's report of its PBX link or
  of the phone's registration, the phone's own state) never moves the agent by itself: after
  ``confirm_delay`` the client re-checks through independent paths (a fresh CTI connection, a SIP
  OPTIONS to the PBX, the phone's status) and fails over only if one of them still shows the break. A
  blip shorter than the confirmation moves nobody.
- No automatic failback: once at the other site the agent stays there until a planned switch moves it.
- Every state change is one structured event with a monotonic timestamp (stack.common.eventlog).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from stack.common import fastjson, sipping
from stack.common.eventlog import EventLog
from stack.cti.client import CtiConnection, CtiError
from stack.phone.control import PhoneControl


@dataclass
class Timers:
    """Every timer of the client, in seconds (all configurable, defaults from the design brief)."""

    heartbeat: float = 1.0
    heartbeat_misses: int = 3
    confirm_delay: float = 1.0
    confirm_timeout: float = 1.0
    ul_health_timeout: float = 0.5
    ul_timeout: float = 3.0
    cti_timeout: float = 2.0
    phone_timeout: float = 6.0
    link_attempts: int = 6
    link_retry: float = 0.25
    retry_delay: float = 2.0
    jitter: float = 1.0


class UlUnavailable(Exception):
    """The UL could not be reached or answered with a server error."""


class UlRefused(Exception):
    """The UL refused the agent (bad credentials, unknown agent)."""


class UlHttp:
    """The UL API over HTTP (aiohttp), shared by every client of a process."""

    def __init__(self, session: aiohttp.ClientSession | None = None, health_ttl: float = 1.0) -> None:
        self._session = session
        # One health check per UL per ``health_ttl`` for the whole process, shared by every client: in a
        # storm of thousands of logins the UL sees one probe, not thousands.
        self.health_ttl = health_ttl
        self._health: dict[str, tuple[float, asyncio.Future[bool]]] = {}
        # When a UL last answered anything (a login reply counts): a UL that answered a moment ago is up,
        # whatever one slow health probe says. Without this, one probe timing out under a login storm
        # (the UL busy, or this process's loop late) sent every agent that asked within ``health_ttl``
        # to the remote UL: 536 of 10,000 agents started at the wrong site (bench/bench_failover.py).
        self._answered: dict[str, float] = {}

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=256), json_serialize=fastjson.dumps
            )
        return self._session

    async def health(self, url: str, timeout: float) -> bool:
        now = time.monotonic()
        if now - self._answered.get(url, -1e9) < self.health_ttl:
            return True
        cached = self._health.get(url)
        if cached is not None and (not cached[1].done() or now - cached[0] < self.health_ttl):
            return await asyncio.shield(cached[1])
        fut = asyncio.ensure_future(self._probe(url, timeout))
        self._health[url] = (now, fut)
        return await asyncio.shield(fut)

    async def _probe(self, url: str, timeout: float) -> bool:
        # A timeout is asked once more with twice the time before the UL counts as down: a refused
        # connection or a 5xx answers at once, so a dead UL costs no more; a merely busy one is not
        # taken for dead.
        for limit in (timeout, 2 * timeout):
            try:
                async with self._http().get(
                    url + "/v1/health", timeout=aiohttp.ClientTimeout(total=limit)
                ) as r:
                    if r.status == 200:
                        self._answered[url] = time.monotonic()
                        return True
                    return False
            except TimeoutError:
                continue
            except (aiohttp.ClientError, OSError):
                return False
        return False

    async def login(
        self,
        url: str,
        agent: str,
        password: str,
        avoid: list[str],
        timeout: float,
        left: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"agent": agent, "password": password, "avoid": avoid}
        if left:
            body["left"] = left  # {site, seconds}: how long since this client last sent the old CTI anything
        try:
            async with self._http().post(
                url + "/v1/login", json=body, timeout=aiohttp.ClientTimeout(total=timeout)
            ) as r:
                reply = await r.json(content_type=None, loads=fastjson.loads)
                if r.status < 500:
                    self._answered[url] = time.monotonic()
                if r.status in (400, 401, 403, 404):
                    raise UlRefused(f"{r.status} {reply}")
                if r.status != 200:
                    raise UlUnavailable(f"{r.status} {reply}")
                return reply
        except (TimeoutError, aiohttp.ClientError, OSError, ValueError) as err:
            raise UlUnavailable(str(err) or type(err).__name__) from None

    async def logout(self, url: str, token: str, timeout: float) -> None:
        """Best effort: tell the UL the session ended (a dead UL learns it from the next login)."""
        try:
            limit = aiohttp.ClientTimeout(total=timeout)
            async with self._http().post(url + "/v1/logout", json={"token": token}, timeout=limit):
                pass
        except (TimeoutError, aiohttp.ClientError, OSError):
            pass

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


class TokenBucket:
    """Paces UL logins of a whole process (a failover storm must not flatten the surviving site).

    A reservation scheduler (GCRA): each caller books the next free slot (``1/rate`` apart, ``burst`` of
    them free at once) and sleeps until it, all callers concurrently. The earlier version handed tokens
    out one at a time under an asyncio.Lock, one event-loop iteration per grant, so a loop busy with
    10,000 agents (iterations of 10 ms and more) granted about 100 logins per second whatever the rate
    said: 5,000 agents took 49 s to log in at a nominal 200/s (bench/bench_failover.py, 10,000 agents).
    """

    def __init__(self, rate: float, burst: float) -> None:
        self.rate, self.burst = rate, burst
        self.tat = time.monotonic()  # theoretical arrival time of the next caller
        self.granted = 0

    @property
    def tokens(self) -> float:
        """Logins that may start now without waiting (for views and tests)."""
        now = time.monotonic()
        return min(self.burst, max(0.0, self.burst - (self.tat - now) * self.rate))

    async def acquire(self) -> None:
        now = time.monotonic()
        interval = 1.0 / self.rate
        slot = max(self.tat, now)
        self.tat = slot + interval
        self.granted += 1
        delay = slot - now - (self.burst - 1) * interval
        if delay > 0:
            await asyncio.sleep(delay)


def _done(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


CtiOpen = Callable[..., Awaitable[Any]]
SipOptions = Callable[[str, int, float], Awaitable[int | None]]
CtiLink = Callable[[str, int, float], Awaitable[bool]]  # the CTI says its PBX link is up


@dataclass
class Trouble:
    """Why the watch ended: a break to confirm, an ordered switch, a fence, or a stop."""

    kind: str  # "broken" | "switch" | "fenced" | "stop"
    reason: str
    target: str | None = None


class AgentClient:
    """One agent's client; :meth:`run` is its whole life (login, watch, confirm, fail over, repeat)."""

    def __init__(
        self,
        agent: str,
        password: str,
        extension: str,
        home: str,
        uls: dict[str, str],
        phone: PhoneControl,
        *,
        timers: Timers | None = None,
        events: EventLog | None = None,
        ul_api: Any = None,
        cti_open: CtiOpen | None = None,
        sip_options: SipOptions | None = None,
        cti_link: CtiLink | None = None,
        pacer: TokenBucket | None = None,
        initial_state: str = "ready",
    ) -> None:
        self.agent, self.password, self.extension, self.home = agent, password, extension, home
        self.uls = {site: url.rstrip("/") for site, url in uls.items()}
        self.phone = phone
        self.t = timers or Timers()
        self.events = events or EventLog(size=1000)
        self.ul = ul_api or UlHttp()
        self.cti_open: CtiOpen = cti_open or CtiConnection.open
        self.sip_options: SipOptions = sip_options or sipping.options
        self.cti_link = cti_link
        self.pacer = pacer
        self.phase = "offline"
        self.site: str | None = None
        self.reg: dict[str, Any] | None = None
        self.conn: Any = None
        self.state = "not_ready"
        self.wanted = initial_state  # the state to hold (and restore after a move): ready or not_ready
        self.on_call = False
        self.pending_switch: str | None = None
        self.failovers = 0
        self.switches = 0
        self.transitions: dict[str, float] = {}
        self.last_change = 0.0
        self._gen = 0
        self._trouble: Trouble | None = None
        self._wake = asyncio.Event()
        self._waiter: asyncio.Future[None] | None = None
        self._attach_error: str | None = None  # the CTI error code of the last failed attach
        self._last_reg: dict[str, Any] | None = None  # the UL's reply of the last _login_at
        self._task: asyncio.Task[None] | None = None
        self._sent_at: float | None = None  # monotonic: last message sent to the current CTI session
        self._left: tuple[str, float] | None = None  # (site, _sent_at there) of the session left behind
        self._leaving: asyncio.Future[None] | None = None  # the logout from the CTI being left
        self._not_before: tuple[str, float] = ("", 0.0)  # (token, monotonic) the UL asked us to wait for

    # ---- bookkeeping --------------------------------------------------------------------------------

    def _emit(self, event: str, **fields: Any) -> None:
        self.events.emit(event, agent=self.agent, site=self.site, **fields)

    def _set_phase(self, phase: str, **why: Any) -> None:
        if phase != self.phase:
            self.phase = phase
            self.last_change = time.monotonic()
            self.transitions[phase] = time.time()
            self._emit("phase", phase=phase, **why)

    def other(self, site: str | None) -> str:
        """The remote site relative to ``site``."""
        rest = [s for s in self.uls if s != site]
        return rest[0] if rest else (site or self.home)

    def view(self) -> dict[str, Any]:
        reg = self.reg or {}
        return {
            "agent": self.agent,
            "extension": self.extension,
            "home": self.home,
            "phase": self.phase,
            "site": self.site,
            "pbx": reg.get("pbx"),
            "cti": reg.get("cti"),
            "epoch": reg.get("epoch"),
            "state": self.state,
            "on_call": self.on_call,
            "failovers": self.failovers,
            "switches": self.switches,
            "transitions": self.transitions,
            "last_change_mono": self.last_change,
        }

    # ---- life ---------------------------------------------------------------------------------------

    def start(self) -> asyncio.Task[None]:
        self._task = asyncio.create_task(self.run(), name=f"agent-{self.agent}")
        return self._task

    async def stop(self, logout: bool = True) -> None:
        self._raise(Trouble("stop", "stopped"))
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.conn is not None:
            await self.conn.close(logout=logout)
            self.conn = None
        if logout and self.reg is not None and self.site in self.uls:
            await self.ul.logout(self.uls[self.site], self.reg["token"], self.t.ul_health_timeout)
        self._set_phase("offline", reason="stopped")

    async def run(self) -> None:
        """Log in, then watch; on trouble confirm, and fail over or switch, forever."""
        if self.t.jitter:
            await asyncio.sleep(random.uniform(0, self.t.jitter))
        while not await self.login_flow(self.home, []):
            await asyncio.sleep(self.t.retry_delay)
        while True:
            trouble = await self.watch()
            if trouble.kind == "stop":
                return
            if trouble.kind == "fenced":
                # Someone logged this agent in elsewhere: never fight over it (no ping-pong).
                self._set_phase("fenced", reason=trouble.reason)
                return
            if trouble.kind == "switch":
                await self.move(planned=True, target=trouble.target)
                continue
            if await self.confirm(trouble):
                await self.move(planned=False)

    # ---- design steps 1-6 ---------------------------------------------------------------------------

    async def _ul_login(self, site: str, avoid: list[str]) -> dict[str, Any]:
        if self.pacer is not None:
            await self.pacer.acquire()
        self._emit("ul_login", ul=site, avoid=avoid)
        left = None
        if self._left is not None:
            left = {"site": self._left[0], "seconds": round(time.monotonic() - self._left[1], 3)}
        if left is None:
            reg = await self.ul.login(self.uls[site], self.agent, self.password, avoid, self.t.ul_timeout)
        else:
            reg = await self.ul.login(
                self.uls[site], self.agent, self.password, avoid, self.t.ul_timeout, left=left
            )
        hold = float(reg.get("hold") or 0.0)
        if hold > 0:  # the old site's drop is unconfirmed: its lease must run out first
            self._not_before = (str(reg.get("token")), time.monotonic() + hold)
        self._emit(
            "ul_reply",
            ul=site,
            at=reg.get("site"),
            via=reg.get("via"),
            epoch=reg.get("epoch"),
            rule=reg.get("rule"),
            note=reg.get("note"),
        )
        return reg

    async def login_flow(self, local: str, avoid: list[str]) -> bool:
        """Design steps 1-6 starting at UL ``local``; True once registered at a CTI with the phone linked."""
        self._set_phase("logging_in", ul=local)  # step 1
        remote = self.other(local)
        reg = None
        if not await self.ul.health(self.uls[local], self.t.ul_health_timeout):  # step 2
            self._emit("ul_unavailable", ul=local)
            with contextlib.suppress(UlUnavailable, UlRefused):
                reg = await self._ul_login(remote, avoid)
        else:
            try:
                reg = await self._ul_login(local, avoid)  # step 3 (step 4 happens in the UL)
            except UlUnavailable as err:
                self._emit("ul_unavailable", ul=local, error=str(err))
                with contextlib.suppress(UlUnavailable, UlRefused):
                    reg = await self._ul_login(remote, avoid)
            except UlRefused as err:
                self._emit("ul_refused", ul=local, error=str(err))
        if reg is None:
            self._set_phase("login_failed", reason="no UL")
            return False
        if await self.attach(reg):  # step 5
            return True
        # Step 6: CTI registration or phone linkage failed: log in again at the remote UL.
        failed = reg["site"]
        again = self.other(failed)
        try:
            reg2 = await self._ul_login(again, [failed])
        except (UlUnavailable, UlRefused) as err:
            self._emit("ul_unavailable", ul=again, error=str(err))
            self._set_phase("login_failed", reason="step 6: remote UL unavailable")
            return False
        if await self.attach(reg2):
            return True
        self._set_phase("login_failed", reason="step 6: remote attach failed")
        return False

    async def attach(self, reg: dict[str, Any]) -> bool:
        """Design step 5: register at the CTI with the token, put the phone on that site's PBX, link it,
        restore the agent's state. Break before make: a session at another site is left (logged out)
        first; the same site's session is replaced atomically by the login with the same token."""
        cti, pbx = reg["cti"], reg["pbx"]
        if self.conn is not None and self.site != reg["site"]:
            self.leave()
        if self._leaving is not None:
            await self._leaving
        token, until = self._not_before
        if token == reg["token"] and until > time.monotonic():
            self._emit("hold", at=reg["site"], seconds=round(until - time.monotonic(), 3))
            await asyncio.sleep(until - time.monotonic())
        self._gen += 1
        gen = self._gen
        try:
            conn = await self.cti_open(
                cti["host"],
                int(cti["port"]),
                timeout=self.t.cti_timeout,
                on_event=functools.partial(self._on_event, gen),
                on_close=functools.partial(self._on_close, gen),
            )
        except CtiError as err:
            self._emit("cti_refused", at=reg["site"], code=err.code)
            self._attach_error = err.code
            return False
        try:
            login = {"type": "login", "agent": self.agent, "token": reg["token"]}
            for _ in range(3):
                try:
                    await self._request(conn, login)
                    break
                except CtiError as err:  # the UL's hold, by the CTI's clock: wait as it says
                    if err.code != "not_yet" or not isinstance(err.reply, dict):
                        raise
                    await asyncio.sleep(min(5.0, float(err.reply.get("retry_after") or 0.1)))
            self._emit("cti_login", at=reg["site"], epoch=reg["epoch"])
            if not await self._keepalive(conn, self._phone_to(pbx["host"], int(pbx["port"]))):
                self._emit("phone_move_failed", at=reg["site"], pbx=pbx)
                await conn.close(logout=True)
                return False
            await self._link(conn)
            self._emit("phone_linked", at=reg["site"])
            want = "on_call" if self.on_call else self.wanted
            await self._request(conn, {"type": "set_state", "state": want})
            self.state = want
        except CtiError as err:
            self._emit("cti_refused", at=reg["site"], code=err.code)
            self._attach_error = err.code
            await conn.close(logout=True)
            return False
        old, self.conn = self.conn, conn
        self.reg, self.site = reg, reg["site"]
        self._left = None
        self._trouble = None
        self._wake.clear()
        if old is not None:
            asyncio.ensure_future(old.close(logout=True))
        self._set_phase("online", at=self.site, epoch=reg["epoch"], via=reg.get("via"), state=self.state)
        return True

    def leave(self) -> None:
        """Leave the current CTI session (logout, in the background; :meth:`attach` waits for it): what
        the UL is told of the silence there (``left``) counts from the last message sent to it."""
        conn, self.conn = self.conn, None
        if conn is None:
            return
        self._gen += 1  # its events and its close are no longer ours
        if self.site is not None:
            self._left = (self.site, self._sent_at if self._sent_at is not None else time.monotonic())
        self._emit("cti_leave", left=self.site)
        fut = asyncio.ensure_future(conn.close(logout=True))
        self._leaving = fut

        def _gone(_: asyncio.Future[None]) -> None:
            if self._leaving is fut:
                self._leaving = None

        fut.add_done_callback(_gone)

    async def _request(self, conn: Any, msg: dict[str, Any], timeout: float | None = None) -> dict[str, Any]:
        """A request on a CTI session, stamped with the send time (``t``: the CTI does not let a late
        message renew the lease) and remembered as the last thing sent there."""
        now = time.monotonic()
        self._sent_at = now
        return await conn.request({**msg, "t": int(now * 1000)}, timeout or self.t.cti_timeout)

    async def _keepalive(self, conn: Any, work: Awaitable[bool]) -> bool:
        """Await ``work`` (the phone move), heartbeating ``conn`` meanwhile so its lease holds."""
        task = asyncio.ensure_future(work)
        while True:
            done, _ = await asyncio.wait({task}, timeout=self.t.heartbeat)
            if done:
                return task.result()
            with contextlib.suppress(CtiError):
                await self._heartbeat(conn)

    async def _heartbeat(self, conn: Any) -> dict[str, Any]:
        """One heartbeat on ``conn`` (seq: the send time in ms), answered within a heartbeat interval."""
        beat = {"type": "heartbeat", "seq": int(time.monotonic() * 1000)}
        return await self._request(conn, beat, self.t.heartbeat)

    async def _phone_to(self, host: str, port: int) -> bool:
        reg = await self.phone.registration()
        if reg.get("registered") and reg.get("host") == host and int(reg.get("port") or 0) == port:
            return True
        self._emit("phone_move", to=f"{host}:{port}")
        try:
            return bool(await asyncio.wait_for(self.phone.set_server(host, port), self.t.phone_timeout))
        except TimeoutError:
            return False

    async def _link(self, conn: Any) -> None:
        for i in range(self.t.link_attempts):
            try:
                await self._request(conn, {"type": "link_phone", "extension": self.extension})
                return
            except CtiError as err:
                if err.code != "phone_not_registered" or i == self.t.link_attempts - 1:
                    raise
                await asyncio.sleep(self.t.link_retry)

    # ---- design step 7: the watch -------------------------------------------------------------------

    def _raise(self, trouble: Trouble) -> None:
        if self._trouble is None or trouble.kind in ("stop", "fenced"):
            self._trouble = trouble
        self._wake.set()
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _on_event(self, gen: int, msg: dict[str, Any]) -> None:
        if gen != self._gen:
            return  # an event from a connection we already left
        ev = msg.get("event")
        detail = {k: v for k, v in msg.items() if k not in ("type", "event")}
        self._emit("cti_event", cti_event=ev, detail=detail)
        if ev in ("pbx_link_down", "phone_unregistered"):
            self._raise(Trouble("broken", str(ev)))
        elif ev == "switch_ordered":
            target = str(msg.get("target"))
            if target != self.site:
                self.pending_switch = target
                if not self.on_call:
                    self._raise(Trouble("switch", "switch_ordered", target))
        elif ev in ("fenced", "replaced"):
            self._raise(Trouble("fenced", str(ev)))

    def _on_close(self, gen: int) -> None:
        if gen == self._gen:
            self._raise(Trouble("broken", "cti_disconnected"))

    async def watch(self) -> Trouble:
        """Heartbeat the CTI, read its view of PBX and phone, read the phone; return the first trouble."""
        self._set_phase("online", at=self.site)
        misses = 0
        while True:
            if self._trouble is not None:
                t, self._trouble = self._trouble, None
                return t
            t0 = time.monotonic()
            try:
                ack = await self._heartbeat(self.conn)
                misses = 0
                if ack.get("pbx_link") == "down":
                    self._raise(Trouble("broken", "pbx_link_down"))
                elif ack.get("phone") == "unregistered":
                    self._raise(Trouble("broken", "phone_unregistered"))
            except CtiError as err:
                if err.code == "disconnected":
                    self._raise(Trouble("broken", "cti_disconnected"))
                elif err.code == "timeout":
                    misses += 1
                    self._emit("heartbeat_missed", misses=misses)
                    if misses >= self.t.heartbeat_misses:
                        self._raise(Trouble("broken", "heartbeats_missed"))
                else:
                    self._raise(Trouble("broken", f"heartbeat_{err.code}"))
            await self._check_phone()
            if self._trouble is not None:
                continue
            left = self.t.heartbeat - (time.monotonic() - t0)
            if left > 0:
                await self._pause(left)
                self._wake.clear()

    async def _pause(self, seconds: float) -> None:
        """Sleep until the next heartbeat, or until trouble is raised (a timer on one future, not
        asyncio.wait_for on Event.wait(): two tasks fewer per agent per heartbeat)."""
        if self._wake.is_set():
            return
        loop = asyncio.get_running_loop()
        self._waiter = fut = loop.create_future()
        timer = loop.call_later(seconds, _done, fut)
        try:
            await fut
        finally:
            timer.cancel()
            self._waiter = None

    async def _check_phone(self) -> None:
        reg = await self.phone.registration()
        in_call = reg.get("call_state") == "in_call"
        if in_call != self.on_call:
            await self._call_changed(in_call)
        if not reg.get("registered"):
            self._raise(Trouble("broken", "phone_not_registered"))

    async def _call_changed(self, in_call: bool) -> None:
        self.on_call = in_call
        want = "on_call" if in_call else self.wanted
        self._emit("call", in_call=in_call)
        with contextlib.suppress(CtiError, AttributeError):
            await self._request(self.conn, {"type": "set_state", "state": want})
            self.state = want
        if not in_call and self.pending_switch and self.pending_switch != self.site:
            self._raise(Trouble("switch", "switch_after_call", self.pending_switch))

    async def set_state(self, state: str) -> None:
        """The agent chooses ready or not_ready (kept across moves)."""
        if state not in ("ready", "not_ready"):
            raise ValueError("state is ready or not_ready")
        self.wanted = state
        if self.conn is not None and not self.on_call:
            await self._request(self.conn, {"type": "set_state", "state": state})
            self.state = state
            self._emit("state", state=state)

    # ---- design step 8: secondary confirmation and failover -----------------------------------------

    async def confirm(self, trouble: Trouble) -> bool:
        """Re-check through independent paths after ``confirm_delay``; True when the break is real."""
        self._set_phase("confirming", reason=trouble.reason)
        await asyncio.sleep(self.t.confirm_delay)
        reg = self.reg or {}
        cti, pbx = reg.get("cti", {}), reg.get("pbx", {})
        cti_ok, sip_ok, phone_ok = await self._recheck(cti, pbx)
        broken = not (cti_ok and sip_ok and phone_ok)
        self._emit("confirm", reason=trouble.reason, cti=cti_ok, sip=sip_ok, phone=phone_ok, broken=broken)
        if broken:
            return True
        # A blip: keep the agent where it is; a lost CTI connection is re-opened with the same token.
        lost = trouble.reason in ("heartbeats_missed", "cti_disconnected", "heartbeat_not_logged_in")
        if self.conn is None or self.conn.closed or lost:
            if not await self.attach(reg):
                self._emit("reattach_failed")
                return True
        self._set_phase("online", at=self.site, blip=trouble.reason)
        return False

    async def _recheck(
        self, cti: dict[str, Any], pbx: dict[str, Any]
    ) -> tuple[bool | None, bool | None, bool | None]:
        """The three independent checks (CTI, SIP OPTIONS, phone); the first that shows the break
        confirms it, and the others are not waited for (None). A dead PBX's OPTIONS only times out
        (``confirm_timeout``), while the CTI says "down" at once: waiting for all three added a second
        to every failover of a cut PBX link (bench/bench_failover.py --fault pbx-port)."""
        phone_ok = await self._phone_ok(pbx.get("host"), pbx.get("port"))  # local, no I/O
        if not phone_ok:
            return None, None, False
        checks = {
            asyncio.ensure_future(self._cti_status(cti.get("host"), cti.get("port"))): "cti",
            asyncio.ensure_future(self._sip_ok(pbx.get("host"), pbx.get("port"))): "sip",
        }
        got: dict[str, bool | None] = {"cti": None, "sip": None}
        pending = set(checks)
        try:
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for t in done:
                    got[checks[t]] = bool(t.result())
                if any(v is False for v in got.values()):
                    break
        finally:
            for t in pending:
                t.cancel()
        return got["cti"], got["sip"], phone_ok

    async def _cti_status(self, host: str | None, port: int | None) -> bool:
        if not host or not port:
            return False
        if self.cti_link is not None and not await self.cti_link(host, int(port), self.t.confirm_timeout):
            return False  # the CTI is gone or says its PBX link is down: the same for every agent there
        try:
            conn = await self.cti_open(host, int(port), timeout=self.t.confirm_timeout)
        except CtiError:
            return False
        try:
            st = await conn.request({"type": "status", "extension": self.extension}, self.t.confirm_timeout)
            return st.get("pbx_link") == "up" and st.get("phone") == "registered"
        except CtiError:
            return False
        finally:
            await conn.close()

    async def _sip_ok(self, host: str | None, port: int | None) -> bool:
        if not host or not port:
            return False
        return await self.sip_options(host, int(port), self.t.confirm_timeout) == 200

    async def _phone_ok(self, host: str | None, port: int | None) -> bool:
        reg = await self.phone.registration()
        return bool(reg.get("registered")) and reg.get("host") == host and int(reg.get("port") or 0) == port

    async def move(self, planned: bool, target: str | None = None) -> None:
        """Fail over (confirmed break) or switch (ordered) to the other site; retry until it works."""
        old = self.site
        self._set_phase("switching" if planned else "failing_over", from_site=old, target=target)
        t0 = time.monotonic()
        self.leave()  # break before make: the old site's session ends before any login elsewhere
        # Unplanned: 0 = the other site's UL, 1 = the old site's UL (it asks its peer), 2 = the full login
        # flow from home (maybe the old site is the healthy one after all). A site whose UL answered but
        # whose CTI only timed out is busy, not broken: the same registration (token) is tried there again,
        # twice at most, before the next step. Going round at once sent agents that the surviving CTI
        # could not answer within 2 s back to the site they had just left, where the PBX was dead: at
        # 10,000 agents half of the attempts were such round trips (6 s phone timeouts, a new epoch and a
        # fence each).
        step = busy = 0
        busy_reg: dict[str, Any] | None = None
        while True:
            self._attach_error = None
            if planned:
                ok = await self.login_flow(self.home, [])
            elif busy_reg is not None:
                # The same registration again: no new UL login, so no new epoch and no fence of the
                # session just made (each of which costs the busy site more).
                ok = await self.attach(busy_reg)
            elif step == 0:
                ok = await self._login_at(self.other(old), [old] if old else [])
            elif step == 1:
                ok = await self._login_at(old or self.home, [old] if old else [])
            else:
                ok = await self.login_flow(self.home, [])
            if ok:
                break
            if step == 0 and self._attach_error == "timeout" and busy < 2 and self._last_reg is not None:
                busy += 1
                busy_reg = self._last_reg
            else:
                step, busy, busy_reg = (step + 1) % 3, 0, None
            await asyncio.sleep(self.t.retry_delay * random.uniform(0.75, 1.25))
        if planned:
            self.switches += 1
            self.pending_switch = None
        elif self.site != old:
            self.failovers += 1
        took = round(time.monotonic() - t0, 3)
        self._emit("moved", planned=planned, from_site=old, to=self.site, seconds=took)

    async def _login_at(self, ul_site: str, avoid: list[str]) -> bool:
        self._set_phase("logging_in", ul=ul_site, avoid=avoid)
        try:
            reg = await self._ul_login(ul_site, avoid)
        except (UlUnavailable, UlRefused) as err:
            self._emit("ul_unavailable", ul=ul_site, error=str(err))
            self._last_reg = None
            return False
        self._last_reg = reg
        return await self.attach(reg)
