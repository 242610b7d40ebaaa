"""Turn a capture file into SIP and CTI events, fast enough for a 1,000-agent failover.

Why not scapy or tshark: scapy dissects every layer of every packet in Python (a few thousand packets per
second) and tshark dissects everything in C but then prints text we would parse again. A failover of 1,000+
agents gives hundreds of thousands of packets, so this module reads the pcap with ``struct`` over an mmap,
walks the link/IP/UDP/TCP headers by offset, and hands only SIP and CTI payloads to the parsers
(``harness.sipmsg`` for SIP, ``json`` for CTI). ``bench/bench_capture.py`` measures it against tshark.

Reads classic pcap (either byte order, micro- or nanosecond timestamps) and pcapng (what dumpcap writes);
link types Ethernet (with 802.1Q/802.1ad tags, as a SPAN port delivers them), Linux cooked SLL and SLL2
(``tcpdump -i any``), raw IP, and BSD loopback. IPv4 fragments are reassembled; TCP streams are reassembled
by sequence number per direction (out-of-order segments, overlaps, retransmissions and duplicates give each
byte once). SIP over TCP is framed by Content-Length, CTI by newlines (one JSON object per line).

Evidence that could not be read is counted in ``DecodeStats`` (gaps in a TCP stream, malformed messages,
truncated packets) so a checker can answer ``unknown`` instead of trusting a partial picture.
"""

from __future__ import annotations

import gc
import json
import mmap
import re
import socket
import struct
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from harness.sipmsg import SIP_PREFIXES, parse_sip_tuple

__all__ = [
    "DecodeError",
    "DecodeStats",
    "Decoded",
    "Event",
    "decode_pcap",
    "iter_frames",
    "to_dicts",
]

SIP_PORTS: tuple[int, ...] = (5060,)

# Link types (https://www.tcpdump.org/linktypes.html).
LINKTYPE_NULL = 0
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_LOOP = 108
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_LINUX_SLL2 = 276

_MAX_PENDING_SEGMENTS = 512  # out-of-order segments held per direction before a hole is declared lost
_MAX_BUFFER = 1 << 20  # bytes of one unframed message before the stream is declared garbled
_MAX_FRAGMENT_SETS = 4096

_U16 = struct.Struct(">H")
_U32BE = struct.Struct(">I")
_U32LE = struct.Struct("<I")
_UDP = struct.Struct(">HHH")

_SIP_START = re.compile(rb"(?m)^(?:SIP/2\.0 \d{3} |[A-Z]+ \S+ SIP/2\.0\r?$)")


class DecodeError(Exception):
    """The file is not a capture this module can read."""


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


def _new_event(fields: tuple[Any, ...]) -> Event:
    return tuple.__new__(Event, fields)  # type: ignore[type-var,return-value]


def _endpoint(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def to_dicts(events: Iterable[Event]) -> list[dict[str, Any]]:
    """Events as plain dicts, ready for ``json.dumps``."""
    return [e.to_dict() for e in events]


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
    incomplete_at_end: int = 0  # streams ending inside a message
    fragments_unreassembled: int = 0  # IP fragment sets never completed (or IPv6 fragments)

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
        )


@dataclass
class Decoded:
    """Events of one capture file, in frame order, and how complete they are."""

    path: str
    events: list[Event]
    stats: DecodeStats

    def to_dicts(self) -> list[dict[str, Any]]:
        """Events as plain dicts."""
        return to_dicts(self.events)

    def stats_dict(self) -> dict[str, Any]:
        """Stats as a plain dict, with ``lossless``."""
        d = asdict(self.stats)
        d["lossless"] = self.stats.lossless
        return d


# --------------------------------------------------------------------------------------------------------
# Capture file readers: yield (frame number, time, link type, buffer, start, end, original length).
# They yield offsets into one buffer (an mmap) so that no packet is copied before we know we want it.


Frame = tuple[int, float, int, Any, int, int, int]


def iter_frames(buf: Any) -> Iterator[Frame]:
    """Frames of a classic pcap or a pcapng held in ``buf`` (bytes or mmap)."""
    if len(buf) < 4:
        raise DecodeError("file too short for a capture header")
    magic = bytes(buf[:4])
    if magic == b"\x0a\x0d\x0d\x0a":
        return _iter_pcapng(buf)
    return _iter_pcap(buf)


