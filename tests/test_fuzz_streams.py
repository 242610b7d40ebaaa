"""A TCP stream that ends inside a message: capture loss, or a connection that died (issue 16, brief F1 item
4). The decoder used to count every such end as ``incomplete_at_end`` (not lossless), so a CTI connection
cut mid-line by a port shutdown made the capture look lossy. Now the peer's acknowledgements decide: if they
stop within the partial message, the rest was never delivered and nothing was missed."""

from __future__ import annotations

import json
import struct

from hypothesis import given
from hypothesis import strategies as st
from test_fuzz_targets import FUZZ, pcap_file

from harness.decode import Decoded, decode_buffer

AGENT, CTI = bytes([198, 18, 1, 21]), bytes([198, 18, 1, 2])
APORT, CPORT = 45000, 7010
ISN = 100  # the agent's SYN; its data starts at ISN + 1
SYN, ACK, PSH_ACK, FIN_ACK = 0x02, 0x10, 0x18, 0x11


def seg(up: bool, seq: int, ack: int, flags: int, payload: bytes = b"") -> bytes:
    """An Ethernet/IPv4/TCP frame, agent -> CTI (``up``) or back."""
    src, dst, sport, dport = (AGENT, CTI, APORT, CPORT) if up else (CTI, AGENT, CPORT, APORT)
    tcp = struct.pack(
        ">HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, 5 << 4, flags, 65535, 0, 0
    )
    ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 40 + len(payload), 1, 0, 64, 6, 0, src, dst)
    return b"\x02\x00\x00\x00\x00\x01\x02\x00\x00\x00\x00\x02\x08\x00" + ip + tcp + payload


def lines(*types: str) -> bytes:
    return b"".join(json.dumps({"type": t}).encode() + b"\n" for t in types)


def decode(frames: list[bytes]) -> Decoded:
    return decode_buffer(pcap_file(frames), cti_ports=(CPORT,))


def cut_stream(sent: bytes, acked: int | None, fin: bool = False) -> Decoded:
    """The agent's bytes ``sent`` in one segment after a handshake; the CTI acknowledges ``acked`` of them
    (None: no acknowledgement in the capture, as a one-way capture point gives)."""
    frames = [
        seg(True, ISN, 0, SYN),
        seg(False, 5000, ISN + 1, SYN | ACK),
        seg(True, ISN + 1, 5001, PSH_ACK, sent),
    ]
    if fin:
        frames.append(seg(True, ISN + 1 + len(sent), 5001, FIN_ACK))
    if acked is not None:
        frames.append(seg(False, 5001, ISN + 1 + acked, ACK))
    return decode(frames)


PARTIAL = lines("one") + b'{"type": "tw'


def test_stream_that_died_mid_message_is_not_capture_loss() -> None:
    """The CTI acknowledged exactly what the capture holds: the rest of the line was never delivered."""
    d = cut_stream(PARTIAL, acked=len(PARTIAL))
    assert [e.type for e in d.events] == ["one"]
    assert d.stats.ended_mid_message == 1 and d.stats.incomplete_at_end == 0 and d.stats.lossless


def test_ack_anywhere_in_the_partial_message_or_of_a_fin_after_it() -> None:
    assert cut_stream(PARTIAL, acked=len(lines("one"))).stats.ended_mid_message == 1  # not yet acked
    d = cut_stream(PARTIAL, acked=len(PARTIAL) + 1, fin=True)  # the peer closed it half-way: FIN acked
    assert d.stats.ended_mid_message == 1 and d.stats.lossless


def test_peer_acknowledged_bytes_the_capture_missed() -> None:
    """The CTI acknowledged 20 bytes more than the capture holds: they were delivered, we missed them."""
    d = cut_stream(PARTIAL, acked=len(PARTIAL) + 20)
    assert d.stats.incomplete_at_end == 1 and d.stats.ended_mid_message == 0 and not d.stats.lossless
    d = cut_stream(PARTIAL, acked=len(PARTIAL) + 1)  # an acknowledged FIN the capture did not see
    assert d.stats.incomplete_at_end == 1 and not d.stats.lossless


def test_without_acknowledgements_nobody_can_tell() -> None:
    """A one-way capture, or acknowledgements that stop before the partial message: still loss, as before."""
    assert cut_stream(PARTIAL, acked=None).stats.incomplete_at_end == 1
    assert cut_stream(PARTIAL, acked=3).stats.incomplete_at_end == 1


def test_a_reset_connection_ended_mid_message_whatever_was_acknowledged_before() -> None:
    """explore seed 8: the UL's fences queued for a CTI whose port was down; when the port came back the
    CTI acknowledged part, the UL had given up and reset the connection mid-line. Aborted: the rest was never
    sent, whatever the last acknowledgement; an acknowledgement past the capture still shows loss."""
    for acked, lossless in ((3, True), (len(PARTIAL), True), (len(PARTIAL) + 20, False)):
        frames = [
            seg(True, ISN, 0, SYN),
            seg(False, 5000, ISN + 1, SYN | ACK),
            seg(True, ISN + 1, 5001, PSH_ACK, PARTIAL),
            seg(False, 5001, ISN + 1 + acked, ACK),
            seg(True, ISN + 1 + acked, 0, 0x04),  # RST
        ]
        d = decode(frames)
        assert d.stats.lossless is lossless, (acked, d.stats)
        assert (d.stats.ended_mid_message, d.stats.incomplete_at_end) == ((1, 0) if lossless else (0, 1))


def test_port_reuse_accounts_the_old_stream_the_same_way() -> None:
    frames = [
        seg(True, ISN, 0, SYN),
        seg(True, ISN + 1, 5001, PSH_ACK, PARTIAL),
        seg(False, 5001, ISN + 1 + len(PARTIAL), ACK),
        seg(True, 90000, 0, SYN),  # a new connection on the same ports
        seg(True, 90001, 7001, PSH_ACK, lines("again")),
    ]
    d = decode(frames)
    assert [e.type for e in d.events] == ["one", "again"]
    assert d.stats.ended_mid_message == 1 and d.stats.lossless


@FUZZ
@given(
    st.lists(st.sampled_from(["heartbeat", "set_state", "login", "x" * 40]), min_size=1, max_size=6),
    st.data(),
)
def test_a_connection_dying_anywhere_is_never_capture_loss(types: list[str], data: st.DataObject) -> None:
    """Any split into segments, any cut point, every delivered byte captured and acknowledged: the
    decoder gives every whole line before the cut and reports no loss."""
    stream = lines(*types)
    cut = data.draw(st.integers(1, len(stream)), label="cut")
    sent = stream[:cut]
    points = sorted(set(data.draw(st.lists(st.integers(1, max(1, cut - 1)), max_size=4), label="splits")))
    frames = [seg(True, ISN, 0, SYN)]
    start = 0
    for end in [*points, cut]:
        if end > start:
            frames.append(seg(True, ISN + 1 + start, 5001, PSH_ACK, sent[start:end]))
            frames.append(seg(False, 5001, ISN + 1 + end, ACK))
            start = end
    d = decode(frames)
    whole = sent.count(b"\n")
    assert [e.type for e in d.events] == types[:whole]
    assert d.stats.lossless, d.stats_dict()
    assert d.stats.ended_mid_message == (0 if sent.endswith(b"\n") else 1)
