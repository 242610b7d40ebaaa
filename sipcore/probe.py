"""The SIP OPTIONS probe: is a SIP server answering, and what does it say about itself?

One request (OPTIONS to the server itself, no user part, fresh branch), retransmitted on the RFC 3261
timers, and one judgement: the first final answer with our branch. Two faces of it:

- :func:`options` / :func:`options_ping` block on a :class:`~sipcore.client.SipUdpClient` socket (the
  harness, the lab keeper, tests). The socket is unconnected, so an ICMP error goes unseen and a poll loop
  is paced by its timeout while a server starts.
- :func:`options_ping_async` runs on an asyncio loop (the agent's secondary confirmation, the CTI's PBX
  liveness). It has a datagram socket of its own, not the phone's, so it cannot share the path that may be
  broken; the socket is connected, so a refused port (the PBX process gone) answers None at once.
"""

from __future__ import annotations

import asyncio

from sipcore.client import USER_AGENT, SipUdpClient
from sipcore.message import SipMessage, new_branch, parse, token
from sipcore.timers import T1, next_interval
from sipcore.uri import format_host, hostport


def options_request(host: str, port: int, local_host: str, local_port: int) -> SipMessage:
    """The OPTIONS a probe sends from ``local_host:local_port`` to the server at ``host:port``."""
    uri = f"sip:{hostport(host, port)}"
    me = format_host(local_host)
    return SipMessage(
        f"OPTIONS {uri} SIP/2.0",
        [
            ("Via", f"SIP/2.0/UDP {me}:{local_port};branch={new_branch()};rport"),
            ("Max-Forwards", "70"),
            ("From", f"<sip:probe@{me}>;tag={token(48)}"),
            ("To", f"<{uri}>"),
            ("Call-ID", f"{token(96)}@{me}"),
            ("CSeq", "1 OPTIONS"),
            ("User-Agent", USER_AGENT),
        ],
    )


def _source(source: str | tuple[str, int] | None) -> tuple[str | None, int]:
    if source is None:
        return None, 0
    if isinstance(source, tuple):
        return source[0], source[1]
    return source, 0


def options(
    host: str, port: int, timeout: float = 1.0, source: str | tuple[str, int] | None = None
) -> SipMessage | None:
    """Send OPTIONS to the server itself; its final response, or None if nothing answered in time.

    ``source`` is a local address (or ``(address, port)``) to send from. Socket errors also count as no
    answer, so this is safe to poll while the server starts.
    """
    src, src_port = _source(source)
    try:
        with SipUdpClient(host, port, source=src, local_port=src_port) as ua:
            return ua.transaction(options_request(host, port, ua.local_host, ua.local_port), timeout)[-1]
    except (TimeoutError, OSError):
        return None


def options_ping(
    host: str, port: int, timeout: float = 1.0, source: str | tuple[str, int] | None = None
) -> int | None:
    """The status code :func:`options` gets (200 from a live PBX), or None if nothing answered."""
    resp = options(host, port, timeout, source)
    return resp.status if resp is not None else None


class _Answer(asyncio.DatagramProtocol):
    def __init__(self, branch: str) -> None:
        self.branch = branch
        self.status: asyncio.Future[SipMessage] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if self.status.done():
            return
        msg = parse(data)
        if msg is not None and msg.status >= 200 and msg.branch == self.branch:
            self.status.set_result(msg)

    def error_received(self, exc: Exception) -> None:
        if not self.status.done():
            self.status.set_exception(exc)


async def options_ping_async(
    host: str, port: int, timeout: float = 1.0, source: str | tuple[str, int] | None = None
) -> int | None:
    """The final status of an OPTIONS to ``sip:host:port`` (200 when alive), or None on no answer."""
    resp = await options_async(host, port, timeout, source)
    return resp.status if resp is not None else None


async def options_async(
    host: str, port: int, timeout: float = 1.0, source: str | tuple[str, int] | None = None
) -> SipMessage | None:
    """The final answer to an OPTIONS to ``sip:host:port``, or None on no answer (its headers tell a
    prober more than the status: the virtual PBX's ``X-Pbx-Boot`` shows a restart).

    Retransmitted at T1 doubling, the first time at most halfway through ``timeout``: a single lost
    datagram must not count as a dead PBX.
    """
    loop = asyncio.get_running_loop()
    src, src_port = _source(source)
    try:
        transport, proto = await loop.create_datagram_endpoint(
            lambda: _Answer(""),
            remote_addr=(host, port),
            local_addr=(src, src_port) if src else None,
        )
    except OSError:
        return None
    try:
        lhost, lport = transport.get_extra_info("sockname")[:2]
        req = options_request(host, port, lhost, lport)
        proto.branch = req.branch
        data = req.to_bytes()
        deadline = loop.time() + timeout
        interval = min(T1, timeout / 2)
        while True:
            transport.sendto(data)
            wait = min(interval, deadline - loop.time())
            try:
                return await asyncio.wait_for(asyncio.shield(proto.status), wait)
            except TimeoutError:
                if loop.time() >= deadline - 0.001:
                    return None
                interval = next_interval(interval, False)
    except OSError:
        return None
    finally:
        transport.close()