_PCAP_MAGIC = {
    b"\xd4\xc3\xb2\xa1": ("<", 1e-6),
    b"\xa1\xb2\xc3\xd4": (">", 1e-6),
    b"\x4d\x3c\xb2\xa1": ("<", 1e-9),
    b"\xa1\xb2\x3c\x4d": (">", 1e-9),
}


def _iter_pcap(buf: Any) -> Iterator[Frame]:
    magic = bytes(buf[:4])
    if magic not in _PCAP_MAGIC or len(buf) < 24:
        raise DecodeError(f"not a pcap or pcapng file (magic {magic.hex()})")
    endian, scale = _PCAP_MAGIC[magic]
    (network,) = struct.unpack_from(endian + "I", buf, 20)
    linktype = network & 0xFFFF  # the upper bits may carry FCS information
    rec = struct.Struct(endian + "IIII").unpack_from
    size = len(buf)
    off = 24
    n = 0
    while off + 16 <= size:
        sec, frac, incl, orig = rec(buf, off)
        off += 16
        end = off + incl
        if end > size:  # cut short (capture still being written, or killed): stop at the last whole frame
            break
        n += 1
        yield n, sec + frac * scale, linktype, buf, off, end, orig
        off = end


def _iter_pcapng(buf: Any) -> Iterator[Frame]:
    size = len(buf)
    off = 0
    endian = "<"
    interfaces: list[tuple[int, float, int]] = []  # linktype, seconds per tick, snaplen
    n = 0
    while off + 12 <= size:
        btype_raw = bytes(buf[off : off + 4])
        if btype_raw == b"\x0a\x0d\x0d\x0a":  # section header: byte order may change per section
            bom = bytes(buf[off + 8 : off + 12])
            endian = "<" if bom == b"\x4d\x3c\x2b\x1a" else ">"
            interfaces = []
        btype, blen = struct.unpack_from(endian + "II", buf, off)
        if blen < 12 or off + blen > size:
            break
        body = off + 8
        if btype == 1:  # interface description
            lt, _reserved, snap = struct.unpack_from(endian + "HHI", buf, body)
            interfaces.append((lt, _pcapng_tsresol(buf, endian, body + 8, off + blen - 4), snap))
        elif btype == 6:  # enhanced packet
            ifid, hi, lo, incl, orig = struct.unpack_from(endian + "IIIII", buf, body)
            if ifid < len(interfaces):
                lt, tick, _snap = interfaces[ifid]
                start = body + 20
                n += 1
                yield n, ((hi << 32) | lo) * tick, lt, buf, start, start + incl, orig
        elif btype == 3 and interfaces:  # simple packet
            (orig,) = struct.unpack_from(endian + "I", buf, body)
            lt, _tick, snap = interfaces[0]
            incl = min(orig, snap) if snap else orig
            start = body + 4
            n += 1
            yield n, 0.0, lt, buf, start, start + incl, orig
        off += blen


def _pcapng_tsresol(buf: Any, endian: str, off: int, end: int) -> float:
    """Seconds per timestamp tick from an interface's options (default microseconds)."""
    while off + 4 <= end:
        code, length = struct.unpack_from(endian + "HH", buf, off)
        if code == 0:
            break
        if code == 9 and length >= 1:
            v = buf[off + 4]
            return 2.0 ** -(v & 0x7F) if v & 0x80 else 10.0**-v
        off += 4 + ((length + 3) & ~3)
    return 1e-6


# --------------------------------------------------------------------------------------------------------
# TCP stream reassembly.


class _Stream:
    """One direction of a TCP connection: bytes in sequence order, framed into messages."""

    __slots__ = ("next_seq", "buf", "pending", "kind", "resync")

    def __init__(self) -> None:
        self.next_seq: int | None = None
        self.buf = bytearray()
        self.pending: dict[int, tuple[bytes, int, float]] = {}  # seq -> (data, frame, time)
        self.kind: str | None = None  # "sip", "cti" or "other" once known
        self.resync = False  # after a hole: skip to the next message boundary


