"""Secrets out of a capture file: a redacted copy of a pcap or pcapng, fit to attach to a report.

Why in place and byte for byte: a redacted capture must still read as the original in Wireshark and in
the decoder (same frames, lengths, TCP sequence numbers, message framing by Content-Length), so each secret
is overwritten with as many ``x`` bytes and the checksums of the packets it touched are recomputed.

What counts as a secret, found in every TCP stream and UDP datagram whatever its port:

- JSON string values of keys ending in ``token``, ``password``, ``passwd``, ``secret``, ``sig`` or
  ``signature`` (the CTI login's token, the CTI admin messages' ``sig``, the UL's login request and
  registration information);
- in ``Authorization:`` / ``Proxy-Authorization:`` headers, the Digest ``response``, ``nonce`` and
  ``cnonce`` values (any other scheme: its whole credential), and the ``nonce`` of a ``WWW-Authenticate:`` /
  ``Proxy-Authenticate:`` challenge;
- the whole value of ``X-Hil-Sig`` and of any header whose name ends in ``Signature`` or is ``Signature``.

TCP is scanned per direction on the reassembled stream, so a secret split over segments is found, and every
segment holding a byte of it is overwritten, retransmissions included (a retransmission whose bytes differ
from the first copy is also scanned on its own). Where the stream cannot be followed, the redactor blanks
instead of guessing: after a hole in the capture, or at the start of a connection whose SYN was not seen,
everything up to the first line end (a secret never spans one) unless the data starts a message (``{``, a
SIP or HTTP start line); IP fragments have their whole payload blanked.
"""

from __future__ import annotations

import os
import re
import struct
import time
from dataclasses import dataclass
from pathlib import Path

from harness.decode import iter_frames, network_header

__all__ = ["FILL", "Redaction", "redact_buffer", "redact_pcap", "secret_spans", "secrets_in"]

FILL = ord("x")

_KEY = rb'"[A-Za-z0-9_.-]*?(?i:token|password|passwd|secret|sig|signature)"'
_JSON_SECRET = re.compile(_KEY + rb'\s*:\s*"((?:[^"\\\r\n]|\\.)*)')
_AUTH_LINE = re.compile(
    rb"(?im)^[ \t]*(proxy-authorization|authorization|www-authenticate|proxy-authenticate"
    rb"|x-hil-sig|[a-z0-9-]*signature)[ \t]*:[ \t]*([^\r\n]*)"
)
_DIGEST_PARAM = re.compile(rb'(?i)(?:^|[\s,])(response|nonce|cnonce)[ \t]*=[ \t]*(?:"([^"\r\n]*)|([^,\s]*))')
_SCHEME = re.compile(rb"[ \t]*([A-Za-z0-9_-]+)[ \t]*")
# A chunk that begins with one of these starts a message: no secret's tail can be there.
_MESSAGE_START = re.compile(
    rb"\{|SIP/2\.0 |HTTP/1\.[01] |(?:REGISTER|INVITE|ACK|BYE|CANCEL|OPTIONS|NOTIFY|SUBSCRIBE|MESSAGE|INFO"
    rb"|PRACK|UPDATE|REFER|PUBLISH|GET|POST|PUT|DELETE|HEAD|PATCH) "
)
_H = struct.Struct(">H")
_MASK = 0xFFFFFFFF

Span = tuple[int, int]


def secret_spans(data: bytes) -> list[Span]:
    """(start, end) of each secret value in ``data`` (one stream chunk or one datagram)."""
    out: list[Span] = []
    low = data.lower()  # a plain substring test first: most packets hold no secret, and regexes cost more
    if b'"' in data and (b"token" in low or b"pass" in low or b"secret" in low or b"sig" in low):
        out += [m.span(1) for m in _JSON_SECRET.finditer(data) if m.end(1) > m.start(1)]
    if not (b"auth" in low or b"signature" in low or b"x-hil-sig" in low):
        return out
    for m in _AUTH_LINE.finditer(data):
        name = m.group(1).lower()
        v0, v1 = m.span(2)
        value = data[v0:v1]
        if name in (b"authorization", b"proxy-authorization"):
            scheme = _SCHEME.match(value)
            if scheme is None or scheme.group(1).lower() != b"digest":
                # Basic, Bearer, or unreadable: the whole credential after the scheme word
                start = v0 + (scheme.end() if scheme is not None and scheme.end() < len(value) else 0)
                out.append((start, v1))
                continue
        elif name in (b"www-authenticate", b"proxy-authenticate"):
            pass  # only the challenge's nonce, below
        else:  # a signature header: its whole value
            out.append((v0, v1))
            continue
        for p in _DIGEST_PARAM.finditer(value):
            if name.endswith(b"authenticate") and p.group(1).lower() != b"nonce":
                continue
            g = 2 if p.group(2) is not None else 3
            if p.end(g) > p.start(g):
                out.append((v0 + p.start(g), v0 + p.end(g)))
    return out


