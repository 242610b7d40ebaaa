"""Unit tests of sipcore's message model, URI helpers and the capture scan (sipcore.message, .uri, .scan).

Why: every SIP party of the lab (phones, CTI, harness, virtual PBX checks) reads messages through these;
a mis-split Via or a mis-read compact header shows up only as a lost call or a wrong verdict. The scan is
the decoder's fast path: it must say what the full parser says about the same bytes.
"""

from __future__ import annotations

import pytest

from sipcore import uri
from sipcore.message import SipMessage, build_response, header_key, header_name, parse
from sipcore.scan import SIP_PREFIXES, SipHead, looks_like_sip, parse_sip
from stack.phone.account import minimal_sdp

INVITE = (
    b"INVITE sip:19001@127.0.0.1:26001 SIP/2.0\r\n"
    b"Record-Route: <sip:127.0.0.1:5060;lr;ftag=abc>\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKproxy,SIP/2.0/UDP 127.0.0.1:26002;rport=26002;"
    b"branch=z9hG4bKcaller\r\n"
    b"f: <sip:19000@lab>;tag=ftag1\r\n"
    b"t: <sip:19001@lab>\r\n"
    b"i: call-1@host\r\n"
    b"CSeq: 7 INVITE\r\n"
    b"m: <sip:19000@127.0.0.1:26002>\r\n"
    b"Subject: folded\r\n  header\r\n"
    b"Content-Type: application/sdp\r\n"
    b"l: 4\r\n\r\nv=0\r\ntrailing-garbage"
)


def test_parse_request_compact_forms_and_split_via() -> None:
    msg = parse(INVITE)
    assert msg is not None and msg.is_request and not msg.is_response
    assert (msg.method, msg.uri, msg.status) == ("INVITE", "sip:19001@127.0.0.1:26001", 0)
    assert msg.header_values("via") == [
        "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKproxy",
        "SIP/2.0/UDP 127.0.0.1:26002;rport=26002;branch=z9hG4bKcaller",
    ]
    assert msg.branch == "z9hG4bKproxy"
    assert msg.call_id == "call-1@host"
    assert (msg.cseq, msg.cseq_method) == (7, "INVITE")
    assert uri.tag_of(msg.header("from")) == "ftag1"
    assert uri.tag_of(msg.header("To")) is None
    assert msg.header("subject") == "folded header"
    assert msg.header("i") == msg.header("Call-ID") == "call-1@host"  # any spelling finds it
    assert msg.body == b"v=0\r"  # cut at Content-Length
    assert uri.user_of(msg.uri) == "19001"


def test_parse_response_lists_compact_forms_and_garbage() -> None:
    msg = parse(
        b"SIP/2.0 401 Unauthorized\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nContent-Length: 0\r\n\r\n"
    )
    assert msg is not None and not msg.is_request
    assert (msg.status, msg.reason) == (401, "Unauthorized")
    raw = (
        b"SIP/2.0 200 OK\r\nv: SIP/2.0/UDP a;branch=z9hG4bK1\r\nRecord-Route: <sip:p1;lr>, <sip:p2;lr>\r\n"
        b"Record-Route: <sip:p3;lr>\r\nCSeq: 7 INVITE\r\nl: 2\r\n\r\nhiXX"
    )
    ok = parse(raw)
    assert ok is not None and ok.status == 200 and ok.method == "INVITE" and ok.cseq == 7  # CSeq's method
    assert ok.header("Via") == "SIP/2.0/UDP a;branch=z9hG4bK1"
    assert ok.header_values("Record-Route") == ["<sip:p1;lr>", "<sip:p2;lr>", "<sip:p3;lr>"]
    assert ok.body == b"hi"
    many = parse(
        b'SIP/2.0 200 OK\r\nContact: "A, B" <sip:a@h>;expires=5, <sip:b@h>\r\nCSeq: 1 REGISTER\r\n\r\n'
    )
    assert many is not None and many.header_values("contact") == ['"A, B" <sip:a@h>;expires=5', "<sip:b@h>"]
    assert parse(b"\r\n\r\n") is None
    assert parse(b"hello") is None
    assert parse(b"GET / HTTP/1.1\r\n\r\n") is None
    assert parse(b"SIP/2.0 2x0 OK\r\n\r\n") is None


