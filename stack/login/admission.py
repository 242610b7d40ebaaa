"""Admission control of logins at a site's UL: how fast a storm comes in is decided here, by the site that
takes it, not by a fixed rate in thousands of clients that cannot see its load (issue 15, item 1).

Why this shape:
- The limit is TCP Vegas's, as Netflix's concurrency-limits applies it to a server (``VegasLimit``): the
  number of logins in flight grows while their latency stays near the least seen (no queue), and shrinks
  once the latency says a queue builds (``queue = limit * (1 - rtt_noload / rtt)``). Latency is what a busy
  UL shows first: its event loop, its SQLite and the fence round trip to the peer UL and the peer's CTI are
  all inside a login's time. RTTs are averaged over a short window first (concurrency-limits'
  ``WindowedLimit``): one sample per login is too noisy on a shared machine. A second latency, the site's
  CTI's answer to a status probe (:meth:`Admission.observe_downstream`), joins the same estimate: where the
  CTI is the bottleneck it is its queue that shrinks the limit.
- A login over the limit is deferred, never failed: it gets a ticket (a number in the site's queue) and a
  ``retry_after`` that says when its number will be called. Numbers are called at the rate the site takes,
  Little's law over the current limit and latency (``limit / rtt``), so the deferred come back spread at
  that rate and in the order they came: a deferred agent keeps its place, and a newcomer does not pass
  anyone already waiting. A ticket is the agent's (keyed by agent id): a client that comes back before its
  number is called is deferred again to the same number, so storming gains nothing.
- Nothing here does I/O or sleeps: the clock is injected, so the unit tests drive bursts without waiting.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


def _log10(x: float) -> float:
    return max(1.0, math.log10(max(1.0, x)))


class VegasLimit:
    """The concurrency limit (TCP Vegas as concurrency-limits' ``VegasLimit``), fed window averages."""

    def __init__(self, initial: float = 40.0, lowest: float = 8.0, highest: float = 2000.0) -> None:
        self.limit, self.lowest, self.highest = initial, lowest, highest
        self.rtt_noload = 0.0  # the least window-average RTT seen: the RTT with no queue

    def queue(self, rtt: float) -> float:
        """How many of ``limit`` logins wait in a queue, by how much ``rtt`` exceeds the no-load RTT."""
        if self.rtt_noload <= 0 or rtt <= 0:
            return 0.0
        return math.ceil(self.limit * max(0.0, 1.0 - self.rtt_noload / rtt))

    def update(self, rtt: float, inflight_max: int, extra_queue: float = 0.0) -> None:
        """One window: average login ``rtt``, the most logins in flight in it, and a downstream queue."""
        if rtt <= 0:
            return
        if self.rtt_noload <= 0 or rtt < self.rtt_noload:
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


@dataclass
class _Window:
    began: float
    rtts: list[float] = field(default_factory=list)
    inflight_max: int = 0


class Admission:
    """Admits logins while the site keeps up, defers the rest with a ticket and a retry-after."""

    def __init__(
        self,
        *,
        limit: VegasLimit | None = None,
        clock: Callable[[], float] = time.monotonic,
        window: float = 0.1,
        window_samples: int = 10,
        min_retry: float = 0.05,
        max_retry: float = 10.0,
        grace: float = 5.0,
    ) -> None:
        self.vegas = limit or VegasLimit()
        self.clock = clock
        self.window_s, self.window_samples = window, window_samples
        self.min_retry, self.max_retry = min_retry, max_retry
        # A ticket whose agent did not come back ``grace`` seconds after it was told to is dropped: its
        # client gave up or went elsewhere, and it must not hold back everyone behind it.
        self.grace = grace
        self.inflight = 0
        self.rtt = 0.0  # smoothed login RTT (s): with the limit, the rate the site takes (Little's law)
        self.downstream = (0.0, 0.0)  # (latest, least) RTT of the site's CTI probe
        self.waiting: OrderedDict[str, Ticket] = OrderedDict()  # by agent, in ticket order
        self.issued = 0  # the last ticket number given
        self.called = 0.0  # numbers up to this are called (advances at the site's rate)
        self._called_at = clock()
        self._win = _Window(clock())
        self.stats = {"admitted": 0, "deferred": 0, "early": 0, "expired": 0, "max_queue": 0}
        self.saturated_s = 0.0  # time with someone waiting, and the admissions meanwhile: the capacity
        self.saturated_admitted = 0
        self._saturated_since: float | None = None

    # ---- the rate and the queue -------------------------------------------------------------------

    @property
    def limit(self) -> int:
        return int(self.vegas.limit)

    def rate(self) -> float:
        """Logins per second the site takes now: the limit over the login latency (Little's law)."""
        rtt = self.rtt or self.vegas.rtt_noload or 0.05
        return max(1.0, self.vegas.limit / max(rtt, 1e-3))

    def _advance(self, now: float) -> None:
        """Call numbers at the site's rate since the last look; never past the last number given."""
        self.called = min(float(self.issued), self.called + (now - self._called_at) * self.rate())
        self._called_at = now
        while self.waiting:
            first = next(iter(self.waiting.values()))
            if first.number > self.called or now <= first.due + self.grace:
                break
            self.waiting.popitem(last=False)
            self.stats["expired"] += 1
        self._saturation(now)

    def _saturation(self, now: float) -> None:
        if self.waiting and self._saturated_since is None:
            self._saturated_since = now
        elif not self.waiting and self._saturated_since is not None:
            self.saturated_s += now - self._saturated_since
            self._saturated_since = None

    def _retry_after(self, number: int) -> float:
        ahead = max(0.0, number - self.called)
        return min(self.max_retry, max(self.min_retry, ahead / self.rate()))

    # ---- decisions ----------------------------------------------------------------------------------

    def admit(self, agent: str) -> Decision:
        """Admit the login of ``agent`` now, or defer it (a ticket: its place in the queue)."""
        now = self.clock()
        self._advance(now)
        t = self.waiting.get(agent)
        if t is not None:
            if t.number > self.called:  # back before its number was called: same place, same number
                self.stats["early"] += 1
                return self._defer(t, now)
            if self.inflight < self.limit:
                del self.waiting[agent]
                return self._admitted(now, now - t.issued)
            return self._defer(t, now)  # called, but the site is full: first in line at the next look
        if self.inflight < self.limit and not self._anyone_ahead():
            return self._admitted(now, 0.0)
        self.issued += 1
        t = Ticket(self.issued, agent, now, 0)
        self.waiting[agent] = t
        self.stats["max_queue"] = max(self.stats["max_queue"], len(self.waiting))
        self._saturation(now)
        return self._defer(t, now)

    def _anyone_ahead(self) -> bool:
        """Someone holds a ticket: a newcomer must not pass them (their number is called or will be)."""
        return bool(self.waiting)

    def _defer(self, t: Ticket, now: float) -> Decision:
        t.deferrals += 1
        self.stats["deferred"] += 1
        pos = max(0, t.number - int(self.called))
        after = self._retry_after(t.number)
        t.due = now + after
        return Decision(False, now, after, t.number, pos)

    def _admitted(self, now: float, waited: float) -> Decision:
        self.inflight += 1
        self.stats["admitted"] += 1
        if self._saturated_since is not None or waited > 0:
            self.saturated_admitted += 1
        self._win.inflight_max = max(self._win.inflight_max, self.inflight)
        return Decision(True, now, waited=round(waited, 3))

    def track(self) -> Decision:
        """Work that must be done now whatever the load (the peer's allocation, whose own UL admitted the
        login): counted in flight and timed, never deferred."""
        now = self.clock()
        self.inflight += 1
        self._win.inflight_max = max(self._win.inflight_max, self.inflight)
        return Decision(True, now)

    def done(self, decision: Decision) -> None:
        """An admitted login ended (any outcome): its latency feeds the limit."""
        now = self.clock()
        self.inflight = max(0, self.inflight - 1)
        rtt = max(0.0, now - decision.started)
        self.rtt = rtt if self.rtt <= 0 else 0.9 * self.rtt + 0.1 * rtt
        w = self._win
        w.rtts.append(rtt)
        if len(w.rtts) >= self.window_samples and now - w.began >= self.window_s:
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
        self._advance(now)
        busy = self.saturated_s + (now - self._saturated_since if self._saturated_since is not None else 0.0)
        return {
            "algorithm": "vegas",
            "limit": self.limit,
            "inflight": self.inflight,
            "rtt_ms": round(self.rtt * 1000, 2),
            "rtt_noload_ms": round(self.vegas.rtt_noload * 1000, 2),
            "rate_per_s": round(self.rate(), 1),
            "waiting": len(self.waiting),
            "saturated_s": round(busy, 3),
            "saturated_admitted": self.saturated_admitted,
            "capacity_per_s": round(self.saturated_admitted / busy, 1) if busy > 0 else None,
            **self.stats,
        }
