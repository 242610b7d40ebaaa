"""What the CTI does with each client message (the vocabulary of docs/cti-protocol.md).

Why it is built this way:
- Most messages are answered synchronously, in the connection's ``data_received`` (``_handle_now``: no
  task per heartbeat); only ``login`` (the UL epoch check) and ``link_phone`` (the PBX lookup) await.
- Tokens are verified offline (HMAC) and then against the UL's current epoch for the agent (batched,
  stack/cti/epochs.py), so a fenced token is refused; an unreachable UL leaves the offline check standing
  and the epoch sweep checks later; that only within the token's ``lease`` (``token_expired`` after it).
- Admin messages (switch orders, fences from the UL) are HMAC-signed with the lab secret and carry a nonce
  that is refused if seen again within the signature's window (stack/common/auth.py).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from stack.common import auth
from stack.cti import protocol as P
from stack.cti.connection import Connection
from stack.cti.dial import Dialer
from stack.cti.epochs import EpochBatcher
from stack.cti.pbxlink import PbxLink, PbxUnreachable
from stack.cti.sessions import Session

log = logging.getLogger("stack.cti")


class Handlers(Dialer):
    """The message handlers of a site's CTI; mixed into CtiServer, whose ``__init__`` sets the state below
    (the lease sweep and ``fence`` come from stack/cti/sessions.py, the phone and link states from
    stack/cti/pbxwatch.py)."""

    site: str
    secret: str
    ul_url: str | None
    pbx: PbxLink
    sessions: dict[str, Session]
    _by_ext: dict[str, list[Session]]
    _epochs: EpochBatcher | None
    lease: float
    expired: int
    lapsed: dict[str, int]

    def _handle_now(self, conn: Connection, req: dict[str, Any], kind: Any) -> dict[str, Any] | None:
        """The reply to a message whose handling does not await (all but ``login`` and ``link_phone``,
        which ``Connection._awaiting`` runs as a task): answered in ``data_received``, with no task."""
        if kind == "heartbeat":
            s = conn.session
            if s is None:
                return P.error("not_logged_in", req)
            ack = {
                "type": "heartbeat_ack",
                "seq": req.get("seq"),
                "pbx_link": self.link_state(),
                "phone": self.phone_state(s.extension),
                "state": s.state,
                "epoch": s.epoch,
            }
            if "id" in req:
                ack["id"] = req["id"]
            return ack
        rid = P.echo_id(req)
        if kind == "set_state":
            s = conn.session
            if s is None:
                return P.error("not_logged_in", req)
            state = req["state"]
            if state not in P.STATES:
                return P.error("bad_request", req, detail=f"state must be one of {P.STATES}")
            if state != s.state:
                s.state, s.since = state, time.time()
            return {"type": "state_ok", "state": s.state, **rid}
        if kind == "status":
            ext = req.get("extension")
            out = {"type": "status", "site": self.site, "pbx_link": self.link_state(), **rid}
            if isinstance(ext, str):
                out["phone"] = self.phone_state(ext)
            return out
        if kind == "sessions":
            if self.lease > 0:
                self.expire_leases()
            return {
                "type": "sessions",
                "site": self.site,
                "pbx_link": self.link_state(),
                "lease": self.lease,
                "expired": self.expired,
                "refused": dict(self.refusals.counts),
                "sessions": [s.view() for s in self.sessions.values()],
                **rid,
            }
        if kind == "logout":
            s = conn.session
            lapsed = {}
            if s is not None and self.sessions.get(s.agent) is s:
                now = time.monotonic()
                if self.lease > 0 and now - s.heard > self.lease:
                    # Its lease ran out while the logout waited (this CTI was stalled): the session ended
                    # then, unconfirmed, not now (scenarios/schedules/cti-loss-then-pause.json).
                    self._expire(s, now, close=False)
                    lapsed = {"lapsed": True}
                else:
                    del self.sessions[s.agent]
            conn.session = None
            conn.send({"type": "logout_ok", **lapsed, **rid})
            conn.close()
            return None
        if kind == "admin":
            return self._admin(req)
        if kind == "dial":
            return self._dial(conn, req)
        return P.error("unknown_type", req)

    async def _login(self, conn: Connection, req: dict[str, Any]) -> dict[str, Any]:
        token = req["token"]
        if not isinstance(token, str):
            raise TypeError("token must be a string")
        try:
            claims = auth.verify(self.secret, token)
        except auth.TokenError as err:
            return P.error(err.code, req)
        if claims["site"] != self.site:
            return P.error("wrong_site", req)
        nbf = claims.get("nbf")
        if isinstance(nbf, int | float) and time.time() < nbf:
            # The UL could not confirm that the old site dropped the agent: wait for its lease.
            return P.error("not_yet", req, retry_after=round(nbf - time.time(), 3))
        agent, epoch = str(claims["agent"]), int(claims["epoch"])
        if req.get("agent", agent) != agent:
            return P.error("token_invalid", req, detail="agent does not match the token")
        checked = True
        if self.ul_url:
            cur = await self._epochs.get(agent) if self._epochs is not None else None
            if cur is None:
                # UL unreachable: the offline check stands (the sweep checks later), but only within the
                # lease the token carries: a token stolen or kept for hours is no good against a cut-off CTI.
                if not auth.within_lease(claims):
                    log.warning("cti %s: refused %s: token past its lease, UL unreachable", self.site, agent)
                    return P.error("token_expired", req, detail="past its lease; the UL cannot be asked")
                log.info("cti %s: %s accepted unchecked: UL unreachable, token in lease", self.site, agent)
                checked = False
            elif not cur.get("known"):
                return P.error("unknown_session", req)
            elif cur["epoch"] > epoch or cur["site"] != self.site or cur["status"] != "active":
                return P.error("fenced", req, current_epoch=cur["epoch"], current_site=cur["site"])
            elif not cur.get("reconciled", True) and float(claims.get("iat", 0)) < cur.get("started", 0):
                return P.error("reconciling", req)
        sent = req.get("t")
        sent = float(sent) if isinstance(sent, int | float) and not isinstance(sent, bool) else None
        old = self.sessions.get(agent)
        if old is not None:
            if old.epoch > epoch:
                return P.error("fenced", req, current_epoch=old.epoch, current_site=self.site)
            if old.conn is not conn and old.epoch == epoch and _earlier(sent, old.login_sent):
                # A login its client sent before the one that made the live session (a connection whose
                # login timed out, its request retransmitted late under loss): it must not take the
                # session from the newer connection (scenarios/schedules/cti-loss-replaced.json).
                return P.error("superseded", req, detail="a later login of this agent holds the session")
            if old.conn is not conn:
                old.conn.session = None
                self.push(old, {"type": "event", "event": "replaced", "epoch": epoch})
                old.conn.close()
        prev = conn.session
        if prev is not None and prev.agent != agent and self.sessions.get(prev.agent) is prev:
            del self.sessions[prev.agent]
        s = Session(agent, str(claims.get("ext", "")), epoch, conn, epoch_checked=checked, login_sent=sent)
        self.lapsed.pop(agent, None)  # a session here again: an older one's end needs no confirming
        if old is not None and old.epoch == epoch:
            s.state, s.since = old.state, old.since
        s.phone = self.phone_state(s.extension)
        conn.session = s
        self.sessions[agent] = s
        self._by_ext[s.extension] = [*self._sessions_of(s.extension), s]
        return {
            "type": "login_ok",
            "agent": agent,
            "site": self.site,
            "epoch": epoch,
            "extension": s.extension,
            "state": s.state,
            "pbx_link": self.link_state(),
            "epoch_checked": checked,
            "lease": self.lease,
            **P.echo_id(req),
        }

    async def _link(self, conn: Connection, req: dict[str, Any]) -> dict[str, Any]:
        s = conn.session
        if s is None:
            return P.error("not_logged_in", req)
        ext = req.get("extension", s.extension)
        if ext != s.extension:
            return P.error("wrong_extension", req)
        if not self.pbx.rpc_url:
            return P.error("pbx_unreachable", req)
        if self.pbx.says_registered(ext):
            # The PBX pushed this registration: nothing to ask it (a storm of lookups queues behind the
            # dumps in Kamailio's HTTP workers). Silence or "not registered" is still asked: events are
            # hints, and the one announcing this phone may be the one that was lost.
            s.linked, s.phone = True, "registered"
            return {"type": "link_ok", "extension": ext, **P.echo_id(req)}
        try:
            ok = await self.pbx.lookup(ext)
        except PbxUnreachable as err:
            return P.error("pbx_unreachable", req, detail=str(err)[:200])
        if not ok:
            return P.error("phone_not_registered", req)
        if conn.session is not s:  # fenced or replaced while we asked the PBX
            return P.error("fenced", req)
        s.linked, s.phone = True, "registered"
        # The bulk view may lag the direct lookup by a dump or two; do not report a fresh link as lost.
        self.pbx.confirm(ext)
        return {"type": "link_ok", "extension": ext, **P.echo_id(req)}

    def _admin(self, req: dict[str, Any]) -> dict[str, Any]:
        why = auth.message_refusal(self.secret, req)  # a replay is logged there
        if why is not None:
            return P.error("forbidden", req, reason=why)
        op = req["op"]
        rid = P.echo_id(req)
        if op == "switch_order":
            target, rule = str(req["target"]), req.get("rule")
            n = 0
            for agent in req["agents"]:
                s = self.sessions.get(agent)
                if s is not None and self.push(
                    s, {"type": "event", "event": "switch_ordered", "target": target, "rule": rule}
                ):
                    n += 1
            return {"type": "admin_ok", "op": op, "delivered": n, **rid}
        if op == "fence":
            ext = req.get("extension")
            done = self.fence(str(req["agent"]), int(req["epoch"]), str(req["site"]), ext and str(ext))
            lapsed = {"lapsed": True} if done == "lapsed" else {}  # it had ended before: when is not known
            return {"type": "admin_ok", "op": op, "fenced": done is not None, **lapsed, **rid}
        return P.error("bad_request", req, detail="unknown admin op")


def _earlier(sent: float | None, than: float | None) -> bool:
    """True when a login's client send time is known to be before ``than`` (both in the client's clock)."""
    return sent is not None and than is not None and sent < than
