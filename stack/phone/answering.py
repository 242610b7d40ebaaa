"""The answering side of a phone: incoming INVITE (100, 180, then 200 with SDP or 486), ACK, BYE, CANCEL,
OPTIONS and REFER (click-to-dial: stack/phone/refer.py), and the 2xx retransmission until the ACK (RFC 3261
section 13.3.1.4).

Answers to a retransmitted INVITE repeat the last response (the To tag is derived from the Call-ID, so a
stateless answer is stable); an INVITE already refused gets its 487/603 again.
"""

from __future__ import annotations

from sipcore.message import SipMessage, build_response
from sipcore.timers import next_interval
from sipcore.uri import tag_of, uri_of, user_of
from stack.phone.account import ALLOW
from stack.phone.calls import Call
from stack.phone.refer import ReferAccount


class AnsweringAccount(ReferAccount):
    """The answering half of :class:`~stack.phone.ua.Phone`."""

    __slots__ = ()

    def _on_request(self, msg: SipMessage, addr: tuple[str, int]) -> None:
        m = msg.method
        if m == "INVITE":
            self._on_invite(msg, addr)
        elif m == "ACK":
            self._on_ack(msg)
        elif m == "BYE":
            self._on_bye(msg, addr)
        elif m == "CANCEL":
            self._on_cancel(msg, addr)
        elif m == "REFER":
            self._on_refer(msg, addr)
        elif m == "OPTIONS":
            extra = f"Allow: {ALLOW}\r\nAccept: application/sdp\r\n{self._contact_hdr()}"
            self._send(
                build_response(
                    msg, 200, "OK", to_tag=self._tag_for(msg.call_id), extra=extra, server=self._ua()
                ),
                addr,
            )
        else:
            self._send(
                build_response(
                    msg,
                    405,
                    "Method Not Allowed",
                    to_tag=self._tag_for(msg.call_id),
                    extra=f"Allow: {ALLOW}\r\n",
                ),
                addr,
            )

    def _on_invite(self, msg: SipMessage, addr: tuple[str, int]) -> None:
        call = self._call
        to_tag = tag_of(msg.header("to"))
        if to_tag:  # re-INVITE (session refresh, hold): accept with the same SDP
            if call is not None and call.call_id == msg.call_id and call.local_tag == to_tag:
                self._send(self._ok_with_sdp(msg, call), addr)
            else:
                self._send(build_response(msg, 481, "Call/Transaction Does Not Exist"), addr)
            return
        if call is not None and call.call_id == msg.call_id:
            if call.last_resp is not None:  # retransmitted INVITE: repeat the last response
                self._send(call.last_resp, addr)
            return
        last = self._last_final
        if last is not None and last[0] == msg.call_id:  # retransmission of an INVITE already refused
            self._send(last[1], addr)
            return
        if call is not None or self.busy:
            self._send(
                build_response(msg, 486, "Busy Here", to_tag=self._tag_for(msg.call_id), server=self._ua()),
                addr,
            )
            return
        frm = msg.header("from", "") or ""
        call = Call(msg.call_id, False, user_of(uri_of(frm)) or "", self._tag_for(msg.call_id))
        call.invite = msg
        call.invite_addr = addr
        call.remote_hdr = frm
        call.local_hdr = f"{msg.header('to', '')};tag={call.local_tag}"
        contact = msg.header("contact")
        call.remote_target = uri_of(contact) if contact else uri_of(frm)
        call.routes = list(msg.header_values("record-route"))
        self._call = call
        self.endpoint.bind_dialog(call.call_id, self)  # type: ignore[arg-type]
        self._send(build_response(msg, 100, "Trying"), addr)
        ringing = build_response(
            msg,
            180,
            "Ringing",
            to_tag=call.local_tag,
            extra=self._contact_hdr(),
            record_route=True,
            server=self._ua(),
        )
        call.last_resp = ringing
        call.alerting = True
        self._send(ringing, addr)
        self._emit("incoming_call", call_id=call.call_id, peer=call.peer)
        if self.auto_answer is not None:
            call.h_answer = self.endpoint.loop.call_later(self.auto_answer, self._answer_now, call)

    def _ok_with_sdp(self, msg: SipMessage, call: Call) -> bytes:
        sdp = self._sdp(call.local_cseq)
        return build_response(
            msg,
            200,
            "OK",
            to_tag=call.local_tag,
            extra=f"{self._contact_hdr()}Allow: {ALLOW}\r\n",
            body=sdp,
            record_route=True,
            server=self._ua(),
        )

    def answer(self) -> bool:
        """Answer the ringing incoming call now (when ``auto_answer`` is None); False if none."""
        call = self._call
        if call is None or call.outgoing or call.answered:
            return False
        self._answer_now(call)
        return True

    def _answer_now(self, call: Call) -> None:
        call.h_answer = None
        if self._call is not call or call.answered or call.invite is None or call.invite_addr is None:
            return
        ok = self._ok_with_sdp(call.invite, call)
        call.last_resp = ok
        call.answered = True
        self._send(ok, call.invite_addr)
        # RFC 3261 13.3.1.4: retransmit the 2xx (T1 doubling to T2) until the ACK, give up at 64*T1.
        t = self.endpoint.timers
        call.retx_interval = t.t1
        loop = self.endpoint.loop
        call.h_retx = loop.call_later(t.jittered(t.t1), self._retx_ok, call)
        call.h_dead = loop.call_later(t.timer_f, self._no_ack, call)

    def _retx_ok(self, call: Call) -> None:
        if self._call is not call or call.confirmed or call.last_resp is None or call.invite_addr is None:
            return
        self._send(call.last_resp, call.invite_addr)
        self.endpoint.stats["retransmits"] += 1
        t = self.endpoint.timers
        call.retx_interval = next_interval(call.retx_interval, False, t.t2)
        call.h_retx = self.endpoint.loop.call_later(t.jittered(call.retx_interval), self._retx_ok, call)

    def _no_ack(self, call: Call) -> None:
        call.h_dead = None
        if self._call is call and not call.confirmed:
            self.endpoint.spawn(self._send_bye(call))
            self._end_call("no_ack")

    def _on_ack(self, msg: SipMessage) -> None:
        call = self._call
        if call is None or call.call_id != msg.call_id or not call.answered or call.confirmed:
            return
        if call.outgoing:
            return
        call.confirmed = True
        call.cancel_timers()
        self._emit("call_answered", call_id=call.call_id, peer=call.peer, direction="incoming")

    def _on_bye(self, msg: SipMessage, addr: tuple[str, int]) -> None:
        call = self._call
        if call is None or call.call_id != msg.call_id:
            self._send(build_response(msg, 481, "Call/Transaction Does Not Exist"), addr)
            return
        self._send(build_response(msg, 200, "OK", server=self._ua()), addr)
        self._end_call("remote_bye")

    def _on_cancel(self, msg: SipMessage, addr: tuple[str, int]) -> None:
        call = self._call
        if (
            call is None
            or call.outgoing
            or call.call_id != msg.call_id
            or call.invite is None
            or msg.branch != call.invite.branch
        ):
            self._send(build_response(msg, 481, "Call/Transaction Does Not Exist"), addr)
            return
        self._send(build_response(msg, 200, "OK", to_tag=call.local_tag), addr)
        if not call.answered and call.invite_addr is not None:
            final = build_response(call.invite, 487, "Request Terminated", to_tag=call.local_tag)
            self._last_final = (call.call_id, final)
            self._send(final, call.invite_addr)
            self._end_call("cancelled")
