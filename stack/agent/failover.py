"""Design step 8: the agent client confirms a break on its chain, then fails over to the other site.

Why it is built this way: the client re-checks through independent paths (a fresh CTI connection, a SIP
OPTIONS to the PBX, the phone's status) ``confirm_delay`` after the break was raised, and fails over only
if one of them still shows the break: a blip shorter than the confirmation moves nobody. A break that is
the CTI's silence has had its wait already: the heartbeat's answer was waited for ``heartbeat_timeout``,
longer than a heartbeat interval (stack/agent/watch.py), and a wait on top of it only delayed every
failover from a cut, blackholed or hung CTI. There is no automatic failback: once at the other site the
agent stays there until a planned switch moves it.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from typing import Any

from stack.agent.login import LoginFlow
from stack.agent.state import Trouble
from stack.agent.ulapi import UlRefused, UlUnavailable
from stack.cti.client import CtiError

SILENCE = "heartbeats_missed"  # the CTI's silence: its wait was the heartbeat's own
# Troubles that a lost session explains: a blip of one of them re-attaches (same token, same site).
LOST = (
    SILENCE,
    "cti_disconnected",
    "heartbeat_not_logged_in",
    "replaced_by_own_login",
    "fenced_by_older_login",
)


class Failover(LoginFlow):
    """Secondary confirmation of a break, and the move (unplanned failover or ordered switch)."""

    async def confirm(self, trouble: Trouble) -> bool:
        """Re-check through independent paths after ``confirm_delay`` (at once after the CTI's silence,
        already waited out); True when the break is real."""
        self._set_phase("confirming", reason=trouble.reason)
        if trouble.reason != SILENCE:
            await asyncio.sleep(self.t.confirm_delay)
        reg = self.reg or {}
        cti, pbx = reg.get("cti", {}), reg.get("pbx", {})
        if trouble.reason == "phone_unregistered":
            await self._refresh_phone(pbx.get("host"), pbx.get("port"))
        cti_ok, sip_ok, phone_ok = await self._recheck(cti, pbx)
        broken = not (cti_ok and sip_ok and phone_ok)
        self._emit("confirm", reason=trouble.reason, cti=cti_ok, sip=sip_ok, phone=phone_ok, broken=broken)
        if broken:
            return True
        # A blip: keep the agent where it is; a lost CTI connection is re-opened with the same token.
        if self.conn is None or self.conn.closed or trouble.reason in LOST:
            if not await self.attach(reg):
                self._emit("reattach_failed")
                return True
        self._set_phase("online", at=self.site, blip=trouble.reason)
        return False

    async def _refresh_phone(self, host: str | None, port: int | None) -> None:
        """The CTI says its PBX has no registration for the phone, while the phone says it is registered
        there: the PBX lost it (a restart shorter than the phone's keep-alive: the phone never noticed,
        and without this its agent stayed online with no registration anywhere, scenarios/schedules/
        pbx-restart-unregistered.json). Register again at the same PBX and re-link the phone at the CTI,
        then let the re-check judge: a PBX that is really gone fails it and the agent moves. A phone that
        does not say so is left alone: the re-check finds that break by itself."""
        if not host or not port or self.conn is None or not await self._phone_ok(host, port):
            return
        self._emit("phone_refresh", pbx=f"{host}:{port}")
        # Every phone of a restarted PBX is told at once: spread the REGISTERs a little.
        await asyncio.sleep(random.uniform(0.0, 0.25))
        work = asyncio.ensure_future(self.phone.set_server(host, int(port)))
        done, _ = await asyncio.wait({work}, timeout=self.t.cti_timeout)  # the phone keeps trying after
        if not done or work.exception() is not None or not work.result() or self.conn is None:
            return
        with contextlib.suppress(CtiError):
            await self._link(self.conn)

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
