"""A blocking SIP-over-UDP client: digest-authenticated REGISTER / INVITE / BYE, and a minimal UAS.

Why it exists: the harness judges the PBX from outside, through its wire protocol, so it needs a SIP client
whose every byte it controls (no third-party stack hiding retransmissions, auth retries or tags). It uses
only the standard library and one socket, so it also runs inside a bare lab namespace or a thread.

What it does, per RFC 3261 / RFC 2617:
- requests carry a fresh ``z9hG4bK`` branch, ``rport``, a random Call-ID and From tag;
- non-INVITE requests are retransmitted on Timer E (T1 doubling up to T2), INVITE on Timer A until a
  provisional answer arrives; a non-2xx final answer to an INVITE is ACKed hop by hop;
- a 401/407 answer is retried once with digest credentials (:mod:`sipcore.digest`), same Call-ID and From
  tag, CSeq incremented, new branch;
- a 2xx to an INVITE yields a :class:`Dialog` (route set from Record-Route, remote target from Contact)
  for the end-to-end ACK and the BYE; a ringing INVITE can be CANCELled.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sipcore.digest import authorization, parse_challenge
from sipcore.message import SipMessage, build_response, header_key, header_name, new_branch, parse, token
from sipcore.timers import T1, T2, next_interval
from sipcore.uri import format_host, hostport, uri_of

USER_AGENT = "hil-sipprobe"


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
            call_id=invite.call_id,
            local_from=invite.header("From") or "",
            remote_to=ok.header("To") or "",
            remote_target=uri_of(contact[0]) if contact else invite.uri,
            route_set=list(reversed(ok.header_values("Record-Route"))),
            cseq=invite.cseq,
        )


class SipUdpClient:
    """One UDP socket speaking SIP to one server (proxy); usable as a UAC and as a minimal UAS.

    ``source`` is the local address to bind (default: all; the address the kernel routes towards the
    server is then put in Via and Contact); ``domain`` is the host part of the AORs it builds. The socket
    is not connected: an ICMP error is never seen, so a request nobody answers takes its whole timeout.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        source: str | None = None,
        local_port: int = 0,
        domain: str | None = None,
        user_agent: str = USER_AGENT,
    ) -> None:
        family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
        self.server = (host, port)
        self.domain = domain or format_host(host)
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
        self.local_port: int = self.sock.getsockname()[1]
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
        return hostport(self.local_host, self.local_port)

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
            msg = parse(data)  # None for a CRLF keep-alive or garbage
            if msg is not None:
                return msg, addr[:2]

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
            ("Via", f"SIP/2.0/UDP {self.local};branch={new_branch()};rport"),
            ("Max-Forwards", "70"),
            ("From", from_hdr),
            ("To", to_hdr),
            ("Call-ID", call_id or f"{token(96)}@{self.local_host}"),
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
        branch = req.branch
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
                    interval = next_interval(interval, is_invite)
                    next_send = time.monotonic() + interval
                continue
            msg, addr = got
            if msg.is_request:
                self._pending.append((msg, addr))
                continue
            if msg.branch != branch or msg.method != req.method:
                continue  # stray retransmission of an earlier transaction
            responses.append(msg)
            if msg.status < 200:
                if is_invite:
                    retransmit = False
                else:
                    interval = T2
                continue
            if is_invite and msg.status >= 300:
                self.send(self._hop_request("ACK", req, to=msg.header("To") or ""))
            return responses

    def _hop_request(self, method: str, invite: SipMessage, to: str | None = None) -> SipMessage:
        """ACK of a non-2xx final answer (``to`` with the answer's tag) or CANCEL: the INVITE's branch."""
        headers = [
            ("Via", invite.header("Via") or ""),
            ("Max-Forwards", "70"),
            ("From", invite.header("From") or ""),
            ("To", invite.header("To") or "" if to is None else to),
            ("Call-ID", invite.call_id),
            ("CSeq", f"{invite.cseq} {method}"),
        ]
        headers += [("Route", r) for r in invite.header_values("Route")]
        return SipMessage(f"{method} {invite.uri} SIP/2.0", headers)

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
        challenges = [c for v in final.header_values(hname) if (c := parse_challenge(v)) is not None]
        if not challenges:
            return req, responses
        chosen = next((c for c in challenges if c.realm == prefer_realm), challenges[0])
        auth = authorization(chosen, req.method, req.uri, username, password)
        retry = SipMessage(req.start, {k: list(v) for k, v in req.headers.items()}, req.body)
        retry.set_header("Via", f"SIP/2.0/UDP {self.local};branch={new_branch()};rport")
        retry.set_header("CSeq", f"{req.cseq + 1} {req.method}")
        retry.remove_header("Authorization")
        retry.remove_header("Proxy-Authorization")
        retry.add_header("Authorization" if final.status == 401 else "Proxy-Authorization", auth)
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
        call_id, cseq = self._reg_state.get(user, (f"{token(96)}@{self.local_host}", 1))
        req = self.build_request(
            "REGISTER",
            f"sip:{self.domain}",
            f"<{aor}>;tag={token(48)}",
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
            f"<{self.aor(user)}>;tag={token(48)}",
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
        req = self._hop_request("CANCEL", inv)
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
    ) -> bytes:
        """Answer a request received from ``addr``; returns what was sent. Record-Route is copied into
        1xx/2xx answers to dialog-creating requests, so the caller learns the route set."""
        lines = [f"Contact: <{contact}>"] if contact else []
        lines += [f"{header_name(header_key(h))}: {v}" for h, v in extra]
        data = build_response(
            req,
            code,
            reason,
            to_tag=to_tag,
            extra="".join(f"{line}\r\n" for line in lines),
            body=body,
            content_type=content_type,
            record_route=req.method in ("INVITE", "SUBSCRIBE") and 100 < code < 300,
        )
        self.send(data, addr)
        return data


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
        return ua.register(ext, password, expires=expires, timeout=timeout).status
