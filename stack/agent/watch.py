"""Design step 7: the agent client watches the chain Client - CTI - PBX - IP phone.

Why it is built this way: a break seen on the chain (missed heartbeats, a CTI event, the CTI's report of
its PBX link or of the phone's registration, the phone's own state) never moves the agent by itself: it is
raised as trouble, and the caller confirms it first (stack/agent/failover.py). Between heartbeats the
watch sleeps on one future that trouble wakes (no task per agent per heartbeat).

A heartbeat's answer is waited for ``Timers.heartbeat_timeout``, a little longer than the interval, and
one miss raises the break: a CTI that only goes silent (its port cut, blackholed, hung) resets nothing, so
silence is all the client can go by, and this wait is the confirmation's delay as well (a break shorter
than it moves nobody). Three misses of a second each, then a second's delay, made a cut CTI take 5 s to
confirm (bench/bench_failover.py --fault cti-port) where a killed one took 1 s. Waiting on the same
request costs nothing more per heartbeat and sends nothing more to a CTI that may only be slow.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from stack.agent.state import AgentState, Trouble
from stack.cti.client import CtiError


def _done(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class Watch(AgentState):
    """The watch of an online agent, and the agent's own state choice (kept across moves)."""

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
                ack = await self._heartbeat(self.conn, self.t.heartbeat_timeout)
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
