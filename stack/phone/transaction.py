"""Client transactions of the phone's UA: retransmission on RFC 3261 timers, jittered, on a timer wheel.

Why a wheel and jitter: during a registration storm thousands of transactions start within milliseconds.
One loop timer per 10 ms slot (not two ``TimerHandle``s per transaction) keeps that cheap, and each
interval is jittered so thousands of phones re-registering at once do not retransmit in lock-step.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sipcore.message import SipMessage
from sipcore.timers import T1, T2, TIMER_F, next_interval

if TYPE_CHECKING:
    from stack.phone.endpoint import SipEndpoint

_INF = float("inf")
_uniform = random.uniform


@dataclass(slots=True, frozen=True)
class SipTimers:
    """RFC 3261 timer values (seconds), plus the retransmission jitter and registration retry policy.

    ``jitter`` is the +- fraction applied to every retransmission interval. ``retry_base``..``retry_max``
    is the exponential backoff after a timeout or 5xx; ``reject_retry`` the wait after a 4xx (wrong
    password, unknown extension), as a real phone's "registration retry timer". ``keepalive`` is the
    interval of the endpoint's OPTIONS to each registrar its phones are bound to (0: none), and
    ``keepalive_misses`` how many unanswered in a row mean the registrar is lost (stack/phone/keepalive.py):
    0.75 s and 2 tell a dead path in 1.4-2.2 s, and forgive a busy event loop for a second and a half
    before a probe's answer is read.
    """

    t1: float = T1
    t2: float = T2
    timer_f: float = TIMER_F
    jitter: float = 0.2
    retry_base: float = 1.0
    retry_max: float = 30.0
    reject_retry: float = 60.0
    keepalive: float = 0.75
    keepalive_misses: int = 2

    def jittered(self, interval: float) -> float:
        j = self.jitter
        return interval * _uniform(1.0 - j, 1.0 + j) if j else interval


class TimerWheel:
    """Coarse timers for client transactions: one loop timer per 10 ms slot, not two per transaction.

    A loop ``call_at`` per slot plus a list append per transaction is far cheaper than creating and
    cancelling ``TimerHandle``s. A slot fires at or after its due time, never before.
    """

    __slots__ = ("loop", "res", "slots")

    def __init__(self, loop: asyncio.AbstractEventLoop, res: float = 0.01) -> None:
        self.loop = loop
        self.res = res
        self.slots: dict[int, list[ClientTransaction]] = {}

    def add(self, when: float, tx: ClientTransaction) -> None:
        key = int(when / self.res) + 1
        lst = self.slots.get(key)
        if lst is None:
            self.slots[key] = [tx]
            self.loop.call_at(key * self.res, self._fire, key)
        else:
            lst.append(tx)

    def _fire(self, key: int) -> None:
        lst = self.slots.pop(key, None)
        if lst:
            now = self.loop.time()
            for tx in lst:
                tx.tick(now)


class ClientTransaction:
    """One client transaction: retransmits until a final response, timer F/B, or cancellation.

    ``fut`` gives the final response, or None on timeout; cancelling it (the awaiting side gave up)
    stops the retransmissions at the next tick.
    """

    __slots__ = (
        "ep",
        "key",
        "data",
        "dest",
        "fut",
        "invite",
        "interval",
        "next_retx",
        "deadline",
        "on_provisional",
        "make_ack",
        "ring_timeout",
    )

    def __init__(
        self,
        ep: SipEndpoint,
        key: str,
        data: bytes,
        dest: tuple[str, int],
        invite: bool,
        on_provisional: Callable[[SipMessage], None] | None,
        make_ack: Callable[[SipMessage], bytes] | None,
        ring_timeout: float,
        give_up: float | None = None,
    ) -> None:
        self.ep = ep
        self.key = key
        self.data = data
        self.dest = dest
        self.invite = invite
        self.on_provisional = on_provisional
        self.make_ack = make_ack
        self.ring_timeout = ring_timeout
        self.fut: asyncio.Future[SipMessage | None] = ep.loop.create_future()
        t = ep.timers
        now = ep.loop.time()
        self.interval = t.t1
        self.next_retx = now + t.jittered(t.t1)
        self.deadline = now + (t.timer_f if give_up is None else give_up)
        ep.send(data, dest)
        ep.wheel.add(self.next_retx, self)

    def finish(self, result: SipMessage | None) -> None:
        self.ep.forget(self)
        if not self.fut.done():
            self.fut.set_result(result)

    def tick(self, now: float) -> None:
        if self.fut.done():  # answered, or the awaiting side gave up (cancelled)
            self.finish(None)
            return
        ep = self.ep
        if now >= self.deadline:
            ep.stats["timeouts"] += 1
            self.finish(None)
            return
        if now >= self.next_retx:
            ep.send(self.data, self.dest)
            ep.stats["retransmits"] += 1
            self.interval = next_interval(self.interval, self.invite, ep.timers.t2)
            self.next_retx = now + ep.timers.jittered(self.interval)
        ep.wheel.add(min(self.next_retx, self.deadline), self)

    def on_response(self, msg: SipMessage) -> None:
        if self.fut.done():
            return
        if msg.status < 200:
            if self.invite:
                # Proceeding: the INVITE is no longer retransmitted; wait for the final response.
                if self.next_retx != _INF:
                    self.next_retx = _INF
                    self.deadline = self.ep.loop.time() + self.ring_timeout
            elif self.interval < self.ep.timers.t2:
                # Non-INVITE proceeding: keep retransmitting, but at T2.
                self.interval = self.ep.timers.t2
            if self.on_provisional is not None:
                self.on_provisional(msg)
            return
        if self.invite and msg.status >= 300 and self.make_ack is not None:
            self.ep.send(self.make_ack(msg), self.dest)
        self.finish(msg)
