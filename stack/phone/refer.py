"""Click-to-dial on the phone: a REFER from its registrar makes it call the number (RFC 3515, RFC 4488).

Why REFER: it is what a SIP PBX and a real desk phone share for "make this phone call that number"
(CSTA MakeCall / TAPI lineMakeCall behind a CTI). Third-party call control (RFC 3725: the PBX INVITEs the
phone, which auto-answers, then bridges) needs a B2BUA the lab's Kamailio is not, and a vendor HTTP API
(Yealink's Action URI ``dial``) bypasses the PBX, which then cannot vouch for the request. With REFER the
PBX sends the request on the phone's own registration and the phone places an ordinary INVITE through
its registrar, digest and all, so the capture at the PBX shows the agent's call as any other.

Rules, as real phones apply them:
- A REFER is taken only from the registrar the phone is registered with (its source address), outside
  any dialog (an in-dialog REFER would be a transfer, which this phone does not do: 405).
- Only ``Refer-Sub: false`` (RFC 4488) is accepted: the phone sends no NOTIFY; the PBX follows the call
  itself (its dialog state). A REFER that asks for the implicit subscription gets 421 with
  ``Require: norefersub``.
- A phone with a call already gets 486; a Refer-To without a user part gets 400.
- A retransmitted REFER (same Call-ID) gets the same answer again and dials nothing more.
"""

from __future__ import annotations

from sipcore.message import SipMessage, build_response
from sipcore.uri import tag_of, uri_of, user_of
from stack.phone.calls import CallingAccount

RING_TIMEOUT = 30.0  # as the PBX's fr_inv_timer: the PBX gives up first and says so (408/487)


class ReferAccount(CallingAccount):
    """The click-to-dial half of :class:`~stack.phone.ua.Phone` (see the module docstring)."""

    __slots__ = ()

    def _on_refer(self, msg: SipMessage, addr: tuple[str, int]) -> None:
        last = self._last_final
        if last is not None and last[0] == msg.call_id:
            self._send(last[1], addr)  # a retransmission: same answer, no second call
            return
        if tag_of(msg.header("to")):
            self._refuse_refer(msg, addr, 405, "Method Not Allowed")
            return
        if addr[0] != self.registrar[0] or not self.registered:
            self._refuse_refer(msg, addr, 403, "Forbidden")
            return
        if (msg.header("refer-sub", "") or "").strip().lower() != "false":
            self._refuse_refer(msg, addr, 421, "Extension Required", "Require: norefersub\r\n")
            return
        refer_to = msg.header("refer-to")
        number = user_of(uri_of(refer_to)) if refer_to else None
        if not number:
            self._refuse_refer(msg, addr, 400, "Bad Refer-To")
            return
        if self._call is not None:
            self._refuse_refer(msg, addr, 486, "Busy Here")
            return
        ok = build_response(
            msg,
            202,
            "Accepted",
            to_tag=self._tag_for(msg.call_id),
            extra="Refer-Sub: false\r\n",
            server=self._ua(),
        )
        self._last_final = (msg.call_id, ok)
        self._send(ok, addr)
        self._emit("refer", number=number, refer_call_id=msg.call_id)
        self.endpoint.spawn(self.call(number, ring_timeout=RING_TIMEOUT))

    def _refuse_refer(
        self, msg: SipMessage, addr: tuple[str, int], code: int, reason: str, extra: str = ""
    ) -> None:
        resp = build_response(
            msg, code, reason, to_tag=self._tag_for(msg.call_id), extra=extra, server=self._ua()
        )
        self._last_final = (msg.call_id, resp)
        self._send(resp, addr)
        self._emit("refer_refused", code=code, refer_call_id=msg.call_id)
