"""A safety ceiling on the UL logins of a whole process (``stack.swarm --rate``, 400/s by default, 0: none).

The pace of a storm is the receiving UL's decision (its admission control, stack/login/admission.py): a
fixed rate in the client wastes an idle site's capacity and overloads a busy one, and thousands of agent
desktops cannot see the site's load. This bucket stays as a safety ceiling until the UL also reads its
CTI's load (docs/performance.md: without it a 10,000-agent storm overloaded the receiving CTI).
"""

from __future__ import annotations

import asyncio
import time


class TokenBucket:
    """A ceiling on the UL logins of a whole process (``--rate``; none with ``--rate 0``).

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
