"""The phone's UA (stack/phone) against a scripted fake registrar, for what Kamailio never sends (407 on
REGISTER, 503, 423, silence), and its footprint at 10,000 idle phones.

Why: a wrong digest or a mis-copied Via only shows up as "registration failed" against a real PBX; here
each step is checked against a known answer. The message model and digest themselves are tested in
tests/test_sipcore_*.py. Ports: 127.0.0.1:26900-26949.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable

from sipcore.message import SipMessage, build_response, parse
from sipcore.uri import uri_of
from stack.phone.ua import Phone, PhoneEvent, SipEndpoint, SipTimers

# ------------------------------------------------------------------ UA against a scripted fake registrar


class FakeRegistrar(asyncio.DatagramProtocol):
    """Answers REGISTERs with a scripted sequence of responses (a function per request)."""

    def __init__(self, script: list[Callable[[SipMessage], tuple[int, str, str]]]) -> None:
        self.script = script
        self.requests: list[SipMessage] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        msg = parse(data)
        assert msg is not None and msg.is_request
        self.requests.append(msg)
        step = self.script[min(len(self.requests) - 1, len(self.script) - 1)]
        code, reason, extra = step(msg)
        if code and self.transport is not None:
            self.transport.sendto(build_response(msg, code, reason, to_tag="srv", extra=extra), addr)


def _challenge(code: int) -> Callable[[SipMessage], tuple[int, str, str]]:
    name = "WWW-Authenticate" if code == 401 else "Proxy-Authenticate"
    return lambda _m: (code, "Auth", f'{name}: Digest realm="fake", nonce="n{code}", qop="auth"\r\n')


def _ok(msg: SipMessage) -> tuple[int, str, str]:
    contact = uri_of(msg.header("contact", "") or "")
    return 200, "OK", f"Contact: <{contact}>;expires={msg.header('expires', '0')}\r\n"


Script = list[Callable[[SipMessage], tuple[int, str, str]]]
Body = Callable[[SipEndpoint, tuple[str, int]], Awaitable[None]]


# No keep-alive: the scripted registrar answers requests in order, and an OPTIONS would take a REGISTER's turn
# (the keep-alive has tests of its own, tests/test_phone_keepalive.py).
FAST = SipTimers(t1=0.05, t2=0.4, timer_f=0.5, retry_base=0.1, keepalive=0.0)


async def until(cond: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Poll ``cond()`` until true or ``timeout`` (generous: the machine may be busy); the loop runs on."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(0.01)
    return True


def _run_fake(script: Script, port: int, body: Body, timers: SipTimers = FAST) -> FakeRegistrar:
    async def main() -> FakeRegistrar:
        loop = asyncio.get_running_loop()
        _t, fake = await loop.create_datagram_endpoint(
            lambda: FakeRegistrar(script), local_addr=("127.0.0.1", port)
        )
        ep = await SipEndpoint.open("127.0.0.1", 0, timers=timers)
        try:
            await body(ep, ("127.0.0.1", port))
        finally:
            ep.close()
            _t.close()
        return fake

    return asyncio.run(main())


def test_register_answers_407_and_reuses_nonce() -> None:
    events: list[PhoneEvent] = []

    async def body(ep: SipEndpoint, reg: tuple[str, int]) -> None:
        phone = Phone(ep, "19001", "secret", reg, expires=60, on_event=events.append)
        assert await phone.register()
        assert phone.registered and phone.status()["expires"] == 60
        # A second registration re-uses the nonce: one round trip, nc incremented.
        assert await phone.register()
        phone.close()

    fake = _run_fake([_challenge(407), _ok], 26900, body)
    assert [r.method for r in fake.requests] == ["REGISTER"] * 3
    first, authed, again = fake.requests
    assert first.header("proxy-authorization") is None
    pa = authed.header("proxy-authorization") or ""
    assert 'realm="fake"' in pa and 'nonce="n407"' in pa and "nc=00000001" in pa
    assert "nc=00000002" in (again.header("authorization") or "")
    assert first.call_id == authed.call_id == again.call_id
    assert first.cseq < authed.cseq < again.cseq
    assert first.branch != authed.branch
    assert [e.kind for e in events] == ["registered"]


def test_register_retries_after_503_with_backoff() -> None:
    events: list[PhoneEvent] = []

    async def body(ep: SipEndpoint, reg: tuple[str, int]) -> None:
        phone = Phone(ep, "19002", "secret", reg, expires=60, on_event=events.append)
        assert not await phone.register()  # 503: failed, retry scheduled
        assert await until(lambda: phone.registered)
        phone.close()

    fake = _run_fake([lambda m: (503, "Service Unavailable", ""), _challenge(401), _ok], 26901, body)
    assert len(fake.requests) == 3
    assert [e.kind for e in events] == ["registration_failed", "registered"]
    assert events[0].detail["code"] == 503


def test_register_timeout_retransmits_then_fails() -> None:
    events: list[PhoneEvent] = []

    async def body(ep: SipEndpoint, reg: tuple[str, int]) -> None:
        phone = Phone(ep, "19003", "secret", reg, on_event=events.append)
        assert not await phone.register()
        assert phone.status()["last_error"] == "timeout"
        assert ep.stats["retransmits"] >= 3 and ep.stats["timeouts"] == 1
        phone.close()

    # T1=50 ms doubling to T2=400 ms within timer F=600 ms: sent at ~0, 50, 150, 350 ms (no jitter, so a
    # busy machine has 250 ms of slack for the last one).
    fake = _run_fake(
        [lambda m: (0, "", "")], 26902, body, SipTimers(t1=0.05, t2=0.4, timer_f=0.6, jitter=0, keepalive=0.0)
    )
    assert 4 <= len(fake.requests) <= 6
    assert len({r.branch for r in fake.requests}) == 1  # retransmissions, not new requests
    assert events[-1].kind == "registration_failed"


def test_register_423_uses_min_expires() -> None:
    async def body(ep: SipEndpoint, reg: tuple[str, int]) -> None:
        phone = Phone(ep, "19004", "secret", reg, expires=1)
        assert await phone.register()
        assert phone.status()["expires"] == 30
        phone.close()

    fake = _run_fake([lambda m: (423, "Interval Too Brief", "Min-Expires: 30\r\n"), _ok], 26903, body)
    assert [r.header("expires") for r in fake.requests] == ["1", "30"]


def test_endpoint_answers_options_and_unknown_user() -> None:
    async def body(ep: SipEndpoint, _reg: tuple[str, int]) -> None:
        Phone(ep, "19005", "pw", ("127.0.0.1", 9))
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 26904))
        sock.setblocking(False)
        try:
            answers = []
            for user in ("19005@", "", "nobody@"):
                req = (
                    f"OPTIONS sip:{user}127.0.0.1:{ep.local[1]} SIP/2.0\r\n"
                    f"Via: SIP/2.0/UDP 127.0.0.1:26904;branch=z9hG4bK{len(answers)}\r\n"
                    "From: <sip:probe@x>;tag=p\r\nTo: <sip:x@y>\r\nCall-ID: opt1\r\nCSeq: 1 OPTIONS\r\n"
                    "Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
                ).encode()
                sock.sendto(req, ep.local)
                data = await asyncio.wait_for(loop.sock_recv(sock, 65535), 2)
                answers.append(parse(data))
        finally:
            sock.close()
        assert [a.status for a in answers if a] == [200, 200, 404]
        assert "INVITE" in (answers[0].header("allow") or "")  # type: ignore[union-attr]
        assert answers[0].header("contact")  # type: ignore[union-attr]

    _run_fake([lambda m: (0, "", "")], 26905, body)


def test_cancelled_move_keeps_registering_in_the_background() -> None:
    async def body(ep: SipEndpoint, reg: tuple[str, int]) -> None:
        phone = Phone(ep, "19006", "secret", ("127.0.0.1", 9))
        # The caller gives up after 30 ms (the fake drops the first 3 REGISTERs): the phone goes on alone.
        try:
            await asyncio.wait_for(phone.move_to(reg), 0.03)
        except TimeoutError:
            pass
        assert not phone.registered and phone.registrar == reg and phone.active
        assert await until(lambda: phone.registered)
        phone.close()

    fake = _run_fake([lambda m: (0, "", "")] * 3 + [_ok], 26906, body)
    assert len(fake.requests) >= 4


def test_ten_thousand_idle_phones_are_small_and_taskless() -> None:
    import gc
    import tracemalloc

    async def main() -> tuple[int, int]:
        ep = await SipEndpoint.open("127.0.0.1", 26907)
        gc.collect()
        tracemalloc.start()
        phones = [Phone(ep, str(100000 + i), f"pw{i}", ("127.0.0.1", 5060)) for i in range(10_000)]
        size, _peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        tasks = len(asyncio.all_tasks()) - 1
        for p in phones:
            p.close()
        ep.close()
        return size, tasks

    size, tasks = asyncio.run(main())
    assert tasks == 0
    assert size / 10_000 < 2048, f"{size / 10_000:.0f} bytes per idle phone"


def test_move_ends_the_register_in_flight_to_the_old_registrar() -> None:
    """A REGISTER still retransmitting to a dead PBX stops when the phone moves (so that PBX, back within
    timer F, never binds the phone again); the old PBX is sent an un-REGISTER instead."""

    async def body(ep: SipEndpoint, new: tuple[str, int]) -> None:
        loop = asyncio.get_running_loop()
        t_old, dead = await loop.create_datagram_endpoint(
            lambda: FakeRegistrar([lambda m: (0, "", "")]), local_addr=("127.0.0.1", 26908)
        )
        try:
            phone = Phone(ep, "19007", "secret", ("127.0.0.1", 26908), expires=60)
            first = asyncio.ensure_future(phone.register())  # in flight: the old PBX says nothing
            assert await until(lambda: len(dead.requests) >= 2)  # sent and retransmitted
            assert not phone.registered
            assert await phone.move_to(new)
            assert not await first  # the old transaction ended (as a timeout), it did not bind
            assert await until(lambda: any(r.header("expires") == "0" for r in dead.requests))  # un-REGISTER
            sent = len([r for r in dead.requests if r.header("expires") != "0"])
            await asyncio.sleep(0.6)  # longer than timer F: nothing more goes to the old PBX (an absence)
            assert len([r for r in dead.requests if r.header("expires") != "0"]) == sent
            assert phone.registered and phone.registrar == new
            phone.close()
        finally:
            t_old.close()

    _run_fake([_ok], 26907, body)
