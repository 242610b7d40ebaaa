"""A tiny SIP-over-UDP client: OPTIONS probes and digest-authenticated REGISTER / INVITE / BYE.

Why it exists: the harness judges the PBX from outside, through its wire protocol, so it needs a SIP client
whose every byte it controls (no third-party stack hiding retransmissions, auth retries or tags). It uses
only the standard library, so it also runs inside a bare lab namespace:

    python -m harness.sipprobe options 198.18.1.10 5060          # prints the status, exit 0 on 200
    python -m harness.sipprobe register 198.18.1.10 5060 1001 secret

What it does, per RFC 3261 / RFC 2617:
- requests carry a fresh ``z9hG4bK`` branch, ``rport``, a random Call-ID and From tag;
- non-INVITE requests are retransmitted on Timer E (T1 = 0.5 s doubling up to T2 = 4 s), INVITE on
  Timer A until a provisional answer arrives; a non-2xx final answer to an INVITE is ACKed hop by hop;
- a 401/407 answer is retried once with MD5 digest credentials (``qop=auth`` with ``nc`` and ``cnonce``
  when offered, ``opaque`` echoed), same Call-ID and From tag, CSeq incremented, new branch;
- a 2xx to an INVITE yields a :class:`Dialog` (route set from Record-Route, remote target from Contact)
  for the end-to-end ACK and the BYE; a ringing INVITE can be CANCELled.
"""

from __future__ import annotations

import argparse
import hashlib
import ipaddress
import os
import secrets
import socket
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

T1 = 0.5
T2 = 4.0

_COMPACT = {
    "v": "via",
    "f": "from",
    "t": "to",
    "i": "call-id",
    "m": "contact",
    "l": "content-length",
    "c": "content-type",
    "k": "supported",
    "s": "subject",
    "e": "content-encoding",
}
_CANONICAL = {
    "via": "Via",
    "from": "From",
    "to": "To",
    "call-id": "Call-ID",
    "cseq": "CSeq",
    "contact": "Contact",
    "content-length": "Content-Length",
    "content-type": "Content-Type",
    "max-forwards": "Max-Forwards",
    "record-route": "Record-Route",
    "route": "Route",
    "www-authenticate": "WWW-Authenticate",
    "proxy-authenticate": "Proxy-Authenticate",
    "authorization": "Authorization",
    "proxy-authorization": "Proxy-Authorization",
    "expires": "Expires",
    "user-agent": "User-Agent",
}
# Headers whose value may be a comma-separated list of entries (RFC 3261 section 7.3.1).
_LIST_HEADERS = {"via", "route", "record-route", "contact"}


def _norm(name: str) -> str:
    low = name.strip().lower()
    return _COMPACT.get(low, low)