@dataclass
class Redaction:
    """What one redaction did: frames read and changed, secrets found, bytes overwritten, and its time."""

    frames: int = 0
    changed_frames: int = 0
    secrets: int = 0
    blanked_bytes: int = 0
    fragments_blanked: int = 0
    dropped_bytes: int = 0  # after the last whole frame: a cut or corrupt file's unreadable end
    seconds: float = 0.0


class _Segment:
    __slots__ = ("frame", "start", "off", "length")

    def __init__(self, frame: int, start: int, off: int, length: int) -> None:
        self.frame, self.start, self.off, self.length = frame, start, off, length


class _Flow:
    __slots__ = ("syn_seq", "last_seq", "last_rel", "segments")

    def __init__(self, seq: int) -> None:
        self.syn_seq: int | None = None
        self.last_seq = seq
        self.last_rel = 0
        self.segments: list[_Segment] = []

    def rel(self, seq: int) -> int:
        """A sequence number as a position in the stream, unwrapped around the last one seen."""
        delta = ((seq - self.last_seq + 0x80000000) & _MASK) - 0x80000000
        self.last_seq, self.last_rel = seq, self.last_rel + delta
        return self.last_rel


# per frame that carries a payload: (l3 offset, IP version, protocol, l4 offset, end of IP packet, full)
_Where = tuple[int, int, int, int, int, bool]


