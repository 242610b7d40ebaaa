"""Unit tests of the phone's SIP message parsing/building and digest (stack/phone/sip.py), and of the UA
against a scripted fake registrar for what Kamailio never sends (407 on REGISTER, 503, 423).

Why: a wrong digest or a mis-copied Via only shows up as "registration failed" against a real PBX; here
each piece is checked against a known answer. Ports: 127.0.0.1:26900-26949.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable

from stack.phone import sip
from stack.phone.sip import Challenge, SipMessage
from stack.phone.ua import Phone, PhoneEvent, SipEndpoint, SipTimers

INVITE = (
    b"INVITE sip:19001@127.0.0.1:26001 SIP/2.0\r\n"
    b"Record-Route: <sip:127.0.0.1:5060;lr;ftag=abc>\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKproxy,SIP/2.0/UDP 127.0.0.1:26002;rport=26002;"
    b"branch=z9hG4bKcaller\r\n"
    b"f: <sip:19000@lab>;tag=ftag1\r\n"
    b"t: <sip:19001@lab>\r\n"
    b"i: call-1@host\r\n"
    b"CSeq: 7 INVITE\r\n"
    b"m: <sip:19000@127.0.0.1:26002>\r\n"
    b"Subject: folded\r\n  header\r\n"
    b"Content-Type: application/sdp\r\n"
    b"l: 4\r\n\r\nv=0\r\ntrailing-garbage"
)


def test_parse_request_compact_forms_and_split_via() -> None:
    msg = sip.parse(INVITE)
    assert msg is not None and msg.is_request
    assert (msg.method, msg.uri) == ("INVITE", "sip:19001@127.0.0.1:26001")
    assert msg.all("via") == [
        "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKproxy",
        "SIP/2.0/UDP 127.0.0.1:26002;rport=26002;branch=z9hG4bKcaller",
    ]
    assert msg.branch == "z9hG4bKproxy"
    assert msg.call_id == "call-1@host"
    assert msg.cseq == (7, "INVITE")
    assert sip.tag_of(msg.get("from")) == "ftag1"
    assert sip.tag_of(msg.get("to")) is None
    assert msg.get("subject") == "folded header"
    assert msg.body == b"v=0\r"  # cut at Content-Length
    assert sip.user_of(msg.uri or "") == "19001"


def test_parse_response_and_garbage() -> None:
    msg = sip.parse(
        b"SIP/2.0 401 Unauthorized\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nContent-Length: 0\r\n\r\n"
    )
    assert msg is not None and not msg.is_request
    assert (msg.status, msg.reason) == (401, "Unauthorized")
    assert sip.parse(b"\r\n\r\n") is None
    assert sip.parse(b"hello") is None
    assert sip.parse(b"GET / HTTP/1.1\r\n\r\n") is None


def test_uri_helpers() -> None:
    assert sip.uri_of('"Bob" <sip:bob@h:5062;transport=udp>;tag=1') == "sip:bob@h:5062;transport=udp"
    assert sip.uri_of("sip:bob@h;tag=1") == "sip:bob@h"
    assert sip.hostport_of("sip:127.0.0.1:5070;lr;ftag=x") == ("127.0.0.1", 5070)
    assert sip.hostport_of("sip:19001@10.0.0.1") == ("10.0.0.1", 5060)
    assert sip.hostport_of("sip:u@[2001:db8::1]:5080;lr") == ("2001:db8::1", 5080)
    assert sip.user_of("sip:19001;phone-context=x@h") == "19001"
    assert sip.user_of("sip:h:5060") == ""
    assert sip.param("<sip:a@b;lr>;expires=60;foo", "expires") == "60"
    assert sip.param("<sip:a@b;lr>;expires=60;foo", "foo") == ""
    assert sip.param("<sip:a@b;lr>;expires=60", "lr") is None  # URI parameters are not header parameters
    assert sip.format_host("::1") == "[::1]"


def test_digest_rfc2617_vector() -> None:
    # RFC 2617 section 3.5.
    ha1 = sip.ha1_of("Mufasa", "testrealm@host.com", "Circle Of Life")
    resp = sip.digest_response(
        ha1, "GET", "/dir/index.html", "dcd98b7102dd2f0e8b11d0f600bfb0c093", "auth", "00000001", "0a4f113b"
    )
    assert resp == "6629fae49393a05397450978507c4ef1"


def test_challenge_and_authorization_header() -> None:
    chal = sip.parse_challenge(
        'Digest realm="sha.lab", nonce="abc,def", qop="auth,auth-int", opaque="op", algorithm=MD5, stale=TRUE'
    )
    assert chal == Challenge("sha.lab", "abc,def", "op", "MD5", "auth", True)
    assert sip.parse_challenge('Basic realm="x"') is None
    assert sip.parse_challenge('Digest realm="x", nonce="n", algorithm=SHA-256') is None
    ha1 = sip.ha1_of("19001", "sha.lab", "pw")
    hdr = sip.authorization(chal, "19001", ha1, "REGISTER", "sip:127.0.0.1:5060", 3, cnonce="c0ffee")
    want = sip.digest_response(ha1, "REGISTER", "sip:127.0.0.1:5060", "abc,def", "auth", "00000003", "c0ffee")
    assert f'response="{want}"' in hdr
    assert "qop=auth" in hdr and "nc=00000003" in hdr and 'cnonce="c0ffee"' in hdr and 'opaque="op"' in hdr
    plain = Challenge("r", "n")
    hdr2 = sip.authorization(plain, "u", sip.ha1_of("u", "r", "p"), "INVITE", "sip:x@y", 1)
    assert "qop" not in hdr2 and "nc=" not in hdr2


def test_build_response_copies_and_tags() -> None:
    req = sip.parse(INVITE)
    assert req is not None
    raw = sip.build_response(
        req, 180, "Ringing", to_tag="tt", extra="Contact: <sip:19001@h:1>\r\n", record_route=True
    )
    resp = sip.parse(raw)
    assert resp is not None and resp.status == 180
    assert resp.all("via") == req.all("via")
    assert resp.all("record-route") == req.all("record-route")
    assert sip.tag_of(resp.get("to")) == "tt"
    assert resp.get("from") == req.get("from") and resp.cseq == (7, "INVITE")
    assert raw.endswith(b"Content-Length: 0\r\n\r\n")
    sdp = sip.minimal_sdp("127.0.0.1", 40000, 5)
    ok = sip.parse(sip.build_response(req, 200, "OK", to_tag="tt", body=sdp))
    assert ok is not None and ok.body == sdp and ok.get("content-type") == "application/sdp"


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
        msg = sip.parse(data)
        assert msg is not None and msg.is_request
        self.requests.append(msg)
        step = self.script[min(len(self.requests) - 1, len(self.script) - 1)]
        code, reason, extra = step(msg)
        if code and self.transport is not None:
            self.transport.sendto(sip.build_response(msg, code, reason, to_tag="srv", extra=extra), addr)


def _challenge(code: int) -> Callable[[SipMessage], tuple[int, str, str]]:
    name = "WWW-Authenticate" if code == 401 else "Proxy-Authenticate"
    return lambda _m: (code, "Auth", f'{name}: Digest realm="fake", nonce="n{code}", qop="auth"\r\n')


def _ok(msg: SipMessage) -> tuple[int, str, str]:
    contact = sip.uri_of(msg.get("contact", "") or "")
    return 200, "OK", f"Contact: <{contact}>;expires={msg.get('expires', '0')}\r\n"


Script = list[Callable[[SipMessage], tuple[int, str, str]]]
Body = Callable[[SipEndpoint, tuple[str, int]], Awaitable[None]]


def _run_fake(script: Script, port: int, body: Body) -> FakeRegistrar:
    async def main() -> FakeRegistrar:
        loop = asyncio.get_running_loop()
        _t, fake = await loop.create_datagram_endpoint(
            lambda: FakeRegistrar(script), local_addr=("127.0.0.1", port)
        )
        ep = await SipEndpoint.open(
            "127.0.0.1", 0, timers=SipTimers(t1=0.05, t2=0.4, timer_f=0.5, retry_base=0.1)
        )
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
    assert first.get("proxy-authorization") is None
    pa = authed.get("proxy-authorization") or ""
    assert 'realm="fake"' in pa and 'nonce="n407"' in pa and "nc=00000001" in pa
    assert "nc=00000002" in (again.get("authorization") or "")
    assert first.call_id == authed.call_id == again.call_id
    assert first.cseq[0] < authed.cseq[0] < again.cseq[0]
    assert first.branch != authed.branch
    assert [e.kind for e in events] == ["registered"]


def test_register_retries_after_503_with_backoff() -> None:
    events: list[PhoneEvent] = []

    async def body(ep: SipEndpoint, reg: tuple[str, int]) -> None:
        phone = Phone(ep, "19002", "secret", reg, expires=60, on_event=events.append)
        assert not await phone.register()  # 503: failed, retry scheduled
        for _ in range(100):
            if phone.registered:
                break
            await asyncio.sleep(0.02)
        assert phone.registered
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

    fake = _run_fake([lambda m: (0, "", "")], 26902, body)
    # T1=50 ms doubling to T2=400 ms within timer F=500 ms: sent at ~0, 50, 150, 350 ms.
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
    assert [r.get("expires") for r in fake.requests] == ["1", "30"]


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
                answers.append(sip.parse(data))
        finally:
            sock.close()
        assert [a.status for a in answers if a] == [200, 200, 404]
        assert "INVITE" in (answers[0].get("allow") or "")  # type: ignore[union-attr]
        assert answers[0].get("contact")  # type: ignore[union-attr]

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
        for _ in range(150):
            if phone.registered:
                break
            await asyncio.sleep(0.02)
        assert phone.registered
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
            await asyncio.sleep(0.12)
            assert dead.requests and not phone.registered
            assert await phone.move_to(new)
            assert not await first  # the old transaction ended (as a timeout), it did not bind
            sent = len([r for r in dead.requests if r.get("expires") != "0"])
            await asyncio.sleep(0.6)  # longer than timer F: nothing more goes to the old PBX
            assert len([r for r in dead.requests if r.get("expires") != "0"]) == sent
            assert any(r.get("expires") == "0" for r in dead.requests)  # the un-REGISTER
            assert phone.registered and phone.registrar == new
            phone.close()
        finally:
            t_old.close()

    _run_fake([_ok], 26907, body)
