"""The pace of UL logins of a whole process (a failover storm must not flatten the surviving site)."""

from __future__ import annotations

import asyncio
import time


class TokenBucket:
    """Paces UL logins of a whole process (a failover storm must not flatten the surviving site).

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
