"""SIP and CTI messages to events: one UDP datagram is one SIP message; a TCP stream's bytes are framed into
SIP messages by Content-Length (RFC 3261 section 18.3) and into CTI messages by newlines (one JSON object per
line). What cannot be read is counted in the ``DecodeStats``, never guessed.
"""

from __future__ import annotations

import json
import re
import socket
from typing import Any

from harness.decode.events import DecodeStats, Event, new_event
from harness.decode.garbage import UdpFlows
from sipcore.scan import parse_sip_tuple

__all__ = ["MAX_BUFFER", "MAX_DEPTH", "Messages", "StreamKey"]

MAX_BUFFER = 1 << 20  # bytes of one unframed message before the stream is declared garbled
# Objects and arrays nested in one CTI message: the CTI refuses deeper lines as bad_json (its MAX_DEPTH,
# docs/cti-protocol.md), and a body nested hundreds deep would break whatever walks it later (repr, json).
MAX_DEPTH = 32

# (source address, source port, destination address, destination port), addresses as raw bytes
StreamKey = tuple[bytes, int, bytes, int]

_SIP_START = re.compile(rb"(?m)^(?:SIP/2\.0 \d{3} |[A-Z]+ \S+ SIP/2\.0\r?$)")


def _depth(obj: Any) -> int:
    """Levels of objects and arrays in a decoded JSON value, walked without recursion; stops past
    MAX_DEPTH."""
    deepest = 0
    todo: list[tuple[Any, int]] = [(obj, 1)] if isinstance(obj, dict | list) else []
    while todo:
        item, level = todo.pop()
        deepest = max(deepest, level)
        if level > MAX_DEPTH:
            break
        for child in item.values() if isinstance(item, dict) else item:
            if isinstance(child, dict | list):
                todo.append((child, level + 1))
    return deepest


def _opt_str(v: Any) -> str | None:
    if v is None or isinstance(v, str):
        return v
    return str(v)


class Messages:
    """The events of one capture, built from SIP and CTI payloads, in the order their last byte was seen."""

    def __init__(self, stats: DecodeStats) -> None:
        self.stats = stats
        self.events: list[Event] = []
        self.ip4_names: dict[bytes, str] = {}  # the packet walker's fast path reads this cache directly
        self._ip6_names: dict[bytes, str] = {}
        self.udp = UdpFlows()  # malformed datagrams per flow, settled at the end (garbage or loss)

    # -- addresses -------------------------------------------------------------------------------------

    def ip4(self, raw: bytes) -> str:
        s = self.ip4_names.get(raw)
        if s is None:
            s = self.ip4_names[raw] = socket.inet_ntoa(raw)
        return s

    def ip6(self, raw: bytes) -> str:
        s = self._ip6_names.get(raw)
        if s is None:
            s = self._ip6_names[raw] = socket.inet_ntop(socket.AF_INET6, raw)
        return s

    # -- SIP -------------------------------------------------------------------------------------------

    def sip_datagram(
        self, payload: bytes, n: int, ts: float, src: str, sport: int, dst: str, dport: int
    ) -> None:
        """One UDP datagram = one SIP message."""
        h = parse_sip_tuple(payload)
        if h is None:
            if payload.strip(b"\r\n\0"):
                self.stats.malformed_sip += 1
                self.udp.malformed((src, sport, dst, dport), len(payload))
            # else: a keep-alive (RFC 5626 CRLF, or a NUL byte), not a message
            return
        self.sip_event(h, n, ts, "udp", src, sport, dst, dport)

    def sip_event(
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
            new_event(
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

    def frame_sip(self, buf: bytearray, resync: bool, key: StreamKey, v6: bool, n: int, ts: float) -> bool:
        """Cut the whole SIP messages off the front of a stream's bytes: a header block, then Content-Length
        bytes of body. ``resync``: skip to the next start line first (after a hole). Returns ``resync``."""
        src = dst = ""
        pos = 0
        size = len(buf)
        while pos < size:
            if resync:
                m = _SIP_START.search(buf, pos)
                if m is None:  # only the last, partial line can still become a start line
                    pos = buf.rfind(b"\n", pos) + 1 or pos
                    pos = size if size - pos > MAX_BUFFER else pos
                    break
                pos = m.start()
                resync = False
            while buf.startswith(b"\r\n", pos):  # keep-alive CRLFs between messages (RFC 5626)
                pos += 2
            if pos >= size:
                break
            hend = buf.find(b"\r\n\r\n", pos)
            if hend < 0:
                if size - pos > MAX_BUFFER:
                    self.stats.malformed_sip += 1
                    pos = size
                    resync = True
                break
            head = parse_sip_tuple(bytes(buf[pos : hend + 4]))
            if head is None:
                self.stats.malformed_sip += 1
                resync = True
                pos = hend + 4
                continue
            if head[13] is not None and head[13] > MAX_BUFFER:  # a body no PBX sends: the length lies
                self.stats.malformed_sip += 1
                resync = True
                pos = hend + 4
                continue
            total = head[14] + (head[13] or 0)  # header block + Content-Length (none: no body)
            if pos + total > size:
                break
            if not src:
                conv = self.ip6 if v6 else self.ip4
                src, dst = conv(key[0]), conv(key[2])
            self.sip_event(head, n, ts, "tcp", src, key[1], dst, key[3])
            pos += total
        if pos:
            del buf[:pos]
        return resync

    # -- CTI -------------------------------------------------------------------------------------------

    def frame_cti(self, buf: bytearray, resync: bool, key: StreamKey, v6: bool, n: int, ts: float) -> bool:
        """Cut the whole lines off the front of a CTI stream's bytes, one event each. ``resync``: drop the
        partial line first (after a hole). Returns ``resync``."""
        if resync:
            if not buf.startswith(b"{"):
                nl = buf.find(b"\n")
                if nl < 0:
                    buf.clear()
                    return True
                del buf[: nl + 1]
            resync = False
        nl = buf.rfind(b"\n")
        if nl < 0:
            if len(buf) > MAX_BUFFER:
                self.stats.malformed_cti += 1
                buf.clear()
                return True
            return False
        lines = bytes(buf[:nl]).split(b"\n")
        del buf[: nl + 1]
        conv = self.ip6 if v6 else self.ip4
        src_raw, sport, dst_raw, dport = key
        src, dst = conv(src_raw), conv(dst_raw)
        for line in lines:
            self.cti_line(line, n, ts, src, sport, dst, dport)
        return False

    def cti_line(self, line: bytes, n: int, ts: float, src: str, sport: int, dst: str, dport: int) -> None:
        line = line.strip()
        if not line:
            return
        try:
            obj = json.loads(line)
        except (ValueError, RecursionError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            self.stats.malformed_cti += 1
            return
        # Depth never exceeds the number of brackets: only a line with many is walked.
        if line.count(b"{") + line.count(b"[") > MAX_DEPTH and _depth(obj) > MAX_DEPTH:
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
