"""Garbage is not capture loss (issue 16, brief N4 item 1): an attacker's malformed bytes on a connection
whose server accepted nothing are counted as ``garbage_*``, while a malformed message on an agent's
connection, or where the capture cannot show the server's side, stays loss (``lossless`` false)."""

from __future__ import annotations

import json
import struct

from test_fuzz_targets import pcap_file

from harness.decode import Decoded, decode_buffer

ATTACKER, AGENT, CTI, PBX = (bytes([198, 18, 1, n]) for n in (21, 22, 2, 10))
CPORT, SIP = 7010, 5060
SYN, ACK, PSH_ACK, RST = 0x02, 0x10, 0x18, 0x04


def _ip(src: bytes, dst: bytes, proto: int, l4: bytes) -> bytes:
    ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), 1, 0, 64, proto, 0, src, dst)
    return b"\x02\x00\x00\x00\x00\x01\x02\x00\x00\x00\x00\x02\x08\x00" + ip + l4


def tcp(src: bytes, sport: int, dst: bytes, dport: int, seq: int, flags: int, data: bytes = b"") -> bytes:
    hdr = struct.pack(">HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, 1, 5 << 4, flags, 65535, 0, 0)
    return _ip(src, dst, 6, hdr + data)


def udp(src: bytes, sport: int, dst: bytes, dport: int, data: bytes) -> bytes:
    return _ip(src, dst, 17, struct.pack(">HHHH", sport, dport, 8 + len(data), 0) + data)


def lines(*objs: object) -> bytes:
    return b"".join((o if isinstance(o, bytes) else json.dumps(o).encode()) + b"\n" for o in objs)


def conn(client: bytes, port: int, up: bytes, down: bytes, *, server: bytes = CTI, sport: int = CPORT,
         reset: bool = False, one_way: bool = False, isn: int = 100) -> list[bytes]:  # fmt: skip
    """A connection from ``client:port``: handshake, ``up`` to the server, ``down`` back (unless
    ``one_way``: a capture point that sees the client's side only), then a reset by the client."""
    out = [tcp(client, port, server, sport, isn, SYN)]
    if not one_way:
        out.append(tcp(server, sport, client, port, 5000, SYN | ACK))
    out.append(tcp(client, port, server, sport, isn + 1, PSH_ACK, up))
    if down and not one_way:
        out.append(tcp(server, sport, client, port, 5001, PSH_ACK, down))
    if reset:
        out.append(tcp(client, port, server, sport, isn + 1 + len(up), RST))
    return out


def decode(frames: list[bytes]) -> Decoded:
    return decode_buffer(pcap_file(frames), cti_ports=(CPORT,))


ERR = {"type": "error", "code": "bad_json"}
GARBAGE = lines(b"this is not json 0.25", [1, 2, 3], {"type": "no_such_type", "id": 1}, b"{{{{[[[[")


def test_a_flood_connection_the_cti_refused_throughout_is_garbage_not_loss() -> None:
    d = decode(conn(ATTACKER, 20001, GARBAGE, lines(ERR, ERR, ERR, ERR), reset=True))
    s = d.stats
    assert (s.garbage_streams, s.garbage_messages, s.garbage_bytes) == (1, 2, len(GARBAGE))
    assert s.malformed_cti == 0 and s.lossless, d.stats_dict()
    assert d.stats_dict()["garbage_bytes"] == len(GARBAGE)
    assert [e.type for e in d.events].count("error") == 4  # the refusals stay evidence


def test_a_slow_client_cut_with_an_error_is_garbage() -> None:
    d = decode(conn(ATTACKER, 20002, b'{"type": "login", "agent": "a9', lines(ERR), reset=True))
    assert d.stats.garbage_streams == 1 and d.stats.garbage_messages == 1
    assert d.stats.incomplete_at_end == 0 and d.stats.ended_mid_message == 0 and d.stats.lossless


def test_a_malformed_line_on_an_agents_connection_stays_loss() -> None:
    up = lines({"type": "login", "agent": "a00001", "token": "t"}, b"not json")
    d = decode(conn(AGENT, 40001, up, lines({"type": "login_ok", "agent": "a00001"}, ERR)))
    assert d.stats.malformed_cti == 1 and not d.stats.lossless
    assert d.stats.garbage_streams == 0 and d.stats.garbage_bytes == 0


def test_garbage_beside_an_agent_is_told_apart() -> None:
    agent = conn(AGENT, 40001, lines({"type": "login", "agent": "a1"}), lines({"type": "login_ok"}))
    d = decode(agent + conn(ATTACKER, 20003, GARBAGE, lines(ERR), reset=True))
    assert d.stats.garbage_streams == 1 and d.stats.lossless
    assert [e.type for e in d.events if e.src_port == 40001] == ["login"]


def test_without_the_servers_side_nobody_can_tell_so_it_stays_loss() -> None:
    d = decode(conn(ATTACKER, 20004, GARBAGE, b"", one_way=True))
    assert d.stats.malformed_cti == 2 and d.stats.garbage_streams == 0 and not d.stats.lossless


def test_a_silent_server_and_a_client_with_malformed_bytes_is_garbage() -> None:
    """A server that never answered a client whose stream carried malformed bytes beside parseable ones: a
    flood's connection (a fresh-clone run under load: 5 SIP requests and 3 malformed messages on one flood
    connection the PBX never answered). Bytes a capture lost on an agent's connection show as tcp_gaps."""
    d = decode(conn(AGENT, 40002, lines({"type": "heartbeat"}, b"garbled"), b""))
    assert d.stats.malformed_cti == 0 and d.stats.garbage_streams == 1 and d.stats.lossless


def test_a_silent_server_and_a_client_with_valid_messages_only_stays_an_agents() -> None:
    d = decode(conn(AGENT, 40003, lines({"type": "heartbeat"}, {"type": "heartbeat"}), b""))
    assert d.stats.garbage_streams == 0 and d.stats.malformed_cti == 0


def test_port_reuse_settles_each_connection_on_its_own() -> None:
    first = conn(ATTACKER, 20005, GARBAGE, lines(ERR))
    up = lines({"type": "login", "agent": "a2"}, b"oops")
    second = conn(ATTACKER, 20005, up, lines({"type": "login_ok"}), isn=900000)
    d = decode(first + second)
    assert d.stats.garbage_streams == 1 and d.stats.malformed_cti == 1 and not d.stats.lossless


def sip_response(status: int, call_id: str) -> bytes:
    return (
        f"SIP/2.0 {status} X\r\nVia: SIP/2.0/UDP 198.18.1.21;branch=z9hG4bK1\r\nFrom: <sip:1@lab>;tag=1\r\n"
        f"To: <sip:1@lab>\r\nCall-ID: {call_id}\r\nCSeq: 1 REGISTER\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def test_udp_garbage_the_pbx_refused_is_garbage_and_a_phones_stays_loss() -> None:
    frames = [
        udp(ATTACKER, 20010, PBX, SIP, b"NOT SIP AT ALL\r\n\r\n"),
        udp(ATTACKER, 20010, PBX, SIP, b"\x00\x01\x02 random"),
        udp(PBX, SIP, ATTACKER, 20010, sip_response(400, "g")),
        udp(AGENT, 5062, PBX, SIP, b"garbled phone bytes"),
        udp(PBX, SIP, AGENT, 5062, sip_response(200, "p")),
    ]
    d = decode(frames)
    assert (d.stats.garbage_streams, d.stats.garbage_messages) == (1, 2)
    assert d.stats.malformed_sip == 1 and not d.stats.lossless  # the phone's flow: the PBX accepted it
    assert decode(frames[:3]).stats.lossless


def test_udp_garbage_without_the_pbxs_side_stays_loss() -> None:
    d = decode([udp(ATTACKER, 20010, PBX, SIP, b"NOT SIP AT ALL\r\n\r\n")])
    assert d.stats.malformed_sip == 1 and d.stats.garbage_streams == 0 and not d.stats.lossless


def test_who_closed_a_connection_is_on_the_record() -> None:
    """An idle client the PBX cut (its FIN first), a trickling client that reset its own connection, a
    reset from the PBX to a client whose start the capture missed, and a trickling client the PBX cut."""
    slow = b"REGISTER sip:lab SIP/2.0\r\nX-Slow: a"
    frames = [
        tcp(ATTACKER, 20020, PBX, SIP, 100, SYN),
        tcp(PBX, SIP, ATTACKER, 20020, 5000, SYN | ACK),
        tcp(PBX, SIP, ATTACKER, 20020, 5001, 0x11),  # FIN, ACK: the PBX closes the idle connection
        *conn(ATTACKER, 20021, slow, b"", server=PBX, sport=SIP, reset=True),
        tcp(PBX, SIP, ATTACKER, 20022, 5001, 0x14),  # RST, ACK
        *conn(ATTACKER, 20023, slow, b"", server=PBX, sport=SIP),
        tcp(PBX, SIP, ATTACKER, 20023, 5001, 0x11),  # the PBX cuts a trickling client
    ]
    d = decode(frames)
    got = [(c.src_ip, c.src_port, c.dst_port, c.how, c.peer_bytes) for c in d.closes]
    assert got == [
        ("198.18.1.10", SIP, 20020, "fin", 0),
        ("198.18.1.21", 20021, SIP, "rst", 0),
        ("198.18.1.10", SIP, 20022, "rst", 0),
        ("198.18.1.10", SIP, 20023, "fin", len(slow)),
    ]
    assert [c.time for c in d.closes] == sorted(c.time for c in d.closes)
