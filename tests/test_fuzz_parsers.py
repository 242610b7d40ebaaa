"""Property-based fuzzing of the SIP parsers, the CTI line parser and the capture reader and decoder: a
bounded run here (``make test``), a longer one in ``hil bench fuzz``. Strategies and contracts are in
tests/test_fuzz_targets.py; an input that once broke something is kept in tests/fuzz_corpus/."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from test_fuzz_targets import (
    FUZZ,
    capture_files,
    check_capture,
    check_cti_decode,
    check_sip,
    cti_lines,
    sip_messages,
)


@FUZZ
@given(sip_messages())
def test_sip_parsers_never_raise(data: bytes) -> None:
    check_sip(data)


@FUZZ
@given(st.binary(max_size=300))
def test_sip_parsers_on_random_bytes(data: bytes) -> None:
    check_sip(b"SIP/2.0 " + data)
    check_sip(b"REGISTER " + data)


@FUZZ
@given(cti_lines())
def test_cti_line_parser_refuses_cleanly(line: bytes) -> None:
    check_cti_decode(line)


@FUZZ
@given(capture_files())
def test_capture_decoder_counts_what_it_cannot_read(data: bytes) -> None:
    check_capture(data)


@FUZZ
@given(st.binary(max_size=200))
def test_capture_reader_on_random_bytes(data: bytes) -> None:
    check_capture(b"\x0a\x0d\x0d\x0a" + data)
    check_capture(b"\xd4\xc3\xb2\xa1" + data)
