"""TCP stream reassembly: each direction's bytes in sequence order, each byte once.

Out-of-order segments are held until the hole before them fills; overlaps, retransmissions and duplicates
give each byte once; a hole that never fills (bytes the capture missed) is counted and skipped to the next
message boundary, so one lost segment costs one message, not the rest of the stream.

A stream that ends inside a message is capture loss only if the peer acknowledged bytes we never saw; when
its acknowledgements stop within the partial message (a cut port, a killed process), the rest was never
delivered: the connection died mid-message, which is counted apart and is not a gap in the evidence.

A stream's unread bytes (malformed messages, a message never finished) on a connection whose server
accepted nothing are an attacker's garbage, counted apart too (harness/decode/garbage.py); so each
connection is settled as a whole, both directions at once, when it ends or its ports are reused.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from typing import Any

from harness.decode.events import Close, DecodeStats
from harness.decode.garbage import accepts, connection_accepted, count_garbage, role
from harness.decode.messages import Messages, StreamKey
from sipcore.scan import SIP_PREFIXES

__all__ = ["Stream", "TcpStreams"]

_MAX_PENDING_SEGMENTS = 512  # out-of-order segments held per direction before a hole is declared lost
_TCP = struct.Struct(">HHIIH")


class Stream:
    """One direction of a TCP connection: bytes in sequence order, framed into messages."""

    __slots__ = (
        "next_seq", "buf", "pending", "kind", "resync", "acked", "fin", "reset", "opened", "msgs", "good",
        "bad", "nbytes", "closed",
    )  # fmt: skip

    def __init__(self) -> None:
        self.next_seq: int | None = None
        self.buf = bytearray()
        self.pending: dict[int, tuple[bytes, int, float]] = {}  # seq -> (data, frame, time)
        self.kind: str | None = None  # "sip", "cti" or "other" once known
        self.resync = False  # after a hole: skip to the next message boundary
        self.acked: int | None = (
            None  # highest ACK this direction sent: the reverse direction's bytes received
        )
        self.fin: int | None = None  # sequence number of this direction's FIN
        self.reset = False  # this direction sent a RST: the connection was aborted
        self.opened = False  # this direction sent the first SYN: the client's
        self.msgs = 0  # messages read from this direction
        self.good = 0  # messages that accept the peer's traffic (garbage.accepts)
        self.bad = 0  # malformed messages read from this direction
        self.nbytes = 0  # bytes read into the stream
        self.closed: tuple[float, str] | None = None  # (time, "fin"/"rst") of its first FIN or RST


def _seq_delta(a: int, b: int) -> int:
    """a - b in 32-bit sequence space (RFC 1982 style), as a signed int."""
    d = (a - b) & 0xFFFFFFFF
    return d - 0x100000000 if d & 0x80000000 else d


class TcpStreams:
    """Every TCP stream of one capture; whole messages go to ``messages`` as they complete."""

    def __init__(
        self, messages: Messages, stats: DecodeStats, sip_ports: Iterable[int], cti_ports: Iterable[int]
    ) -> None:
        self.messages = messages
        self.stats = stats
        self.sip_ports = frozenset(sip_ports)
        self.cti_ports = frozenset(cti_ports)
        self.streams: dict[StreamKey, Stream] = {}
        self.closes: list[Close] = []

    def segment(
        self, buf: Any, l4: int, end: int, src: bytes, dst: bytes, v6: bool, n: int, ts: float
    ) -> None:
        """One TCP segment (its header at ``buf[l4:]``) of frame ``n``."""
        if l4 + 20 > end:
            return
        sport, dport, seq, ack, offflags = _TCP.unpack_from(buf, l4)
        flags = offflags & 0x1FF
        key = (src, sport, dst, dport)
        st = self.streams.get(key)
        if flags & 0x02:  # SYN: a new connection on these ports, the data starts at seq + 1
            if st is not None and st.next_seq != (seq + 1) & 0xFFFFFFFF:  # not a retransmitted SYN
                self._end(key)
            if st is None or st.next_seq != (seq + 1) & 0xFFFFFFFF:
                st = self.streams[key] = Stream()
                st.next_seq = (seq + 1) & 0xFFFFFFFF
                st.opened = not flags & 0x10
            return
        if st is None:
            st = self.streams[key] = Stream()
        if flags & 0x10 and (st.acked is None or 0 <= ((ack - st.acked) & 0xFFFFFFFF) - 1 < 0x7FFFFFFF):
            st.acked = ack  # later in sequence space than any before
        payload = buf[l4 + (offflags >> 12) * 4 : end]
        if flags & 0x01:
            st.fin = (seq + len(payload)) & 0xFFFFFFFF
        if flags & 0x04:
            st.reset = True
        if flags & 0x05 and st.closed is None:
            st.closed = (ts, "rst" if flags & 0x04 else "fin")
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

    def finish(self) -> None:
        """End of file: skip holes we can no longer wait for, and count what stayed unread."""
        for key, st in self.streams.items():
            while st.pending:  # nothing more will arrive: the bytes before the held segments are lost
                n, ts = self._skip_hole(st)
                self._frame(st, key, len(key[0]) == 16, n, ts)
        while self.streams:
            self._end(next(iter(self.streams)))

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
    def _append(st: Stream, data: bytes) -> None:
        st.buf += data
        st.nbytes += len(data)
        st.next_seq = (st.next_seq + len(data)) & 0xFFFFFFFF  # type: ignore[operator]

    def _hold(self, st: Stream, seq: int, payload: bytes, n: int, ts: float) -> None:
        """Keep a segment that arrived ahead of a hole; give up on the hole when too much piles up."""
        old = st.pending.get(seq)
        if old is None or len(payload) > len(old[0]):
            st.pending[seq] = (payload, n, ts)
        if len(st.pending) > _MAX_PENDING_SEGMENTS:
            self._skip_hole(st)

    def _skip_hole(self, st: Stream) -> tuple[int, float]:
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

    def _drain(self, st: Stream) -> tuple[int, float]:
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

    def _frame(self, st: Stream, key: StreamKey, v6: bool, n: int, ts: float) -> None:
        """Cut complete messages off the front of the stream buffer and turn them into events; note on the
        stream how many were malformed and how many accept the peer's traffic."""
        stats, events = self.stats, self.messages.events
        bad, first = stats.malformed_cti + stats.malformed_sip, len(events)
        if st.kind == "cti":
            st.resync = self.messages.frame_cti(st.buf, st.resync, key, v6, n, ts)
        else:
            st.resync = self.messages.frame_sip(st.buf, st.resync, key, v6, n, ts)
        st.bad += stats.malformed_cti + stats.malformed_sip - bad
        st.msgs += len(events) - first
        for i in range(first, len(events)):
            st.good += accepts(events[i])

    def _end(self, key: StreamKey) -> None:
        """Settle the connection of stream ``key``: both its directions leave the table."""
        st = self.streams.pop(key)
        back = self.streams.pop((key[2], key[3], key[0], key[1]), None)
        self._closes(st, key, back)
        if back is not None:
            self._closes(back, (key[2], key[3], key[0], key[1]), st)
        if back is None:
            self._account(st, key, None, False)
            return
        server = role(key[1], key[3], st.opened, back.opened, self.sip_ports | self.cti_ports)
        accepted = connection_accepted((st.msgs, st.good, st.bad), (back.msgs, back.good, back.bad), server)
        self._account(st, key, back, not accepted)
        self._account(back, (key[2], key[3], key[0], key[1]), st, not accepted)

    def _closes(self, st: Stream, key: StreamKey, back: Stream | None) -> None:
        if st.closed is not None:
            conv = self.messages.ip6 if len(key[0]) == 16 else self.messages.ip4
            peer = back.nbytes if back is not None else 0
            self.closes.append(
                Close(st.closed[0], conv(key[0]), key[1], conv(key[2]), key[3], st.closed[1], peer)
            )

    def _account(self, st: Stream, key: StreamKey, back: Stream | None, refused: bool) -> None:
        """Count what a stream leaves unread when it ends (or its ports are reused). ``refused``: the
        server's side of its connection (captured) accepted nothing, so what it left unread is garbage."""
        if st.pending:
            self.stats.tcp_gaps += 1
        rest = st.buf.strip()
        if refused and (st.bad or rest):
            if st.kind == "cti":
                self.stats.malformed_cti -= st.bad
            else:
                self.stats.malformed_sip -= st.bad
            count_garbage(self.stats, st.bad + bool(rest), st.nbytes)
        elif rest:
            if not st.pending and self._died_mid_message(st, back):
                self.stats.ended_mid_message += 1
            else:
                self.stats.incomplete_at_end += 1

    def _died_mid_message(self, st: Stream, back: Stream | None) -> bool:
        """True when the peer's last acknowledgement lies within the partial message at the stream's end (up
        to a FIN right after it), or anywhere up to its end when the connection was reset: the rest was
        never delivered, so the capture missed nothing. Without an acknowledgement seen (a one-way capture)
        nobody can tell, and it stays capture loss."""
        if back is None or back.acked is None or st.next_seq is None:
            return False
        start = (st.next_seq - len(st.buf)) & 0xFFFFFFFF
        last = (st.next_seq + 1) & 0xFFFFFFFF if st.fin == st.next_seq else st.next_seq
        if st.reset or back.reset:
            # Aborted: the sender's unsent bytes were thrown away, so the message never completes. Only an
            # acknowledgement past what the capture holds shows bytes it missed. (The UL gave up on a fence
            # to a CTI whose port was down and reset the connection mid-line: explore seed 8.)
            return _seq_delta(back.acked, last) <= 0
        return _seq_delta(back.acked, start) >= 0 and _seq_delta(back.acked, last) <= 0
