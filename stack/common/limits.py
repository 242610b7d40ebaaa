"""What keeps a site service up when someone on the data network abuses it: open connections counted per
source address and in total, and every refusal counted and logged without the log becoming the attack.

Why one module for the CTI and the UL: both serve thousands of agents from one agents host per site on
the same network as any desktop, so both refuse the same way (a cap per source, a cap in total, checked
in O(1) per connection) and say so in the same words (``refused`` counters, one log line per reason at
most every few seconds with the number refused since the last one).
"""

from __future__ import annotations

import logging
import resource
import time
from typing import Any

# Below the process's file descriptor limit, so that a flood meets our refusal (an error line, a 503)
# and not EMFILE, which asyncio answers by not accepting anybody for a second.
FD_RESERVE = 128
# A refused connection is told why and then kept this long at most for the client to read it (closing
# with its request unread would reset the connection and lose the answer); at most LINGER_MAX at once.
LINGER = 1.0
LINGER_MAX = 256


def total_cap(wanted: int) -> int:
    """``wanted``, or less when the open-file limit would stop the process from accepting that many.

    The soft limit is raised toward the hard one first, as far as ``wanted`` needs (a shell's or
    systemd's default soft limit is 1,024: a CTI would refuse the agents of a 1,000-agent failover)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = wanted + FD_RESERVE
    if soft != resource.RLIM_INFINITY and soft < need:
        raised = need if hard == resource.RLIM_INFINITY else min(need, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
            soft = raised
        except (ValueError, OSError):
            pass
    if soft == resource.RLIM_INFINITY:
        return wanted
    return max(1, min(wanted, soft - FD_RESERVE))


def source_of(transport: Any) -> str:
    """The peer address of a connection (without its port), the unit of the per-source cap."""
    peer = transport.get_extra_info("peername")
    if isinstance(peer, tuple | list) and peer:
        return str(peer[0])
    return str(peer)


class Refusals:
    """Counts of what a server refused or cut, by reason, and a log line per reason at most every
    ``every`` seconds (a flood of refusals must not become a flood of log lines).

    ``counts`` may be a dict the server already publishes (the UL's health counters): the keys are added
    to it."""

    def __init__(
        self, log: logging.Logger, who: str, counts: dict[str, int] | None = None, every: float = 5.0
    ) -> None:
        self.log, self.who, self.every = log, who, every
        self.counts = counts if counts is not None else {}
        self._logged: dict[str, tuple[float, int]] = {}  # reason -> (when last logged, count then)

    def note(self, reason: str, source: str, detail: str = "") -> None:
        n = self.counts.get(reason, 0) + 1
        self.counts[reason] = n
        now = time.monotonic()
        last, then = self._logged.get(reason, (-1e9, 0))
        if now - last < self.every:
            return
        self._logged[reason] = (now, n)
        more = n - then - 1
        since = f"; {more} more since the last such line" if more > 0 and then > 0 else ""
        self.log.warning("%s: %s from %s%s (%d in all)%s", self.who, reason, source,
                         f" ({detail})" if detail else "", n, since)  # fmt: skip


class ConnectionCaps:
    """Open connections per source address and in total. ``admit`` at connection, ``release`` when it is
    lost; both O(1)."""

    def __init__(self, per_source: int, total: int, refusals: Refusals) -> None:
        self.per_source, self.total = per_source, total
        self.refusals = refusals
        self.open = 0
        self.by_source: dict[str, int] = {}
        self.lingering = 0  # refused connections waiting for their client to read the refusal

    def admit(self, source: str) -> str | None:
        """None when the connection may be served (then counted), else why not: ``total`` or
        ``per_source`` (counted as ``refused_total`` / ``refused_per_source``)."""
        have = self.by_source.get(source, 0)
        if self.open >= self.total:
            why, detail = "total", f"{self.open} open, cap {self.total}"
        elif have >= self.per_source:
            why, detail = "per_source", f"{have} open from it, cap {self.per_source}"
        else:
            self.open += 1
            self.by_source[source] = have + 1
            return None
        self.refusals.note(f"refused_{why}", source, detail)
        return why

    def release(self, source: str) -> None:
        self.open -= 1
        left = self.by_source.get(source, 1) - 1
        if left > 0:
            self.by_source[source] = left
        else:
            self.by_source.pop(source, None)

    def linger(self) -> float:
        """How long a refused connection may wait for its client to read the refusal (0: close now);
        counted until :meth:`unlinger`."""
        if self.lingering >= LINGER_MAX:
            return 0.0
        self.lingering += 1
        return LINGER

    def unlinger(self) -> None:
        self.lingering -= 1