class _Redactor:
    def __init__(self, buf: bytearray) -> None:
        self.buf = buf
        self.stats = Redaction()
        self.where: dict[int, _Where] = {}
        self.flows: dict[tuple[bytes, bytes, int, int], _Flow] = {}
        self.changed: set[int] = set()
        self.found: set[bytes] | None = None  # the secret values themselves, when asked (``secrets_in``)
        self.whole = len(buf)  # where the last whole frame or block ends: what follows is never written

    def keep(self, value: bytes | bytearray) -> None:
        if self.found is not None and len(value) >= 8:
            self.found.add(bytes(value))

    def blank(self, frame: int, start: int, end: int) -> None:
        """Overwrite buf[start:end] (file offsets inside one frame's payload)."""
        if end > start:
            self.buf[start:end] = bytes((FILL,)) * (end - start)
            self.stats.blanked_bytes += end - start
            self.changed.add(frame)

    def run(self) -> Redaction:
        t0 = time.monotonic()
        n, last = 0, 24
        for n, _ts, lt, _buf, off, end, orig in iter_frames(self.buf):
            self.frame(n, lt, off, end, end - off >= orig)
            last = end
        self.stats.frames = n
        self.whole = _whole_blocks_end(self.buf) if self.buf[:4] == b"\x0a\x0d\x0d\x0a" else last
        for flow in self.flows.values():
            self.stream(flow)
        for n in self.changed:
            self.checksum(n)
        self.stats.changed_frames = len(self.changed)
        self.stats.seconds = time.monotonic() - t0
        return self.stats

    def frame(self, n: int, lt: int, off: int, end: int, full: bool) -> None:
        buf = self.buf
        found = network_header(lt, buf, off, end)
        if found is None:
            return
        etype, l3 = found
        if etype == 0x0800 and l3 + 20 <= end:
            ihl = (buf[l3] & 0x0F) * 4
            (total,) = _H.unpack_from(buf, l3 + 2)
            if ihl < 20:
                return
            if total >= ihl and l3 + total <= end:
                end = l3 + total  # Ethernet padding is not payload
            else:
                full = False
            (frag,) = _H.unpack_from(buf, l3 + 6)
            proto, l4, ver = buf[l3 + 9], l3 + ihl, 4
            src, dst = bytes(buf[l3 + 12 : l3 + 16]), bytes(buf[l3 + 16 : l3 + 20])
            if frag & 0x3FFF:  # a fragment: its payload cannot be followed here, so all of it is blanked
                first = not frag & 0x1FFF
                hdr = 0
                if first and proto == 17 and l4 + 8 <= end:
                    hdr = 8
                    self.buf[l4 + 6 : l4 + 8] = b"\0\0"  # no UDP checksum (IPv4 allows it)
                elif first and proto == 6 and l4 + 20 <= end:
                    hdr = (buf[l4 + 12] >> 4) * 4
                self.fragment(n, min(l4 + hdr, end), end)
                return
        elif etype == 0x86DD and l3 + 40 <= end:
            (plen,) = _H.unpack_from(buf, l3 + 4)
            if l3 + 40 + plen <= end:
                end = l3 + 40 + plen
            else:
                full = False
            proto, l4, ver = buf[l3 + 6], l3 + 40, 6
            src, dst = bytes(buf[l3 + 8 : l3 + 24]), bytes(buf[l3 + 24 : l3 + 40])
            while proto in (0, 43, 60) and l4 + 8 <= end:
                proto, l4 = buf[l4], l4 + (buf[l4 + 1] + 1) * 8
            if proto == 44:
                self.fragment(n, l4, end)
                return
        else:
            return
        if proto == 17 and l4 + 8 <= end:
            self.where[n] = (l3, ver, proto, l4, end, full)
            p0 = l4 + 8
            payload = bytes(buf[p0:end])
            for a, b in secret_spans(payload):
                self.stats.secrets += 1
                self.keep(payload[a:b])
                self.blank(n, p0 + a, p0 + b)
        elif proto == 6 and l4 + 20 <= end:
            sport, dport, seq = struct.unpack_from(">HHI", buf, l4)
            doff = (buf[l4 + 12] >> 4) * 4
            flags = buf[l4 + 13]
            self.where[n] = (l3, ver, proto, l4, end, full)
            key = (src, dst, sport, dport)
            flow = self.flows.get(key)
            if flow is None:
                flow = self.flows[key] = _Flow(seq)
            rel = flow.rel(seq)
            if flags & 0x02:  # SYN: the stream starts after it
                flow.syn_seq = rel + 1
            p0 = l4 + doff
            if p0 < end:
                flow.segments.append(_Segment(n, rel + (1 if flags & 0x02 else 0), p0, end - p0))

    def fragment(self, n: int, start: int, end: int) -> None:
        self.stats.fragments_blanked += 1
        self.blank(n, start, end)

    def stream(self, flow: _Flow) -> None:
        """Reassemble one direction's contiguous chunks, find the secrets in each, blank them in every
        segment that holds a byte of them."""
        segs = sorted(flow.segments, key=lambda s: s.start)
        i = 0
        while i < len(segs):
            c0 = segs[i].start
            c1 = c0
            j = i
            while j < len(segs) and segs[j].start <= c1:
                c1 = max(c1, segs[j].start + segs[j].length)
                j += 1
            chunk = bytearray(c1 - c0)
            alone: list[_Segment] = []
            filled = c0
            for s in segs[i:j]:
                a = s.start - c0
                data = self.buf[s.off : s.off + s.length]
                if s.start < filled:  # overlap (a retransmission): its bytes must agree with the first copy
                    k = min(filled, s.start + s.length) - s.start
                    if data[:k] != chunk[a : a + k]:
                        alone.append(s)
                    chunk[a + k : a + s.length] = data[k:]
                else:
                    chunk[a : a + s.length] = data
                filled = max(filled, s.start + s.length)
            spans = secret_spans(bytes(chunk))
            for a, b in spans:
                self.keep(chunk[a:b])
            clean_start = flow.syn_seq is not None and c0 == flow.syn_seq
            if not clean_start and not _MESSAGE_START.match(chunk):
                nl = chunk.find(b"\n")
                spans.append((0, nl if nl >= 0 else len(chunk)))  # maybe the tail of a secret cut before it
            self.stats.secrets += len(spans)
            for a, b in spans:
                self.blank_stream(segs[i:j], c0 + a, c0 + b)
            for s in alone:
                data = bytes(self.buf[s.off : s.off + s.length])
                for a, b in secret_spans(data):
                    self.stats.secrets += 1
                    self.keep(data[a:b])
                    self.blank(s.frame, s.off + a, s.off + b)
            i = j

    def blank_stream(self, segs: list[_Segment], a: int, b: int) -> None:
        """Blank stream positions [a, b) in every segment that covers any of them."""
        for s in segs:
            lo, hi = max(a, s.start), min(b, s.start + s.length)
            if lo < hi:
                self.blank(s.frame, s.off + lo - s.start, s.off + hi - s.start)

    def checksum(self, n: int) -> None:
        """Recompute the TCP or UDP checksum of a changed packet (a truncated one cannot be summed: a UDP
        one over IPv4 gets none, which IPv4 allows; a TCP one keeps its old, now wrong, checksum)."""
        where = self.where.get(n)
        if where is None:
            return
        l3, ver, proto, l4, end, full = where
        buf = self.buf
        at = l4 + (6 if proto == 17 else 16)
        if not full:
            if proto == 17 and ver == 4:
                buf[at : at + 2] = b"\0\0"
            return
        buf[at : at + 2] = b"\0\0"
        addrs = bytes(buf[l3 + 12 : l3 + 20]) if ver == 4 else bytes(buf[l3 + 8 : l3 + 40])
        length = end - l4
        tail = struct.pack(">HH", proto, length) if ver == 4 else struct.pack(">IxxxB", length, proto)
        pseudo = addrs + tail
        c = _ones_sum(pseudo + bytes(buf[l4:end]))
        if proto == 17 and c == 0:
            c = 0xFFFF
        buf[at : at + 2] = _H.pack(c)


