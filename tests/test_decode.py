"""Decoding of captured SIP and CTI traffic, checked against hand-made truth and against tshark."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from scapy.layers.inet import IP, TCP, UDP, fragment
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Dot1Q, Ether
from scapy.packet import Raw
from scapy.utils import wrpcap

from harness.decode import (
    LINKTYPE_ETHERNET,
    LINKTYPE_LINUX_SLL,
    LINKTYPE_LINUX_SLL2,
    DecodeError,
    Event,
    decode_pcap,
    iter_frames,
    to_dicts,
)
from sipcore.scan import parse_sip
from sipcore.uri import host_of as uri_host
from sipcore.uri import user_of as uri_user

PBX, PHONE, PHONE2, CTI, AGENT = "198.18.1.1", "198.18.1.11", "198.18.1.12", "198.18.1.2", "198.18.1.21"
CTI_PORT = 7010
T0 = 1_767_225_600.0

# -- message builders -----------------------------------------------------------------------------------


def sip(start: str, headers: list[tuple[str, str]], body: str = "", clen: bool = True) -> bytes:
    lines = [start] + [f"{k}: {v}" for k, v in headers]
    if clen:
        lines.append(f"Content-Length: {len(body.encode())}")
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()


def sdp(size: int = 0) -> str:
    base = (
        f"v=0\r\no=- 1 1 IN IP4 {PHONE}\r\ns=-\r\nc=IN IP4 {PHONE}\r\nt=0 0\r\n"
        "m=audio 40000 RTP/AVP 0 8\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n"
    )
    while len(base) < size:
        base += "a=x-filler:" + "z" * 60 + "\r\n"
    return base


def register(cseq: int, call_id: str, ext: str, contact: str, expires_hdr: str | None = None) -> bytes:
    h = [
        ("Via", f"SIP/2.0/UDP {PHONE}:5060;branch=z9hG4bK-{call_id}-{cseq}"),
        ("Max-Forwards", "70"),
        ("From", f'"Agent {ext}" <sip:{ext}@pbx1.sha.lab>;tag=f{cseq}'),
        ("To", f'"Agent {ext}" <sip:{ext}@pbx1.sha.lab>'),
        ("Call-ID", call_id),
        ("CSeq", f"{cseq} REGISTER"),
        ("Contact", contact),
    ]
    if expires_hdr is not None:
        h.append(("Expires", expires_hdr))
    return sip("REGISTER sip:pbx1.sha.lab SIP/2.0", h)


def register_compact(cseq: int, call_id: str, ext: str) -> bytes:
    """Compact forms (RFC 3261 7.3.3) and a lower-case header name."""
    return sip(
        "REGISTER sip:pbx1.sha.lab:5060;transport=udp SIP/2.0",
        [
            ("v", f"SIP/2.0/UDP {PHONE}:5060;branch=z9hG4bK-c{cseq}"),
            ("f", f"<sip:{ext}@pbx1.sha.lab>;tag=c{cseq}"),
            ("t", f"<sip:{ext}@pbx1.sha.lab>"),
            ("i", call_id),
            ("cseq", f"{cseq} REGISTER"),
            ("m", f"<sip:{ext}@{PHONE}:5060>;expires=120"),
            ("Authorization", 'Digest username="1001", realm="sha", nonce="abc", response="0123"'),
            ("l", "0"),
        ],
        clen=False,
    )


def response(
    status: int, reason: str, req: bytes, extra: list[tuple[str, str]] = (), body: str = ""
) -> bytes:  # type: ignore[assignment]
    """A response copying Via/From/To/Call-ID/CSeq of ``req`` (any spelling) with a To tag."""
    h = parse_sip(req)
    assert h is not None
    head = req.split(b"\r\n\r\n")[0].decode().split("\r\n")[1:]
    keep = []
    for line in head:
        name, _, value = line.partition(":")
        n = name.strip().lower()
        if n in ("via", "v", "from", "f", "call-id", "i", "cseq"):
            keep.append((name.strip(), value.strip()))
        elif n in ("to", "t"):
            keep.append((name.strip(), value.strip() + ";tag=srv"))
    return sip(f"SIP/2.0 {status} {reason}", keep + list(extra), body)


def dialog(call_id: str, caller: str, callee: str, sdp_size: int = 0) -> list[tuple[bool, bytes]]:
    """INVITE/180/200/ACK/BYE/200; the flag says phone -> PBX."""

    def req(method: str, cseq: int, body: str = "", totag: bool = False) -> bytes:
        h = [
            ("Via", f"SIP/2.0/UDP {PHONE}:5060;branch=z9hG4bK-{call_id}-{method}"),
            ("From", f"<sip:{caller}@pbx1.sha.lab>;tag=a1"),
            ("To", f"<sip:{callee}@pbx1.sha.lab>" + (";tag=srv" if totag else "")),
            ("Call-ID", call_id),
            ("CSeq", f"{cseq} {method}"),
            ("Contact", f"<sip:{caller}@{PHONE}:5060>"),
        ]
        if body:
            h.append(("Content-Type", "application/sdp"))
        return sip(f"{method} sip:{callee}@pbx1.sha.lab SIP/2.0", h, body)

    invite = req("INVITE", 1, sdp(sdp_size))
    bye = req("BYE", 2, totag=True)
    return [
        (True, invite),
        (False, response(180, "Ringing", invite)),
        (False, response(200, "OK", invite, [("Content-Type", "application/sdp")], sdp())),
        (True, req("ACK", 1, totag=True)),
        (True, bye),
        (False, response(200, "OK", bye)),
    ]


def options(cseq: int) -> bytes:
    return sip(
        f"OPTIONS sip:1001@{PHONE}:5060 SIP/2.0",
        [
            ("v", f"SIP/2.0/UDP {PBX}:5060;branch=z9hG4bK-o{cseq}"),
            ("f", f"<sip:ping@{PBX}>;tag=o{cseq}"),
            ("t", f"<sip:1001@{PHONE}>"),
            ("i", f"opt-{cseq}@{PBX}"),
            ("CSeq", f"{cseq} OPTIONS"),
        ],
    )


def key(msg: bytes) -> tuple[str, str, int, str]:
    """What tshark and the decoder must agree on: method or status, Call-ID, CSeq number and method."""
    h = parse_sip(msg)
    assert h is not None
    return (h.method or str(h.status), h.call_id or "", h.cseq or -1, h.cseq_method or "")


# -- the lab pcap ---------------------------------------------------------------------------------------


class Pcap:
    """Frames with deterministic timestamps, plus the truth about which messages they carry."""

    def __init__(self) -> None:
        self.frames: list[Any] = []
        self.sip: list[tuple[int, tuple[str, str, int, str]]] = []  # (frame completing it, key)
        self.cti: list[tuple[int, dict[str, Any]]] = []

    def add(self, pkt: Any) -> int:
        pkt.time = T0 + len(self.frames) * 0.001
        self.frames.append(pkt)
        return len(self.frames)

    def udp(self, src: str, dst: str, payload: bytes, vlan: int | None = None) -> int:
        if vlan is None:
            n = self.add(Ether() / IP(src=src, dst=dst) / UDP(sport=5060, dport=5060) / Raw(payload))
        else:
            n = self.add(
                Ether() / Dot1Q(vlan=vlan) / IP(src=src, dst=dst) / UDP(sport=5060, dport=5060) / payload
            )
        self.sip.append((n, key(payload)))
        return n

    def tcp(
        self, src: str, sport: int, dst: str, dport: int, seq: int, data: bytes = b"", flags: str = "PA"
    ) -> int:
        pkt = Ether() / IP(src=src, dst=dst) / TCP(sport=sport, dport=dport, seq=seq, ack=1, flags=flags)
        return self.add(pkt / Raw(data) if data else pkt)

    def write(self, path: Path) -> Path:
        wrpcap(str(path), self.frames)
        return path


def lab_pcap(path: Path) -> Pcap:
    """REGISTER/401/200, a call, OPTIONS, compact headers, a VLAN tag, an IP-fragmented INVITE, SIP over TCP
    split across segments and packed several to a segment, CTI lines split, packed, retransmitted and out of
    order."""
    p = Pcap()
    reg1 = register(1, "reg-1@phone", "1001", f"<sip:1001@{PHONE}:5060>", expires_hdr="300")
    p.udp(PHONE, PBX, reg1)
    p.udp(
        PBX,
        PHONE,
        response(401, "Unauthorized", reg1, [("WWW-Authenticate", 'Digest realm="sha", nonce="abc"')]),
    )
    reg2 = register_compact(2, "reg-1@phone", "1001")
    p.udp(PHONE, PBX, reg2)
    p.udp(PBX, PHONE, response(200, "OK", reg2, [("Contact", f"<sip:1001@{PHONE}:5060>;expires=120")]))
    for fwd, m in dialog("call-1@phone", "1001", "2002"):
        p.udp(PHONE, PBX, m) if fwd else p.udp(PBX, PHONE, m)
    opt = options(7)
    p.udp(PBX, PHONE, opt)
    p.udp(PHONE, PBX, response(200, "OK", opt))
    p.add(Ether() / IP(src=PHONE, dst=PBX) / UDP(sport=5060, dport=5060) / Raw(b"\r\n\r\n"))  # keep-alive
    p.udp(PHONE, PBX, register(3, "reg-vlan@phone", "1003", f"<sip:1003@{PHONE}>"), vlan=100)
    # An INVITE with a large SDP, fragmented by IP: the decoder must reassemble it as tshark does.
    big = dialog("call-frag@phone", "1001", "2003", sdp_size=2500)[0][1]
    frags = fragment(IP(src=PHONE, dst=PBX, id=4242) / UDP(sport=5060, dport=5060) / Raw(big), fragsize=1000)
    assert len(frags) == 3
    p.add(Ether() / frags[0])
    p.add(Ether() / frags[2])  # out of order
    n = p.add(Ether() / frags[1])
    p.sip.append((n, key(big)))
    # De-registration: Contact * with Expires 0, answered by a 200 without Contact.
    unreg = register(4, "reg-1@phone", "1001", "*", expires_hdr="0")
    p.udp(PHONE, PBX, unreg)
    p.udp(PBX, PHONE, response(200, "OK", unreg))

    # SIP over TCP, phone2:40001 -> PBX:5060.
    c, s = 1000, 5000
    p.tcp(PHONE2, 40001, PBX, 5060, c, flags="S")
    p.tcp(PBX, 5060, PHONE2, 40001, s, flags="SA")
    c += 1
    s += 1
    treg = register(
        1, "reg-tcp@phone2", "1002", f"<sip:1002@{PHONE2}:40001;transport=tcp>", expires_hdr="600"
    )
    p.tcp(PHONE2, 40001, PBX, 5060, c, treg[:100])
    n = p.tcp(PHONE2, 40001, PBX, 5060, c + 100, treg[100:])
    p.sip.append((n, key(treg)))
    c += len(treg)
    tok = response(200, "OK", treg, [("Contact", f"<sip:1002@{PHONE2}:40001;transport=tcp>;expires=600")])
    topt = options(9)
    topt_ok = response(200, "OK", topt)
    n = p.tcp(PBX, 5060, PHONE2, 40001, s, tok + topt)  # two messages in one segment
    p.sip += [(n, key(tok)), (n, key(topt))]
    s += len(tok) + len(topt)
    tinv = dialog("call-tcp@phone2", "1002", "2004")[0][1]
    seg = topt_ok + tinv[:150]  # one message and the start of the next
    n = p.tcp(PHONE2, 40001, PBX, 5060, c, seg)
    p.sip.append((n, key(topt_ok)))
    p.tcp(PHONE2, 40001, PBX, 5060, c, seg)  # retransmission: nothing new
    n = p.tcp(PHONE2, 40001, PBX, 5060, c + len(seg), tinv[150:])
    p.sip.append((n, key(tinv)))

    # CTI, agent:45000 -> CTI:7010, newline-delimited JSON.
    msgs = [
        {"type": "login", "id": 1, "agent": "a00001", "site": "sha", "extension": "1001"},
        {"type": "state", "id": 2, "agent": "a00001", "state": "ready"},
        {"type": "heartbeat", "id": 3},
        {"type": "logout", "id": 4, "agent": "a00001", "site": "sha", "note": "é ünïcode"},
    ]
    lines = [json.dumps(m, ensure_ascii=False).encode() + b"\n" for m in msgs]
    c = 7000
    p.tcp(AGENT, 45000, CTI, CTI_PORT, c, flags="S")
    c += 1
    a = lines[0] + lines[1][:10]
    b = lines[1][10:]
    p.tcp(AGENT, 45000, CTI, CTI_PORT, c, a)
    p.cti.append((len(p.frames), msgs[0]))
    n = p.tcp(AGENT, 45000, CTI, CTI_PORT, c + len(a), b)
    p.cti.append((n, msgs[1]))
    p.tcp(AGENT, 45000, CTI, CTI_PORT, c + len(a), b)  # duplicate
    c += len(a) + len(b)
    # lines[2] and lines[3] sent as three segments; the last arrives before the middle one.
    rest = lines[2] + lines[3]
    s1, s2, s3 = rest[:20], rest[20:45], rest[45:]
    p.tcp(AGENT, 45000, CTI, CTI_PORT, c, s1)
    p.tcp(AGENT, 45000, CTI, CTI_PORT, c + 45, s3)
    n = p.tcp(AGENT, 45000, CTI, CTI_PORT, c + 20, s2 + s3[:5])  # overlaps what is held
    p.cti += [(n, msgs[2]), (n, msgs[3])]
    # Server side: two messages in one segment.
    replies = [
        {"type": "login_ok", "id": 1, "agent": "a00001", "site": "sha", "epoch": 3},
        {"type": "event", "event": "state", "agent": "a00001", "site": "sha", "state": "ready"},
    ]
    p.tcp(CTI, CTI_PORT, AGENT, 45000, 9000, flags="SA")
    n = p.tcp(CTI, CTI_PORT, AGENT, 45000, 9001, b"".join(json.dumps(r).encode() + b"\n" for r in replies))
    p.cti += [(n, r) for r in replies]
    p.write(path)
    return p


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Pcap]:
    path = tmp_path_factory.mktemp("decode") / "lab.pcap"
    return path, lab_pcap(path)


def sip_keys(events: list[Event]) -> list[tuple[int, tuple[str, str, int, str]]]:
    return [
        (e.frame, (e.method or str(e.status), e.call_id or "", e.cseq or -1, e.cseq_method or ""))
        for e in events
        if e.protocol == "sip"
    ]


# -- the decoder against the truth ----------------------------------------------------------------------


def test_decoder_finds_every_message_once(lab: tuple[Path, Pcap]) -> None:
    path, truth = lab
    d = decode_pcap(path, cti_ports=[CTI_PORT])
    assert Counter(sip_keys(d.events)) == Counter(truth.sip)
    assert [(e.frame, e.body) for e in d.events if e.protocol == "cti"] == truth.cti
    assert d.stats.sip_messages == len(truth.sip)
    assert d.stats.cti_messages == len(truth.cti)
    assert d.stats.tcp_retransmitted >= 2  # the SIP and the CTI duplicates
    assert d.stats.lossless, d.stats_dict()
    assert d.stats.frames == len(truth.frames)
    assert d.stats.linktypes == [LINKTYPE_ETHERNET]


def test_sip_fields(lab: tuple[Path, Pcap]) -> None:
    d = decode_pcap(lab[0], cti_ports=[CTI_PORT])
    sipev = [e for e in d.events if e.protocol == "sip"]
    reg = sipev[0]
    assert (reg.method, reg.call_id, reg.cseq, reg.cseq_method) == ("REGISTER", "reg-1@phone", 1, "REGISTER")
    assert (reg.src, reg.dst, reg.transport) == (f"{PHONE}:5060", f"{PBX}:5060", "udp")
    assert (reg.extension, reg.registrar, reg.expires) == ("1001", "pbx1.sha.lab", 300)
    assert (reg.from_user, reg.to_user) == ("1001", "1001")
    assert reg.time == pytest.approx(T0, abs=1e-6)
    unauth = sipev[1]
    assert (unauth.status, unauth.reason, unauth.cseq_method, unauth.registrar) == (
        401,
        "Unauthorized",
        "REGISTER",
        PBX,
    )
    compact = sipev[2]
    assert (compact.call_id, compact.cseq, compact.expires, compact.extension) == (
        "reg-1@phone",
        2,
        120,
        "1001",
    )
    assert compact.registrar == "pbx1.sha.lab"
    ok = sipev[3]
    assert (ok.status, ok.expires, ok.extension, ok.registrar) == (200, 120, "1001", PBX)
    invite = next(e for e in sipev if e.method == "INVITE")
    assert (invite.extension, invite.from_user, invite.to_user, invite.registrar) == (
        "2002",
        "1001",
        "2002",
        None,
    )
    ringing = next(e for e in sipev if e.status == 180)
    assert (ringing.reason, ringing.extension) == ("Ringing", "2002")
    frag = next(e for e in sipev if e.call_id == "call-frag@phone")
    assert frag.method == "INVITE"
    vlan = next(e for e in sipev if e.call_id == "reg-vlan@phone")
    assert (vlan.extension, vlan.expires) == ("1003", None)
    unreg = [e for e in sipev if e.call_id == "reg-1@phone" and e.cseq == 4]
    assert [(e.method, e.status, e.expires) for e in unreg] == [("REGISTER", None, 0), (None, 200, 0)]
    treg = next(e for e in sipev if e.call_id == "reg-tcp@phone2" and e.method)
    assert (treg.transport, treg.src, treg.expires, treg.extension) == ("tcp", f"{PHONE2}:40001", 600, "1002")


def test_cti_fields_and_dicts(lab: tuple[Path, Pcap]) -> None:
    d = decode_pcap(lab[0], cti_ports=[CTI_PORT])
    cti = [e for e in d.events if e.protocol == "cti"]
    assert [(e.type, e.agent, e.site) for e in cti] == [
        ("login", "a00001", "sha"),
        ("state", "a00001", None),
        ("heartbeat", None, None),
        ("logout", "a00001", "sha"),
        ("login_ok", "a00001", "sha"),
        ("event", "a00001", "sha"),
    ]
    assert cti[0].src == f"{AGENT}:45000" and cti[0].dst == f"{CTI}:{CTI_PORT}"
    dicts = d.to_dicts()
    assert dicts == to_dicts(d.events)
    json.dumps(dicts)  # plain data all the way down
    assert dicts[0]["src"] == f"{PHONE}:5060" and "agent" not in dicts[0] and dicts[0]["method"] == "REGISTER"
    cti_dict = next(x for x in dicts if x["protocol"] == "cti")
    assert "method" not in cti_dict and cti_dict["body"]["extension"] == "1001"
    # A caller adds the PBX's site to a SIP event (docs/history.md) in either order.
    assert {"site": "sha", **dicts[0]}["site"] == "sha"


def test_ports_unknown_are_sniffed(lab: tuple[Path, Pcap]) -> None:
    """Without cti_ports the CTI stream is still found by its first byte, so nothing is missed."""
    path, truth = lab
    d = decode_pcap(path)
    assert len([e for e in d.events if e.protocol == "cti"]) == len(truth.cti)


# -- against tshark -------------------------------------------------------------------------------------


def tshark_sip(path: Path) -> list[tuple[int, tuple[str, str, int, str]]]:
    """(frame, key) of every SIP message tshark sees. PDML keeps each message of a frame apart (``-T
    fields`` aggregates them, losing which status or method goes with which Call-ID)."""
    out = subprocess.run(
        ["tshark", "-r", str(path), "-Y", "sip", "-T", "pdml"], capture_output=True, check=True, timeout=120
    ).stdout
    rows = []
    for packet in ET.fromstring(out).iter("packet"):
        frame = int(packet.find("proto[@name='geninfo']/field[@name='num']").get("show"))  # type: ignore[union-attr]
        for proto in packet.findall("proto[@name='sip']"):
            fields = {f.get("name"): f.get("show") for f in proto.iter("field")}
            if "sip.Call-ID" not in fields:
                continue  # a keep-alive shows as SIP with no message
            kind = fields.get("sip.Method") or fields["sip.Status-Code"]
            rows.append(
                (frame, (kind, fields["sip.Call-ID"], int(fields["sip.CSeq.seq"]), fields["sip.CSeq.method"]))
            )
    return rows


needs_tshark = pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed")


@needs_tshark
def test_same_sip_messages_as_tshark(lab: tuple[Path, Pcap]) -> None:
    path, truth = lab
    theirs = tshark_sip(path)
    ours = sip_keys(decode_pcap(path, cti_ports=[CTI_PORT]).events)
    assert Counter(ours) == Counter(theirs)
    assert len(theirs) == len(truth.sip)


@needs_tshark
def test_same_cti_stream_as_tshark(lab: tuple[Path, Pcap]) -> None:
    """tshark's own TCP reassembly of the CTI connection gives the same lines as ours."""
    path, _truth = lab
    out = subprocess.run(
        ["tshark", "-r", str(path), "-q", "-z", f"follow,tcp,raw,{AGENT}:45000,{CTI}:{CTI_PORT}"],
        capture_output=True, text=True, check=True, timeout=120,
    ).stdout  # fmt: skip
    client, server = b"", b""
    for line in out.splitlines():
        if not line or line.startswith(("=", "Follow", "Filter", "Node")):
            continue
        if line.startswith("\t"):
            server += bytes.fromhex(line.strip())
        else:
            client += bytes.fromhex(line.strip())
    theirs = [json.loads(x) for x in (client + server).splitlines() if x]
    ours = [e.body for e in decode_pcap(path, cti_ports=[CTI_PORT]).events if e.protocol == "cti"]
    assert ours == theirs