def test_build_and_write_round_trip() -> None:
    msg = SipMessage(
        "OPTIONS sip:pbx:5060 SIP/2.0",
        [("Via", "SIP/2.0/UDP a:1;branch=z9hG4bKx"), ("call-id", "c1"), ("CSEQ", "3 OPTIONS"), ("v", "x")],
    )
    assert msg.header_values("via") == ["SIP/2.0/UDP a:1;branch=z9hG4bKx", "x"]
    msg.set_header("Via", "SIP/2.0/UDP b:2;branch=z9hG4bKy")
    msg.add_header("WWW-Authenticate", 'Digest realm="r"')
    msg.remove_header("x-absent")
    msg.body = b"abc"
    wire = msg.to_bytes()
    assert wire.startswith(b"OPTIONS sip:pbx:5060 SIP/2.0\r\nVia: SIP/2.0/UDP b:2;branch=z9hG4bKy\r\n")
    assert b"\r\nCall-ID: c1\r\nCSeq: 3 OPTIONS\r\n" in wire and b"WWW-Authenticate: " in wire
    assert wire.endswith(b"Content-Length: 3\r\n\r\nabc")
    again = parse(wire)
    assert again is not None and again.start == msg.start and again.body == b"abc"
    assert again.headers == {**msg.headers, "content-length": ["3"]}
    assert (header_key("m"), header_name("call-id"), header_name("max-forwards")) == (
        "contact",
        "Call-ID",
        "Max-Forwards",
    )
    with pytest.raises(ValueError):
        SipMessage("HELLO")


def test_uri_helpers() -> None:
    assert uri.uri_of('"Bob" <sip:bob@h:5062;transport=udp>;tag=1') == "sip:bob@h:5062;transport=udp"
    assert uri.uri_of("sip:bob@h;tag=1") == "sip:bob@h"
    assert uri.hostport_of("sip:127.0.0.1:5070;lr;ftag=x") == ("127.0.0.1", 5070)
    assert uri.hostport_of("sip:19001@10.0.0.1") == ("10.0.0.1", 5060)
    assert uri.hostport_of("sip:u@[2001:db8::1]:5080;lr") == ("2001:db8::1", 5080)
    assert uri.user_of("sip:19001;phone-context=x@h") == "19001"
    assert uri.user_of("sip:h:5060") is None
    assert uri.user_of("sip:1001@pbx;transport=udp") == "1001"
    assert uri.user_of("sips:alice:pw@[2001:db8::1]:5061") == "alice"
    assert uri.user_of("tel:+4930123;phone-context=x") == "+4930123"
    assert uri.user_of(None) is None and uri.host_of("") is None
    assert uri.host_of("sip:u@[2001:db8::1]:5061;transport=tls") == "2001:db8::1"
    assert uri.host_of("sip:pbx.sha.lab:5060") == "pbx.sha.lab"
    assert uri.param("<sip:a@b;lr>;expires=60;foo", "expires") == "60"
    assert uri.param("<sip:a@b;lr>;expires=60;foo", "foo") == ""
    assert uri.param("<sip:a@b;lr>;expires=60", "lr") is None  # URI parameters are not header parameters
    assert uri.format_host("::1") == "[::1]" and uri.hostport("::1", 5060) == "[::1]:5060"
    assert uri.split_commas('<sip:a,b@h>, "x,y" <sip:c@h>,') == ["<sip:a,b@h>", '"x,y" <sip:c@h>']


def test_build_response_copies_and_tags() -> None:
    req = parse(INVITE)
    assert req is not None
    raw = build_response(
        req, 180, "Ringing", to_tag="tt", extra="Contact: <sip:19001@h:1>\r\n", record_route=True
    )
    resp = parse(raw)
    assert resp is not None and resp.status == 180
    assert resp.header_values("via") == req.header_values("via")
    assert resp.header_values("record-route") == req.header_values("record-route")
    assert uri.tag_of(resp.header("to")) == "tt"
    assert resp.header("from") == req.header("from") and (resp.cseq, resp.method) == (7, "INVITE")
    assert raw.endswith(b"Content-Length: 0\r\n\r\n")
    sdp = minimal_sdp("127.0.0.1", 40000, 5)
    ok = parse(build_response(req, 200, "OK", to_tag="tt", body=sdp))
    assert ok is not None and ok.body == sdp and ok.header("content-type") == "application/sdp"


