"""The CTI's session table: who is logged in on which connection, and how a session ends.

Why it is built this way:
- A session ends by its lease when its client goes silent (a CTI cut off from its agents must not keep
  them logged in while they work at the other site), by a fence when a newer login elsewhere supersedes it
  (the UL's ``fence`` admin message, or the periodic bulk epoch sweep), or by the client's logout.
- A late message renews a lease only as of when its client sent it: a TCP retransmission after a long cut
  heals cannot revive a session.
- A session that ended unconfirmed (its lease ran out, or its connection was lost without a logout) is
  remembered by its epoch until a fence supersedes it, and that fence answers ``fenced: true``: the UL's
  fence is then the one message on the wire that says the session is gone before the agent's newer
  session begins elsewhere. Without it a lease that ran out just before the agent logged in at the other
  site left nothing on the wire between the two (scenarios/test_gray.py, 30 % loss on the CTI link: the
  split-brain checker could only answer that the sessions may have overlapped).
- Sessions are also indexed by extension, so a PBX event finds its agent without a walk over 5,000.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiohttp

from stack.cti.epochs import post_epochs
from stack.cti.pbxlink import PbxLink

log = logging.getLogger("stack.cti")

SWEEP = aiohttp.ClientTimeout(total=2.0)  # the periodic epoch sweep's request


class Client(Protocol):
    """What a session needs of the connection it lives on (stack/cti/connection.py)."""

    session: Session | None

    def send(self, msg: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


@dataclass(eq=False)
class Session:
    """One logged-in agent on one connection."""

    agent: str
    extension: str
    epoch: int
    conn: Client
    state: str = "not_ready"
    since: float = field(default_factory=time.time)
    login_at: float = field(default_factory=time.time)
    linked: bool = False
    phone: str = "unknown"
    epoch_checked: bool = True
    heard: float = field(default_factory=time.monotonic)  # last message that renewed the lease
    offset: float | None = None  # least (arrival - client send time) seen: tells a late message
    login_sent: float | None = None  # the client's send time of its login (ms, its own clock): orders logins

    def view(self) -> dict[str, Any]:
        return {
            "agent": self.agent,
            "state": self.state,
            "epoch": self.epoch,
            "extension": self.extension,
            "since": round(self.since, 3),
            "login_at": round(self.login_at, 3),
            "linked": self.linked,
            "phone": self.phone,
        }


class SessionTable:
    """The sessions of a site's CTI and how they end; mixed into CtiServer, whose ``__init__`` sets the
    state below. ``fence`` asks ``unbind`` (stack/cti/pbxwatch.py) to clear a moved agent's binding."""

    site: str
    ul_url: str | None
    sessions: dict[str, Session]
    pbx: PbxLink
    _by_ext: dict[str, list[Session]]
    _http: aiohttp.ClientSession | None
    epoch_interval: float
    lease: float
    lease_late: float
    expired: int
    lapsed: dict[str, int]

    def _sessions_of(self, ext: str) -> list[Session]:
        live = [s for s in self._by_ext.get(ext, ()) if self.sessions.get(s.agent) is s]
        if live:
            self._by_ext[ext] = live
        else:
            self._by_ext.pop(ext, None)
        return live

    def push(self, s: Session, msg: dict[str, Any]) -> bool:
        """Push an event to session ``s`` unless its lease has run out as far as this CTI knows: after a
        stall (SIGSTOP, a swapped-out host) a loop may push before the lease sweep has run, and an event
        on the wire to a client that already logged in at the other site shows it active here too (split
        brain, scenarios/schedules/cti-loss-then-pause.json). The session is not ended here: unread
        heartbeats may still renew it; the sweep or the next message decides, and a heartbeat's answer
        carries the same states."""
        if self.lease > 0 and time.monotonic() - s.heard > self.lease:
            return False
        s.conn.send(msg)
        return True

    def _broadcast(self, msg: dict[str, Any]) -> None:
        for s in list(self.sessions.values()):
            self.push(s, msg)

    async def _epoch_loop(self) -> None:
        assert self._http is not None and self.ul_url
        while True:
            await asyncio.sleep(self.epoch_interval)
            if not self.sessions:
                continue
            body = await post_epochs(self._http, self.ul_url + "/v1/epochs", list(self.sessions), SWEEP)
            cur = body.get("agents") if body is not None else None
            if not isinstance(cur, dict):
                continue
            for agent, s in list(self.sessions.items()):
                c = cur.get(agent)
                if c and (c["epoch"] > s.epoch or c["site"] != self.site or c["status"] != "active"):
                    self.fence(agent, int(c["epoch"]), c["site"])
                elif c:
                    s.epoch_checked = True

    def fence(self, agent: str, epoch: int, site: str, extension: str | None = None) -> str | None:
        """Evict the agent's session if ``epoch`` supersedes it; tell the client why. When the agent is
        not (or no longer) active here, its extension's binding at this site's PBX is removed too.

        "fenced": a live session ended now; "lapsed": the session had already ended unconfirmed (its lease
        ran out, or its connection was lost), and this confirms it; None: nothing to fence."""
        s = self.sessions.get(agent)
        if s is not None and epoch <= s.epoch:
            # The agent is legitimately active here: keep session and binding. From any site: a fence of an
            # older login elsewhere that reached this CTI late (its UL's admin link under loss) evicted the
            # newer session the agent had made here since, and the agent took it for its own fence and
            # stopped (scenarios/schedules/cti-loss-replaced.json, a fresh-clone run under load: lost).
            return None
        ext = extension or (s.extension if s is not None else None)
        if ext and site != self.site and self.pbx.rpc_url:
            asyncio.ensure_future(self.unbind(ext))
        now = time.monotonic()
        if s is not None and now - s.heard > self.lease:
            # Its lease ran out before this fence was read (this CTI was stalled): the session ended then,
            # unheard; telling the client "fenced" now would claim it lasted until now.
            self._expire(s, now)
            s = None
        if s is None:
            gone = self.lapsed.get(agent)
            if gone is None or epoch <= gone:
                return None
            del self.lapsed[agent]  # superseded: its end is confirmed now, once
            log.info("cti %s: %s fenced by epoch %s at %s (its session had ended unconfirmed)",
                     self.site, agent, epoch, site)  # fmt: skip
            return "lapsed"
        del self.sessions[agent]
        s.conn.session = None
        s.conn.send({"type": "event", "event": "fenced", "epoch": epoch, "site": site})  # lease checked above
        s.conn.close()
        log.info("cti %s: %s fenced by epoch %s at %s", self.site, agent, epoch, site)
        return "fenced"

    async def _lease_loop(self) -> None:
        """End the sessions whose lease ran out; skip a round when this loop itself ran late (unread
        heartbeats may be waiting in the sockets)."""
        tick = min(0.25, self.lease / 4)
        last = time.monotonic()
        while True:
            await asyncio.sleep(tick)
            now = time.monotonic()
            if now - last < tick + self.lease / 4:
                self.expire_leases(now)
            last = now

    def expire_leases(self, now: float | None = None) -> int:
        """End every session not heard from for ``lease`` s (nothing is pushed: its client is gone)."""
        now = time.monotonic() if now is None else now
        cutoff = now - self.lease
        # One comprehension over the sessions (4 sweeps a second over 10,000 sessions at a loaded site:
        # the per-item loop was 6 % of a busy CTI's CPU in the 10,000-agent failover profile).
        gone = [s for s in self.sessions.values() if s.heard < cutoff]
        for s in gone:
            self._expire(s, now)
        return len(gone)

    def _expire(self, s: Session, now: float, close: bool = True) -> None:
        del self.sessions[s.agent]
        self.lapsed[s.agent] = s.epoch
        s.conn.session = None
        if close:
            s.conn.close()
        self.expired += 1
        log.info(
            "cti %s: %s lease expired (epoch %s, %.1fs silent)", self.site, s.agent, s.epoch, now - s.heard
        )

    def lost(self, s: Session) -> None:
        """The connection of session ``s`` went away without a logout: the session ends, unconfirmed."""
        if self.sessions.get(s.agent) is s:
            del self.sessions[s.agent]
            self.lapsed[s.agent] = s.epoch

    def _renew(self, s: Session, req: dict[str, Any]) -> bool:
        """A message from the client renews its session's lease as of when the client sent it (in this
        server's clock: its send time plus the least transit seen). A message held up by TCP retransmission
        after a short cut still proves the client was alive then; one held up longer than the lease (a
        long cut healing) renews nothing, so it cannot revive a session.

        The lease is enforced here too, not only by the sweep: after this CTI itself was stalled (SIGSTOP,
        a swapped-out host) the sweep has not run yet when the buffered messages are read, and answering
        them would tell an agent that already logged in at the other site that it is still active here
        (split brain). False: the lease had run out, and the session is over."""
        now = time.monotonic()
        sent = req.get("t")
        if isinstance(sent, int | float) and not isinstance(sent, bool):
            off = now - sent / 1000.0
            if s.offset is None or off < s.offset:
                s.offset = off
            if off - s.offset > self.lease_late:
                s.heard = max(s.heard, sent / 1000.0 + s.offset)
                if now - s.heard > self.lease and self.sessions.get(s.agent) is s:
                    self._expire(s, now)
                    return False
                return True
        s.heard = now
        return True