# -- file formats and link types ------------------------------------------------------------------------


def rewrite(
    src: Path, dst: Path, *, endian: str = "<", nano: bool = False, linktype: int = LINKTYPE_ETHERNET
) -> Path:
    """The same packets in another pcap flavour; cooked (SLL/SLL2) frames are built from the Ethernet ones."""
    data = src.read_bytes()
    magic = 0xA1B23C4D if nano else 0xA1B2C3D4
    out = [struct.pack(endian + "IHHiIII", magic, 2, 4, 0, 0, 262144, linktype)]
    for _n, ts, _lt, buf, off, end, orig in iter_frames(data):
        frame = bytes(buf[off:end])
        if linktype == LINKTYPE_LINUX_SLL:
            frame = (
                struct.pack(">HHH8sH", 0, 1, 6, frame[6:12], struct.unpack(">H", frame[12:14])[0])
                + frame[14:]
            )
        elif linktype == LINKTYPE_LINUX_SLL2:
            frame = (
                struct.pack(">HHIHBB8s", struct.unpack(">H", frame[12:14])[0], 0, 2, 1, 0, 6, frame[6:12])
                + frame[14:]
            )
        sec = int(ts)
        frac = round((ts - sec) * (1e9 if nano else 1e6))
        out.append(struct.pack(endian + "IIII", sec, frac, len(frame), len(frame) + (orig - (end - off))))
        out.append(frame)
    dst.write_bytes(b"".join(out))
    return dst


