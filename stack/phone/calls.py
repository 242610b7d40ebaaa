"""Calls of a phone: the call record, placing a call (INVITE with digest, CANCEL) and ending one (BYE).

A phone has at most one call; a :class:`Call` exists only while it does. In-dialog requests follow the
Record-Route set (loose routing) to the remote target; a retransmitted 2xx to our INVITE is ACKed again.
No media: the SDP names an RTP port but no RTP is sent or received. The answering side (incoming INVITE,
BYE, CANCEL, OPTIONS) is :mod:`stack.phone.answering`.
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

from sipcore.message import SipMessage, build_response, new_branch, token
from sipcore.uri import format_host, hostport_of, uri_of
from stack.phone.account import ALLOW, Account


class Call:
    """The one call a phone can have (allocated only while there is a call)."""

    __slots__ = (
        "call_id",
        "outgoing",
        "peer",
        "local_tag",
        "local_hdr",
        "remote_hdr",
        "remote_target",
        "routes",
        "local_cseq",
        "invite",
        "invite_addr",
        "last_resp",
        "answered",
        "confirmed",
        "alerting",
        "started",
        "h_answer",
        "h_retx",
        "h_dead",
        "retx_interval",
        "ack",
        "invite_uri",
        "invite_via",
        "invite_cseq",
        "invite_branch",
        "invite_fut",
    )

    def __init__(self, call_id: str, outgoing: bool, peer: str, local_tag: str) -> None:
        self.call_id = call_id
        self.outgoing = outgoing
        self.peer = peer
        self.local_tag = local_tag
        self.local_hdr = ""
        self.remote_hdr = ""
        self.remote_target = ""
        self.routes: list[str] = []
        self.local_cseq = random.randint(1, 10_000)
        self.invite: SipMessage | None = None
        self.invite_addr: tuple[str, int] | None = None
        self.last_resp: bytes | None = None
        self.answered = False
        self.confirmed = False
        self.alerting = False
        self.started = time.monotonic()
        self.h_answer: asyncio.TimerHandle | None = None
        self.h_retx: asyncio.TimerHandle | None = None
        self.h_dead: asyncio.TimerHandle | None = None
        self.retx_interval = 0.0
        self.ack: bytes | None = None
        self.invite_uri = ""
        self.invite_via = ""
        self.invite_cseq = 0
        self.invite_branch = ""
        self.invite_fut: asyncio.Future[SipMessage | None] | None = None

    def cancel_timers(self) -> None:
        for h in (self.h_answer, self.h_retx, self.h_dead):
            if h is not None:
                h.cancel()
        self.h_answer = self.h_retx = self.h_dead = None


class CallingAccount(Account):
    """The calling half of :class:`~stack.phone.ua.Phone`: dial, hang up, end a call."""

    __slots__ = ()

    def _on_stray_response(self, msg: SipMessage) -> None:
        # A retransmitted 2xx to our INVITE (its transaction is gone): repeat the ACK.
        call = self._call
        if (
            call is not None
            and call.outgoing
            and call.ack is not None
            and 200 <= msg.status < 300
            and msg.call_id == call.call_id
            and msg.method == "INVITE"
        ):
            self._send(call.ack, self._next_hop(call))

    def _end_call(self, reason: str, **detail: Any) -> None:
        call = self._call
        if call is None:
            return
        call.cancel_timers()
        self._call = None
        self.endpoint.unbind_dialog(call.call_id, self)  # type: ignore[arg-type]
        self._emit(
            "call_ended",
            call_id=call.call_id,
            peer=call.peer,
            reason=reason,
            direction="outgoing" if call.outgoing else "incoming",
            duration=time.monotonic() - call.started,
            **detail,
        )

    # ------------------------------------------------------------ outgoing calls and hang-up

    def _next_hop(self, call: Call) -> tuple[str, int]:
        if call.routes:
            return hostport_of(uri_of(call.routes[0]))
        return hostport_of(call.remote_target)

    def _in_dialog(self, call: Call, method: str, cseq: int, branch: str) -> bytes:
        ep = self.endpoint
        lhost = format_host(ep.contact_host(self.registrar[0]))
        routes = "".join(f"Route: {r}\r\n" for r in call.routes)
        return (
            f"{method} {call.remote_target} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {lhost}:{ep.local[1]};rport;branch={branch}\r\n"
            f"Max-Forwards: 70\r\n{routes}"
            f"From: {call.local_hdr}\r\nTo: {call.remote_hdr}\r\n"
            f"Call-ID: {call.call_id}\r\nCSeq: {cseq} {method}\r\n"
            f"User-Agent: {ep.user_agent}\r\nContent-Length: 0\r\n\r\n"
        ).encode()

    async def _send_bye(self, call: Call) -> bool:
        call.local_cseq += 1
        branch = new_branch()
        data = self._in_dialog(call, "BYE", call.local_cseq, branch)
        resp = await self.endpoint.request(data, self._next_hop(call), branch)
        return resp is not None and 200 <= resp.status < 300

    async def call(self, target: str, *, ring_timeout: float = 30.0) -> bool:
        """Call extension ``target`` through the registrar; True once answered (ACK sent).

        Answers 401/407 challenges with the phone's credentials. False on rejection, timeout or if
        :meth:`hangup` cancelled it; a call is already up -> False without sending anything.
        """
        if self._call is not None:
            return False
        ep = self.endpoint
        host, port = self.registrar
        hp = format_host(host)
        lhost = format_host(ep.contact_host(host))
        lport = ep.local[1]
        dom = format_host(self.domain) if self.domain else hp
        call = Call(f"{token(80)}@{lhost}", True, target, token(32))
        call.local_hdr = f"<sip:{self.extension}@{dom}>;tag={call.local_tag}"
        call.remote_hdr = f"<sip:{target}@{dom}>"
        call.invite_uri = f"sip:{target}@{hp}:{port}"
        self._call = call
        ep.bind_dialog(call.call_id, self)  # type: ignore[arg-type]
        sdp = self._sdp(call.local_cseq)
        self._emit("outgoing_call", call_id=call.call_id, peer=target)
        auth = ""
        fresh = False

        def on_provisional(resp: SipMessage) -> None:
            if resp.status in (180, 183):
                call.alerting = True

        for _ in range(4):
            call.local_cseq += 1
            branch = new_branch()
            via = f"SIP/2.0/UDP {lhost}:{lport};rport;branch={branch}"
            call.invite_branch, call.invite_via, call.invite_cseq = branch, via, call.local_cseq
            data = (
                f"INVITE {call.invite_uri} SIP/2.0\r\nVia: {via}\r\nMax-Forwards: 70\r\n"
                f"From: {call.local_hdr}\r\nTo: {call.remote_hdr}\r\n"
                f"Call-ID: {call.call_id}\r\nCSeq: {call.local_cseq} INVITE\r\n"
                f"Contact: <sip:{self.contact_user}@{lhost}:{lport}>\r\n{auth}"
                f"Allow: {ALLOW}\r\nUser-Agent: {ep.user_agent}\r\n"
                f"Content-Type: application/sdp\r\nContent-Length: {len(sdp)}\r\n\r\n"
            ).encode() + sdp

            def make_ack(resp: SipMessage, _via: str = via, _cseq: int = call.local_cseq) -> bytes:
                return (
                    f"ACK {call.invite_uri} SIP/2.0\r\nVia: {_via}\r\nMax-Forwards: 70\r\n"
                    f"From: {call.local_hdr}\r\nTo: {resp.header('to', '')}\r\n"
                    f"Call-ID: {call.call_id}\r\nCSeq: {_cseq} ACK\r\nContent-Length: 0\r\n\r\n"
                ).encode()

            fut = ep.request(
                data,
                self.registrar,
                branch,
                invite=True,
                on_provisional=on_provisional,
                make_ack=make_ack,
                ring_timeout=ring_timeout,
            )
            call.invite_fut = fut
            try:
                resp = await fut
            except asyncio.CancelledError:
                resp = None
            if self._call is not call:
                return False
            if resp is None:
                if call.alerting:
                    self.endpoint.spawn(self._send_cancel(call))
                self._end_call("timeout")
                return False
            st = resp.status
            if st in (401, 407) and not (fresh and not self._is_stale(resp)):
                got = self._take_challenge(resp, self.registrar)
                if got is None:
                    self._end_call("rejected", code=st)
                    return False
                fresh = True
                hname, chal = got
                auth = f"{hname}: {self._auth_header(chal, 'INVITE', call.invite_uri)}\r\n"
                continue
            if 200 <= st < 300:
                call.remote_hdr = resp.header("to", "") or call.remote_hdr
                contact = resp.header("contact")
                call.remote_target = uri_of(contact) if contact else call.invite_uri
                call.routes = list(reversed(resp.header_values("record-route")))
                call.ack = self._in_dialog(call, "ACK", call.invite_cseq, new_branch())
                call.answered = call.confirmed = True
                call.invite_fut = None
                self._send(call.ack, self._next_hop(call))
                self._emit("call_answered", call_id=call.call_id, peer=target, direction="outgoing")
                return True
            self._end_call("rejected" if st != 487 else "cancelled", code=st)
            return False
        self._end_call("rejected", code=401)
        return False

    async def _send_cancel(self, call: Call) -> None:
        data = (
            f"CANCEL {call.invite_uri} SIP/2.0\r\nVia: {call.invite_via}\r\nMax-Forwards: 70\r\n"
            f"From: {call.local_hdr}\r\nTo: {call.remote_hdr}\r\nCall-ID: {call.call_id}\r\n"
            f"CSeq: {call.invite_cseq} CANCEL\r\nContent-Length: 0\r\n\r\n"
        ).encode()
        await self.endpoint.request(data, self.registrar, call.invite_branch, cancel=True)

    async def hangup(self) -> bool:
        """End the call: reject if ringing in, CANCEL if dialling out, BYE if up. False if no call."""
        call = self._call
        if call is None:
            return False
        if not call.outgoing and not call.answered:
            if call.invite is not None and call.invite_addr is not None:
                final = build_response(call.invite, 603, "Decline", to_tag=call.local_tag)
                self._last_final = (call.call_id, final)
                self._send(final, call.invite_addr)
            self._end_call("rejected")
            return True
        if call.outgoing and not call.confirmed:
            await self._send_cancel(call)
            # The INVITE transaction now ends with 487 (ACKed by the transaction) and call() returns.
            if self._call is call:
                self._end_call("cancelled")
            return True
        self._end_call("local_bye")
        return await self._send_bye(call)
