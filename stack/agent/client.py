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

from stack.common import sipping
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

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256))
        return self._session

    async def health(self, url: str, timeout: float) -> bool:
        now = time.monotonic()
        cached = self._health.get(url)
        if cached is not None and (not cached[1].done() or now - cached[0] < self.health_ttl):
            return await asyncio.shield(cached[1])
        fut = asyncio.ensure_future(self._probe(url, timeout))
        self._health[url] = (now, fut)
        return await asyncio.shield(fut)

    async def _probe(self, url: str, timeout: float) -> bool:
        try:
            limit = aiohttp.ClientTimeout(total=timeout)
            async with self._http().get(url + "/v1/health", timeout=limit) as r:
                return r.status == 200
        except (TimeoutError, aiohttp.ClientError, OSError):
            return False

    async def login(
        self, url: str, agent: str, password: str, avoid: list[str], timeout: float
    ) -> dict[str, Any]:
        body = {"agent": agent, "password": password, "avoid": avoid}
        try:
            async with self._http().post(
                url + "/v1/login", json=body, timeout=aiohttp.ClientTimeout(total=timeout)
            ) as r:
                reply = await r.json(content_type=None)
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
    """Paces UL logins of a whole process (a failover storm must not flatten the surviving site)."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate, self.burst = rate, burst
        self.tokens = burst
        self.stamp = time.monotonic()
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        async with self._lock:
            while True:
                now = time.monotonic()
                self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
                self.stamp = now
                if self.tokens >= 1:
                    self.tokens -= 1
                    return
                await asyncio.sleep((1 - self.tokens) / self.rate)


CtiOpen = Callable[..., Awaitable[Any]]
SipOptions = Callable[[str, int, float], Awaitable[int | None]]


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
        self._task: asyncio.Task[None] | None = None

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
        reg = await self.ul.login(self.uls[site], self.agent, self.password, avoid, self.t.ul_timeout)
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
        restore the agent's state; then drop the previous CTI connection."""
        cti, pbx = reg["cti"], reg["pbx"]
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
            return False
        try:
            login = {"type": "login", "agent": self.agent, "token": reg["token"]}
            await conn.request(login, self.t.cti_timeout)
            self._emit("cti_login", at=reg["site"], epoch=reg["epoch"])
            if not await self._phone_to(pbx["host"], int(pbx["port"])):
                self._emit("phone_move_failed", at=reg["site"], pbx=pbx)
                await conn.close(logout=True)
                return False
            await self._link(conn)
            self._emit("phone_linked", at=reg["site"])
            want = "on_call" if self.on_call else self.wanted
            await conn.request({"type": "set_state", "state": want}, self.t.cti_timeout)
            self.state = want
        except CtiError as err:
            self._emit("cti_refused", at=reg["site"], code=err.code)
            await conn.close(logout=True)
            return False
        old, self.conn = self.conn, conn
        self.reg, self.site = reg, reg["site"]
        self._trouble = None
        self._wake.clear()
        if old is not None:
            asyncio.ensure_future(old.close(logout=True))
        self._set_phase("online", at=self.site, epoch=reg["epoch"], via=reg.get("via"), state=self.state)
        return True

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
                await conn.request({"type": "link_phone", "extension": self.extension}, self.t.cti_timeout)
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
                ack = await self.conn.request({"type": "heartbeat", "seq": int(t0 * 1000)}, self.t.heartbeat)
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
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), left)
                self._wake.clear()

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
            await self.conn.request({"type": "set_state", "state": want}, self.t.cti_timeout)
            self.state = want
        if not in_call and self.pending_switch and self.pending_switch != self.site:
            self._raise(Trouble("switch", "switch_after_call", self.pending_switch))

    async def set_state(self, state: str) -> None:
        """The agent chooses ready or not_ready (kept across moves)."""
        if state not in ("ready", "not_ready"):
            raise ValueError("state is ready or not_ready")
        self.wanted = state
        if self.conn is not None and not self.on_call:
            await self.conn.request({"type": "set_state", "state": state}, self.t.cti_timeout)
            self.state = state
            self._emit("state", state=state)

    # ---- design step 8: secondary confirmation and failover -----------------------------------------

    async def confirm(self, trouble: Trouble) -> bool:
        """Re-check through independent paths after ``confirm_delay``; True when the break is real."""
        self._set_phase("confirming", reason=trouble.reason)
        await asyncio.sleep(self.t.confirm_delay)
        reg = self.reg or {}
        cti, pbx = reg.get("cti", {}), reg.get("pbx", {})
        cti_ok, sip_ok, phone_ok = await asyncio.gather(
            self._cti_status(cti.get("host"), cti.get("port")),
            self._sip_ok(pbx.get("host"), pbx.get("port")),
            self._phone_ok(pbx.get("host"), pbx.get("port")),
        )
        broken = not (cti_ok and sip_ok and phone_ok)
        self._emit("confirm", reason=trouble.reason, cti=cti_ok, sip=sip_ok, phone=phone_ok, broken=broken)
        if broken:
            return True
        # A blip: keep the agent where it is; a lost CTI connection is re-opened with the same token.
        lost = trouble.reason in ("heartbeats_missed", "cti_disconnected")
        if self.conn is None or self.conn.closed or lost:
            if not await self.attach(reg):
                self._emit("reattach_failed")
                return True
        self._set_phase("online", at=self.site, blip=trouble.reason)
        return False

    async def _cti_status(self, host: str | None, port: int | None) -> bool:
        if not host or not port:
            return False
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
        attempt = 0
        while True:
            attempt += 1
            if planned:
                ok = await self.login_flow(self.home, [])
            elif attempt % 3 == 1:
                ok = await self._login_at(self.other(old), [old] if old else [])
            elif attempt % 3 == 2:
                ok = await self._login_at(old or self.home, [old] if old else [])
            else:
                ok = await self.login_flow(self.home, [])  # maybe the old site is the healthy one after all
            if ok:
                break
            await asyncio.sleep(self.t.retry_delay)
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
            return False
        return await self.attach(reg)