@pytest.mark.parametrize(
    "flavour",
    [
        {"endian": ">"},
        {"nano": True},
        {"endian": ">", "nano": True},
        {"linktype": LINKTYPE_LINUX_SLL},
        {"linktype": LINKTYPE_LINUX_SLL2},
    ],
    ids=["big-endian", "nanosecond", "big-endian-nanosecond", "sll", "sll2"],
)
def test_pcap_flavours_decode_alike(lab: tuple[Path, Pcap], tmp_path: Path, flavour: dict[str, Any]) -> None:
    path, _truth = lab
    base = decode_pcap(path, cti_ports=[CTI_PORT])
    other = decode_pcap(rewrite(path, tmp_path / "x.pcap", **flavour), cti_ports=[CTI_PORT])
    assert [e._replace(time=0.0) for e in other.events] == [e._replace(time=0.0) for e in base.events]
    assert [e.time for e in other.events] == pytest.approx([e.time for e in base.events], abs=1e-6)
    assert other.stats.linktypes == [flavour.get("linktype", LINKTYPE_ETHERNET)]
    assert other.stats.lossless


@pytest.mark.skipif(shutil.which("editcap") is None, reason="editcap (wireshark-common) is not installed")
def test_pcapng_decodes_alike(lab: tuple[Path, Pcap], tmp_path: Path) -> None:
    path, _truth = lab
    ng = tmp_path / "lab.pcapng"
    subprocess.run(["editcap", "-F", "pcapng", str(path), str(ng)], check=True, capture_output=True)
    assert ng.read_bytes()[:4] == b"\x0a\x0d\x0d\x0a"
    base = decode_pcap(path, cti_ports=[CTI_PORT])
    other = decode_pcap(ng, cti_ports=[CTI_PORT])
    assert [e._replace(time=0.0) for e in other.events] == [e._replace(time=0.0) for e in base.events]
    assert [e.time for e in other.events] == pytest.approx([e.time for e in base.events], abs=1e-6)


