"""The unified login's exchange with its peer UL at the other site.

Why: each UL holds its own site's view (sessions, epochs, rules in SQLite). Rule changes replicate to the
peer at once; when the peer could not be told, the two ULs reconcile (``/v1/sync``, both directions) as
soon as they see each other again, and a restarted UL answers ``reconciled: false`` until then, so its CTI
refuses tokens issued before the restart. A session the peer holds newer is fenced here through the CTI.
UL-to-UL requests are HMAC-signed with the lab secret.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import aiohttp

from stack.common import auth
from stack.login.ctiadmin import CtiAdmin
from stack.login.store import Rule, SessionRow, Store

log = logging.getLogger("stack.login")


class PeerUnavailable(Exception):
    pass


class PeerSync:
    """The peer side of a site's UL; mixed into UnifiedLogin, whose ``__init__`` sets the state below
    (``order_switch`` comes from stack/login/server.py)."""

    site: str
    secret: str
    store: Store
    peer_url: str | None
    peer_timeout: aiohttp.ClientTimeout
    peer_interval: float
    peer_up: bool | None
    reconciled: bool
    cti_admin: CtiAdmin
    counters: dict[str, int]
    _http: aiohttp.ClientSession | None

    def snapshot(self) -> dict[str, Any]:
        """Every session and rule this UL holds, as the peer is sent them in a reconciliation."""
        return {
            "sessions": [s.view() for s in self.store.sessions.values()],
            "rules": [r.view() for r in self.store.rules.values()],
        }

    async def _peer(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """A signed request to the peer UL; raises PeerUnavailable on any failure to get a 200."""
        if not self.peer_url or self._http is None:
            raise PeerUnavailable("no peer configured")
        data = json.dumps(body or {}).encode()
        headers = {"Content-Type": "application/json", **auth.sign_request(self.secret, method, path, data)}
        try:
            async with self._http.request(
                method, self.peer_url + path, data=data, headers=headers, timeout=self.peer_timeout
            ) as r:
                reply = await r.json(content_type=None)
                if r.status != 200:
                    raise PeerUnavailable(f"peer answered {r.status}: {reply}")
                return reply
        except (TimeoutError, aiohttp.ClientError, ValueError, OSError) as err:
            self.peer_up = False
            raise PeerUnavailable(str(err) or type(err).__name__) from None

    async def _peer_loop(self) -> None:
        """Watch the peer; reconcile at start and every time it comes back."""
        assert self._http is not None and self.peer_url
        while True:
            try:
                async with self._http.get(self.peer_url + "/v1/health", timeout=self.peer_timeout) as r:
                    ok = r.status == 200
            except (TimeoutError, aiohttp.ClientError, OSError):
                ok = False
            if ok and (self.peer_up is not True or not self.reconciled):
                try:
                    await self.reconcile()
                    self.peer_up = True
                except PeerUnavailable as err:
                    log.warning("ul %s: reconcile failed: %s", self.site, err)
            elif not ok:
                if self.peer_up:
                    log.warning("ul %s: peer down", self.site)
                self.peer_up = False
            await asyncio.sleep(self.peer_interval)

    async def reconcile(self) -> None:
        """Exchange sessions and rules with the peer; fence what the peer has newer."""
        mine = self.snapshot()
        theirs = await self._peer("POST", "/v1/sync", mine)
        await self._merge(theirs)
        if not self.reconciled:
            log.info("ul %s: reconciled with peer", self.site)
        self.reconciled = True

    async def _merge(self, body: dict[str, Any]) -> None:
        lost: list[SessionRow] = []
        for raw in body.get("sessions", []):
            row = SessionRow(**{k: raw[k] for k in SessionRow.__dataclass_fields__})
            old = self.store.merge_session(row)
            if old is not None and old.site == self.site and old.status == "active" and row.site != self.site:
                lost.append(row)
        new_rules = []
        for raw in body.get("rules", []):
            rule = Rule(**{k: raw[k] for k in Rule.__dataclass_fields__})
            if self.store.merge_rule(rule) and rule.enabled and not rule.removed:
                new_rules.append(rule)
        for row in lost:
            self.counters["fenced"] += 1
            await self.cti_admin.fence(row.agent, row.epoch, row.site, row.extension)
        for rule in new_rules:
            await self.order_switch(rule)

    async def _replicate(self, rule: Rule) -> bool:
        try:
            await self._peer("POST", "/v1/sync", {"rules": [rule.view()]})
            return True
        except PeerUnavailable:
            return False  # the next reconcile carries it
