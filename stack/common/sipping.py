"""An asyncio SIP OPTIONS probe over UDP: the agent client's independent check that a PBX answers.

Why not the phone's stack: the secondary confirmation must not share the path that may be broken (the
phone's own socket and registration state); a separate datagram socket and one request are enough.
"""

from __future__ import annotations

import asyncio
import secrets


class _Probe(asyncio.DatagramProtocol):
    def __init__(self, branch: str) -> None:
        self.branch = branch
        self.status: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        head = data[:2048].decode("latin-1", "replace")
        if self.branch in head and head.startswith("SIP/2.0 ") and not self.status.done():
            try:
                code = int(head[8:11])
            except ValueError:
                return
            if code >= 200:
                self.status.set_result(code)

    def error_received(self, exc: Exception) -> None:
        if not self.status.done():
            self.status.set_exception(exc)


async def options(host: str, port: int, timeout: float = 1.0) -> int | None:
    """The final status of an OPTIONS to ``sip:host:port`` (200 when alive), or None on no answer."""
    loop = asyncio.get_running_loop()
    branch = "z9hG4bK" + secrets.token_hex(8)
    try:
        transport, proto = await loop.create_datagram_endpoint(
            lambda: _Probe(branch), remote_addr=(host, port)
        )
    except OSError:
        return None
    try:
        lhost, lport = transport.get_extra_info("sockname")[:2]
        tag, callid = secrets.token_hex(4), secrets.token_hex(8)
        req = (
            f"OPTIONS sip:{host}:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {lhost}:{lport};branch={branch};rport\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:probe@{lhost}>;tag={tag}\r\nTo: <sip:{host}:{port}>\r\n"
            f"Call-ID: {callid}@{lhost}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        ).encode()
        # Retransmit once halfway: a single lost datagram must not count as a dead PBX.
        transport.sendto(req)
        try:
            return await asyncio.wait_for(asyncio.shield(proto.status), timeout / 2)
        except TimeoutError:
            transport.sendto(req)
        return await asyncio.wait_for(proto.status, timeout / 2)
    except (TimeoutError, OSError):
        return None
    finally:
        transport.close()