def test_ipv6_and_raw_ip(tmp_path: Path) -> None:
    msg = register(1, "v6@phone", "1001", "<sip:1001@[2001:db8::11]:5060>;expires=60")
    pkt = Ether() / IPv6(src="2001:db8::11", dst="2001:db8::1") / UDP(sport=5060, dport=5060) / Raw(msg)
    wrpcap(str(tmp_path / "v6.pcap"), [pkt])
    (e,) = decode_pcap(tmp_path / "v6.pcap").events
    assert (e.src, e.dst, e.call_id, e.expires) == (
        "[2001:db8::11]:5060",
        "[2001:db8::1]:5060",
        "v6@phone",
        60,
    )
    wrpcap(
        str(tmp_path / "raw.pcap"),
        [IP(src=PHONE, dst=PBX) / UDP(sport=5060, dport=5060) / Raw(msg)],
        linktype=101,
    )
    (e,) = decode_pcap(tmp_path / "raw.pcap").events
    assert e.src == f"{PHONE}:5060"


def test_not_a_capture(tmp_path: Path) -> None:
    (tmp_path / "x").write_bytes(b"hello world, not a pcap")
    with pytest.raises(DecodeError):
        decode_pcap(tmp_path / "x")
    (tmp_path / "e").write_bytes(b"")
    with pytest.raises(DecodeError):
        decode_pcap(tmp_path / "e")