def _head_of(msg: SipMessage, data: bytes) -> SipHead:
    """What the scan must find, derived from the full model."""
    contact = msg.header("contact")
    exp = uri.param(contact, "expires") if contact and contact != "*" else None
    expires = int(exp) if exp and exp.isdigit() else None
    if expires is None and (msg.header("expires") or "").isdigit():
        expires = int(msg.header("expires") or "")
    frm, to, clen = msg.header("from"), msg.header("to"), msg.header("content-length")
    return SipHead(
        msg.method if msg.is_request else None,
        msg.status or None,
        msg.reason if msg.is_response else None,
        msg.uri or None,
        uri.user_of(msg.uri),
        uri.host_of(msg.uri),
        msg.header("call-id"),
        msg.cseq if msg.header("cseq") else None,
        msg.cseq_method or None,
        uri.user_of(uri.uri_of(frm)) if frm else None,
        uri.user_of(uri.uri_of(to)) if to else None,
        (contact if contact == "*" else uri.uri_of(contact)) if contact else None,
        expires,
        int(clen) if clen and clen.isdigit() else None,
        data.find(b"\r\n\r\n") + 4,
    )


def test_scan_agrees_with_the_model() -> None:
    """The decoder's fast reading and the full parser agree field by field on typical and odd messages."""
    corpus = [
        INVITE,
        b"REGISTER sip:pbx.sha.lab SIP/2.0\r\nv: SIP/2.0/UDP 198.18.1.100:5060;branch=z9hG4bK-r1\r\n"
        b'f: "Agent, One" <sip:1001@pbx.sha.lab>;tag=t1\r\nt: <sip:1001@pbx.sha.lab>\r\ni: reg-1@h\r\n'
        b"CSeq: 2 REGISTER\r\nm: <sip:1001@198.18.1.100:5060>;expires=300\r\nl: 0\r\n\r\n",
        b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 198.18.1.100:5060;branch=z9hG4bK-r1;rport=5060\r\n"
        b"From: <sip:1001@pbx.sha.lab>;tag=t1\r\nTo: <sip:1001@pbx.sha.lab>;tag=s1\r\nCall-ID: reg-1@h\r\n"
        b"CSeq: 2 REGISTER\r\nContact: <sip:1001@198.18.1.100:5060>;expires=120, <sip:1001@x>;expires=9\r\n"
        b"Expires: 600\r\nContent-Length: 0\r\n\r\n",
        b"REGISTER sip:pbx SIP/2.0\r\nTo: <sip:1002@pbx>\r\nFrom: sip:1002@pbx;tag=a\r\nCall-ID: u\r\n"
        b"CSeq: 9 REGISTER\r\nContact: *\r\nExpires: 0\r\n\r\n",
        b"OPTIONS sip:[2001:db8::1]:5060 SIP/2.0\r\nCSeq: 1 OPTIONS\r\nFrom: <tel:+4930123>;tag=q\r\n"
        b"To: <sip:[2001:db8::1]:5060>\r\ni: o1\r\nContent-Length: 0\r\n\r\n",
        b"SIP/2.0 486 Busy Here\r\nCSeq: 1 INVITE\r\nFrom: <sip:a@h>;tag=1\r\nTo: <sip:b@h>;tag=2\r\n\r\n",
    ]
    for data in corpus:
        msg = parse(data)
        assert msg is not None
        assert parse_sip(data) == _head_of(msg, data), data[:40]
        assert looks_like_sip(data) and data.startswith(SIP_PREFIXES)
    assert not looks_like_sip(b"HTTP/1.1 200 OK\r\n\r\n") and parse_sip(b"HTTP/1.1 200 OK\r\n\r\n") is None
