"""The agent client's state: its timers, what it holds about its session, and its CTI primitives.

Why every dependency is injected (UL API, CTI connector, SIP OPTIONS probe, phone control, clock-driven
timers): each branch of the flow is unit-tested with in-process fakes, and the swarm runs thousands of
clients in one event loop sharing one HTTP pool, one pacer and shared probes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from sipcore.probe import options_ping_async
from stack.agent.pacing import TokenBucket
from stack.agent.ulapi import UlHttp
from stack.common.eventlog import EventLog
from stack.cti.client import CtiConnection
from stack.phone.control import PhoneControl


@dataclass
class Timers:
    """Every timer of the client, in seconds (all configurable).

    A CTI that only goes silent (its port cut, blackholed, hung: no TCP reset) is found by its heartbeats:
    one goes out every ``heartbeat``, its answer is waited for ``heartbeat_timeout``, and
    ``heartbeat_misses`` unanswered in a row raise the break; the confirmation then re-checks through
    fresh paths within ``confirm_timeout`` (any other break waits ``confirm_delay`` first). So a silent CTI
    is confirmed at most ``detection_bound`` after it fell silent (issue 11: within 3 s; three misses of
    a second each, a second's delay and a second's re-check took 5 s), a break of its answers shorter than
    ``window[0]`` moves no agent, and one longer than ``window[1]`` moves every agent; between the two it
    depends on where the agent's heartbeat fell in the break, so the band is one heartbeat wide.
    """

    heartbeat: float = 1.0
    heartbeat_timeout: float = 1.1  # longer than the interval: the wait is the confirmation's delay too
    heartbeat_misses: int = 1
    confirm_delay: float = 0.6
    confirm_timeout: float = 0.5
    ul_health_timeout: float = 0.5
    ul_timeout: float = 3.0
    cti_timeout: float = 2.0
    phone_timeout: float = 6.0
    link_attempts: int = 6
    link_retry: float = 0.25
    retry_delay: float = 2.0
    jitter: float = 1.0

    @property
    def silence(self) -> float:
        """How long the CTI's answers may stop before the break is raised, counted from the first
        heartbeat that went unanswered: its wait, and the wait of each further miss (the next heartbeat
        goes out when the last one's wait ends, or at its interval, whichever is later)."""
        each = max(self.heartbeat, self.heartbeat_timeout)
        return self.heartbeat_timeout + (self.heartbeat_misses - 1) * each

    @property
    def detection_bound(self) -> float:
        """The longest a silent CTI goes unconfirmed: its last answer came just before the break, the next
        heartbeat went out a whole interval later, then the silence and the confirmation's re-check."""
        return self.heartbeat + self.silence + self.confirm_timeout

    @property
    def window(self) -> tuple[float, float]:
        """(shortest, longest) break of the CTI's answers that is confirmed: one shorter than the first moves
        no agent, one longer than the second moves every agent (the heartbeat's phase decides between)."""
        return self.silence, self.silence + self.heartbeat


CtiOpen = Callable[..., Awaitable[Any]]
SipOptions = Callable[[str, int, float], Awaitable[int | None]]
CtiLink = Callable[[str, int, float], Awaitable[bool]]  # the CTI says its PBX link is up


@dataclass
class Trouble:
    """Why the watch ended: a break to confirm, an ordered switch, a fence, or a stop."""

    kind: str  # "broken" | "switch" | "fenced" | "stop"
    reason: str
    target: str | None = None


class AgentState:
    """One agent's client state and its injected dependencies, the bookkeeping of its phases and events,
    and its CTI session's requests and pushed events. The steps of its life build on this:
    stack/agent/watch.py (7), stack/agent/login.py (1-6), stack/agent/failover.py (8), and
    stack/agent/client.py puts them together."""

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
        self.sip_options: SipOptions = sip_options or options_ping_async
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
        self._gen_epoch: int | None = None  # the epoch of the token the current connection logged in with
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

    # ---- the CTI session: requests and pushed events ------------------------------------------------

    async def _request(self, conn: Any, msg: dict[str, Any], timeout: float | None = None) -> dict[str, Any]:
        """A request on a CTI session, stamped with the send time (``t``: the CTI does not let a late
        message renew the lease) and remembered as the last thing sent there."""
        now = time.monotonic()
        self._sent_at = now
        return await conn.request({**msg, "t": int(now * 1000)}, timeout or self.t.cti_timeout)

    async def _heartbeat(self, conn: Any, timeout: float | None = None) -> dict[str, Any]:
        """One heartbeat on ``conn`` (seq: the send time in ms), answered within ``timeout`` (default: a
        heartbeat interval)."""
        beat = {"type": "heartbeat", "seq": int(time.monotonic() * 1000)}
        return await self._request(conn, beat, timeout or self.t.heartbeat)

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
        elif ev == "replaced" and msg.get("epoch") == self._gen_epoch:
            # Replaced by a login with our own token: one of our own earlier connections (a login that timed
            # out and reached the CTI late), not a newer login elsewhere. The session is lost, not taken:
            # re-checked and re-attached like any lost CTI session.
            self._raise(Trouble("broken", "replaced_by_own_login"))
        elif ev == "fenced" and isinstance(msg.get("epoch"), int) and msg["epoch"] < (self._gen_epoch or 0):
            # A fence by a login older than this session's (a CTI that evicted us for a late fence of our
            # own earlier login elsewhere): our session is lost, not superseded; re-checked and re-attached.
            self._raise(Trouble("broken", "fenced_by_older_login"))
        elif ev in ("fenced", "replaced"):
            self._raise(Trouble("fenced", str(ev)))

    def _on_close(self, gen: int) -> None:
        if gen == self._gen:
            self._raise(Trouble("broken", "cti_disconnected"))
