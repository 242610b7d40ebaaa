"""Asyncio SIP user agent: thousands of emulated IP phones sharing one UDP socket.

Why not pyVoIP: it is UDP-only like this one, but thread-based (a thread per phone) and bound to one
registrar for life; the swarm needs 10,000 phones on one event loop that can move to the other site's
PBX. So this is a small RFC 3261 UA of its own, on :mod:`sipcore`'s message model and digest:

- :class:`~stack.phone.endpoint.SipEndpoint` owns the socket and routes datagrams to transactions and
  phones; :mod:`stack.phone.transaction` retransmits with RFC 3261 timers (T1 doubling to T2 for
  non-INVITE, doubling for INVITE, give up after timer F/B = 64*T1), each interval jittered.
- :class:`Phone` is one account: :mod:`stack.phone.registration` registers with digest (401 and 407,
  qop=auth with nc/cnonce, nonce re-used on refresh), refreshes at 50-80 % of the granted expiry and
  re-registers with backoff after timeouts and 5xx; :mod:`stack.phone.answering` answers INVITE (100,
  180, then 200 with a minimal SDP after ``auto_answer`` seconds, or 486 when busy), BYE, CANCEL and
  OPTIONS; :mod:`stack.phone.calls` places a call and hangs up; :mod:`stack.phone.refer` places one when
  its registrar REFERs it (click-to-dial).
- Idle phones own no task: a phone's refresh/retry timer is one ``loop.call_later`` handle, transaction
  timers share a 10 ms timer wheel, and a task exists only while a REGISTER or call is in flight.

No media: the SDP names an RTP port but no RTP is sent or received.
"""

from __future__ import annotations

import asyncio

from stack.phone.account import EventCallback, PhoneEvent
from stack.phone.answering import AnsweringAccount
from stack.phone.endpoint import SipEndpoint
from stack.phone.registration import RegisteringAccount
from stack.phone.transaction import SipTimers

__all__ = ["EventCallback", "Phone", "PhoneEvent", "SipEndpoint", "SipTimers"]


class Phone(RegisteringAccount, AnsweringAccount):
    """One emulated IP phone (one SIP account) on a shared :class:`SipEndpoint`.

    ``Phone(endpoint, extension, password, (host, port), expires=300, *, on_event=None,
    auto_answer=0.0, busy=False, contact_user=None, domain=None)``. ``auto_answer``: seconds from
    ringing to answering an incoming call, None to wait for :meth:`answer`. ``busy``: reject every
    incoming call with 486. ``contact_user`` (default the extension) must be unique on the endpoint:
    the PBX sends INVITEs to it.
    """

    __slots__ = ()

    async def restart(self, pause: float = 1.0) -> bool:
        """What a reboot does to the account: drop any call (silently, as a rebooting phone does),
        unregister, pause, register again."""
        if self._call is not None:
            self._end_call("restart")
        await self.unregister()
        await asyncio.sleep(pause)
        return await self.register()

    def close(self) -> None:
        """Stop timers and leave the endpoint (no SIP sent; use :meth:`unregister` first to be polite)."""
        self._active = False
        self._gen += 1
        self._cancel_timer()
        if self._call is not None:
            self._end_call("closed")
        self.endpoint.detach(self)
