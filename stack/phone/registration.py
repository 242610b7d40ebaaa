"""Registration of a phone's account: REGISTER with digest, refresh, retry with backoff, and moves.

Why it is careful about moves: after a failover thousands of phones move to the other site's PBX at once.
A REGISTER still in flight to the old PBX is ended (so that PBX, back within timer F, never binds the phone
again), the old binding is removed in the background with a short give-up, and the new one is awaited.
Refreshes run at 50-80 % of the granted expiry; timeouts and 5xx back off exponentially, 4xx waits the
"registration retry timer". An idle phone owns no task: its refresh/retry timer is one ``call_later``.
"""

from __future__ import annotations

import asyncio
import random
import time

from sipcore.message import SipMessage, new_branch, token
from sipcore.uri import format_host, param
from stack.phone.account import ALLOW, Account

_uniform = random.uniform


class RegisteringAccount(Account):
    """The registration half of :class:`~stack.phone.ua.Phone`."""

    __slots__ = ()

    async def register(self) -> bool:
        """Register at the current registrar; True on 2xx. Keeps refreshing (and retrying) afterwards."""
        self._active = True
        self._gen += 1
        self._cancel_timer()
        return await self._register_cycle(self._gen)

    async def unregister(self) -> None:
        """Remove the binding (Expires: 0, best effort) and stop refreshing and retrying."""
        self._active = False
        self._gen += 1
        self._cancel_timer()
        self._drop_inflight(("", 0))  # a REGISTER still in flight must not bind after this
        was = self._registered
        bound = self._bound
        self._registered = False
        self._bound = None
        code = None
        if bound is not None or self._pending:
            target = bound or self.registrar
            code, _reason, _granted = await self._do_register(target, 0, self._reg_call_id)
        if was or bound is not None:
            self._emit("unregistered", registrar=bound or self.registrar, code=code, reason="unregister")

    async def move_to(self, registrar: tuple[str, int]) -> bool:
        """Register at another PBX: the old binding is removed in the background, the new one awaited."""
        new = (registrar[0], int(registrar[1]))
        self._gen += 1
        gen = self._gen
        self._cancel_timer()
        old, old_bound, old_call_id = self.registrar, self._bound, self._reg_call_id
        was = self._registered
        self.registrar = new
        self._registered = False
        self._bound = None
        self._fails = 0
        stale = self._drop_inflight(new)
        if old_bound is not None and old_bound == new:
            self._bound = old_bound  # same server: a plain re-register refreshes the binding
        else:
            self._reg_call_id = f"{token(80)}@{self.extension}"
            if old_bound is not None:
                # Best effort and short: after an unplanned failure the old PBX is usually gone, and
                # retransmitting thousands of un-REGISTERs to it for timer F would only add load.
                give_up = min(self.endpoint.timers.timer_f, 8 * self.endpoint.timers.t1)
                self.endpoint.spawn(self._do_register(old_bound, 0, old_call_id, give_up))
            for where in stale - {old_bound}:
                # A REGISTER was in flight there and may have arrived: take it back the same way.
                give_up = min(self.endpoint.timers.timer_f, 8 * self.endpoint.timers.t1)
                self.endpoint.spawn(self._do_register(where, 0, old_call_id, give_up))
        if was and old != new:
            self._emit("unregistered", registrar=old, code=None, reason="moved")
        self._active = True
        return await self._register_cycle(gen)

    def _registrar_lost(self) -> None:
        """The endpoint's keep-alive got no answer from this phone's registrar (stack/phone/keepalive.py):
        the phone no longer calls itself registered (its agent sees the phone leg broken) and registers
        again within a quarter of a second, keeping its binding in mind so a move still removes it."""
        if not self._registered:
            return
        self._registered = False
        self._fails += 1
        self.counts[2] += 1
        self._last_error = "keepalive timeout"
        self._emit(
            "registration_failed",
            registrar=self._bound,
            code=0,
            reason="keepalive timeout",
            was_registered=True,
        )
        if self._active and not self._pending:
            # Soon, not at once: thousands of phones lose one registrar together, and a blip that is over
            # should cost its PBX a spread of REGISTERs, not one burst (the agent re-checks 0.6 s later).
            self._cancel_timer()
            self._timer = self.endpoint.loop.call_later(_uniform(0.0, 0.25), self._timer_fired, self._gen)

    def _drop_inflight(self, keep: tuple[str, int]) -> set[tuple[str, int]]:
        """End every REGISTER in flight to a registrar other than ``keep`` (no more retransmissions; its
        awaiting side sees a timeout); returns those registrars."""
        gone = set()
        for fut, where in list(self._inflight.items()):
            if where != keep:
                gone.add(where)
                del self._inflight[fut]
                if not fut.done():
                    fut.set_result(None)
        return gone

    def _timer_fired(self, gen: int) -> None:
        self._timer = None
        if gen == self._gen and self._active:
            self.endpoint.spawn(self._register_cycle(gen))

    async def _register_cycle(self, gen: int) -> bool:
        registrar = self.registrar
        try:
            code, reason, granted = await self._do_register(registrar, self.expires, self._reg_call_id)
        except asyncio.CancelledError:
            # The caller gave up waiting (e.g. wait_for around move_to): keep trying in the background,
            # as a real phone would, instead of being left enabled but with nothing scheduled.
            if gen == self._gen and self._active and self._timer is None:
                delay = self.endpoint.timers.jittered(self.endpoint.timers.retry_base)
                self._timer = self.endpoint.loop.call_later(delay, self._timer_fired, gen)
            raise
        if gen != self._gen:
            return 200 <= code < 300 and granted > 0
        t = self.endpoint.timers
        if 200 <= code < 300 and granted > 0:
            self._bound = registrar
            self._fails = 0
            self._last_error = None
            self._granted = granted
            if self._registered:
                self.counts[1] += 1
            else:
                self._registered = True
                self._registered_at = time.monotonic()
                self.counts[0] += 1
                self._emit("registered", registrar=registrar, expires=granted)
            self._timer = self.endpoint.loop.call_later(
                max(granted * _uniform(0.5, 0.8), 0.5), self._timer_fired, gen
            )
            return True
        self._fails += 1
        self.counts[2] += 1
        self._last_error = f"{code} {reason}" if code else reason
        was = self._registered
        self._registered = False
        self._emit("registration_failed", registrar=registrar, code=code, reason=reason, was_registered=was)
        if self._active:
            if code == 0 or code >= 500 or code == 408:
                delay = min(t.retry_max, t.retry_base * 2 ** min(self._fails - 1, 16))
                delay *= _uniform(0.5, 1.0)
            else:
                delay = t.reject_retry * _uniform(0.8, 1.0)
            self._timer = self.endpoint.loop.call_later(delay, self._timer_fired, gen)
        return False

    async def _do_register(
        self, registrar: tuple[str, int], expires: int, call_id: str, give_up: float | None = None
    ) -> tuple[int, str, int]:
        """One REGISTER exchange including digest challenges: (status or 0, reason, granted expires)."""
        ep = self.endpoint
        host, port = registrar
        hp = format_host(host)
        lhost = format_host(ep.contact_host(host))
        lport = ep.local[1]
        ruri = f"sip:{hp}:{port}"
        aor = f"sip:{self.extension}@{format_host(self.domain) if self.domain else hp}"
        curi = f"sip:{self.contact_user}@{lhost}:{lport}"
        auth = ""
        answered_fresh = False
        if self._chal is not None and self._chal_at == registrar:
            auth = f"Authorization: {self._auth_header(self._chal, 'REGISTER', ruri)}\r\n"
        self._pending += 1
        try:
            for _ in range(5):
                if expires and registrar != self.registrar:
                    return 0, "moved", 0  # the phone moved meanwhile: never (re-)register at the old one
                self._cseq += 1
                branch = new_branch()
                data = (
                    f"REGISTER {ruri} SIP/2.0\r\n"
                    f"Via: SIP/2.0/UDP {lhost}:{lport};rport;branch={branch}\r\n"
                    f"Max-Forwards: 70\r\n"
                    f"From: <{aor}>;tag={self._from_tag}\r\n"
                    f"To: <{aor}>\r\n"
                    f"Call-ID: {call_id}\r\n"
                    f"CSeq: {self._cseq} REGISTER\r\n"
                    f"Contact: <{curi}>;expires={expires}\r\n"
                    f"Expires: {expires}\r\n"
                    f"{auth}"
                    f"Allow: {ALLOW}\r\n"
                    f"User-Agent: {ep.user_agent}\r\n"
                    f"Content-Length: 0\r\n\r\n"
                ).encode()
                fut = ep.request(data, registrar, branch, give_up=give_up)
                if expires:
                    self._inflight[fut] = registrar
                try:
                    resp = await fut
                finally:
                    self._inflight.pop(fut, None)
                if resp is None:
                    return 0, "timeout", 0
                st = resp.status
                if st == 401 or st == 407:
                    if answered_fresh:
                        got = self._take_challenge(resp, registrar)
                        if got is None or not got[1].stale:
                            return st, resp.reason, 0
                    else:
                        got = self._take_challenge(resp, registrar)
                        if got is None:
                            return st, resp.reason, 0
                    answered_fresh = True
                    hname, chal = got
                    auth = f"{hname}: {self._auth_header(chal, 'REGISTER', ruri)}\r\n"
                    continue
                if st == 423:
                    try:
                        expires = int(resp.header("min-expires", "") or "")
                    except ValueError:
                        return st, resp.reason, 0
                    continue
                if 200 <= st < 300:
                    return st, resp.reason, (expires and granted_expires(resp, curi, expires))
                return st, resp.reason, 0
            return 0, "too many challenges", 0
        finally:
            self._pending -= 1


def granted_expires(resp: SipMessage, contact_uri: str, requested: int) -> int:
    """The expiry the registrar granted our contact (its Contact expires param, else Expires)."""
    for one in resp.header_values("contact"):
        if contact_uri in one:
            exp = param(one, "expires")
            if exp:
                try:
                    return int(exp)
                except ValueError:
                    break
    exp_hdr = resp.header("expires")
    if exp_hdr:
        try:
            return int(exp_hdr)
        except ValueError:
            pass
    return requested
