"""Inputs that once broke a parser, replayed (issue 16, item 4): each file under tests/fuzz_corpus/ goes
through the contract of its folder (tests/test_fuzz_targets.py), and the ones the issue names are checked
for what the parser now says of them. Add a file here whenever a fuzz run finds something."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from test_fuzz_targets import check_capture, check_cti_decode, check_sip

from harness.decode import decode_buffer
from sipcore import message
from sipcore.scan import parse_sip
from stack.cti import protocol as P

CORPUS = Path(__file__).parent / "fuzz_corpus"
CONTRACTS = {"sip": check_sip, "cti": check_cti_decode, "capture": check_capture}
FILES = sorted(p for p in CORPUS.glob("*/*") if p.is_file())


def test_corpus_is_there() -> None:
    assert {p.parent.name for p in FILES} == set(CONTRACTS)


@pytest.mark.parametrize("path", FILES, ids=[f"{p.parent.name}/{p.name}" for p in FILES])
def test_corpus_input_meets_its_contract(path: Path) -> None:
    CONTRACTS[path.parent.name](path.read_bytes())


def read(name: str) -> bytes:
    return (CORPUS / name).read_bytes()


def test_sip_numbers_of_thousands_of_digits_are_no_numbers() -> None:
    head = parse_sip(read("sip/cseq-5000-digits.sip"))
    assert head is not None and head.cseq is None and head.cseq_method == "REGISTER" and head.call_id == "c"
    msg = message.parse(read("sip/cseq-5000-digits.sip"))
    assert msg is not None and msg.cseq == 0
    msg = message.parse(read("sip/content-length-5000-digits.sip"))
    assert msg is not None and msg.body == b"body"  # no usable length: the body is what is there
    assert message.parse(read("sip/status-superscript-digits.sip")) is None
    assert parse_sip(read("sip/expires-superscript-two.sip")).expires is None  # type: ignore[union-attr]
    head = parse_sip(read("sip/tel-uri-port-superscript.sip"))
    assert head is not None and head.method == "INVITE" and head.ruri_host == "x"  # the port "²" is no port
    assert message.as_number("0042") == 42 and message.as_number("\u00b2") is None
    assert message.as_number("9" * 11) is None


def test_a_long_uri_without_user_is_read_in_linear_time() -> None:
    """The user-part regexes backtracked over every split of a URI with no '@': 2 s for 32 kB, so a 256 kB
    From (one TCP stream) would have held the decoder for minutes. Now a few milliseconds."""
    t0 = time.perf_counter()
    for data in (
        b"REGISTER sip:x SIP/2.0\r\nFrom: sip:%s\r\nTo: <sip:%s>\r\n\r\n" % (b"a" * 256_000, b"b" * 256_000),
        b"INVITE sip:" + b"a" * 256_000 + b" SIP/2.0\r\n\r\n",
    ):
        head = parse_sip(data)
        assert head is not None and head.from_user is None and head.ruri_user is None
    assert time.perf_counter() - t0 < 5.0  # generous for a busy machine: it was minutes


def test_cti_lines_nested_past_max_depth_are_refused() -> None:
    for name in ("cti/nested-1000-arrays.json", "cti/nested-1000-objects.json", "cti/nested-33-objects.json"):
        with pytest.raises(ValueError):
            P.decode(read(name))
    ok = b'{"type":"heartbeat","x":' + b'{"a":' * 31 + b"1" + b"}" * 32
    assert P.depth(P.decode(ok)) == P.MAX_DEPTH
    d = decode_buffer(read("capture/cti-nested-1000.pcap"), cti_ports=(7010,))
    assert d.stats.malformed_cti == 1 and d.stats.cti_messages == 0 and not d.stats.lossless


def test_sip_number_in_a_capture_is_a_message_not_a_crash() -> None:
    d = decode_buffer(read("capture/sip-cseq-5000-digits.pcap"))
    assert d.stats.sip_messages == 1 and d.events[0].cseq is None and d.events[0].call_id == "c"


@pytest.mark.parametrize(
    ("name", "frames"),
    [
        ("capture/epb-block-length-12.pcapng", 0),
        ("capture/idb-block-length-12.pcapng", 0),
        ("capture/epb-length-not-trailer.pcapng", 1),
        ("capture/record-length-4g.pcap", 1),
        ("capture/block-length-odd-beyond-eof.pcapng", 1),  # found by the fuzz run itself
    ],
)
def test_a_length_that_lies_ends_the_reading_counted(name: str, frames: int) -> None:
    """The frames before the lie are kept; what follows cannot be found, and that is said: not lossless."""
    d = decode_buffer(read(name))
    assert d.stats.frames == frames and d.stats.sip_messages == frames
    assert d.stats.corrupt_file == 1 and not d.stats.lossless


def test_a_packet_longer_than_its_block_is_cut_to_the_block() -> None:
    d = decode_buffer(read("capture/epb-packet-longer-than-block.pcapng"))
    assert d.stats.frames == 1 and d.stats.truncated == 1 and d.stats.sip_messages == 1
