"""Design steps 1-6: the agent client logs in through a UL, registers at the CTI and links its phone.

Why it is built this way: a local UL that is down or fails sends the login to the remote UL (steps 2-3);
a CTI registration or phone linkage that fails logs in again at the remote UL (step 6). Moving between
sites is break before make: the session at the old site is logged out before any login elsewhere, and the
UL is told how long the client has been silent there, so it can say how long to wait (``hold``).
A UL that cannot take the login now defers it (429, stack/login/admission.py): the client waits as told,
with a little jitter, and asks again with its ticket; a deferral is neither a failure nor a refusal, so it
never sends the agent to the other site.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
import time
from collections.abc import Awaitable
from typing import Any

from stack.agent.state import AgentState
from stack.agent.ulapi import UlDeferred, UlRefused, UlUnavailable
from stack.cti.client import CtiError

# A UL that defers one login for longer than this is taken as unavailable (a broken UL that answers 429
# for ever must not hold its agents): the flow then goes on as for a UL that does not answer.
MAX_DEFERRAL_S = 120.0


def jittered(wait: float) -> float:
    """A deferral's wait plus up to a tenth of it (10 ms at least, 0.25 s at most), never less: agents
    told the same moment do not come back in one burst, and none comes before its number is called."""
    return wait + random.uniform(0.0, min(0.25, max(0.01, wait / 10)))


class LoginFlow(AgentState):
    """Login at a UL, attach to the CTI it names (phone moved and linked), and leaving a CTI session."""

    deferrals = 0  # logins the UL deferred (429) and this client waited out: never counted as failures

    async def _ul_login(self, site: str, avoid: list[str]) -> dict[str, Any]:
        if self.pacer is not None:
            await self.pacer.acquire()
        self._emit("ul_login", ul=site, avoid=avoid)
        reg = await self._admitted(site, avoid)
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

    async def _admitted(self, site: str, avoid: list[str]) -> dict[str, Any]:
        """The UL's login reply once it admits the login: each deferral waited out as told (jittered),
        then asked again with the ticket (and a fresh deadline, stack/agent/ulapi.py)."""
        t0 = time.monotonic()
        ticket: int | None = None
        while True:
            extra: dict[str, Any] = {}
            if self._left is not None:  # counted again each time: the silence there goes on while deferred
                extra["left"] = {"site": self._left[0], "seconds": round(time.monotonic() - self._left[1], 3)}
            if ticket is not None:
                extra["ticket"] = ticket
            try:
                return await self.ul.login(
                    self.uls[site], self.agent, self.password, avoid, self.t.ul_timeout, **extra
                )
            except UlDeferred as d:
                self.deferrals += 1
                waited = round(time.monotonic() - t0, 3)
                self._emit("ul_deferred", ul=site, retry_after=d.retry_after, ticket=d.ticket, waited=waited)
                if waited + d.retry_after > MAX_DEFERRAL_S:
                    raise UlUnavailable(f"deferred for {waited:.0f} s") from None
                await asyncio.sleep(jittered(d.retry_after))
                ticket = d.ticket if d.ticket is not None else ticket

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
        self._gen_epoch = reg.get("epoch")
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

    async def _keepalive(self, conn: Any, work: Awaitable[bool]) -> bool:
        """Await ``work`` (the phone move), heartbeating ``conn`` meanwhile so its lease holds."""
        task = asyncio.ensure_future(work)
        while True:
            done, _ = await asyncio.wait({task}, timeout=self.t.heartbeat)
            if done:
                return task.result()
            with contextlib.suppress(CtiError):
                await self._heartbeat(conn)

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