def _seq_delta(a: int, b: int) -> int:
    """a - b in 32-bit sequence space (RFC 1982 style), as a signed int."""
    d = (a - b) & 0xFFFFFFFF
    return d - 0x100000000 if d & 0x80000000 else d


class _Decoder:
    """State for one pass over a capture file."""

    def __init__(self, sip_ports: Iterable[int], cti_ports: Iterable[int]) -> None:
        self.sip_ports = frozenset(sip_ports)
        self.cti_ports = frozenset(cti_ports)
        self.events: list[Event] = []
        self.stats = DecodeStats()
        self.streams: dict[tuple[bytes, int, bytes, int], _Stream] = {}
        self.fragments: dict[tuple[bytes, bytes, int, int], dict[int, bytes]] = {}
        self.fragment_last: dict[tuple[bytes, bytes, int, int], int] = {}
        self._ip4: dict[bytes, str] = {}
        self._ip6: dict[bytes, str] = {}

    # -- addresses -------------------------------------------------------------------------------------

    def ip4(self, raw: bytes) -> str:
        s = self._ip4.get(raw)
        if s is None:
            s = self._ip4[raw] = socket.inet_ntoa(raw)
        return s

    def ip6(self, raw: bytes) -> str:
        s = self._ip6.get(raw)
        if s is None:
            s = self._ip6[raw] = socket.inet_ntop(socket.AF_INET6, raw)
        return s

    # -- the loop --------------------------------------------------------------------------------------

    def run(self, frames: Iterator[Frame]) -> None:
        """Walk every frame down to UDP/TCP. The common case (Ethernet, IPv4 without options, UDP to a SIP
        port) takes one struct call and one parse; everything else goes through the general path."""
        stats = self.stats
        last_lt = -1
        eth_ip_l4 = struct.Struct(">12xHBxHxxHxBxx4s4sHHH").unpack_from  # etype .. ports, UDP length
        sip_ports = self.sip_ports
        ip4 = self._ip4
        ntoa = socket.inet_ntoa
        sip_datagram = self._sip_datagram
        general = self._general
        n = 0
        for n, ts, lt, buf, off, end, orig in frames:
            if lt != last_lt:
                last_lt = lt
                if lt not in stats.linktypes:
                    stats.linktypes.append(lt)
            if end - off < orig:
                stats.truncated += 1
            if lt == LINKTYPE_ETHERNET and end - off >= 42:
                etype, vihl, total, frag, proto, src, dst, sport, dport, ulen = eth_ip_l4(buf, off)
                if etype == 0x0800 and vihl == 0x45 and proto == 17 and not frag & 0x3FFF:
                    stats.ip_packets += 1
                    if off + 14 + total < end:  # Ethernet padding
                        end = off + 14 + total
                    pend = off + 34 + ulen if 8 <= ulen and off + 34 + ulen <= end else end
                    payload = buf[off + 42 : pend]
                    if sport in sip_ports or dport in sip_ports or payload.startswith(SIP_PREFIXES):
                        s = ip4.get(src)
                        if s is None:
                            s = ip4[src] = ntoa(src)
                        d = ip4.get(dst)
                        if d is None:
                            d = ip4[dst] = ntoa(dst)
                        sip_datagram(payload, n, ts, s, sport, d, dport)
                    continue
            general(n, ts, lt, buf, off, end)
        stats.frames = n
        self._finish()

    def _general(self, n: int, ts: float, lt: int, buf: Any, off: int, end: int) -> None:
        """Any frame the fast path in ``run`` does not take: other link types, VLANs, IPv6, TCP, fragments."""
        stats = self.stats
        unpack_h = _U16.unpack_from
        # -- link layer -> ethertype (or IP version) and network header offset
        if lt == LINKTYPE_ETHERNET:
            if off + 14 > end:
                stats.not_ip += 1
                return
            (etype,) = unpack_h(buf, off + 12)
            l3 = off + 14
        elif lt == LINKTYPE_LINUX_SLL2:
            if off + 20 > end:
                stats.not_ip += 1
                return
            (etype,) = unpack_h(buf, off)
            l3 = off + 20
        elif lt == LINKTYPE_LINUX_SLL:
            if off + 16 > end:
                stats.not_ip += 1
                return
            (etype,) = unpack_h(buf, off + 14)
            l3 = off + 16
        elif lt in (LINKTYPE_RAW, LINKTYPE_IPV4, LINKTYPE_IPV6):
            if off >= end:
                stats.not_ip += 1
                return
            l3 = off
            etype = 0x0800 if (buf[off] >> 4) == 4 else 0x86DD
        elif lt in (LINKTYPE_NULL, LINKTYPE_LOOP):
            if off + 4 > end:
                stats.not_ip += 1
                return
            (fam,) = (_U32BE if lt == LINKTYPE_LOOP else _U32LE).unpack_from(buf, off)
            if fam > 0xFFFF:  # NULL is in the writer's byte order, which may not be little-endian
                (fam,) = _U32BE.unpack_from(buf, off)
            l3 = off + 4
            etype = 0x0800 if fam == 2 else 0x86DD if fam in (10, 24, 28, 30) else 0
        else:
            stats.not_ip += 1
            return
        while etype in (0x8100, 0x88A8, 0x9100) and l3 + 4 <= end:  # VLAN tags (a SPAN port keeps them)
            (etype,) = unpack_h(buf, l3 + 2)
            l3 += 4

        if etype == 0x0800:
            if l3 + 20 > end:
                stats.not_ip += 1
                return
            stats.ip_packets += 1
            ihl = (buf[l3] & 0x0F) * 4
            (total,) = unpack_h(buf, l3 + 2)
            if l3 + total < end and total >= ihl:  # strip Ethernet padding
                end = l3 + total
            (frag,) = unpack_h(buf, l3 + 6)
            proto = buf[l3 + 9]
            src = bytes(buf[l3 + 12 : l3 + 16])
            dst = bytes(buf[l3 + 16 : l3 + 20])
            l4 = l3 + ihl
            if frag & 0x3FFF:  # fragment: MF set or non-zero offset
                data = self._fragment(src, dst, buf, l3, l4, end, frag, proto)
                if data is None:
                    return
                buf, l4, end = data, 0, len(data)
            conv = self.ip4
        elif etype == 0x86DD:
            if l3 + 40 > end:
                stats.not_ip += 1
                return
            stats.ip_packets += 1
            (plen,) = unpack_h(buf, l3 + 4)
            if l3 + 40 + plen < end:
                end = l3 + 40 + plen
            proto = buf[l3 + 6]
            src = bytes(buf[l3 + 8 : l3 + 24])
            dst = bytes(buf[l3 + 24 : l3 + 40])
            l4 = l3 + 40
            while proto in (0, 43, 60) and l4 + 8 <= end:  # hop-by-hop, routing, destination options
                proto = buf[l4]
                l4 += (buf[l4 + 1] + 1) * 8
            if proto == 44:  # fragment header: rare for SIP over IPv6, not reassembled
                stats.fragments_unreassembled += 1
                return
            conv = self.ip6
        else:
            stats.not_ip += 1
            return

        if proto == 17:
            if l4 + 8 > end:
                return
            sport, dport, ulen = _UDP.unpack_from(buf, l4)
            payload = buf[l4 + 8 : (l4 + ulen if 8 <= ulen and l4 + ulen < end else end)]
            if sport in self.sip_ports or dport in self.sip_ports or payload.startswith(SIP_PREFIXES):
                self._sip_datagram(payload, n, ts, conv(src), sport, conv(dst), dport)
        elif proto == 6:
            self._tcp(buf, l4, end, src, dst, etype == 0x86DD, n, ts)

    def _fragment(
        self, src: bytes, dst: bytes, buf: Any, l3: int, l4: int, end: int, frag: int, proto: int
    ) -> bytes | None:
        """Collect one IPv4 fragment; return the whole transport segment once every piece is in."""
        (ident,) = struct.unpack_from(">H", buf, l3 + 4)
        key = (src, dst, ident, proto)
        pieces = self.fragments.get(key)
        if pieces is None:
            if len(self.fragments) >= _MAX_FRAGMENT_SETS:  # forget the oldest set
                old = next(iter(self.fragments))
                del self.fragments[old]
                self.fragment_last.pop(old, None)
                self.stats.fragments_unreassembled += 1
            pieces = self.fragments[key] = {}
        offset = (frag & 0x1FFF) * 8
        pieces[offset] = bytes(buf[l4:end])
        if not frag & 0x2000:  # last fragment: now we know the total length
            self.fragment_last[key] = offset + (end - l4)
        total = self.fragment_last.get(key)
        if total is None:
            return None
        have = 0
        for off in sorted(pieces):
            if off > have:
                return None
            have = max(have, off + len(pieces[off]))
        if have < total:
            return None
        data = bytearray(total)
        for off in sorted(pieces):
            piece = pieces[off]
            data[off : off + len(piece)] = piece
        del self.fragments[key]
        del self.fragment_last[key]
        return bytes(data[:total])

    # -- SIP -------------------------------------------------------------------------------------------

    def _sip_datagram(
        self, payload: bytes, n: int, ts: float, src: str, sport: int, dst: str, dport: int
    ) -> None:
        """One UDP datagram = one SIP message."""
        h = parse_sip_tuple(payload)
        if h is None:
            if payload.strip(b"\r\n\0"):
                self.stats.malformed_sip += 1
            # else: a keep-alive (RFC 5626 CRLF, or a NUL byte), not a message
            return
        self._sip_event(h, n, ts, "udp", src, sport, dst, dport)

    def _sip_event(
        self,
        h: tuple[Any, ...],
        n: int,
        ts: float,
        transport: str,
        src: str,
        sport: int,
        dst: str,
        dport: int,
    ) -> None:
        """Append the event of one parsed SIP message (``parse_sip_tuple`` order)."""
        self.stats.sip_messages += 1
        (method, status, reason, _ruri, ruri_user, ruri_host, call_id, cseq, cseq_method, from_user, to_user,
         contact, expires, _clen, _hlen) = h  # fmt: skip
        registrar = None
        if method is None:
            extension = to_user
            if cseq_method == "REGISTER":
                registrar = src  # the node that answered the registration
                if expires is None and contact is None and 200 <= status < 300:
                    expires = 0  # a 2xx lists every binding left (RFC 3261 10.3): none left
        elif method == "REGISTER":
            extension = to_user
            registrar = ruri_host or dst
        else:
            extension = ruri_user or to_user
        # tuple.__new__ skips the generated __new__ and its defaults: a third of the cost of an event.
        self.events.append(
            _new_event(
                (
                    ts,
                    n,
                    "sip",
                    transport,
                    src,
                    sport,
                    dst,
                    dport,
                    method,
                    status,
                    reason,
                    call_id,
                    cseq,
                    cseq_method,
                    extension,
                    registrar,
                    expires,
                    from_user,
                    to_user,
                    None,
                    None,
                    None,
                    None,
                )
            )  # fmt: skip
        )

    # -- TCP -------------------------------------------------------------------------------------------

    def _tcp(self, buf: Any, l4: int, end: int, src: bytes, dst: bytes, v6: bool, n: int, ts: float) -> None:
        if l4 + 20 > end:
            return
        sport, dport, seq, _ack, offflags = struct.unpack_from(">HHIIH", buf, l4)
        flags = offflags & 0x1FF
        key = (src, sport, dst, dport)
        st = self.streams.get(key)
        if flags & 0x02:  # SYN: a new connection on these ports, the data starts at seq + 1
            if st is not None and st.next_seq != (seq + 1) & 0xFFFFFFFF:  # not a retransmitted SYN
                self._account(st)
            if st is None or st.next_seq != (seq + 1) & 0xFFFFFFFF:
                st = self.streams[key] = _Stream()
                st.next_seq = (seq + 1) & 0xFFFFFFFF
            return
        if st is None:
            st = self.streams[key] = _Stream()
        payload = buf[l4 + (offflags >> 12) * 4 : end]
        if not payload:
            return
        if st.kind is None:
            st.kind = self._classify(sport, dport, payload)
        if st.kind == "other":
            return
        if st.next_seq is None:  # capture started mid-connection: skip to the first message boundary
            st.next_seq = seq
            st.resync = True
        delta = _seq_delta(seq, st.next_seq)
        if delta > 0:
            self._hold(st, seq, payload, n, ts)
        elif -delta >= len(payload):
            self.stats.tcp_retransmitted += 1
            return
        else:
            self._append(st, payload[-delta:] if delta else payload)
            self._drain(st)
        self._frame(st, key, v6, n, ts)

    def _classify(self, sport: int, dport: int, payload: bytes) -> str:
        if sport in self.sip_ports or dport in self.sip_ports:
            return "sip"
        if sport in self.cti_ports or dport in self.cti_ports:
            return "cti"
        stripped = payload.lstrip(b"\r\n")
        if stripped.startswith(SIP_PREFIXES):
            return "sip"
        if stripped.startswith(b"{"):
            return "cti"
        return "other"

    @staticmethod
    def _append(st: _Stream, data: bytes) -> None:
        st.buf += data
        st.next_seq = (st.next_seq + len(data)) & 0xFFFFFFFF  # type: ignore[operator]

    def _hold(self, st: _Stream, seq: int, payload: bytes, n: int, ts: float) -> None:
        """Keep a segment that arrived ahead of a hole; give up on the hole when too much piles up."""
        old = st.pending.get(seq)
        if old is None or len(payload) > len(old[0]):
            st.pending[seq] = (payload, n, ts)
        if len(st.pending) > _MAX_PENDING_SEGMENTS:
            self._skip_hole(st)

    def _skip_hole(self, st: _Stream) -> tuple[int, float]:
        """The capture missed bytes: drop the partial message and go on at the earliest held segment.

        Returns the frame number and time of the last held segment moved into the stream.
        """
        self.stats.tcp_gaps += 1
        nxt = st.next_seq
        first = min(st.pending, key=lambda s: _seq_delta(s, nxt))  # type: ignore[arg-type]
        st.buf.clear()
        st.next_seq = first
        st.resync = True
        return self._drain(st)

    def _drain(self, st: _Stream) -> tuple[int, float]:
        """Move held segments that now continue the stream into the buffer.

        Returns the frame number and time of the last one moved, (0, 0.0) if none.
        """
        pending = st.pending
        last: tuple[int, float] = (0, 0.0)
        while pending:
            nxt = st.next_seq
            progressed = False
            for seq in list(pending):
                delta = _seq_delta(seq, nxt)  # type: ignore[arg-type]
                if delta <= 0:
                    data, n, ts = pending.pop(seq)
                    if -delta < len(data):
                        self._append(st, data[-delta:] if delta else data)
                        last = (n, ts)
                        progressed = True
                        break
                    self.stats.tcp_retransmitted += 1
            if not progressed:
                break
        return last

    def _frame(self, st: _Stream, key: tuple[bytes, int, bytes, int], v6: bool, n: int, ts: float) -> None:
        """Cut complete messages off the front of the stream buffer and turn them into events."""
        if st.kind == "cti":
            self._frame_cti(st, key, v6, n, ts)
        else:
            self._frame_sip(st, key, v6, n, ts)

    def _frame_cti(
        self, st: _Stream, key: tuple[bytes, int, bytes, int], v6: bool, n: int, ts: float
    ) -> None:
        buf = st.buf
        if st.resync:
            if not buf.startswith(b"{"):
                nl = buf.find(b"\n")
                if nl < 0:
                    buf.clear()
                    return
                del buf[: nl + 1]
            st.resync = False
        nl = buf.rfind(b"\n")
        if nl < 0:
            if len(buf) > _MAX_BUFFER:
                self.stats.malformed_cti += 1
                buf.clear()
                st.resync = True
            return
        lines = bytes(buf[:nl]).split(b"\n")
        del buf[: nl + 1]
        conv = self.ip6 if v6 else self.ip4
        src_raw, sport, dst_raw, dport = key
        src, dst = conv(src_raw), conv(dst_raw)
        for line in lines:
            self._cti_line(line, n, ts, src, sport, dst, dport)

    def _frame_sip(
        self, st: _Stream, key: tuple[bytes, int, bytes, int], v6: bool, n: int, ts: float
    ) -> None:
        """SIP over a stream: header block, then Content-Length bytes of body (RFC 3261 section 18.3)."""
        buf = st.buf
        src = dst = ""
        pos = 0
        size = len(buf)
        while pos < size:
            if st.resync:
                m = _SIP_START.search(buf, pos)
                if m is None:
                    pos = size if size - pos > _MAX_BUFFER else pos
                    break
                pos = m.start()
                st.resync = False
            while buf.startswith(b"\r\n", pos):  # keep-alive CRLFs between messages (RFC 5626)
                pos += 2
            if pos >= size:
                break
            hend = buf.find(b"\r\n\r\n", pos)
            if hend < 0:
                if size - pos > _MAX_BUFFER:
                    self.stats.malformed_sip += 1
                    pos = size
                    st.resync = True
                break
            head = parse_sip_tuple(bytes(buf[pos : hend + 4]))
            if head is None:
                self.stats.malformed_sip += 1
                st.resync = True
                pos = hend + 4
                continue
            total = head[14] + (head[13] or 0)  # header block + Content-Length (none: no body)
            if pos + total > size:
                break
            if not src:
                conv = self.ip6 if v6 else self.ip4
                src, dst = conv(key[0]), conv(key[2])
            self._sip_event(head, n, ts, "tcp", src, key[1], dst, key[3])
            pos += total
        if pos:
            del buf[:pos]

    def _cti_line(self, line: bytes, n: int, ts: float, src: str, sport: int, dst: str, dport: int) -> None:
        line = line.strip()
        if not line:
            return
        try:
            obj = json.loads(line)
        except ValueError:
            self.stats.malformed_cti += 1
            return
        self.stats.cti_messages += 1
        typ = agent = site = None
        if isinstance(obj, dict):
            typ = _opt_str(obj.get("type"))
            agent = _opt_str(obj.get("agent"))
            site = _opt_str(obj.get("site"))
        self.events.append(
            Event(ts, n, "cti", "tcp", src, sport, dst, dport, type=typ, agent=agent, site=site, body=obj)
        )

    def _account(self, st: _Stream) -> None:
        """Count what a stream leaves unread when it ends (or its ports are reused)."""
        if st.pending:
            self.stats.tcp_gaps += 1
        if st.buf.strip():
            self.stats.incomplete_at_end += 1

    def _finish(self) -> None:
        """End of file: skip holes we can no longer wait for, and count what stayed unread."""
        for key, st in self.streams.items():
            while st.pending:  # nothing more will arrive: the bytes before the held segments are lost
                n, ts = self._skip_hole(st)
                self._frame(st, key, len(key[0]) == 16, n, ts)
            self._account(st)
        self.stats.fragments_unreassembled += len(self.fragments)


def _opt_str(v: Any) -> str | None:
    if v is None or isinstance(v, str):
        return v
    return str(v)


def decode_pcap(
    path: str | Path,
    *,
    sip_ports: Iterable[int] = SIP_PORTS,
    cti_ports: Iterable[int] = (),
) -> Decoded:
    """Decode every SIP and CTI message in a capture file.

    ``sip_ports``/``cti_ports`` say which UDP/TCP ports carry what; traffic on other ports is recognised by
    its first bytes (a SIP start line, or ``{`` for CTI on TCP).
    """
    p = Path(path)
    dec = _Decoder(sip_ports, cti_ports)
    with p.open("rb") as f:
        if p.stat().st_size == 0:
            raise DecodeError(f"{p}: empty file")
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            # Hundreds of thousands of new tuples would set off the cyclic GC thousands of times, each pass
            # walking every event so far; they hold no cycles, so it is paused (a quarter of the time).
            gc_was_enabled = gc.isenabled()
            gc.disable()
            try:
                dec.run(iter_frames(mm))
            finally:
                if gc_was_enabled:
                    gc.enable()
            # Nothing may keep a view into the map past this point: events hold only decoded values.
    return Decoded(str(p), dec.events, dec.stats)