def test_truncated_file_keeps_whole_frames(lab: tuple[Path, Pcap], tmp_path: Path) -> None:
    """A pcap cut mid-frame (tcpdump killed) decodes up to the last whole frame."""
    data = lab[0].read_bytes()
    (tmp_path / "cut.pcap").write_bytes(data[:-7])
    d = decode_pcap(tmp_path / "cut.pcap", cti_ports=[CTI_PORT])
    assert d.stats.frames == len(lab[1].frames) - 1


def test_snaplen_truncation_is_counted(tmp_path: Path) -> None:
    msg = register(1, "cut@phone", "1001", "<sip:1001@198.18.1.11>")
    wrpcap(
        str(tmp_path / "s.pcap"), [Ether() / IP(src=PHONE, dst=PBX) / UDP(sport=5060, dport=5060) / Raw(msg)]
    )
    rewritten = tmp_path / "s2.pcap"
    data = bytearray((tmp_path / "s.pcap").read_bytes())
    # Cut the frame to 200 bytes as "-s 200" would: caplen 200, original length kept.
    caplen = 200
    (orig,) = struct.unpack_from("<I", data, 24 + 12)
    rewritten.write_bytes(
        bytes(data[:24])
        + struct.pack("<IIII", *struct.unpack_from("<II", data, 24), caplen, orig)
        + bytes(data[40 : 40 + caplen])
    )
    d = decode_pcap(rewritten)
    assert d.stats.truncated == 1 and not d.stats.lossless
    # What survived the cut is still read; what did not is None, and the stats say the picture is partial.
    assert (d.events[0].method, d.events[0].registrar, d.events[0].call_id) == (
        "REGISTER",
        "pbx1.sha.lab",
        None,
    )


