"""Frames to transport payloads: the link, IP and UDP/TCP headers walked by offset, IPv4 fragments
reassembled, and ``decode_pcap``, which puts the file reader, this walk, TCP reassembly and the SIP/CTI
message builder together.

Link types: Ethernet (with 802.1Q/802.1ad tags, as a SPAN port delivers them), Linux cooked SLL and SLL2
(``tcpdump -i any``), raw IP, and BSD loopback; IPv4 and IPv6.
"""

from __future__ import annotations

import gc
import mmap
import socket
import struct
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from harness.decode.events import Decoded, DecodeStats
from harness.decode.messages import Messages
from harness.decode.pcapfile import (
    LINKTYPE_ETHERNET,
    DecodeError,
    Frame,
    iter_frames,
    network_header,
)
from harness.decode.tcp import TcpStreams
from sipcore.scan import SIP_PREFIXES

__all__ = ["SIP_PORTS", "decode_buffer", "decode_pcap"]

SIP_PORTS: tuple[int, ...] = (5060,)

_MAX_FRAGMENT_SETS = 4096
_U16 = struct.Struct(">H")
_UDP = struct.Struct(">HHH")


class _Decoder:
    """State for one pass over a capture file."""

    def __init__(self, sip_ports: Iterable[int], cti_ports: Iterable[int]) -> None:
        self.sip_ports = frozenset(sip_ports)
        self.stats = DecodeStats()
        self.messages = Messages(self.stats)
        self.tcp = TcpStreams(self.messages, self.stats, self.sip_ports, cti_ports)
        self.fragments: dict[tuple[bytes, bytes, int, int], dict[int, bytes]] = {}
        self.fragment_last: dict[tuple[bytes, bytes, int, int], int] = {}

    # -- the loop --------------------------------------------------------------------------------------

    def run(self, frames: Iterator[Frame]) -> None:
        """Walk every frame down to UDP/TCP. The common case (Ethernet, IPv4 without options, UDP to a SIP
        port) takes one struct call and one parse; everything else goes through the general path."""
        stats = self.stats
        last_lt = -1
        eth_ip_l4 = struct.Struct(">12xHBxHxxHxBxx4s4sHHH").unpack_from  # etype .. ports, UDP length
        sip_ports = self.sip_ports
        ip4 = self.messages.ip4_names
        ntoa = socket.inet_ntoa
        sip_datagram = self.messages.sip_datagram
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
        self.tcp.finish()
        self.messages.udp.settle(self.messages.events, stats)
        stats.fragments_unreassembled += len(self.fragments)

    def corrupt(self, _offset: int, _reason: str) -> None:
        """The file's lengths stop holding together here: nothing after can be read."""
        self.stats.corrupt_file = 1

    def _general(self, n: int, ts: float, lt: int, buf: Any, off: int, end: int) -> None:
        """Any frame the fast path in ``run`` does not take: other link types, VLANs, IPv6, TCP, fragments."""
        stats = self.stats
        unpack_h = _U16.unpack_from
        # -- link layer -> ethertype (or IP version) and network header offset
        found = network_header(lt, buf, off, end)
        if found is None:
            stats.not_ip += 1
            return
        etype, l3 = found

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
            conv = self.messages.ip4
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
            conv = self.messages.ip6
        else:
            stats.not_ip += 1
            return

        if proto == 17:
            if l4 + 8 > end:
                return
            sport, dport, ulen = _UDP.unpack_from(buf, l4)
            payload = buf[l4 + 8 : (l4 + ulen if 8 <= ulen and l4 + ulen < end else end)]
            if sport in self.sip_ports or dport in self.sip_ports or payload.startswith(SIP_PREFIXES):
                self.messages.sip_datagram(payload, n, ts, conv(src), sport, conv(dst), dport)
        elif proto == 6:
            self.tcp.segment(buf, l4, end, src, dst, etype == 0x86DD, n, ts)

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


def decode_pcap(
    path: str | Path,
    *,
    sip_ports: Iterable[int] = SIP_PORTS,
    cti_ports: Iterable[int] = (),
) -> Decoded:
    """Decode every SIP and CTI message in a capture file.

    ``sip_ports``/``cti_ports`` say which UDP/TCP ports carry what; traffic on other ports is recognised by
    its first bytes (a SIP start line, or ``{`` for CTI on TCP). Raises DecodeError only when the file is
    not a capture at all; whatever inside it cannot be read is counted in the stats.
    """
    p = Path(path)
    with p.open("rb") as f:
        if p.stat().st_size == 0:
            raise DecodeError(f"{p}: empty file")
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            # Nothing may keep a view into the map past this point: events hold only decoded values.
            return decode_buffer(mm, str(p), sip_ports=sip_ports, cti_ports=cti_ports)


def decode_buffer(
    buf: Any,
    name: str = "<buffer>",
    *,
    sip_ports: Iterable[int] = SIP_PORTS,
    cti_ports: Iterable[int] = (),
) -> Decoded:
    """``decode_pcap`` of a capture already in memory (bytes or mmap); ``name`` is the result's path."""
    dec = _Decoder(sip_ports, cti_ports)
    # Hundreds of thousands of new tuples would set off the cyclic GC thousands of times, each pass walking
    # every event so far; they hold no cycles, so it is paused (a quarter of the time).
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        dec.run(iter_frames(buf, dec.corrupt))
    finally:
        if gc_was_enabled:
            gc.enable()
    dec.tcp.closes.sort(key=lambda c: c.time)
    return Decoded(name, dec.messages.events, dec.stats, dec.tcp.closes)