@dataclass
class SipMessage:
    """A parsed or to-be-sent SIP message; headers keep their order and repetitions."""

    start: str
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""

    @property
    def is_response(self) -> bool:
        return self.start.startswith("SIP/2.0 ")

    @property
    def status(self) -> int | None:
        return int(self.start.split(" ", 2)[1]) if self.is_response else None

    @property
    def reason(self) -> str:
        return self.start.split(" ", 2)[2] if self.is_response else ""

    @property
    def method(self) -> str:
        """Request method, or the CSeq method for a response."""
        if self.is_response:
            return (self.header("CSeq") or " ").split()[-1]
        return self.start.split(" ", 1)[0]

    @property
    def uri(self) -> str:
        return "" if self.is_response else self.start.split(" ")[1]

    @property
    def cseq(self) -> int:
        return int((self.header("CSeq") or "0").split()[0])

    def header(self, name: str) -> str | None:
        """First value of a header (compact forms accepted), or None."""
        key = _norm(name)
        for hname, value in self.headers:
            if _norm(hname) == key:
                return value
        return None

    def header_values(self, name: str) -> list[str]:
        """Every entry of a header, across repetitions and comma-separated lists."""
        key = _norm(name)
        out: list[str] = []
        for hname, value in self.headers:
            if _norm(hname) == key:
                out.extend(split_list(value) if key in _LIST_HEADERS else [value.strip()])
        return out

    def set_header(self, name: str, value: str) -> None:
        """Replace every occurrence of a header with one value (appended if absent)."""
        key = _norm(name)
        kept = [(h, v) for h, v in self.headers if _norm(h) != key]
        self.headers = kept + [(_CANONICAL.get(key, name), value)]

    def to_bytes(self) -> bytes:
        lines = [self.start]
        lines += [f"{h}: {v}" for h, v in self.headers if _norm(h) != "content-length"]
        lines.append(f"Content-Length: {len(self.body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + self.body


def parse_message(data: bytes) -> SipMessage:
    """Parse one SIP message from a UDP datagram (folded header lines are joined)."""
    head, _, body = data.partition(b"\r\n\r\n")
    text = head.decode("utf-8", "replace")
    raw = text.split("\r\n")
    if not raw or not raw[0]:
        raise ValueError("empty SIP message")
    headers: list[tuple[str, str]] = []
    for line in raw[1:]:
        if line[:1] in (" ", "\t") and headers:
            name, value = headers[-1]
            headers[-1] = (name, value + " " + line.strip())
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise ValueError(f"bad header line: {line!r}")
        headers.append((name.strip(), value.strip()))
    msg = SipMessage(raw[0].strip(), headers, body)
    length = msg.header("Content-Length")
    if length is not None and length.strip().isdigit():
        msg.body = body[: int(length)]
    return msg


def split_list(value: str) -> list[str]:
    """Split a header value on commas that are outside quotes and angle brackets."""
    parts: list[str] = []
    depth, quoted, cur = 0, False, []
    for ch in value:
        if ch == '"':
            quoted = not quoted
        elif not quoted and ch == "<":
            depth += 1
        elif not quoted and ch == ">":
            depth -= 1
        if ch == "," and not quoted and depth == 0:
            parts.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    if "".join(cur).strip():
        parts.append("".join(cur).strip())
    return parts


def uri_of(value: str) -> str:
    """The URI of a name-addr (``"x" <sip:a@b>;tag=1``) or addr-spec (``sip:a@b;tag=1``)."""
    if "<" in value:
        return value[value.index("<") + 1 : value.index(">")]
    return value.split(";", 1)[0].strip()


def header_param(value: str, name: str) -> str | None:
    """A header parameter (outside the <> URI), e.g. the tag of a To header."""
    tail = value[value.index(">") + 1 :] if ">" in value else value
    for part in tail.split(";")[1:]:
        key, _, val = part.partition("=")
        if key.strip().lower() == name.lower():
            return val.strip()
    return None


def parse_challenge(value: str) -> dict[str, str]:
    """Parse a ``Digest k=v, k="v"`` challenge into a dict with lower-case keys."""
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() != "digest":
        raise ValueError(f"unsupported auth scheme {scheme!r}")
    out: dict[str, str] = {}
    for item in split_list(rest):
        key, _, val = item.partition("=")
        val = val.strip()
        if len(val) >= 2 and val[0] == val[-1] == '"':
            val = val[1:-1]
        out[key.strip().lower()] = val
    return out


def _md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


def digest_authorization(
    challenge: dict[str, str],
    method: str,
    uri: str,
    username: str,
    password: str,
    nc: int = 1,
    cnonce: str | None = None,
) -> str:
    """Build the Authorization / Proxy-Authorization value for a challenge (RFC 2617, MD5)."""
    realm, nonce = challenge.get("realm", ""), challenge["nonce"]
    algorithm = challenge.get("algorithm", "MD5")
    if algorithm.upper() not in ("MD5", "MD5-SESS"):
        raise ValueError(f"unsupported digest algorithm {algorithm!r}")
    cnonce = cnonce or secrets.token_hex(8)
    ha1 = _md5(f"{username}:{realm}:{password}")
    if algorithm.upper() == "MD5-SESS":
        ha1 = _md5(f"{ha1}:{nonce}:{cnonce}")
    ha2 = _md5(f"{method}:{uri}")
    qops = [q.strip() for q in challenge.get("qop", "").split(",") if q.strip()]
    parts = [f'username="{username}"', f'realm="{realm}"', f'nonce="{nonce}"', f'uri="{uri}"']
    if "auth" in qops:
        ncs = f"{nc:08x}"
        response = _md5(f"{ha1}:{nonce}:{ncs}:{cnonce}:auth:{ha2}")
        parts += [f'response="{response}"', "qop=auth", f"nc={ncs}", f'cnonce="{cnonce}"']
    elif qops:
        raise ValueError(f"unsupported qop {qops!r}")
    else:
        parts.append(f'response="{_md5(f"{ha1}:{nonce}:{ha2}")}"')
    parts.append(f"algorithm={algorithm}")
    if "opaque" in challenge:
        parts.append(f'opaque="{challenge["opaque"]}"')
    return "Digest " + ", ".join(parts)


def _new_branch() -> str:
    return "z9hG4bK" + secrets.token_hex(10)


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass
class Dialog:
    """The UAC side of a confirmed INVITE dialog: enough to send ACK and BYE through the route set."""

    call_id: str
    local_from: str
    remote_to: str
    remote_target: str
    route_set: list[str]
    cseq: int

    @classmethod
    def from_2xx(cls, invite: SipMessage, ok: SipMessage) -> Dialog:
        contact = ok.header_values("Contact")
        return cls(
            call_id=invite.header("Call-ID") or "",
            local_from=invite.header("From") or "",
            remote_to=ok.header("To") or "",
            remote_target=uri_of(contact[0]) if contact else invite.uri,
            route_set=list(reversed(ok.header_values("Record-Route"))),
            cseq=invite.cseq,
        )


class SipUdpClient:
    """One UDP socket speaking SIP to one server (proxy); usable as a UAC and as a minimal UAS.

    ``source`` is the local address to bind (default: all; the address the kernel routes towards the
    server is then put in Via and Contact); ``domain`` is the host part of the AORs it builds.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        source: str | None = None,
        local_port: int = 0,
        domain: str | None = None,
        user_agent: str = "hil-sipprobe",
    ) -> None:
        family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
        self.server = (host, port)
        self.domain = domain or (f"[{host}]" if ":" in host else host)
        self.user_agent = user_agent
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            self.sock.bind((source or ("::" if family == socket.AF_INET6 else "0.0.0.0"), local_port))
            if source:
                self.local_host = source
            else:
                with socket.socket(family, socket.SOCK_DGRAM) as probe:
                    probe.connect(self.server)
                    self.local_host = probe.getsockname()[0]
        except OSError:
            self.sock.close()
            raise
        self.local_port = self.sock.getsockname()[1]
        self._pending: list[tuple[SipMessage, tuple[str, int]]] = []
        self.inflight: SipMessage | None = None  # request of the running client transaction
        self._reg_state: dict[str, tuple[str, int]] = {}  # user -> (Call-ID, next CSeq), RFC 3261 10.2

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> SipUdpClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def local(self) -> str:
        return _hostport(self.local_host, self.local_port)

    def aor(self, user: str) -> str:
        return f"sip:{user}@{self.domain}"

    def contact_uri(self, user: str) -> str:
        return f"sip:{user}@{self.local}"

    # -- wire ---------------------------------------------------------------------------------------

    def send(self, msg: SipMessage | bytes, addr: tuple[str, int] | None = None) -> None:
        self.sock.sendto(msg if isinstance(msg, bytes) else msg.to_bytes(), addr or self.server)

    def recv(self, timeout: float) -> tuple[SipMessage, tuple[str, int]] | None:
        """Next SIP message (requests and responses alike), or None after ``timeout`` seconds."""
        if self._pending:
            return self._pending.pop(0)
        return self._recv_wire(timeout)

    def _recv_wire(self, timeout: float) -> tuple[SipMessage, tuple[str, int]] | None:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.sock.settimeout(left)
            try:
                data, addr = self.sock.recvfrom(65535)
            except TimeoutError:
                return None
            if not data.strip():
                continue  # CRLF keepalive
            try:
                return parse_message(data), addr[:2]
            except ValueError:
                continue

    # -- UAC ----------------------------------------------------------------------------------------

    def build_request(
        self,
        method: str,
        ruri: str,
        from_hdr: str,
        to_hdr: str,
        *,
        call_id: str | None = None,
        cseq: int = 1,
        contact: str | None = None,
        extra: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
        content_type: str | None = None,
    ) -> SipMessage:
        """A request with a fresh branch; From/To are full header values (give From its tag)."""
        headers = [
            ("Via", f"SIP/2.0/UDP {self.local};branch={_new_branch()};rport"),
            ("Max-Forwards", "70"),
            ("From", from_hdr),
            ("To", to_hdr),
            ("Call-ID", call_id or f"{secrets.token_hex(12)}@{self.local_host}"),
            ("CSeq", f"{cseq} {method}"),
        ]
        if contact:
            headers.append(("Contact", f"<{contact}>"))
        headers.append(("User-Agent", self.user_agent))
        headers += list(extra)
        if body and content_type:
            headers.append(("Content-Type", content_type))
        return SipMessage(f"{method} {ruri} SIP/2.0", headers, body)

    def transaction(self, req: SipMessage, timeout: float = 5.0) -> list[SipMessage]:
        """Send a request as a client transaction; return its responses, the final one last.

        Raises TimeoutError when no final response arrives in ``timeout`` seconds. Requests from other
        parties that arrive meanwhile are kept for :meth:`recv`.
        """
        self.inflight = req
        branch = header_param(req.header("Via") or "", "branch") or ""
        is_invite = req.method == "INVITE"
        responses: list[SipMessage] = []
        deadline = time.monotonic() + timeout
        interval, retransmit = T1, True
        self.send(req)
        next_send = time.monotonic() + interval
        while True:
            now = time.monotonic()
            if now >= deadline:
                raise TimeoutError(f"no final response to {req.method} {req.uri} in {timeout:.1f}s")
            got = self._recv_wire(min(deadline, next_send) - now if retransmit else deadline - now)
            if got is None:
                if retransmit and time.monotonic() >= next_send:
                    self.send(req)
                    interval = interval * 2 if is_invite else min(interval * 2, T2)
                    next_send = time.monotonic() + interval
                continue
            msg, addr = got
            if not msg.is_response:
                self._pending.append((msg, addr))
                continue
            if (header_param(msg.header("Via") or "", "branch") or "") != branch or msg.method != req.method:
                continue  # stray retransmission of an earlier transaction
            responses.append(msg)
            status = msg.status or 0
            if status < 200:
                if is_invite:
                    retransmit = False
                else:
                    interval = T2
                continue
            if is_invite and status >= 300:
                self.send(self._ack_non2xx(req, msg))
            return responses

    def _ack_non2xx(self, invite: SipMessage, final: SipMessage) -> SipMessage:
        """Hop-by-hop ACK for a non-2xx final answer: same branch, To with the answer's tag."""
        headers = [
            ("Via", invite.header("Via") or ""),
            ("Max-Forwards", "70"),
            ("From", invite.header("From") or ""),
            ("To", final.header("To") or ""),
            ("Call-ID", invite.header("Call-ID") or ""),
            ("CSeq", f"{invite.cseq} ACK"),
        ]
        headers += [("Route", r) for r in invite.header_values("Route")]
        return SipMessage(f"ACK {invite.uri} SIP/2.0", headers)

    def request(
        self,
        req: SipMessage,
        username: str | None = None,
        password: str | None = None,
        timeout: float = 5.0,
        prefer_realm: str | None = None,
    ) -> tuple[SipMessage, list[SipMessage]]:
        """Run ``req``; answer one 401/407 with digest credentials.

        Returns the request finally sent (the authenticated retry, if any) and its responses.
        """
        responses = self.transaction(req, timeout)
        final = responses[-1]
        if final.status not in (401, 407) or username is None or password is None:
            return req, responses
        hname = "WWW-Authenticate" if final.status == 401 else "Proxy-Authenticate"
        challenges = [parse_challenge(v) for v in final.header_values(hname)]
        if not challenges:
            return req, responses
        chosen = next((c for c in challenges if c.get("realm") == prefer_realm), challenges[0])
        auth = digest_authorization(chosen, req.method, req.uri, username, password)
        retry = SipMessage(req.start, [h for h in req.headers if _norm(h[0]) != "via"], req.body)
        retry.headers.insert(0, ("Via", f"SIP/2.0/UDP {self.local};branch={_new_branch()};rport"))
        retry.set_header("CSeq", f"{req.cseq + 1} {req.method}")
        retry.headers = [
            h for h in retry.headers if _norm(h[0]) not in ("authorization", "proxy-authorization")
        ]
        retry.headers.append(("Authorization" if final.status == 401 else "Proxy-Authorization", auth))
        return retry, self.transaction(retry, timeout)

    def register(
        self,
        user: str,
        password: str,
        expires: int = 60,
        timeout: float = 5.0,
        contact: str | None = None,
    ) -> SipMessage:
        """REGISTER ``user`` with this socket as its contact; returns the final response.

        Like a phone, one client keeps one Call-ID per user and increments CSeq across registrations.
        """
        aor = self.aor(user)
        call_id, cseq = self._reg_state.get(user, (f"{secrets.token_hex(12)}@{self.local_host}", 1))
        req = self.build_request(
            "REGISTER",
            f"sip:{self.domain}",
            f"<{aor}>;tag={secrets.token_hex(6)}",
            f"<{aor}>",
            call_id=call_id,
            cseq=cseq,
            contact=contact or self.contact_uri(user),
            extra=[("Expires", str(expires))],
        )
        sent, responses = self.request(req, user, password, timeout, prefer_realm=self.domain)
        self._reg_state[user] = (call_id, sent.cseq + 1)
        return responses[-1]

    def invite(
        self,
        user: str,
        password: str,
        target: str,
        sdp: bytes = b"",
        timeout: float = 35.0,
    ) -> tuple[SipMessage, list[SipMessage]]:
        """INVITE extension ``target`` as ``user`` (proxy-authenticated); returns the INVITE and answers.

        A non-2xx final answer is ACKed here; for a 2xx build a :class:`Dialog` and call :meth:`ack`.
        """
        req = self.build_request(
            "INVITE",
            f"sip:{target}@{self.domain}",
            f"<{self.aor(user)}>;tag={secrets.token_hex(6)}",
            f"<sip:{target}@{self.domain}>",
            contact=self.contact_uri(user),
            body=sdp,
            content_type="application/sdp" if sdp else None,
        )
        return self.request(req, user, password, timeout, prefer_realm=self.domain)

    def cancel(self, invite: SipMessage | None = None) -> SipMessage:
        """CANCEL a ringing INVITE (default: the request of the running transaction, e.g. from
        another thread while :meth:`invite` waits). Sent once and not awaited: the INVITE's own
        transaction then ends with 487, which it ACKs; the CANCEL's 200 is discarded there."""
        inv = invite or self.inflight
        if inv is None or inv.method != "INVITE":
            raise ValueError("no INVITE to cancel")
        headers = [
            ("Via", inv.header("Via") or ""),
            ("Max-Forwards", "70"),
            ("From", inv.header("From") or ""),
            ("To", inv.header("To") or ""),
            ("Call-ID", inv.header("Call-ID") or ""),
            ("CSeq", f"{inv.cseq} CANCEL"),
        ]
        headers += [("Route", r) for r in inv.header_values("Route")]
        req = SipMessage(f"CANCEL {inv.uri} SIP/2.0", headers)
        self.send(req)
        return req

    def ack(self, dialog: Dialog) -> SipMessage:
        """End-to-end ACK for a 2xx, sent through the route set; returns what was sent."""
        req = self._in_dialog(dialog, "ACK", dialog.cseq)
        self.send(req)
        return req

    def bye(self, dialog: Dialog, timeout: float = 5.0) -> list[SipMessage]:
        """BYE through the route set; returns its responses."""
        dialog.cseq += 1
        return self.transaction(self._in_dialog(dialog, "BYE", dialog.cseq), timeout)

    def _in_dialog(self, dialog: Dialog, method: str, cseq: int) -> SipMessage:
        return self.build_request(
            method,
            dialog.remote_target,
            dialog.local_from,
            dialog.remote_to,
            call_id=dialog.call_id,
            cseq=cseq,
            extra=[("Route", r) for r in dialog.route_set],
        )

    # -- UAS ----------------------------------------------------------------------------------------

    def reply(
        self,
        req: SipMessage,
        addr: tuple[str, int],
        code: int,
        reason: str,
        *,
        to_tag: str | None = None,
        contact: str | None = None,
        extra: Sequence[tuple[str, str]] = (),
        body: bytes = b"",
        content_type: str | None = None,
    ) -> SipMessage:
        """Answer a request received from ``addr`` (Via, From, To, Call-ID, CSeq copied; Record-Route
        copied into 1xx/2xx answers to dialog-creating requests so the caller learns the route set)."""
        headers = [(h, v) for h, v in req.headers if _norm(h) == "via"]
        to = req.header("To") or ""
        if to_tag and header_param(to, "tag") is None:
            to = f"{to};tag={to_tag}"
        headers += [
            ("From", req.header("From") or ""),
            ("To", to),
            ("Call-ID", req.header("Call-ID") or ""),
            ("CSeq", req.header("CSeq") or ""),
        ]
        if req.method in ("INVITE", "SUBSCRIBE") and 100 < code < 300:
            headers += [(h, v) for h, v in req.headers if _norm(h) == "record-route"]
        if contact:
            headers.append(("Contact", f"<{contact}>"))
        headers += list(extra)
        if body and content_type:
            headers.append(("Content-Type", content_type))
        resp = SipMessage(f"SIP/2.0 {code} {reason}", headers, body)
        self.send(resp, addr)
        return resp


def _source_host(source: str | tuple[str, int] | None) -> tuple[str | None, int]:
    if source is None:
        return None, 0
    if isinstance(source, tuple):
        return source[0], source[1]
    return source, 0


def options(
    host: str, port: int, timeout: float = 1.0, source: str | tuple[str, int] | None = None
) -> SipMessage | None:
    """Send OPTIONS to the server itself; its final response, or None if nothing answered in time.

    ``source`` is a local address (or ``(address, port)``) to send from. Socket errors such as ICMP
    port-unreachable also count as no answer, so this is safe to poll while the server starts.
    """
    src, src_port = _source_host(source)
    try:
        with SipUdpClient(host, port, source=src, local_port=src_port) as ua:
            uri = f"sip:{_hostport(host, port)}"
            req = ua.build_request(
                "OPTIONS", uri, f"<sip:probe@{ua.local_host}>;tag={secrets.token_hex(6)}", f"<{uri}>"
            )
            return ua.transaction(req, timeout)[-1]
    except (TimeoutError, OSError):
        return None


def options_ping(
    host: str, port: int, timeout: float = 1.0, source: str | tuple[str, int] | None = None
) -> int | None:
    """The status code :func:`options` gets (200 from a live PBX), or None if nothing answered."""
    resp = options(host, port, timeout, source)
    return resp.status if resp is not None else None


def register(
    host: str,
    port: int,
    ext: str,
    password: str,
    realm_hint: str | None = None,
    expires: int = 60,
    local_port: int = 0,
    timeout: float = 5.0,
) -> int:
    """REGISTER ``ext`` (digest auth) and return the final status code (200, 401, 403, ...).

    ``realm_hint`` is the SIP domain of the AOR (``sip:ext@realm_hint``; default: ``host``) and, when the
    server offers several challenges, the realm answered. The Contact is this socket's address and
    ``local_port``; the socket is closed on return. Raises TimeoutError if no final answer comes.
    """
    with SipUdpClient(host, port, local_port=local_port, domain=realm_hint) as ua:
        return ua.register(ext, password, expires=expires, timeout=timeout).status or 0


def main(argv: Sequence[str] | None = None) -> int:
    """Command line for namespaces and shells: exit 0 when the answer is 200."""
    parser = argparse.ArgumentParser(prog="sipprobe", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    opt = sub.add_parser("options", help="OPTIONS ping")
    opt.add_argument("host")
    opt.add_argument("port", type=int)
    opt.add_argument("--timeout", type=float, default=1.0)
    opt.add_argument("--source")
    reg = sub.add_parser("register", help="digest REGISTER")
    reg.add_argument("host")
    reg.add_argument("port", type=int)
    reg.add_argument("ext")
    reg.add_argument("password", nargs="?", default=os.environ.get("SIP_PASSWORD", ""))
    reg.add_argument("--realm")
    reg.add_argument("--expires", type=int, default=60)
    reg.add_argument("--timeout", type=float, default=5.0)
    args = parser.parse_args(argv)
    if args.cmd == "options":
        status = options_ping(args.host, args.port, args.timeout, args.source)
    else:
        try:
            status = register(
                args.host, args.port, args.ext, args.password, args.realm, args.expires, timeout=args.timeout
            )
        except TimeoutError:
            status = None
    print(status if status is not None else "timeout")
    return 0 if status == 200 else 1


if __name__ == "__main__":
    sys.exit(main())