# -- TCP reassembly edge cases --------------------------------------------------------------------------


def cti_stream(tmp_path: Path, segments: list[tuple[int, bytes]], syn: int | None = 100) -> Any:
    p = Pcap()
    if syn is not None:
        p.tcp(AGENT, 45000, CTI, CTI_PORT, syn, flags="S")
    for seq, data in segments:
        p.tcp(AGENT, 45000, CTI, CTI_PORT, seq & 0xFFFFFFFF, data)
    return decode_pcap(p.write(tmp_path / "s.pcap"), cti_ports=[CTI_PORT])


def lines(*types: str) -> bytes:
    return b"".join(json.dumps({"type": t}).encode() + b"\n" for t in types)


def test_tcp_hole_never_filled_is_counted_and_skipped(tmp_path: Path) -> None:
    a, b, c = lines("one"), lines("two"), lines("three", "four")
    d = cti_stream(tmp_path, [(101, a), (101 + len(a) + len(b), c)])  # b never captured
    assert [e.type for e in d.events] == ["one", "three", "four"]
    assert d.stats.tcp_gaps == 1 and not d.stats.lossless


def test_tcp_hole_inside_a_message_resyncs_at_next_line(tmp_path: Path) -> None:
    data = lines("one", "two", "three")
    cut1, cut2 = len(lines("one")) + 5, len(lines("one", "two")) - 3
    d = cti_stream(tmp_path, [(101, data[:cut1]), (101 + cut2, data[cut2:])])
    assert [e.type for e in d.events] == ["one", "three"]
    assert d.stats.tcp_gaps == 1 and d.stats.malformed_cti == 0


