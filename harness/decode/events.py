"""What the decoder gives: one ``Event`` per SIP or CTI message seen on the wire, and how complete they are.

Events are what the history's ``sip``/``cti`` observations hold (docs/history.md) and what the ladder diagram
draws; ``DecodeStats`` counts what could not be read, so a checker can answer ``unknown`` instead of trusting
a partial picture.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple

__all__ = ["Close", "DecodeStats", "Decoded", "Event", "new_event", "to_dicts"]


class Event(NamedTuple):
    """One SIP or CTI message seen on the wire.

    A NamedTuple because a failover run yields hundreds of thousands of them and tuples are the cheapest
    to build. ``frame`` is the 1-based frame number (as tshark counts) of the packet that completed the
    message; ``time`` is that packet's capture time (seconds since the epoch).

    Derived SIP fields: ``extension`` is the user part of To for REGISTER and for responses, of the
    Request-URI (else To) for other requests. ``registrar`` is set for REGISTER only: the Request-URI host
    of a request (else its destination IP), the source IP of a response (the node that answered).
    ``expires`` is the first Contact's expires parameter, else the Expires header; a 2xx to REGISTER with
    neither and no Contact says no binding is left, so 0.
    """

    time: float
    frame: int
    protocol: str  # "sip" or "cti"
    transport: str  # "udp" or "tcp"
    src_ip: str
    src_port: int
    dst_ip: str
    dst_port: int
    # SIP
    method: str | None = None
    status: int | None = None
    reason: str | None = None
    call_id: str | None = None
    cseq: int | None = None
    cseq_method: str | None = None
    extension: str | None = None
    registrar: str | None = None
    expires: int | None = None
    from_user: str | None = None
    to_user: str | None = None
    # CTI
    type: str | None = None
    agent: str | None = None
    site: str | None = None
    body: Any = None  # the whole decoded CTI JSON message

    @property
    def src(self) -> str:
        """Source as ``ip:port`` (``[ip]:port`` for IPv6)."""
        return _endpoint(self.src_ip, self.src_port)

    @property
    def dst(self) -> str:
        """Destination as ``ip:port`` (``[ip]:port`` for IPv6)."""
        return _endpoint(self.dst_ip, self.dst_port)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for the history (docs/history.md ``sip``/``cti`` observations) and Allure attachments.

        ``src``/``dst`` are added as ``ip:port``; the other protocol's fields are left out, so a caller can
        add ``site`` to a SIP event's dict in either order without it being overwritten by None.
        """
        d = self._asdict()
        for k in _SIP_ONLY if self.protocol == "cti" else _CTI_ONLY:
            del d[k]
        d["src"] = self.src
        d["dst"] = self.dst
        return d


_SIP_ONLY = Event._fields[8:19]
_CTI_ONLY = Event._fields[19:]


def new_event(fields: tuple[Any, ...]) -> Event:
    return tuple.__new__(Event, fields)  # type: ignore[type-var,return-value]


def _endpoint(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def to_dicts(events: Iterable[Event]) -> list[dict[str, Any]]:
    """Events as plain dicts, ready for ``json.dumps``."""
    return [e.to_dict() for e in events]


class Close(NamedTuple):
    """One side of a TCP connection closing it (its first FIN or RST), seen on the wire: who cut whom. A
    server that cuts a slow client shows here, where its refusal has no message to carry it."""

    time: float
    src_ip: str  # the side that closed
    src_port: int
    dst_ip: str
    dst_port: int
    how: str  # "fin" or "rst"
    peer_bytes: int = 0  # what the other side had sent on it, as read (SIP and CTI streams): 0 = idle


@dataclass
class DecodeStats:
    """What the decoder saw and what it could not read; non-zero loss counters mean partial evidence."""

    linktypes: list[int] = field(default_factory=list)
    frames: int = 0
    ip_packets: int = 0
    not_ip: int = 0  # frames of other link-layer protocols (ARP, LLDP...) or unsupported link types
    sip_messages: int = 0
    cti_messages: int = 0
    truncated: int = 0  # frames cut by the snap length (payload may be incomplete)
    malformed_sip: int = 0  # payload on a SIP port or stream that is not a SIP message
    malformed_cti: int = 0  # CTI lines that are not JSON
    tcp_retransmitted: int = 0  # segments whose bytes had all been seen already
    tcp_gaps: int = 0  # holes in a TCP stream that never filled (bytes the capture missed)
    incomplete_at_end: int = 0  # streams ending inside a message the peer acknowledged (bytes we missed)
    fragments_unreassembled: int = 0  # IP fragment sets never completed (or IPv6 fragments)
    corrupt_file: int = 0  # 1 when a record or block length lies: the capture file was not read past it
    # Streams whose connection died inside a message (the peer never acknowledged the rest, so it was
    # never delivered): what was on the wire was all seen, so not a loss.
    ended_mid_message: int = 0
    # Garbage (harness/decode/garbage.py): streams and UDP flows of bytes that never became a message, on
    # connections whose server accepted nothing (refusals only, or silence). An attacker's, not loss.
    garbage_streams: int = 0
    garbage_messages: int = 0  # their malformed messages (not in malformed_sip / malformed_cti)
    garbage_bytes: int = 0

    @property
    def lossless(self) -> bool:
        """True when no message can have been missed or garbled by the decoder or the capture's snaplen."""
        return not (
            self.truncated
            or self.malformed_sip
            or self.malformed_cti
            or self.tcp_gaps
            or self.incomplete_at_end
            or self.fragments_unreassembled
            or self.corrupt_file
        )


@dataclass
class Decoded:
    """Events of one capture file, in frame order, and how complete they are."""

    path: str
    events: list[Event]
    stats: DecodeStats
    closes: list[Close] = field(default_factory=list)  # TCP connections' closes, as each ended

    def to_dicts(self) -> list[dict[str, Any]]:
        """Events as plain dicts."""
        return to_dicts(self.events)

    def stats_dict(self) -> dict[str, Any]:
        """Stats as a plain dict, with ``lossless``."""
        d = asdict(self.stats)
        d["lossless"] = self.stats.lossless
        return d
