"""The phones' keep-alive toward their registrars: a phone whose PBX stopped answering knows it is cut off.

Why: a registration lasts minutes (the swarm asks 300 s and refreshes at 50-80 % of it), so a phone whose
path to its PBX broke after it registered (the agents host cut from the PBX, traffic lost one way, the PBX
blackholed) went on saying "registered" for minutes while no call could reach it, and its agent, who reads
the phone's state on every heartbeat, never saw the phone leg of its chain break (scenarios/test_gray.py:
50 of 50 agents stayed on a dead phone leg for the whole 30 s bound). Real phones have the same answer: a
SIP server keep-alive (Yealink "keep alive", Poly ``reg.x.server.y.failOver``) that declares the server
lost after a few unanswered probes.

How, at 10,000 phones on one endpoint: every phone on a :class:`~stack.phone.endpoint.SipEndpoint` shares
its socket and so its path, so the keep-alive is one OPTIONS per ``keepalive`` seconds per registrar in use,
sent from the phones' own socket (the same 5-tuple as their REGISTERs, so it fails exactly when theirs
would), not one per phone. Anything received from the registrar while a probe is out counts as an answer (a
PBX busy with a registration storm still answers REGISTERs). After ``keepalive_misses`` probes in a row
without an answer, every phone registered there is told (``_registrar_lost``): it stops calling itself
registered and registers again within a quarter of a second (spread: thousands lose one registrar
together), so a blip that is over by then costs one REGISTER per phone, and a real break keeps the phone
unregistered until its agent moves it to the other site's PBX.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import TYPE_CHECKING

from sipcore.message import SipMessage
from sipcore.probe import options_request

if TYPE_CHECKING:
    from stack.phone.endpoint import SipEndpoint

log = logging.getLogger("stack.phone")


class RegistrarKeepalive:
    """Probes every registrar the endpoint's phones are bound to; tells them when one is lost.

    Driven by one loop timer (``call_later``), with no task: a tick sends one OPTIONS transaction per
    registrar in use (none for a registrar whose probe is still out) and the answer, or its absence,
    arrives as the transaction future's callback.
    """

    def __init__(self, endpoint: SipEndpoint, interval: float, misses: int) -> None:
        self.endpoint = endpoint
        self.interval = interval
        self.threshold = max(1, misses)
        self.misses: dict[tuple[str, int], int] = {}
        self.lost: set[tuple[str, int]] = set()  # registrars declared lost and not heard from since
        self.probes = 0
        self.declared = 0  # times a registrar was declared lost
        self._out: dict[tuple[str, int], int] = {}  # registrar -> endpoint rx count when its probe went out
        self._timer: asyncio.TimerHandle | None = None
        self._stopped = False

    def start(self) -> None:
        if self._timer is None and not self._stopped:
            self._timer = self.endpoint.loop.call_later(self.interval, self._tick)

    def stop(self) -> None:
        self._stopped = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _in_use(self) -> set[tuple[str, int]]:
        return {p._bound for p in self.endpoint.phones if p._bound is not None and p.active}

    def _tick(self) -> None:
        self._timer = None
        if self._stopped or not self.endpoint.is_open:
            return
        try:
            in_use = self._in_use()
            for reg in list(self.misses):
                if reg not in in_use:
                    del self.misses[reg]
                    self.lost.discard(reg)
            for reg in in_use:
                if reg not in self._out:
                    self._probe(reg)
        finally:
            self._timer = self.endpoint.loop.call_later(self.interval, self._tick)

    def _probe(self, reg: tuple[str, int]) -> None:
        ep = self.endpoint
        req = options_request(reg[0], reg[1], ep.contact_host(reg[0]), ep.local[1])
        req.set_header("From", (req.header("from") or "").replace("sip:probe@", "sip:keepalive@", 1))
        self.probes += 1
        self._out[reg] = ep.heard_from(reg)
        fut = ep.request(req.to_bytes(), reg, req.branch, give_up=self.interval * 0.9)
        fut.add_done_callback(functools.partial(self._answered, reg))

    def _answered(self, reg: tuple[str, int], fut: asyncio.Future[SipMessage | None]) -> None:
        heard_before = self._out.pop(reg, None)
        resp = None if fut.cancelled() else fut.result()
        heard = heard_before is not None and self.endpoint.heard_from(reg) > heard_before
        if resp is not None or heard:
            self.misses[reg] = 0
            if reg in self.lost:
                self.lost.discard(reg)
                log.info("phones: registrar %s:%s answers again", *reg)
            return
        n = self.misses.get(reg, 0) + 1
        self.misses[reg] = n
        if n >= self.threshold:
            if reg not in self.lost:
                self.lost.add(reg)
                self.declared += 1
                log.warning("phones: registrar %s:%s lost (%d keep-alives unanswered)", reg[0], reg[1], n)
            for p in self.endpoint.phones:
                if p._bound == reg and p.registered:
                    p._registrar_lost()