def test_tcp_capture_started_mid_stream(tmp_path: Path) -> None:
    data = lines("one", "two")
    d = cti_stream(tmp_path, [(5000, data[7:])], syn=None)  # first segment starts inside "one"
    assert [e.type for e in d.events] == ["two"]
    assert d.stats.malformed_cti == 0


def test_tcp_sequence_wraps_around(tmp_path: Path) -> None:
    data = lines("one", "two", "three")
    isn = 0xFFFFFFF0
    d = cti_stream(
        tmp_path, [(isn + 1, data[:10]), (isn + 11 + 20, data[30:]), (isn + 11, data[10:30])], syn=isn
    )
    assert [e.type for e in d.events] == ["one", "two", "three"]
    assert d.stats.lossless


def test_tcp_incomplete_message_at_end(tmp_path: Path) -> None:
    d = cti_stream(tmp_path, [(101, lines("one") + b'{"type": "tw')])
    assert [e.type for e in d.events] == ["one"]
    assert d.stats.incomplete_at_end == 1 and not d.stats.lossless


def test_cti_line_that_is_not_json(tmp_path: Path) -> None:
    d = cti_stream(tmp_path, [(101, b"garbage\n" + lines("one") + b"[1, 2]\n")])
    assert [(e.type, e.body) for e in d.events] == [("one", {"type": "one"}), (None, [1, 2])]
    assert d.stats.malformed_cti == 1


