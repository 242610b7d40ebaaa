"""The phones' keep-alive toward their registrar (stack/phone/keepalive.py), against a fake registrar that
can fall silent: a phone whose PBX stops answering stops calling itself registered, and registers again
when the PBX answers; a PBX that answers keeps it registered; only the phones of the silent PBX are told.

Why here and not only on the lab: the lab shows the whole chain (scenarios/test_gray.py, the phone leg
broken after login); here each rule is checked alone, with fast timers. Ports: 127.0.0.1:26950-26969.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from sipcore.message import SipMessage, build_response, parse
from sipcore.uri import uri_of
from stack.phone.ua import Phone, PhoneEvent, SipEndpoint, SipTimers

FAST = SipTimers(t1=0.05, t2=0.2, timer_f=0.4, retry_base=0.1, retry_max=0.3, keepalive=0.1)


class Registrar(asyncio.DatagramProtocol):
    """Answers REGISTER (200 with the contact) and OPTIONS (200); says nothing while ``silent``."""

    def __init__(self) -> None:
        self.silent = False
        self.requests: list[tuple[SipMessage, tuple[str, int]]] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        msg = parse(data)
        if msg is None or not msg.is_request:
            return
        self.requests.append((msg, addr))
        if self.silent or self.transport is None:
            return
        extra = ""
        if msg.method == "REGISTER":
            contact = uri_of(msg.header("contact", "") or "")
            extra = f"Contact: <{contact}>;expires={msg.header('expires', '0')}\r\n"
        self.transport.sendto(build_response(msg, 200, "OK", to_tag="srv", extra=extra), addr)

    def count(self, method: str) -> int:
        return sum(1 for m, _ in self.requests if m.method == method)


async def until(cond: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Poll ``cond()`` until true or ``timeout`` (generous: the machine may be busy)."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(0.01)
    return True


async def _registrar(port: int) -> tuple[asyncio.DatagramTransport, Registrar]:
    loop = asyncio.get_running_loop()
    t, r = await loop.create_datagram_endpoint(Registrar, local_addr=("127.0.0.1", port))
    return t, r


def test_silent_registrar_unregisters_the_phone_and_its_return_registers_it_again() -> None:
    events: list[PhoneEvent] = []

    async def main() -> None:
        t, reg = await _registrar(26950)
        ep = await SipEndpoint.open("127.0.0.1", 0, timers=FAST)
        try:
            phone = Phone(ep, "19101", "pw", ("127.0.0.1", 26950), expires=300, on_event=events.append)
            assert await phone.register()
            # Probes go out from the phones' own socket (the path their REGISTERs take), and while they
            # are answered the phone stays registered.
            assert await until(lambda: reg.count("OPTIONS") >= 3)
            assert {a for m, a in reg.requests} == {ep.local}
            assert phone.registered
            reg.silent = True
            assert await until(lambda: not phone.registered)
            assert phone.status()["last_error"] == "keepalive timeout"
            lost = [e for e in events if e.kind == "registration_failed"]
            assert lost and lost[0].detail["reason"] == "keepalive timeout"
            assert lost[0].detail["was_registered"] is True
            assert ep.keepalive is not None and ("127.0.0.1", 26950) in ep.keepalive.lost
            reg.silent = False
            assert await until(lambda: phone.registered)  # it kept trying, and the registrar is back
            assert await until(lambda: ep.keepalive is not None and not ep.keepalive.lost)
            phone.close()
        finally:
            ep.close()
            t.close()

    asyncio.run(main())


def test_answering_registrar_keeps_the_phone_registered() -> None:
    async def main() -> None:
        t, reg = await _registrar(26951)
        ep = await SipEndpoint.open("127.0.0.1", 0, timers=FAST)
        try:
            phone = Phone(ep, "19102", "pw", ("127.0.0.1", 26951), expires=300)
            assert await phone.register()
            assert await until(lambda: reg.count("OPTIONS") >= 10)  # ten keep-alives, about a second
            assert phone.registered and phone.counts[2] == 0  # never lost on the way
            assert reg.count("REGISTER") == 1  # and never registered again
            phone.close()
        finally:
            ep.close()
            t.close()

    asyncio.run(main())


def test_only_the_phones_of_the_silent_registrar_are_told() -> None:
    async def main() -> None:
        t1, dead = await _registrar(26952)
        t2, alive = await _registrar(26953)
        ep = await SipEndpoint.open("127.0.0.1", 0, timers=FAST)
        try:
            a = Phone(ep, "19103", "pw", ("127.0.0.1", 26952), expires=300)
            b = Phone(ep, "19104", "pw", ("127.0.0.1", 26953), expires=300)
            assert await a.register() and await b.register()
            dead.silent = True
            assert await until(lambda: not a.registered)
            probes = alive.count("OPTIONS")
            assert await until(lambda: alive.count("OPTIONS") >= probes + 3)  # still probed, still fine
            assert b.registered and b.counts[2] == 0
            a.close()
            b.close()
        finally:
            ep.close()
            t1.close()
            t2.close()

    asyncio.run(main())


def test_no_keepalive_when_switched_off_or_when_no_phone_is_bound() -> None:
    async def main() -> None:
        t, reg = await _registrar(26954)
        off = await SipEndpoint.open("127.0.0.1", 0, timers=SipTimers(t1=0.05, keepalive=0.0))
        idle = await SipEndpoint.open("127.0.0.1", 0, timers=FAST)
        try:
            phone = Phone(off, "19105", "pw", ("127.0.0.1", 26954), expires=300)
            assert await phone.register()
            unbound = Phone(idle, "19106", "pw", ("127.0.0.1", 26954), expires=300)  # never registers
            # An absence: nothing may arrive in ten keep-alive intervals of the idle endpoint.
            await asyncio.sleep(10 * FAST.keepalive)
            assert reg.count("OPTIONS") == 0
            assert off.keepalive is None
            phone.close()
            unbound.close()
        finally:
            off.close()
            idle.close()
            t.close()

    asyncio.run(main())