_BOM = {b"\x4d\x3c\x2b\x1a": "<", b"\x1a\x2b\x3c\x4d": ">"}


def _whole_blocks_end(buf: bytearray) -> int:
    """Where the last whole pcapng block ends (a block cut short or whose length lies is not whole)."""
    off, size, endian = 0, len(buf), "<"
    while off + 12 <= size:
        if buf[off : off + 4] == b"\x0a\x0d\x0d\x0a":
            endian = {b"\x4d\x3c\x2b\x1a": "<", b"\x1a\x2b\x3c\x4d": ">"}.get(
                bytes(buf[off + 8 : off + 12]), ""
            )
            if not endian:
                break
        (blen,) = struct.unpack_from(endian + "I", buf, off + 4)
        if blen < 12 or blen % 4 or off + blen > size:
            break
        if struct.unpack_from(endian + "I", buf, off + blen - 4)[0] != blen:
            break
        off += blen
    return off


def _ones_sum(data: bytes) -> int:
    """The Internet checksum (RFC 1071) of ``data``: one big-integer sum instead of a loop per word."""
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f">{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def redact_buffer(data: bytes | bytearray) -> tuple[bytearray, Redaction]:
    """A redacted copy of a capture held in memory, and what was done (DecodeError if not a capture).
    Bytes the reader cannot frame (a record cut short, anything past a length that lies) are left out:
    unread, they could hold anything."""
    buf = bytearray(data)
    red = _Redactor(buf)
    stats = red.run()
    if red.whole < len(buf):  # a partial record (tcpdump killed), or past a length that lies: dropped
        stats.dropped_bytes = len(buf) - red.whole
        del buf[red.whole :]
    return buf, stats


def redact_pcap(src: str | Path, dst: str | Path, mode: int = 0o644) -> Redaction:
    """Write a redacted copy of the capture ``src`` to ``dst`` (written aside and renamed, so ``dst`` is
    never a partial file); ``src`` is left as it was."""
    buf, stats = redact_buffer(Path(src).read_bytes())
    out = Path(dst)
    tmp = out.with_name(f".{out.name}.part")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(buf)
    os.replace(tmp, out)
    return stats


def secrets_in(data: bytes | bytearray) -> set[bytes]:
    """The secret values (8 bytes or more) a capture holds, whole as the redactor finds them (TCP streams
    reassembled): what a check of a run's other artifacts looks for (harness/gate/inputs.py)."""
    red = _Redactor(bytearray(data))
    red.found = set()
    red.run()
    return red.found