def test_sip_over_tcp_without_content_length_and_keepalives(tmp_path: Path) -> None:
    m1 = sip("OPTIONS sip:x@pbx SIP/2.0", [("Call-ID", "k1"), ("CSeq", "1 OPTIONS")], clen=False)
    m2 = sip("OPTIONS sip:x@pbx SIP/2.0", [("Call-ID", "k2"), ("CSeq", "2 OPTIONS")])
    p = Pcap()
    p.tcp(PHONE2, 40002, PBX, 5060, 10, flags="S")
    p.tcp(PHONE2, 40002, PBX, 5060, 11, b"\r\n\r\n" + m1 + b"\r\n\r\n" + m2)
    d = decode_pcap(p.write(tmp_path / "k.pcap"))
    assert [e.call_id for e in d.events] == ["k1", "k2"]
    assert d.stats.lossless


# -- the SIP parser -------------------------------------------------------------------------------------


def test_parse_sip_spellings() -> None:
    msg = (
        b"INVITE sip:2002;phone-context=sha@pbx.sha.lab:5070;transport=tcp SIP/2.0\r\n"
        b"CALL-ID :  abc@host  \r\n"
        b"cseq: 12   INVITE\r\n"
        b'From: "Alice <1001>" <sip:1001:secret@pbx>;tag=1\r\n'
        b"To: sip:2002@pbx;tag=x\r\n"
        b"Subject: a folded\r\n  subject line\r\n"
        b'Contact: "A, B" <sip:1001@198.18.1.11>;q=0.5, <sip:1001@198.18.1.99>;expires=5\r\n'
        b"Contact: <sip:ignored@x>\r\n"
        b"Content-Length: 4\r\n\r\nbody"
    )
    h = parse_sip(msg)
    assert h is not None
    assert (h.method, h.status, h.call_id, h.cseq, h.cseq_method) == (
        "INVITE",
        None,
        "abc@host",
        12,
        "INVITE",
    )
    assert (h.ruri_user, h.ruri_host) == ("2002", "pbx.sha.lab")
    assert (h.from_user, h.to_user) == ("1001", "2002")
    assert (h.contact, h.expires) == ("sip:1001@198.18.1.11", None)  # first Contact, no expires on it
    assert (h.content_length, h.header_length) == (4, len(msg) - 4)


def test_parse_sip_folded_needed_header() -> None:
    h = parse_sip(
        b"SIP/2.0 486 Busy Here\r\nCall-ID: a\r\n b\r\nCSeq: 3 INVITE\r\nTo: <tel:+4930123;ext=9>\r\n\r\n"
    )
    assert h is not None
    assert (h.status, h.reason, h.call_id, h.cseq, h.to_user) == (486, "Busy Here", "a b", 3, "+4930123")


def test_parse_sip_rejects_non_sip() -> None:
    for data in (
        b"",
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"SIP/2.0 abc OK\r\n\r\n",
        b'{"type": "login"}\n',
    ):
        assert parse_sip(data) is None


def test_uri_helpers() -> None:
    assert uri_user("sip:1001@pbx;transport=udp") == "1001"
    assert uri_user("sips:alice:pw@[2001:db8::1]:5061") == "alice"
    assert uri_user("sip:pbx.sha.lab") is None
    assert uri_user("tel:+4930123;phone-context=x") == "+4930123"
    assert uri_host("sip:u@[2001:db8::1]:5061;transport=tls") == "2001:db8::1"
    assert uri_host("sip:pbx.sha.lab:5060") == "pbx.sha.lab"
    assert uri_user(None) is None and uri_host("") is None


@pytest.mark.parametrize("seed", range(20))
def test_corrupt_frames_never_raise(lab: tuple[Path, Pcap], tmp_path: Path, seed: int) -> None:
    """A capture is evidence from an untrusted wire: garbled bytes may lose messages, never the decode."""
    import random

    rng = random.Random(seed)
    data = bytearray(lab[0].read_bytes())
    for _n, _ts, _lt, _buf, off, end, _orig in list(iter_frames(bytes(data))):
        for _ in range(rng.randrange(0, 6)):
            pos = rng.randrange(off, end)
            data[pos] = rng.randrange(256)
        if rng.random() < 0.1:  # a frame whose headers claim more than it holds
            data[off + 16 : off + 18] = b"\xff\xff"
    (tmp_path / "bad.pcap").write_bytes(bytes(data))
    d = decode_pcap(tmp_path / "bad.pcap", cti_ports=[CTI_PORT])
    assert d.stats.frames == len(lab[1].frames)
