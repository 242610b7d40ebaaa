"""The agent client: design login steps 1-6, the watch of Client-CTI-PBX-phone (7) and the confirmed,
automatic failover (8), plus planned switches ordered through the CTI.

Why it is built this way:
- Every dependency is injected (stack/agent/state.py), so each branch of the flow is unit-tested with
  in-process fakes and the swarm runs thousands of clients in one event loop.
- Each design step lives in a module of its own: login (stack/agent/login.py), the watch
  (stack/agent/watch.py), secondary confirmation and failover (stack/agent/failover.py); this class puts
  them together into the agent's life.
- A break seen on the watched chain never moves the agent by itself: it is confirmed through independent
  paths first, so a blip shorter than the confirmation moves nobody.
- No automatic failback: once at the other site the agent stays there until a planned switch moves it.
- Every state change is one structured event with a monotonic timestamp (stack.common.eventlog).
"""

from __future__ import annotations

import asyncio
import contextlib
import random

from stack.agent.failover import Failover
from stack.agent.outbound import OutboundCalls
from stack.agent.pacing import TokenBucket
from stack.agent.state import Timers, Trouble
from stack.agent.ulapi import UlHttp, UlRefused, UlUnavailable
from stack.agent.watch import Watch

__all__ = ["AgentClient", "Timers", "TokenBucket", "Trouble", "UlHttp", "UlRefused", "UlUnavailable"]


class AgentClient(OutboundCalls, Failover, Watch):
    """One agent's client; :meth:`run` is its whole life (login, watch, confirm, fail over, repeat)."""

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
