"""Agent-initiated calls (CSTA MakeCall, TAPI lineMakeCall): the agent asks its CTI to dial a number, the
CTI has the PBX make the agent's phone call it, and the call's progress reaches the agent as events.

Why it is built this way:
- Click-to-dial by REFER (RFC 3515 with ``Refer-Sub: false``, RFC 4488): the CTI looks the phone's
  binding up (``ul.lookup``) and has the PBX send the REFER on it (``tm.t_uac_wait_block`` over the PBX's
  JSON-RPC, the same management path as every other CTI request to its PBX). The phone takes a REFER only
  from its registrar and then places an ordinary INVITE through it (stack/phone/refer.py), so the call is
  the agent's own on the wire, digest and all. Third-party call control (RFC 3725) would need a B2BUA, and
  the phone's vendor HTTP API would bypass the PBX, which then could not vouch for the request.
- Progress from the PBX, not from the phone: the PBX keeps a dialog per call (Kamailio's dialog module,
  virtual/kamailio.cfg.tmpl) and the CTI reads them (``dlg.list``) while it has calls to follow: one read
  per ``poll`` s for all of them, none when there are none. The phone's word (a NOTIFY) would be the
  endpoint vouching for itself; the dialog is what the PBX routed. States map as early -> ``ringing``,
  confirmed -> ``answered``, deleted (or gone) -> ``ended`` if it was answered, else ``failed``.
- ``dial`` is answered at once (``dial_ok`` with the call's ``dial`` reference: MakeCall's positive
  acknowledgement), every later step is a ``call_progress`` event; the connection's synchronous path
  (stack/cti/connection.py) needs no new awaiting kind. One call at a time per agent (``busy``).
- Events go to the agent's current session at this CTI (a reconnect keeps getting them); an agent that
  moved away gets none from here. Each state is pushed once and never goes back.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from stack.cti import protocol as P
from stack.cti.connection import Connection
from stack.cti.pbxlink import PbxLink, RpcError
from stack.cti.sessions import Session

log = logging.getLogger("stack.cti.dial")

NUMBER_RE = re.compile(r"^\+?[0-9]{3,20}$")
ORDER = ("dialing", "ringing", "answered", "ended", "failed")
# RuntimeError: the HTTP session was closed under a call still followed (the CTI is stopping).
RPC_ERRORS = (RpcError, TimeoutError, aiohttp.ClientError, OSError, ValueError, AttributeError, RuntimeError)
REFER_TIMEOUT = aiohttp.ClientTimeout(total=6.0)  # tm gives up on a silent phone after fr_timer (4 s)


@dataclass
class Dial:
    """One call an agent asked for, followed until it ends."""

    ref: str
    agent: str
    extension: str
    number: str
    asked: float = field(default_factory=time.time)
    state: str = ""
    call_id: str | None = None
    dialog: tuple[Any, Any] | None = None  # the PBX's (h_entry, h_id)
    referred: float | None = None  # monotonic: the phone accepted the REFER
    misses: int = 0  # reads of the PBX's dialogs that failed in a row
    answered: bool = False


class Dialer:
    """The ``dial`` message and the call-progress loop; mixed into CtiServer through Handlers (the state
    is created on first use: CtiServer's ``__init__`` need not know of it)."""

    site: str
    pbx: PbxLink
    sessions: dict[str, Session]
    dial_poll = 0.2  # seconds between reads of the PBX's dialogs while calls are followed
    dial_appear = 5.0  # seconds from the REFER's acceptance until the phone's call must be at the PBX
    dial_lost = 10.0  # seconds of unreadable dialogs before a followed call is given up as failed

    push: Callable[[Session, dict[str, Any]], bool]  # stack/cti/sessions.py (no stub: it would shadow it)

    @property
    def dials(self) -> dict[str, Dial]:
        d: dict[str, Dial] | None = self.__dict__.get("_dials")
        if d is None:
            d = self.__dict__["_dials"] = {}
        return d

    def _dial(self, conn: Connection, req: dict[str, Any]) -> dict[str, Any]:
        s = conn.session
        if s is None:
            return P.error("not_logged_in", req)
        number = req.get("number")
        if not isinstance(number, str) or not NUMBER_RE.match(number):
            return P.error("bad_request", req, detail="number must be 3-20 digits, with an optional +")
        if not self.pbx.rpc_url or self.pbx.up is False:
            return P.error("pbx_unreachable", req)
        if any(d.agent == s.agent for d in self.dials.values()):
            return P.error("busy", req, detail="a call of this agent is still in progress")
        d = Dial(f"{self.site}-{secrets.token_hex(6)}", s.agent, s.extension, number)
        self.dials[d.ref] = d
        asyncio.get_running_loop().create_task(self._refer(d))
        log.info("cti %s: %s dials %s (%s)", self.site, s.agent, number, d.ref)
        return {"type": "dial_ok", "dial": d.ref, "number": number, **P.echo_id(req)}

    # ---- the REFER ------------------------------------------------------------------------------

    async def _refer(self, d: Dial) -> None:
        try:
            contact = await self._phone_contact(d.extension)
            if contact is None:
                self._progress(d, "failed", reason="phone_not_registered")
                return
            host = self.pbx.sip[0] if self.pbx.sip else "pbx"
            tag = secrets.token_hex(5)
            headers = (
                f"From: <sip:cti-{self.site}@{host}>;tag={tag}\r\nTo: <sip:{d.extension}@{host}>\r\n"
                f"Contact: <sip:cti-{self.site}@{host}>\r\nRefer-To: <sip:{d.number}@{host}>\r\n"
                f"Refer-Sub: false\r\nReferred-By: <sip:cti-{self.site}@{host}>\r\n"
            )
            reply = await self.pbx._rpc(
                "tm.t_uac_wait_block", "REFER", contact, ".", ".", headers, "", timeout=REFER_TIMEOUT
            )
        except RPC_ERRORS as err:
            self._progress(d, "failed", reason="pbx_unreachable", detail=str(err)[:200] or type(err).__name__)
            return
        code = int((reply or {}).get("code", 0)) if isinstance(reply, dict) else 0
        if not 200 <= code < 300:
            self._progress(d, "failed", reason="phone_refused", code=code)
            return
        d.referred = time.monotonic()
        self._progress(d, "dialing")
        if "_dial_task" not in self.__dict__ or self.__dict__["_dial_task"].done():
            self.__dict__["_dial_task"] = asyncio.get_running_loop().create_task(self._dial_loop())

    async def _phone_contact(self, ext: str) -> str | None:
        res = await self.pbx._rpc("ul.lookup", "location", ext) if self.pbx.rpc_url else None
        for c in (res or {}).get("Contacts", []) or []:
            contact = c.get("Contact", {})
            exp = contact.get("Expires")
            if exp == "permanent" or (isinstance(exp, int | float) and exp > 0):
                return str(contact.get("Address"))
        return None

    # ---- following the calls ----------------------------------------------------------------------

    async def _dial_loop(self) -> None:
        """Read the PBX's dialogs while any referred call is followed; end when none is."""
        while any(d.referred is not None for d in self.dials.values()):
            server = self.__dict__.get("_server")
            if server is not None and not server.is_serving():
                return  # the CTI stopped: nobody is left to tell
            t0 = time.monotonic()
            try:
                dialogs = await self.pbx._rpc("dlg.list")
                ok = True
            except RpcError as err:  # Kamailio answers an empty table with an error: no dialogs
                dialogs, ok = [], "no dialog" in str(err).lower() or "not found" in str(err).lower()
            except RPC_ERRORS:
                dialogs, ok = [], False
            self.follow(dialogs if isinstance(dialogs, list) else [], ok)
            await asyncio.sleep(max(0.0, self.dial_poll - (time.monotonic() - t0)))

    def follow(self, dialogs: list[dict[str, Any]], ok: bool = True) -> None:
        """One read of the PBX's dialogs applied to every followed call (pure bookkeeping: tests call it)."""
        now = time.monotonic()
        for d in [d for d in self.dials.values() if d.referred is not None]:
            if not ok:
                d.misses += 1
                if d.misses * self.dial_poll >= self.dial_lost:
                    self._progress(d, "failed" if not d.answered else "ended", reason="pbx_unreachable")
                continue
            d.misses = 0
            dlg = _find(dialogs, d)
            if dlg is None:
                if d.dialog is not None:  # it was there and is gone: over
                    self._over(d, "gone")
                elif now - d.referred > self.dial_appear:
                    self._progress(d, "failed", reason="no_call")
                continue
            d.dialog = (dlg.get("h_entry"), dlg.get("h_id"))
            d.call_id = str(dlg.get("call-id") or "") or None
            state = dlg.get("state")
            if state == 2:
                self._progress(d, "ringing")
            elif state in (3, 4):
                d.answered = True
                self._progress(d, "answered")
            elif state == 5:
                d.answered = d.answered or bool(dlg.get("start_ts"))
                self._over(d, "deleted")

    def _over(self, d: Dial, how: str) -> None:
        if d.answered:
            self._progress(d, "ended", reason="hangup")
        else:
            self._progress(d, "failed", reason="not_answered")

    def _progress(self, d: Dial, state: str, **detail: Any) -> None:
        """Push one state of a call to its agent, once, never going back; a final state ends it here."""
        if d.state in ("ended", "failed") or (d.state and ORDER.index(state) <= ORDER.index(d.state)):
            return
        d.state = state
        final = state in ("ended", "failed")
        if final:
            self.dials.pop(d.ref, None)
        msg: dict[str, Any] = {"type": "event", "event": "call_progress", "dial": d.ref, "state": state}
        msg["number"] = d.number
        if d.call_id:
            msg["call_id"] = d.call_id
        msg.update(detail)
        s = self.sessions.get(d.agent)
        if s is not None:
            self.push(s, msg)
        log.info("cti %s: %s call %s %s %s", self.site, d.agent, d.ref, state, detail or "")


def _find(dialogs: list[dict[str, Any]], d: Dial) -> dict[str, Any] | None:
    """The dialog of ``d``: the one it was found as before, else the newest from its extension to its
    number that began after the agent asked."""
    best = None
    for dlg in dialogs:
        if not isinstance(dlg, dict):
            continue
        if d.dialog is not None:
            if (dlg.get("h_entry"), dlg.get("h_id")) == d.dialog:
                return dlg
            continue
        if _user(dlg.get("from_uri")) != d.extension or _user(dlg.get("to_uri")) != d.number:
            continue
        if int(dlg.get("init_ts") or 0) < int(d.asked) - 1:
            continue
        if best is None or int(dlg.get("init_ts") or 0) >= int(best.get("init_ts") or 0):
            best = dlg
    return best


def _user(uri: Any) -> str | None:
    if not isinstance(uri, str) or "@" not in uri:
        return None
    return uri.split(":", 1)[-1].split("@", 1)[0]
