"""Registration events pushed by the site PBX: a SIP/UDP listener that answers them and hands them on.

Kamailio sends one SIP MESSAGE per registration change (after every save(), and when the usrloc timer
expires a contact) with a JSON body ``{"event": "registered"|"unregistered"|"expired", "pbx", "ext",
"contact", "expires", "source", "callid", "cseq", "seq", "boot", "ts"}`` (virtual/pbx.py tells the whole
contract). This module is only the wire half:

- One ``asyncio.DatagramProtocol``: a storm of 10,000 registrations is 10,000 datagrams, handled inline
  with no task per datagram and no await between receiving and answering.
- Every MESSAGE is answered 200 at once (Via, From, To, Call-ID and CSeq copied, a To tag added), so tm
  stops retransmitting; a retransmission (same Call-ID and CSeq) is answered again and handed on again:
  the receiver applies an event only when its (boot, seq) is newer than the last one it applied for that
  extension, which makes a repeat a no-op. Another request gets 405 (ACK and responses get nothing);
  anything that is not SIP, or a MESSAGE whose body is not such an event, is counted and dropped (the
  MESSAGE still gets an answer, 400, so the PBX does not keep retransmitting it). Nothing here raises.
- ``sources``: when set, datagrams from any other address are dropped unanswered (the other site's PBX
  pointed here by mistake must not move this site's view of its phones).

The SIP parsing is the shared one (sipcore.message): one pass, no object per header.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable, Collection
from typing import Any

from sipcore import message as sip
from stack.common import fastjson

log = logging.getLogger("stack.cti.pbxevents")

EVENTS = {"registered": True, "unregistered": False, "expired": False}
SERVER = "hil-cti"

# (extension, registered, boot, seq)
EventHandler = Callable[[str, bool, str, int], None]


def parse_event(body: bytes) -> tuple[str, bool, str, int] | None:
    """(ext, registered, boot, seq) from a MESSAGE body, or None if it is not a registration event."""
    try:
        ev = fastjson.loads(body)
    except ValueError:  # not JSON, or not UTF-8
        return None
    if not isinstance(ev, dict):
        return None
    kind, ext, boot, seq = ev.get("event"), ev.get("ext"), ev.get("boot"), ev.get("seq")
    if kind not in EVENTS or not isinstance(ext, str) or not ext or not isinstance(boot, str) or not boot:
        return None
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
        return None
    return ext, EVENTS[kind], boot, seq


class PbxEventListener(asyncio.DatagramProtocol):
    """Answers the PBX's registration MESSAGEs and calls ``on_event(ext, registered, boot, seq)``."""

    def __init__(self, on_event: EventHandler, *, sources: Collection[str] | None = None) -> None:
        self.on_event = on_event
        self.sources = frozenset(sources) if sources else None
        self.to_tag = secrets.token_hex(6)  # one per listener: a retransmission gets the same answer
        self.transport: asyncio.DatagramTransport | None = None
        self.received = 0  # datagrams
        self.events = 0  # well-formed events handed on (retransmissions included)
        self.garbage = 0  # not SIP, or a MESSAGE whose body is not an event
        self.rejected = 0  # other requests, answered 405
        self.foreign = 0  # from an address not in ``sources``

    # ---- asyncio ----------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def error_received(self, exc: Exception) -> None:
        log.debug("pbx events socket: %s", exc)  # ICMP errors for an answer that could not go out

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.received += 1
        try:
            self._handle(data, addr)
        except Exception:  # never let one datagram stop the listener
            self.garbage += 1
            log.exception("pbx event from %s could not be handled", addr)

    # ---- SIP --------------------------------------------------------------------------------------

    def _handle(self, data: bytes, addr: tuple[str, int]) -> None:
        if self.sources is not None and addr[0] not in self.sources:
            self.foreign += 1
            return
        if not data.strip():
            return  # CRLF keep-alive
        msg = sip.parse(data)
        if msg is None:
            self.garbage += 1
            return
        if not msg.is_request or msg.method == "ACK":
            return
        if not (msg.header("via") and msg.call_id and msg.header("from") and msg.header("to") and msg.cseq):
            self.garbage += 1  # no transaction to answer
            return
        if msg.method != "MESSAGE":
            self.rejected += 1
            self._answer(msg, addr, 405, "Method Not Allowed", "Allow: MESSAGE\r\n")
            return
        ev = parse_event(msg.body)
        if ev is None:
            self.garbage += 1
            self._answer(msg, addr, 400, "Bad Request")
            return
        self._answer(msg, addr, 200, "OK")
        self.events += 1
        try:
            self.on_event(*ev)
        except Exception:
            log.exception("pbx event handler failed for %s", ev)

    def _answer(
        self, msg: sip.SipMessage, addr: tuple[str, int], code: int, reason: str, extra: str = ""
    ) -> None:
        if self.transport is None:
            return
        self.transport.sendto(
            sip.build_response(msg, code, reason, to_tag=self.to_tag, extra=extra, server=SERVER), addr
        )

    def stats(self) -> dict[str, Any]:
        return {
            "received": self.received,
            "events": self.events,
            "garbage": self.garbage,
            "rejected": self.rejected,
            "foreign": self.foreign,
        }


async def listen(
    host: str, port: int, on_event: EventHandler, *, sources: Collection[str] | None = None
) -> tuple[asyncio.DatagramTransport, PbxEventListener]:
    """Bind the listener on ``host:port`` (UDP); close the transport to stop it."""
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_datagram_endpoint(
        lambda: PbxEventListener(on_event, sources=sources), local_addr=(host, port)
    )
    return transport, proto
