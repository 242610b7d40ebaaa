"""The redactor: every secret out of a capture, nothing else changed, packets still consistent.

Captures are built with scapy (a writer independent of the redactor and the decoder) and read back with
scapy to check checksums, and with the project's decoder to check that the same messages are seen."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from scapy.all import IP, TCP, UDP, Ether, IPv6, PcapNgWriter, fragment, rdpcap, wrpcap

from harness.decode import DecodeError, decode_pcap
from harness.report.redact import redact_buffer, redact_pcap, secret_spans

TOKEN = "eyJhZ2VudCI6ImEwMDAxMSJ9.3W7N_95UfpWqo6FaJXkm1N9cpoXVfdxt91_SwJK0NZM"
RESPONSE = "299b51e241c8b6dcd62164a366ae6342"
NONCE = "axEGymsRBZ7HtSTXt42ZrFUMjSEbfKwJ"
CNONCE = "1616a6c34074f030"
SIG = "9f" * 32
PASSWORD = "c0ffee15deadbeef"
CTI, AGENT, PBX, UL = "198.18.1.20", "198.18.1.100", "198.18.1.10", "198.18.1.30"

LOGIN = json.dumps({"type": "login", "id": 1, "agent": "a00011", "token": TOKEN}).encode() + b"\n"
LOGIN_OK = b'{"type":"login_ok","id":1,"agent":"a00011","epoch":5,"state":"ready"}\n'
REGISTER = (
    "REGISTER sip:198.18.1.10:5060 SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 198.18.1.100:5062;branch=z9hG4bK1\r\n"
    "From: <sip:10011@lab>;tag=1\r\nTo: <sip:10011@lab>\r\nCall-ID: c1\r\nCSeq: 2 REGISTER\r\n"
    f'Authorization: Digest username="10011", realm="lab", nonce="{NONCE}", uri="sip:198.18.1.10:5060", '
    f'response="{RESPONSE}", algorithm=MD5, cnonce="{CNONCE}", qop=auth, nc=00000002\r\n'
    "Contact: <sip:10011@198.18.1.100:5062>;expires=60\r\nContent-Length: 0\r\n\r\n"
).encode()
CHALLENGE = (
    "SIP/2.0 401 Unauthorized\r\nVia: SIP/2.0/UDP 198.18.1.100:5062;branch=z9hG4bK1\r\n"
    "From: <sip:10011@lab>;tag=1\r\nTo: <sip:10011@lab>;tag=2\r\nCall-ID: c1\r\nCSeq: 1 REGISTER\r\n"
    f'WWW-Authenticate: Digest realm="lab", nonce="{NONCE}", qop="auth"\r\nContent-Length: 0\r\n\r\n'
).encode()
SECRETS = [TOKEN, RESPONSE, NONCE, CNONCE]


def tcp_stream(payload: bytes, cuts: list[int], src: str = AGENT, dst: str = CTI, dport: int = 7010,
               seq: int = 1000, syn: bool = True) -> list:  # fmt: skip
    """The segments of one direction, cut at ``cuts`` (offsets into ``payload``), after a SYN."""
    out = []
    if syn:
        out.append(Ether() / IP(src=src, dst=dst) / TCP(sport=40000, dport=dport, flags="S", seq=seq - 1))
    edges = [0, *cuts, len(payload)]
    for a, b in zip(edges, edges[1:], strict=False):
        out.append(
            Ether()
            / IP(src=src, dst=dst)
            / TCP(sport=40000, dport=dport, flags="PA", seq=seq + a)
            / payload[a:b]
        )
    return out


def write(tmp_path: Path, pkts: list, name: str = "in.pcap") -> Path:
    p = tmp_path / name
    wrpcap(str(p), pkts)
    return p


def redacted(tmp_path: Path, pkts: list) -> tuple[bytes, bytes, Path]:
    src = write(tmp_path, pkts)
    dst = tmp_path / "out.pcap"
    redact_pcap(src, dst)
    return src.read_bytes(), dst.read_bytes(), dst


def assert_no_secret(data: bytes, secrets: list[str] = SECRETS) -> None:
    for s in secrets:
        for piece in (s[:8], s[-8:]):  # no piece of it either
            assert piece.encode() not in data, (s, piece)


def assert_checksums_valid(path: Path) -> None:
    """Each TCP/UDP checksum as the packet holds it equals the one scapy computes afresh."""
    for pkt in rdpcap(str(path)):
        for layer in (TCP, UDP):
            if layer in pkt and not (IP in pkt and pkt[IP].flags.MF or IP in pkt and pkt[IP].frag):
                seen = pkt[layer].chksum
                again = pkt.__class__(bytes(pkt))
                del again[layer].chksum
                assert seen == again.__class__(bytes(again))[layer].chksum, pkt.summary()


def test_cti_token_split_over_three_segments_and_a_retransmission(tmp_path: Path) -> None:
    at = LOGIN.index(TOKEN.encode())
    pkts = tcp_stream(LOGIN + LOGIN_OK, [at + 5, at + 40])
    pkts.insert(3, pkts[2].copy())  # the middle piece again: a retransmission holds the secret too
    raw, red, dst = redacted(tmp_path, pkts)
    assert TOKEN[:8].encode() not in raw  # the test means it: no segment held the whole token
    assert_no_secret(red)
    assert len(raw) == len(red)
    assert_checksums_valid(dst)
    before = decode_pcap(tmp_path / "in.pcap", cti_ports=[7010])
    after = decode_pcap(dst, cti_ports=[7010])
    assert [e.body["type"] for e in after.events] == ["login", "login_ok"]
    assert after.events[0].body["token"] == "x" * len(TOKEN)
    assert [e._replace(body=None) for e in after.events] == [e._replace(body=None) for e in before.events]
    assert after.stats.lossless


def test_sip_digest_over_udp_and_tcp_only_the_secret_values(tmp_path: Path) -> None:
    pkts = [
        Ether() / IP(src=PBX, dst=AGENT) / UDP(sport=5060, dport=5062) / CHALLENGE,
        Ether() / IP(src=AGENT, dst=PBX) / UDP(sport=5062, dport=5060) / REGISTER,
        *tcp_stream(REGISTER, [REGISTER.index(RESPONSE.encode()) + 10], dst=PBX, dport=5060),
    ]
    raw, red, dst = redacted(tmp_path, pkts)
    assert_no_secret(red)
    assert red.count(b'username="10011"') == 2 and red.count(b'realm="lab"') == 3  # the rest kept
    assert_checksums_valid(dst)
    ev = decode_pcap(dst).events
    assert [(e.method, e.status, e.cseq) for e in ev] == [(None, 401, 1), ("REGISTER", None, 2)] + [
        ("REGISTER", None, 2)  # the same over TCP, framed as before
    ]


def test_ipv6_http_credentials_and_signature_headers(tmp_path: Path) -> None:
    body = json.dumps({"agent": "a00011", "password": PASSWORD, "avoid": []}).encode()
    req = (
        b"POST /v1/login HTTP/1.1\r\nHost: ul\r\nAuthorization: Bearer " + TOKEN.encode() + b"\r\n"
        b"X-Hil-Time: 1.0\r\nX-Hil-Sig: "
        + SIG.encode()
        + b"\r\nContent-Length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body
    )
    reply = (
        b'HTTP/1.1 200 OK\r\n\r\n{"token": "'
        + TOKEN.encode()
        + b'", "sip": {"password": "'
        + PASSWORD.encode()
        + b'"}}'
    )
    pkts = [
        Ether() / IPv6(src="fd00::1", dst="fd00::2") / TCP(sport=40001, dport=8080, flags="S", seq=9),
        Ether() / IPv6(src="fd00::1", dst="fd00::2") / TCP(sport=40001, dport=8080, flags="PA", seq=10) / req,
        Ether()
        / IPv6(src="fd00::2", dst="fd00::1")
        / TCP(sport=8080, dport=40001, flags="PA", seq=77)
        / reply,
    ]
    raw, red, dst = redacted(tmp_path, pkts)
    assert_no_secret(red, [TOKEN, SIG, PASSWORD])
    assert b"Authorization: Bearer x" in red and b"X-Hil-Time: 1.0" in red
    assert_checksums_valid(dst)


def test_a_hole_in_the_capture_blanks_what_may_be_a_secrets_tail(tmp_path: Path) -> None:
    """The segment with the key is missing: the value's tail after the hole is blanked to the line's end,
    and the next message is kept."""
    at = LOGIN.index(TOKEN.encode())
    pkts = tcp_stream(LOGIN + LOGIN_OK, [at - 3, at + 20, len(LOGIN)])
    del pkts[2]  # the piece holding `":"` and the token's head never reached the capture
    raw, red, dst = redacted(tmp_path, pkts)
    assert TOKEN[-8:].encode() in raw
    assert_no_secret(red)
    assert LOGIN_OK in red
    # a connection whose SYN was not seen, starting mid-line: blanked up to the line's end as well
    raw, red, dst = redacted(tmp_path, tcp_stream(LOGIN[at + 10 :] + LOGIN_OK, [], syn=False))
    assert_no_secret(red)
    assert LOGIN_OK in red


def test_ip_fragments_are_blanked_whole(tmp_path: Path) -> None:
    big = REGISTER.replace(b"Content-Length: 0", b"X-Pad: " + b"p" * 3000 + b"\r\nContent-Length: 0")
    pkts = fragment(Ether() / IP(src=AGENT, dst=PBX) / UDP(sport=5062, dport=5060) / big, fragsize=600)
    raw, red, dst = redacted(tmp_path, [Ether() / p[IP] if Ether not in p else p for p in pkts])
    assert RESPONSE.encode() in raw
    assert_no_secret(red)


def test_pcapng_and_nothing_to_redact(tmp_path: Path) -> None:
    p = tmp_path / "in.pcapng"
    w = PcapNgWriter(str(p))
    for pkt in tcp_stream(LOGIN + LOGIN_OK, [30]):
        w.write(pkt)
    w.close()
    red, stats = redact_buffer(p.read_bytes())
    assert_no_secret(bytes(red))
    assert stats.frames == 3 and stats.changed_frames == 1
    clean = write(tmp_path, tcp_stream(LOGIN_OK, []), "clean.pcap")
    red, stats = redact_buffer(clean.read_bytes())
    assert bytes(red) == clean.read_bytes() and stats.secrets == 0 and stats.changed_frames == 0


@pytest.mark.parametrize(
    "text, found",
    [
        (b'{"agent":"a1","token":"abc"}', [b"abc"]),
        (b'{"sig": "00ff", "nonce": "n1", "ts": 1}', [b"00ff"]),  # an admin nonce is no secret
        (b'{"api_token":"t\\"q","password":"pw"}', [b't\\"q', b"pw"]),
        (b'{"token":null,"token":""}', []),
        (b"Proxy-Authorization: Basic dXNlcjpwdw==\r\n", [b"dXNlcjpwdw=="]),
        (b"authorization: digest response=abc12345, nonce=n0nce\r\n", [b"abc12345", b"n0nce"]),
        (b"X-Request-Signature: s1g\r\nX-Other: ok\r\n", [b"s1g"]),
    ],
)
def test_what_counts_as_a_secret(text: bytes, found: list[bytes]) -> None:
    assert [text[a:b] for a, b in secret_spans(text)] == found


def test_garbage_is_no_capture_and_a_cut_files_unread_end_is_left_out(tmp_path: Path) -> None:
    with pytest.raises(DecodeError):
        redact_buffer(b"not a capture at all")
    src = write(tmp_path, tcp_stream(LOGIN + LOGIN_OK, []))
    cut = src.read_bytes()[:-10]  # the last frame cut short, as a killed tcpdump leaves it
    assert TOKEN.encode() in cut
    red, stats = redact_buffer(cut)
    assert_no_secret(bytes(red))
    assert stats.frames == 1 and stats.dropped_bytes > len(LOGIN) and rdpcap_len(bytes(red), tmp_path) == 1
    # a record whose length lies: what follows it is unread, so left out too
    lying = bytearray(src.read_bytes())
    second = 24 + 16 + len(tcp_stream(b"", [])[0])  # the data segment's record header
    lying[second + 8 : second + 12] = (10**6).to_bytes(4, "little")
    red, stats = redact_buffer(lying)
    assert_no_secret(bytes(red))
    assert stats.frames == 1 and stats.dropped_bytes > len(LOGIN)


def rdpcap_len(data: bytes, tmp_path: Path) -> int:
    p = tmp_path / "back.pcap"
    p.write_bytes(data)
    return len(rdpcap(str(p)))


def test_raw_captures_go_to_a_private_raw_dir_and_the_report_gets_the_redacted_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from harness.observe import lab_capture
    from harness.report.attachments import keep_raw_pcaps, publish_pcap

    out = tmp_path / "pcap" / "test_login_local"
    raw_dir = lab_capture.raw_dir_of(out)
    assert raw_dir == tmp_path / "pcap" / "raw" / "test_login_local"
    lab_capture._prepare_raw_dir(raw_dir)
    assert (raw_dir.parent / lab_capture.SECRETS_README).exists()
    assert all((d.stat().st_mode & 0o777) == 0o700 for d in (raw_dir, raw_dir.parent))
    raw = write(raw_dir, tcp_stream(LOGIN + LOGIN_OK, [40]), "sha-sw1-span.pcap")
    shown = publish_pcap(raw, keep_raw=True)
    assert shown == out / "sha-sw1-span.pcap" and raw.exists()
    assert_no_secret(shown.read_bytes())
    assert TOKEN.encode()[:20] in raw.read_bytes() or TOKEN.encode()[-20:] in raw.read_bytes()
    publish_pcap(raw, keep_raw=False)  # a physical lab's: gone once redacted
    assert not raw.exists() and shown.exists()
    mine = write(tmp_path, tcp_stream(LOGIN, []), "mine.pcap")  # a caller's own file: never deleted
    assert publish_pcap(mine, keep_raw=False) == tmp_path / "mine.redacted.pcap" and mine.exists()
    monkeypatch.delenv("HIL_KEEP_RAW_PCAPS", raising=False)
    assert keep_raw_pcaps("virtual") and keep_raw_pcaps(None) and not keep_raw_pcaps("physical")
    monkeypatch.setenv("HIL_KEEP_RAW_PCAPS", "1")
    assert keep_raw_pcaps("physical")
    monkeypatch.setenv("HIL_KEEP_RAW_PCAPS", "0")
    assert not keep_raw_pcaps("virtual")


def test_secrets_in_a_capture_and_leaks_of_them_in_a_runs_files(tmp_path: Path) -> None:
    from harness.gate.inputs import secret_leaks
    from harness.report.redact import secrets_in

    at = LOGIN.index(TOKEN.encode())
    pkts = [
        *tcp_stream(LOGIN, [at + 9]),  # split: found whole all the same
        Ether() / IP(src=AGENT, dst=PBX) / UDP(sport=5062, dport=5060) / REGISTER,
    ]
    raw = write(tmp_path, pkts)
    assert secrets_in(raw.read_bytes()) == {s.encode() for s in SECRETS}
    run = tmp_path / "run"
    (run / "pcap" / "raw").mkdir(parents=True)
    (run / "pcap" / "raw" / "x.pcap").write_bytes(raw.read_bytes())  # by design: not a leak
    (run / "histories").mkdir()
    (run / "histories" / "a.jsonl").write_text(f'{{"note": "{RESPONSE}"}}\n')
    (run / "verdicts.json").write_text("{}")
    found = secret_leaks(run, [s.encode() for s in SECRETS], skip=[run / "pcap" / "raw"])
    leak = (str(run / "histories" / "a.jsonl"), "", "holds a secret of the run (299b..., 32 bytes)")
    assert found == [leak]
    assert secret_leaks(run, []) == []
