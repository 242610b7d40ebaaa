"""Admission control of logins at a site's UL: how fast a storm comes in is decided here, by the site that
takes it, not by a fixed rate in thousands of clients that cannot see its load (issue 15, item 1).

Why this shape:
- The limit is TCP Vegas's, as Netflix's concurrency-limits applies it to a server (``VegasLimit``): the
  number of logins in flight grows while their latency stays near the least seen (no queue), and shrinks
  once the latency says a queue builds (``queue = limit * (1 - tolerance * rtt_noload / rtt)``, with
  Gradient2's tolerance of 2). Latency is what a busy UL shows first: its event loop, its SQLite and the
  fence round trip to the peer UL and the peer's CTI are all inside a login's time. RTTs are averaged
  over a short window first (concurrency-limits' ``WindowedLimit``): one sample per login is too noisy on
  a shared machine. A second latency, the site's CTI's (:meth:`Admission.observe_downstream`), can join
  the same estimate, so that where the CTI is the bottleneck its queue shrinks the limit (not fed yet).
- A login over the limit first waits in the UL, briefly and only the head of the queue
  (:meth:`Admission.wait_turn`): each freed place goes to the longest held, so no place stands idle and
  no round trip is spent. One not let in by then is deferred, never failed: a ticket (its place in the
  site's queue) and a slot to come back at (``retry_after``, to the millisecond). Slots are handed out at
  the rate the site takes, Little's law over the limit and the recent latency, as a GCRA schedule (the
  next free slot advances ``1 / rate`` per ticket), so the deferred come back spread and in the order
  they came: a deferred agent keeps its place. A ticket is the agent's (keyed by agent id): a client that
  comes back before its slot is deferred again to the same slot, so storming gains nothing. A ticket
  that comes at its slot goes in even over the limit (up to ``overbook`` times it): the schedule paces
  them already. One that finds the site far behind (the rate was overestimated) plans everyone behind it
  again at the rate now, so the order stays.
- Nothing here sleeps but :meth:`Admission.wait_turn`, and the clock is injected: the unit tests drive
  storms on a simulated clock without waiting.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

# The least RTT a login is taken to have: the UL's work (SQLite, a token, a reply) takes longer than this,
# and a window of cheaper replies (seen: 0.06 ms) would make every real login look queued.
NOLOAD_FLOOR = 0.001


def _log10(x: float) -> float:
    return max(1.0, math.log10(max(1.0, x)))


class VegasLimit:
    """The concurrency limit (TCP Vegas as concurrency-limits' ``VegasLimit``), fed window averages."""

    def __init__(
        self,
        initial: float = 40.0,
        lowest: float = 16.0,
        highest: float = 2000.0,
        probe: int = 200,
        tolerance: float = 2.0,
    ) -> None:
        self.limit, self.lowest, self.highest = initial, lowest, highest
        # Latency up to ``tolerance`` x the no-load RTT is not read as a queue (Gradient2's tolerance in
        # concurrency-limits): on one event loop each login's time grows with those beside it while the
        # throughput does not fall, and plain Vegas (tolerance 1) held the UL at its floor, 8 in flight,
        # about 200 logins a second in the 1,000-agent bench, where the fixed pacing had done 400.
        self.tolerance = tolerance
        self.rtt_noload = 0.0  # the least window-average RTT seen: the RTT with no queue
        # Every ``probe`` windows the no-load RTT is measured afresh (concurrency-limits' probe): a least
        # RTT from long ago (an idle moment, a cheaper path) would read every later window as a queue
        # and hold the limit at its floor for good.
        self.probe, self._windows = probe, 0

    def queue(self, rtt: float) -> float:
        """How many of ``limit`` logins wait in a queue, by how much ``rtt`` exceeds the no-load RTT."""
        if self.rtt_noload <= 0 or rtt <= 0:
            return 0.0
        return math.ceil(self.limit * max(0.0, 1.0 - self.tolerance * self.rtt_noload / rtt))

    def update(self, rtt: float, inflight_max: int, extra_queue: float = 0.0) -> None:
        """One window: average login ``rtt``, the most logins in flight in it, and a downstream queue."""
        if rtt <= 0:
            return
        rtt = max(rtt, NOLOAD_FLOOR)
        self._windows += 1
        if self.rtt_noload <= 0 or rtt < self.rtt_noload or self._windows % self.probe == 0:
            self.rtt_noload = rtt
            return
        if inflight_max * 2 < self.limit and extra_queue <= 0:
            return  # application-limited: too few logins to say anything about the limit
        q = max(self.queue(rtt), extra_queue)
        step = _log10(self.limit)
        alpha, beta = 3 * step, 6 * step
        if q <= step:
            new = self.limit + beta
        elif q < alpha:
            new = self.limit + step
        elif q > beta:
            new = self.limit - step
        else:
            return
        self.limit = max(self.lowest, min(self.highest, new))


@dataclass
class Ticket:
    number: int
    agent: str
    issued: float
    deferrals: int = 0
    due: float = 0.0  # when its client was last told to come back (monotonic)


@dataclass
class Decision:
    """Admitted (``retry_after`` None: call :meth:`Admission.done` with it) or deferred."""

    admitted: bool
    started: float
    retry_after: float | None = None
    ticket: int | None = None
    position: int = 0
    waited: float = 0.0  # admitted: seconds since its first deferral (0 when never deferred)
    tracked: bool = False  # work counted in flight but not a login of this site (:meth:`Admission.track`)


@dataclass
class _Window:
    began: float
    rtts: list[float] = field(default_factory=list)
    inflight_max: int = 0


class Admission:
    """Admits logins while the site keeps up, defers the rest with a ticket and a slot to come back at."""

    def __init__(
        self,
        *,
        limit: VegasLimit | None = None,
        clock: Callable[[], float] = time.monotonic,
        window: float = 0.1,
        window_samples: int = 10,
        min_retry: float = 0.05,
        max_retry: float = 5.0,
        grace: float = 15.0,
        early: float = 0.005,
        overbook: float = 3.0,
        max_held: float = 2.0,
    ) -> None:
        self.vegas = limit or VegasLimit()
        self.clock = clock
        self.window_s, self.window_samples = window, window_samples
        self.min_retry, self.max_retry = min_retry, max_retry
        # A ticket whose agent did not come back ``grace`` seconds after its slot is dropped: its client
        # gave up or went elsewhere, and it must not hold back everyone behind it.
        self.grace = grace
        self.early = early  # how early a ticket may come for its slot (clocks and timers are not exact)
        # A ticket that comes at its slot is admitted up to ``overbook`` x the limit in flight: the slots
        # pace the queue already, and a slot refused would cost another round trip and its place's time.
        self.overbook = overbook
        self.inflight = 0
        self.recent: deque[tuple[float, float]] = deque(maxlen=32)  # (when, RTT) of the last logins
        self.recent_s = 2.0
        self._last_done: float | None = None
        self.rtt = 0.0  # smoothed login RTT (s): with the limit, the rate the site takes (Little's law)
        self.downstream = (0.0, 0.0)  # (smoothed, least) RTT of the site's CTI, where it is probed
        self.waiting: OrderedDict[str, Ticket] = OrderedDict()  # by agent, in ticket (= slot) order
        self.issued = 0  # the last ticket number given
        self.tat = clock()  # the next free slot (GCRA's theoretical arrival time) at the site's rate
        self.plan: tuple[int, float, float] | None = None  # (ticket, when, rate): the queue planned again
        self._held: OrderedDict[str, asyncio.Future[Decision]] = OrderedDict()  # waiting in the UL
        # At most ``max_held`` x the limit wait in the UL, the head of the queue; the rest get their slot at
        # once. Each held login holds a connection of its client's pool (the swarm's: 256), and 2,000 held
        # at 10,000 agents clogged it: logins queued in the client past their slots, their tickets
        # expired, and the lab never came up.
        self.max_held = max_held
        self._win = _Window(clock())
        kinds = ("admitted", "deferred", "early", "full", "expired", "max_queue")
        self.stats = dict.fromkeys(kinds, 0)
        # The site's capacity: logins completed per second over the windows in which some waited.
        self.saturated_s = 0.0
        self.saturated_done = 0
        self.measured = 0.0  # the same, as a moving average over the recent such windows

    # ---- the rate and the queue -------------------------------------------------------------------

    @property
    def limit(self) -> int:
        return int(self.vegas.limit)

    def rate(self, now: float) -> float:
        """Logins per second the site takes now: the limit over the login latency (Little's law), or what
        it completed per second while some waited, if more (slots admitted over the limit count). The
        latency is the median of the logins of the last ``recent_s`` seconds (a median: one login stuck
        on a timeout does not count), else the no-load latency: an estimate left over from an earlier
        storm (lab start-up: 0.8 s a login) paced the next one at 20 a second while the site stood idle,
        and one that is too high costs a round trip (:meth:`admit` plans again), too low a site idle."""
        recent = sorted(r for t, r in self.recent if t > now - self.recent_s)
        rtt = recent[len(recent) // 2] if recent else self.vegas.rtt_noload
        return max(1.0, self.vegas.limit / max(rtt, 1e-3), self.measured)

    def _head(self) -> Ticket:
        return next(iter(self.waiting.values()))

    def _slot(self, t: Ticket) -> float:
        """When ``t`` may come in: its slot, or later if the queue was planned again from a ticket ahead."""
        if self.plan is None or t.number <= self.plan[0]:
            return t.due
        base, when, rate = self.plan
        return when + (t.number - base) / rate

    def _expire(self, now: float) -> None:
        while self.waiting:
            first = next(iter(self.waiting.values()))
            if now <= first.due + self.grace:
                break
            self.waiting.popitem(last=False)
            self.stats["expired"] += 1

    # ---- decisions ----------------------------------------------------------------------------------

    def admit(self, agent: str) -> Decision:
        """Admit the login of ``agent`` now, or defer it (a ticket: its place in the queue)."""
        now = self.clock()
        self._expire(now)
        t = self.waiting.get(agent)
        if t is not None:
            slot = self._slot(t)
            if now < slot - self.early:  # back before its slot: the same slot, so storming gains nothing
                self.stats["early"] += 1
                return self._defer(t, now, slot)
            if self.inflight < self.overbook * self.limit:
                del self.waiting[agent]
                return self._admitted(now, now - t.issued)
            # Its slot came but the site is far behind: the rate the slots were given at was too high (as in
            # a storm's first moments, before any latency was measured). It comes back after one login's
            # latency, and everyone behind it is planned again from there at the rate now: each comes
            # back once more, told its new slot, and the order stays (:meth:`_slot`).
            self.stats["full"] += 1
            back = now + max(self.min_retry, self.rtt)
            rate = max(self.rate(now), self.measured)
            self.plan = (t.number, back, rate)
            self.tat = max(self.tat, back + (self.issued - t.number + 1) / rate)
            return self._defer(t, now, back)
        if self.inflight < self.limit and not self._held:
            # Room nobody held is waiting for: a newcomer takes it (work-conserving: a plan slower than the
            # site, or a ticket late for its slot, wastes no capacity), and takes no slot from anyone: a
            # ticket that comes at its slot goes in up to ``overbook`` x the limit.
            return self._admitted(now, 0.0)
        self.issued += 1
        t = Ticket(self.issued, agent, now)
        self.waiting[agent] = t
        self.stats["max_queue"] = max(self.stats["max_queue"], len(self.waiting))
        slot = max(self.tat, now + self.min_retry)
        self.tat = slot + 1.0 / self.rate(now)
        return self._defer(t, now, slot)

    async def wait_turn(self, agent: str, hold: float) -> Decision:
        """:meth:`admit`, but a login that would be deferred first waits here up to ``hold`` seconds for a
        place to free (in ticket order: :meth:`done` hands each freed place to the longest held). Only one
        not let in by then gets its slot to come back at. A held login costs no round trip and leaves
        no place idle while it waits: a slot schedule alone, planned from a latency measured in a storm's
        first moments, left the UL idle while hundreds waited for their slots."""
        d = self.admit(agent)
        if d.admitted or hold <= 0 or len(self._held) >= self.max_held * self.limit:
            return d
        fut: asyncio.Future[Decision] = asyncio.get_running_loop().create_future()
        self._held[agent] = fut
        try:
            return await asyncio.wait_for(asyncio.shield(fut), hold)
        except TimeoutError:
            if fut.done():  # let in at the very moment the hold ran out
                return fut.result()
            self._held.pop(agent, None)
            now = self.clock()
            t = self.waiting.get(agent)
            if t is None:  # expired meanwhile: a new ticket at the end
                return self.admit(agent)
            return self._defer(t, now, max(self._slot(t), now + self.min_retry))
        finally:
            if not fut.done():
                fut.cancel()
            self._held.pop(agent, None)

    def _let_held_in(self) -> None:
        """Hand the places free to the held logins, in the order they came."""
        while self._held and self.inflight < self.limit:
            agent, fut = self._held.popitem(last=False)
            if fut.done():
                continue
            t = self.waiting.pop(agent, None)
            now = self.clock()
            fut.set_result(self._admitted(now, now - t.issued if t is not None else 0.0))

    def _defer(self, t: Ticket, now: float, slot: float) -> Decision:
        t.deferrals += 1
        t.due = min(slot, now + self.max_retry)
        self.stats["deferred"] += 1
        head = next(iter(self.waiting.values()))
        pos = t.number - head.number + 1
        return Decision(False, now, round(t.due - now, 3), t.number, pos)

    def _admitted(self, now: float, waited: float) -> Decision:
        self.inflight += 1
        self.stats["admitted"] += 1
        self._win.inflight_max = max(self._win.inflight_max, self.inflight)
        return Decision(True, now, waited=round(waited, 3))

    def track(self) -> Decision:
        """Work that must be done now whatever the load (the peer's allocation, whose own UL admitted the
        login): counted in flight and timed, never deferred."""
        now = self.clock()
        self.inflight += 1
        self._win.inflight_max = max(self._win.inflight_max, self.inflight)
        return Decision(True, now, tracked=True)

    def done(self, decision: Decision) -> None:
        """An admitted login ended (any outcome): its latency feeds the limit. Tracked work (the peer's
        allocations) frees its place but feeds nothing: it is another kind of work (no fence round trip,
        0.1 ms against 20-80 ms a login), and at 10,000 agents its times made the rate estimate 37,000 a
        second, slots packed into nothing and the deferred all came at once."""
        now = self.clock()
        self.inflight = max(0, self.inflight - 1)
        self._let_held_in()
        if decision.tracked:
            return
        rtt = max(0.0, now - decision.started)
        self.rtt = rtt if self.rtt <= 0 else 0.9 * self.rtt + 0.1 * rtt
        self.recent.append((now, rtt))
        if self.waiting and self._last_done is not None and now - self._last_done < 1.0:
            # the gaps between completions while some wait (not the quiet before a storm)
            self.saturated_s += now - self._last_done
            self.saturated_done += 1
        self._last_done = now
        w = self._win
        w.rtts.append(rtt)
        if len(w.rtts) >= self.window_samples and now - w.began >= self.window_s:
            if self.waiting and now - w.began < 1.0:  # some wait: what the site completed is what it takes
                done = len(w.rtts) / (now - w.began)
                self.measured = done if self.measured <= 0 else 0.7 * self.measured + 0.3 * done
            else:
                self.measured = 0.0  # nobody waits: the next storm is measured afresh
            self.vegas.update(sum(w.rtts) / len(w.rtts), w.inflight_max, self._downstream_queue())
            self._win = _Window(now)

    def observe_downstream(self, rtt: float) -> None:
        """The site's CTI answered a probe in ``rtt`` seconds (its queue joins the limit's estimate)."""
        latest, least = self.downstream
        smooth = rtt if latest <= 0 else 0.7 * latest + 0.3 * rtt  # one probe's answer is noisy
        self.downstream = (smooth, rtt if least <= 0 or rtt < least else least)

    def _downstream_queue(self) -> float:
        latest, least = self.downstream
        if latest <= 0 or least <= 0:
            return 0.0
        return math.ceil(self.vegas.limit * max(0.0, 1.0 - least / latest))

    def view(self) -> dict[str, Any]:
        now = self.clock()
        self._expire(now)
        busy = self.saturated_s
        return {
            "algorithm": "vegas",
            "limit": self.limit,
            "inflight": self.inflight,
            "rtt_ms": round(self.rtt * 1000, 2),
            "rtt_noload_ms": round(self.vegas.rtt_noload * 1000, 2),
            "rate_per_s": round(self.rate(now), 1),
            "waiting": len(self.waiting),
            "held": len(self._held),
            "saturated_s": round(busy, 3),
            "saturated_done": self.saturated_done,
            "capacity_per_s": round(self.saturated_done / busy, 1) if busy > 0 else None,
            **self.stats,
        }
