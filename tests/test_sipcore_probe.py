"""The OPTIONS probe (blocking and asyncio) and the blocking client against a scripted UDP server.

Why scripted: a lost first datagram, a silent server, a refused port and a digest challenge are what the
probe and client must ride out, and a real PBX does none of them on demand. No fixed ports: each server
binds port 0 on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from sipcore import probe
from sipcore.client import SipUdpClient, register
from sipcore.digest import ha1, response
from sipcore.message import SipMessage, build_response, parse

HOST = "127.0.0.1"
Answer = Callable[[SipMessage, int], bytes | None]


@contextmanager
def server(answer: Answer) -> Iterator[tuple[int, list[SipMessage]]]:
    """A UDP server thread: ``answer(request, n)`` gives the reply to the n-th request (None: drop it)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((HOST, 0))
    sock.settimeout(0.05)
    seen: list[SipMessage] = []
    stop = threading.Event()

    def run() -> None:
        while not stop.is_set():
            try:
                data, addr = sock.recvfrom(65535)
            except TimeoutError:
                continue
            msg = parse(data)
            if msg is None:
                continue
            seen.append(msg)
            reply = answer(msg, len(seen))
            if reply is not None:
                sock.sendto(reply, addr)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield sock.getsockname()[1], seen
    finally:
        stop.set()
        thread.join(5)
        sock.close()


def ok_after(drop: int) -> Answer:
    def answer(msg: SipMessage, n: int) -> bytes | None:
        if n <= drop:
            return None
        return build_response(msg, 200, "OK", to_tag="srv", extra="X-Pbx-Boot: b1\r\n")

    return answer


def closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def test_blocking_probe_retransmits_a_lost_request() -> None:
    with server(ok_after(1)) as (port, seen):
        resp = probe.options(HOST, port, timeout=3.0)
        assert resp is not None and resp.status == 200 and resp.header("X-Pbx-Boot") == "b1"
        assert probe.options_ping(HOST, port, timeout=3.0) == 200
    first = seen[0]
    assert (first.method, first.uri, first.cseq) == ("OPTIONS", f"sip:{HOST}:{port}", 1)
    assert seen[1].branch == first.branch and seen[2].branch != first.branch  # retransmission, new probe
    assert first.branch.startswith("z9hG4bK") and first.header("Max-Forwards") == "70"


def test_blocking_probe_of_a_silent_or_closed_port_is_none() -> None:
    with server(lambda m, n: None) as (port, seen):
        t0 = time.monotonic()
        assert probe.options_ping(HOST, port, timeout=0.6) is None
        assert time.monotonic() - t0 >= 0.55  # the whole timeout: it paces a poll loop
    assert len(seen) >= 2 and len({m.branch for m in seen}) == 1
    assert probe.options(HOST, closed_port(), timeout=0.3) is None


def test_async_probe_retransmits_and_gives_up() -> None:
    async def main() -> None:
        with server(ok_after(1)) as (port, seen):
            assert await probe.options_ping_async(HOST, port, timeout=3.0) == 200
            assert len(seen) == 2 and seen[0].branch == seen[1].branch
        with server(lambda m, n: None) as (port, seen):
            assert await probe.options_ping_async(HOST, port, timeout=1.0) is None
            assert len(seen) == 2  # sent at 0 and halfway
        t0 = time.monotonic()
        assert await probe.options_ping_async(HOST, closed_port(), timeout=5.0) is None
        assert time.monotonic() - t0 < 4.0  # refused at once (ICMP), not timed out

    asyncio.run(asyncio.wait_for(main(), 30))


def test_client_answers_a_challenge_with_digest() -> None:
    def registrar(msg: SipMessage, n: int) -> bytes | None:
        auth = msg.header("authorization")
        if auth is None:
            chal = 'WWW-Authenticate: Digest realm="lab", nonce="n1", qop="auth", opaque="o"\r\n'
            return build_response(msg, 401, "Unauthorized", to_tag="s", extra=chal)
        params = dict(p.strip().split("=", 1) for p in auth[7:].split(", "))
        want = response(
            ha1("1001", "lab", "pw"),
            msg.method,
            msg.uri,
            "n1",
            "auth",
            params["nc"],
            params["cnonce"].strip('"'),
        )
        if params["response"].strip('"') != want:
            return build_response(msg, 403, "Forbidden", to_tag="s")
        return build_response(
            msg, 200, "OK", to_tag="s", extra=f"Contact: {msg.header('contact')};expires=60\r\n"
        )

    with server(registrar) as (port, seen):
        assert register(HOST, port, "1001", "pw", realm_hint="lab") == 200
        assert register(HOST, port, "1001", "wrong", realm_hint="lab") == 403
        with SipUdpClient(HOST, port, source=HOST) as ua:
            assert ua.register("1001", "pw").status == 200
            assert ua.register("1001", "pw").status == 200
    first, authed = seen[0], seen[1]
    assert first.call_id == authed.call_id and authed.cseq == first.cseq + 1 and first.branch != authed.branch
    assert authed.header("authorization") and 'opaque="o"' in (authed.header("authorization") or "")
    assert (first.uri, first.header("To")) == ("sip:lab", "<sip:1001@lab>")
    again = seen[-2]  # the same client's second registration keeps its Call-ID, CSeq goes on
    assert again.call_id == seen[-4].call_id and again.cseq == seen[-3].cseq + 1
