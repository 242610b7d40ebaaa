"""What the fuzz tests feed each parser, and what each parser must do with it (issue 16, item 4).

Shared by the fuzz tests (tests/test_fuzz_*.py: a bounded run in ``make test``) and ``hil bench fuzz``
(bench/bench_fuzz.py: a longer one, cases per second). Strategies are structure-aware: valid messages
mutated (lengths that lie, huge and non-ASCII numbers, deep nesting, non-UTF-8, truncation, duplication),
not only random bytes, so they reach past the first check of each parser. A contract (``check_*``) raises
AssertionError (or lets the parser's own exception out) when a parser does anything but give a result or
its documented refusal. The tests here check that the unmutated seeds parse as they should, so the fuzz
starts from real messages.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from harness.decode import DecodeError, decode_buffer, iter_frames
from sipcore import message
from sipcore.scan import SipHead, parse_sip
from stack.cti import protocol as P

# The run in ``make test``: a few seconds in all. deadline=None: a busy machine must not fail it;
# database=None: the regressions worth keeping go to tests/fuzz_corpus/, not to a local cache.
FUZZ = settings(
    max_examples=int(os.environ.get("HIL_FUZZ_EXAMPLES", "60")),
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)

# -- SIP ------------------------------------------------------------------------------------------------

SIP_SEEDS: tuple[bytes, ...] = (
    b"REGISTER sip:pbx1.sha.lab SIP/2.0\r\nVia: SIP/2.0/UDP 198.18.1.11:5060;branch=z9hG4bK-1\r\n"
    b'From: "Agent 1001" <sip:1001@pbx1.sha.lab>;tag=f1\r\nTo: <sip:1001@pbx1.sha.lab>\r\n'
    b"Call-ID: reg-1@phone\r\nCSeq: 1 REGISTER\r\nContact: <sip:1001@198.18.1.11:5060>;expires=300\r\n"
    b"Expires: 300\r\nContent-Length: 0\r\n\r\n",
    b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 198.18.1.11:5060;branch=z9hG4bK-1\r\nFrom: <sip:1001@pbx>;tag=f\r\n"
    b"To: <sip:1001@pbx>;tag=t\r\nCall-ID: reg-1@phone\r\nCSeq: 1 REGISTER\r\n"
    b"Contact: <sip:1001@198.18.1.11>;expires=300, <sip:1001@198.18.1.12>;expires=60\r\n"
    b"Content-Length: 0\r\n\r\n",
    b"INVITE sip:1002@pbx1.sha.lab SIP/2.0\r\nv: SIP/2.0/UDP 198.18.1.11;branch=z9hG4bK-2\r\n"
    b"f: sip:1001@pbx;tag=a\r\nt: tel:+861012345;ext=7\r\ni: call-2\r\nCSeq: 7 INVITE\r\n"
    b"m: <sip:1001@198.18.1.11>\r\nc: application/sdp\r\nl: 12\r\n\r\nv=0\r\ns=-\r\nx=",
    b"OPTIONS sip:[2001:db8::1]:5060 SIP/2.0\r\nCall-ID: o1\r\n cont\r\nCSeq: 3 OPTIONS\r\n"
    b'From: "a,\\"b<" <sip:x@y>\r\nTo: sip:z@w\r\n\r\n',
)

# Values that broke or could break a header parser: numbers of thousands of digits and non-ASCII digits
# (int() refuses both), no '@' in a long URI (a backtracking regex), quotes and brackets left open.
_NASTY_VALUES = st.sampled_from(
    [
        b"9" * 5000,
        b"\xc2\xb2",  # "\u00b2": str.isdigit() says yes, int() says no
        b"\xd9\xa1\xd9\xa2",  # Arabic-Indic digits
        b"-1",
        b"4294967296",
        b"sip:" + b"a" * 40000,
        b'"' + b"\\" * 301,
        b"<" * 500 + b"sip:u@h",
        b',,,,<,>,",',
        b"\xff\xfe\x00\x80",
        b"tel:x:\xc2\xb2",
        b"",
    ]
)
_HEADER_NAMES = st.sampled_from(
    [b"CSeq", b"Content-Length", b"l", b"Expires", b"Contact", b"m", b"From", b"f", b"To", b"Call-ID", b"Via"]
)


def _lines(data: bytes) -> list[bytes]:
    return data.split(b"\r\n")


@st.composite
def sip_messages(draw: Any) -> bytes:
    """A seed SIP message with one to four mutations."""
    data = draw(st.sampled_from(SIP_SEEDS))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.integers(0, 7))
        lines = _lines(data)
        if kind == 0:  # a header with a nasty value
            lines.insert(draw(st.integers(1, len(lines))), draw(_HEADER_NAMES) + b": " + draw(_NASTY_VALUES))
            data = b"\r\n".join(lines)
        elif kind == 1:  # a nasty value in place of part of the start line
            parts = lines[0].split(b" ")
            parts[draw(st.integers(0, len(parts) - 1))] = draw(_NASTY_VALUES)
            data = b"\r\n".join([b" ".join(parts), *lines[1:]])
        elif kind == 2:  # truncated
            data = data[: draw(st.integers(0, len(data)))]
        elif kind == 3:  # random bytes spliced in
            at = draw(st.integers(0, len(data)))
            data = data[:at] + draw(st.binary(max_size=40)) + data[at:]
        elif kind == 4:  # a Content-Length that lies
            clen = draw(st.sampled_from([b"0", b"1", b"99999", b"9" * 12, b"\xc2\xb2", b"-5", b" 7 "]))
            data = data.replace(b"Content-Length: 0", b"Content-Length: " + clen)
        elif kind == 5:  # line ends as LF only, or folded lines everywhere
            data = data.replace(b"\r\n", draw(st.sampled_from([b"\n", b"\r\n ", b"\r\n\t", b"\r"])))
        elif kind == 6:  # a header repeated many times
            i = draw(st.integers(0, len(lines) - 1))
            lines[i:i] = [lines[i]] * draw(st.integers(2, 300))
            data = b"\r\n".join(lines)
        else:  # bytes flipped
            buf = bytearray(data)
            for _ in range(draw(st.integers(1, 8))):
                if buf:
                    buf[draw(st.integers(0, len(buf) - 1))] = draw(st.integers(0, 255))
            data = bytes(buf)
    return data


def check_sip(data: bytes) -> None:
    """Both SIP parsers: a result or None, never an exception; what they give has the documented types."""
    head = parse_sip(data)
    if head is not None:
        assert isinstance(head, SipHead)
        for num in (head.status, head.cseq, head.expires, head.content_length):
            assert num is None or (isinstance(num, int) and 0 <= num < 10**10)
        assert 0 <= head.header_length <= len(data) + 2
        for text in (head.method, head.reason, head.call_id, head.from_user, head.to_user, head.contact):
            assert text is None or isinstance(text, str)
    msg = message.parse(data)
    if msg is not None:
        assert isinstance(msg.cseq, int) and isinstance(msg.cseq_method, str) and isinstance(msg.branch, str)
        assert isinstance(msg.call_id, str) and isinstance(msg.to_bytes(), bytes)
        for key in list(msg.headers):
            msg.header_values(key)


# -- CTI lines -------------------------------------------------------------------------------------------

CTI_SEEDS: tuple[dict[str, Any], ...] = (
    {"type": "login", "token": "eyJhZ2VudCI6ImEwMDAwMSJ9.c2ln", "extension": "10001", "id": 1},
    {"type": "heartbeat", "seq": 3, "id": 2},
    {"type": "link_phone", "extension": "10001", "id": 3},
    {"type": "set_state", "state": "ready", "id": 4},
    {"type": "logout", "id": 5},
    {"type": "status", "id": 6},
    {"type": "admin", "op": "fence", "agent": "a00001", "epoch": 7, "ts": 1.5, "sig": "ab", "id": 7},
    {"type": "event", "event": "pbx_link_down", "agent": "a00001", "site": "sha"},
)

_json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
json_values = st.recursive(
    _json_leaf,
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4),
    max_leaves=20,
)
_NASTY_LINES = st.sampled_from(
    [
        b"[" * 1000 + b"]" * 1000,
        b'{"a":' * 1000 + b"1" + b"}" * 1000,
        b'{"type":"heartbeat","seq":' + b"9" * 5000 + b"}",
        b'{"type":"login","token":"\xff\xfe"}',
        b'{"type":"login","token":"\\ud800"}',
        b'{"type":"login","token":"\xe4\xb8\xad.\xe6\x96\x87"}',
        b'{"type":"heartbeat","seq":1e999}',
        b'{"type":"heartbeat","seq":NaN}',
        b'{"type":"set_state","state":"ready","state":5}',
        b"\x00" * 10,
        b'{"type":"login"',
        b"{" * 20000,
    ]
)


@st.composite
def cti_lines(draw: Any) -> bytes:
    """One CTI line (no newline): a seed with fields mutated, a nasty line, or any JSON."""
    kind = draw(st.integers(0, 4))
    if kind == 0:
        return draw(_NASTY_LINES)
    if kind == 1:
        return json.dumps(draw(json_values)).encode()
    msg = dict(draw(st.sampled_from(CTI_SEEDS)))
    for _ in range(draw(st.integers(1, 3))):
        key = draw(st.sampled_from([*msg, "type", "id", "token", "extension", "state", "seq", "sig"]))
        msg[key] = draw(json_values)
    line = json.dumps(msg).encode()
    if kind == 3:  # wrapped in many levels
        depth = draw(st.integers(1, 80))
        line = b'{"x":' * depth + line + b"}" * depth
    elif kind == 4:  # truncated, or bytes spliced in
        at = draw(st.integers(0, len(line)))
        line = line[:at] + draw(st.binary(max_size=12)) + line[at + draw(st.integers(0, 3)) :]
    return line.replace(b"\n", b" ")


def check_cti_decode(line: bytes) -> None:
    """``protocol.decode``: a dict within MAX_DEPTH that encodes again, or ValueError; nothing else."""
    try:
        obj = P.decode(line)
    except ValueError:
        return
    assert isinstance(obj, dict) and P.depth(obj) <= P.MAX_DEPTH
    assert P.decode(P.encode(obj)[:-1]) == obj
    repr(obj)  # logging a request must not recurse out


# -- capture files --------------------------------------------------------------------------------------

_A, _B = bytes([198, 18, 1, 11]), bytes([198, 18, 1, 1])


def _ipv4(
    proto: int, l4: bytes, *, total: int | None = None, ihl: int = 5, frag: int = 0, ident: int = 1
) -> bytes:
    opts = b"\x01" * (ihl * 4 - 20) if ihl > 5 else b""
    size = 20 + len(opts) + len(l4) if total is None else total
    return (
        struct.pack(">BBHHHBBH4s4s", 0x40 | ihl, 0, size & 0xFFFF, ident, frag, 64, proto, 0, _A, _B)
        + opts
        + l4
    )


def _udp(payload: bytes, *, ulen: int | None = None, port: int = 5060) -> bytes:
    return (
        struct.pack(">HHHH", port, port, (8 + len(payload) if ulen is None else ulen) & 0xFFFF, 0) + payload
    )


def _tcp(
    payload: bytes, seq: int, *, flags: int = 0x18, doff: int = 5, ack: int = 1, port: int = 7010
) -> bytes:
    return (
        struct.pack(">HHIIBBHHH", 45000, port, seq & 0xFFFFFFFF, ack, doff << 4, flags, 65535, 0, 0)
        + (b"\x00" * max(0, doff * 4 - 20))
        + payload
    )


def _ether(ip: bytes, vlan: bool = False) -> bytes:
    tag = b"\x81\x00\x00\x07" if vlan else b""
    return b"\x02\x00\x00\x00\x00\x01\x02\x00\x00\x00\x00\x02" + tag + b"\x08\x00" + ip


@st.composite
def frames(draw: Any) -> bytes:
    """One Ethernet frame: SIP over UDP, CTI or SIP over TCP, a fragment; header lengths that may lie."""
    kind = draw(st.integers(0, 3))
    lie = draw(st.booleans())
    if kind == 0:
        l4 = _udp(draw(sip_messages()), ulen=draw(st.integers(0, 70000)) if lie else None)
        proto = 17
    elif kind == 1:
        payload = draw(cti_lines()) + b"\n"
        flags = draw(st.sampled_from([0x18, 0x02, 0x11, 0x04, 0x10]))
        seq = draw(st.integers(0, 2**32 - 1)) if lie else 101
        doff = draw(st.integers(0, 15)) if lie else 5
        l4 = _tcp(payload, seq, flags=flags, doff=doff, ack=draw(st.integers(0, 2**32 - 1)))
        proto = 6
    elif kind == 2:
        l4 = _tcp(draw(sip_messages()), 1, port=5060)
        proto = 6
    else:
        l4 = _udp(draw(sip_messages()))[: draw(st.integers(0, 60))]
        proto = 17
    frag = draw(st.sampled_from([0, 0x2000, 0x0001, 0x2003])) if kind == 3 or lie else 0
    total = draw(st.integers(0, 70000)) if lie else None
    ihl = draw(st.integers(0, 15)) if lie and draw(st.booleans()) else 5
    return _ether(
        _ipv4(proto, l4, total=total, ihl=ihl, frag=frag, ident=draw(st.integers(0, 3))), draw(st.booleans())
    )


def pcap_file(packets: list[bytes], *, linktype: int = 1, lie: dict[int, int] | None = None) -> bytes:
    """A classic pcap; ``lie``: record index -> the captured length its header claims."""
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, linktype)]
    for i, pkt in enumerate(packets):
        incl = (lie or {}).get(i, len(pkt))
        out.append(struct.pack("<IIII", 1767225600 + i, 0, incl & 0xFFFFFFFF, len(pkt)) + pkt)
    return b"".join(out)


def _block(btype: int, body: bytes, blen: int | None = None) -> bytes:
    body += b"\x00" * (-len(body) % 4)
    size = 12 + len(body) if blen is None else blen
    return struct.pack("<II", btype, size & 0xFFFFFFFF) + body + struct.pack("<I", size & 0xFFFFFFFF)


def pcapng_file(packets: list[bytes], *, linktype: int = 1, lie: dict[int, int] | None = None) -> bytes:
    """A pcapng (section, interface with nanosecond resolution, enhanced packets); ``lie``: packet index ->
    the block length its header and trailer claim (negative: only the header lies)."""
    shb = _block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))
    idb = _block(1, struct.pack("<HHI", linktype, 0, 65535) + struct.pack("<HHB3x", 9, 1, 9) + b"\x00" * 4)
    out = [shb, idb]
    for i, pkt in enumerate(packets):
        block = _block(6, struct.pack("<IIIII", 0, 0, i, len(pkt), len(pkt)) + pkt)
        claim = (lie or {}).get(i)
        if claim is not None:
            block = struct.pack("<II", 6, abs(claim) & 0xFFFFFFFF) + block[8:]
            if claim >= 0:
                block = block[:-4] + struct.pack("<I", claim & 0xFFFFFFFF)
        out.append(block)
    return b"".join(out)


@st.composite
def capture_files(draw: Any) -> bytes:
    """A pcap or pcapng of mutated frames, with record or block lengths that may lie, maybe cut short."""
    pkts = draw(st.lists(frames(), min_size=1, max_size=6))
    lie = draw(
        st.dictionaries(st.integers(0, len(pkts) - 1), st.integers(-(2**32) + 1, 2**32 - 1), max_size=2)
    )
    linktype = draw(st.sampled_from([1, 1, 1, 0, 101, 113, 276, 228, 229, 108, 147]))
    if linktype != 1:
        pkts = [p[14:] if linktype in (101, 228, 229) else p[10:] for p in pkts]
    make = draw(st.sampled_from([pcap_file, pcapng_file]))
    data = make(pkts, linktype=linktype, lie=lie)
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    return data


_COUNTERS = (
    "frames", "ip_packets", "not_ip", "sip_messages", "cti_messages", "truncated", "malformed_sip",
    "malformed_cti", "tcp_retransmitted", "tcp_gaps", "incomplete_at_end", "fragments_unreassembled",
    "corrupt_file", "ended_mid_message",
)  # fmt: skip


def check_capture(data: bytes, cti_ports: tuple[int, ...] = (7010,)) -> None:
    """The pcap/pcapng reader and the decoder: frames inside the file, events that serialise, loss
    counted; DecodeError only for a file that is not a capture at all."""
    try:
        for _n, _ts, _lt, buf, off, end, _orig in iter_frames(data):
            assert 0 <= off <= end <= len(buf)
        decoded = decode_buffer(data, cti_ports=cti_ports)
    except DecodeError:
        assert len(data) < 24 or data[:4] != b"\x0a\x0d\x0d\x0a"
        return
    stats = decoded.stats
    assert all(getattr(stats, c) >= 0 for c in _COUNTERS)
    assert len(decoded.events) == stats.sip_messages + stats.cti_messages
    json.dumps(decoded.to_dicts())
    json.dumps(decoded.stats_dict())


# -- the registry the bench walks -----------------------------------------------------------------------

#: name -> (strategy, contract), for the parsers that need no event loop (the CTI connection and the UL
#: have their own drivers in tests/test_fuzz_cti.py and tests/test_fuzz_login.py).
TARGETS: dict[str, tuple[Any, Callable[[Any], None]]] = {
    "sip": (sip_messages(), check_sip),
    "cti_line": (cti_lines(), check_cti_decode),
    "capture": (capture_files(), check_capture),
}


# -- the seeds are what they should be --------------------------------------------------------------------


def test_sip_seeds_parse_alike() -> None:
    for seed in SIP_SEEDS:
        head, msg = parse_sip(seed), message.parse(seed)
        assert head is not None and msg is not None
        assert (head.call_id, head.cseq) == (msg.call_id, msg.cseq)


def test_cti_seeds_decode() -> None:
    for seed in CTI_SEEDS:
        assert P.decode(json.dumps(seed).encode()) == seed


def test_capture_builders_decode() -> None:
    pkts = [_ether(_ipv4(17, _udp(s))) for s in SIP_SEEDS]
    pkts.append(_ether(_ipv4(6, _tcp(json.dumps(CTI_SEEDS[1]).encode() + b"\n", 101))))
    for make in (pcap_file, pcapng_file):
        d = decode_buffer(make(pkts), cti_ports=(7010,))
        assert d.stats.sip_messages == len(SIP_SEEDS) and d.stats.cti_messages == 1, d.stats_dict()
        assert d.stats.malformed_sip == 0 and d.stats.corrupt_file == 0
