"""Agent-initiated calls on the agent client: ``dial(number)`` asks the CTI, the CTI's ``call_progress``
events say how the call goes (docs/cti-protocol.md, "Outbound calls"; the CTI side is stack/cti/dial.py).

Why it is built this way:
- The CTI answers ``dial`` at once with the call's reference and pushes every step as an event, as CSTA
  MakeCall does; the client keeps one :class:`OutboundCall` per reference and a future per call, so
  ``dial`` can wait for the end while :meth:`start_dial` (what the swarm's admin API uses) returns at once.
- Events are taken from the same callback as every other CTI event (``_on_event``): a progress event that
  overtakes the reply to ``dial`` (the reply's waiter runs after the line is read) is kept, not lost.
- The agent's own ``on_call`` still follows its phone (stack/agent/watch.py): an outbound call the phone has
  up holds a planned switch back until it ends, exactly as an inbound one does.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from stack.agent.state import AgentState
from stack.cti.client import CtiError

FINAL = ("ended", "failed")


@dataclass
class OutboundCall:
    """One call the agent dialled, as its CTI reported it."""

    dial: str
    number: str
    states: list[str] = field(default_factory=list)  # in the order the CTI pushed them
    call_id: str | None = None
    reason: str | None = None
    asked: float = field(default_factory=time.monotonic)
    done: asyncio.Future[None] | None = None

    @property
    def state(self) -> str | None:
        return self.states[-1] if self.states else None

    @property
    def answered(self) -> bool:
        return "answered" in self.states

    def view(self) -> dict[str, Any]:
        return {
            "dial": self.dial,
            "number": self.number,
            "states": list(self.states),
            "call_id": self.call_id,
            "reason": self.reason,
        }


class OutboundCalls(AgentState):
    """The dialling half of the agent client (mixed into AgentClient before the others, so its
    ``_on_event`` sees ``call_progress`` first and hands every event on)."""

    MAX_KEPT = 64  # finished calls remembered per agent (the swarm's admin API reads them)

    @property
    def calls(self) -> dict[str, OutboundCall]:
        d: dict[str, OutboundCall] | None = self.__dict__.get("_calls")
        if d is None:
            d = self.__dict__["_calls"] = {}
        return d

    def _outbound(self, ref: str, number: str) -> OutboundCall:
        c = self.calls.get(ref)
        if c is None:
            c = self.calls[ref] = OutboundCall(ref, number)
            c.done = asyncio.get_running_loop().create_future()
            finished = [k for k, v in self.calls.items() if v.state in FINAL]
            for k in finished[: max(0, len(self.calls) - self.MAX_KEPT)]:
                del self.calls[k]
        return c

    def _on_event(self, gen: int, msg: dict[str, Any]) -> None:
        if msg.get("event") == "call_progress" and gen == self._gen and isinstance(msg.get("dial"), str):
            self._progress(msg)
        super()._on_event(gen, msg)

    def _progress(self, msg: dict[str, Any]) -> None:
        c = self._outbound(msg["dial"], str(msg.get("number", "")))
        state = str(msg.get("state"))
        if c.state in FINAL or state in c.states:
            return
        c.states.append(state)
        c.call_id = msg.get("call_id") or c.call_id
        c.reason = msg.get("reason") or c.reason
        self._emit("outbound_call", dial=c.dial, number=c.number, state=state, call_id=c.call_id)
        if state in FINAL and c.done is not None and not c.done.done():
            c.done.set_result(None)

    async def start_dial(self, number: str) -> str:
        """Ask the CTI to dial ``number`` from this agent's phone; the call's reference (``dial``).

        Raises CtiError: ``not_online`` without a CTI session, or the CTI's refusal (``bad_request``,
        ``busy``, ``pbx_unreachable``, ...)."""
        if self.conn is None or self.phase != "online":
            raise CtiError("not_online", {"message": f"{self.agent} is {self.phase}"})
        reply = await self._request(self.conn, {"type": "dial", "number": number})
        ref = str(reply["dial"])
        self._outbound(ref, number)
        return ref

    async def dial(self, number: str, timeout: float = 120.0) -> OutboundCall:
        """Dial ``number`` and wait until the call has ended or failed (or ``timeout`` s: then the call is
        returned as it stands, not final)."""
        ref = await self.start_dial(number)
        c = self.calls[ref]
        assert c.done is not None
        try:
            await asyncio.wait_for(asyncio.shield(c.done), timeout)
        except TimeoutError:
            pass
        return c
