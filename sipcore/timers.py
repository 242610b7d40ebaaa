"""RFC 3261 transaction timers (sections 17.1.1.2 and 17.1.2.2): the defaults every UA of the lab starts from.

Why here: the phone's transactions, the harness's blocking client and the OPTIONS probe retransmit by the
same rule, so a change to it (or a bug in it) shows everywhere at once.
"""

from __future__ import annotations

T1 = 0.5  # round-trip estimate: the first retransmission interval
T2 = 4.0  # cap of the non-INVITE retransmission interval
TIMER_F = 64 * T1  # a client transaction gives up after this long (timer B for INVITE)


def next_interval(interval: float, invite: bool, t2: float = T2) -> float:
    """The retransmission interval after ``interval``: doubling, capped at ``t2`` except for INVITE."""
    return interval * 2 if invite else min(interval * 2, t2)
