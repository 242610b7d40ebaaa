"""The unified login's HTTP API (docs/cti-protocol.md lists the endpoints).

Why apart from the logic: the handlers only parse, check signatures and shape replies; what a login,
an allocation or a fence means lives in stack/login/server.py and stack/login/peer.py. Reads are open;
UL-to-UL and admin (rule-changing) requests are HMAC-signed with the lab secret. Bad input of any kind is a
4xx with a reason in JSON (``{"error": ...}``), never a 500 with a traceback (issue 16).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from stack.common import auth
from stack.common.directory import Directory
from stack.login.admission import Admission, Decision
from stack.login.ctiadmin import CtiAdmin
from stack.login.peer import PeerUnavailable
from stack.login.store import SCOPES, SessionRow, Store

log = logging.getLogger("stack.login")
# What parsing or reading a hostile body can raise: JSON errors and UnicodeDecodeError are ValueErrors, a
# body nested a thousand deep is a RecursionError, a Content-Type charset nobody knows is a LookupError.
_BAD_BODY = (ValueError, RecursionError, LookupError)
# How long a login over the admission limit may wait in the UL for a place before it is deferred (429), and
# what it must leave of its client's deadline for the login itself.
HOLD_S, HOLD_MARGIN_S = 1.0, 1.5


class Routes:
    """The HTTP surface of a site's UL; mixed into UnifiedLogin, whose ``__init__`` sets the state below
    (login, allocation and switch orders from stack/login/server.py, the peer's from stack/login/peer.py)."""

    site: str
    secret: str
    directory: Directory
    store: Store
    agent_secret: str | None
    reconciled: bool
    peer_up: bool | None
    started: float
    cti_admin: CtiAdmin
    counters: dict[str, int]
    clock_skew: float
    admission: Admission

    def app(self) -> web.Application:
        # The site's admission control (stack/login/admission.py): one per application, so a UL restarted
        # in-process starts with a fresh limit, as a restarted process does.
        self.admission = Admission()
        self.counters.setdefault("deferred", 0)
        # 4 MiB: /v1/sync carries every session row (1.48 MB at 10,000 agents); anything larger is a JSON 413
        app = web.Application(client_max_size=4 * 1024 * 1024, middlewares=[_refuse_bad_input])
        app.add_routes(
            [
                web.get("/v1/health", self.h_health),
                web.post("/v1/login", self.h_login),
                web.post("/v1/logout", self.h_logout),
                web.post("/v1/allocate", self.h_allocate),
                web.post("/v1/fence", self.h_fence),
                web.post("/v1/sync", self.h_sync),
                web.get("/v1/epoch/{agent}", self.h_epoch),
                web.post("/v1/epochs", self.h_epochs),
                web.get("/v1/sessions", self.h_sessions),
                web.get("/v1/rules", self.h_rules),
                web.post("/v1/rules", self.h_rule_add),
                web.delete("/v1/rules/{id}", self.h_rule_remove),
                web.post("/v1/rules/{id}", self.h_rule_update),
            ]
        )
        app.on_startup.append(self._on_startup)
        app.on_cleanup.append(self._on_cleanup)
        return app

    async def _signed(self, request: web.Request) -> dict[str, Any]:
        body = await request.read()
        why = auth.request_refusal(self.secret, request.method, request.path, body, request.headers)
        if why is not None:  # "replayed" is logged by auth; the reason tells an honest client what to fix
            raise web.HTTPForbidden(
                text=json.dumps({"error": "forbidden", "reason": why}), content_type="application/json"
            )
        try:
            parsed = json.loads(body or b"{}")
        except _BAD_BODY:
            raise _bad("body is not JSON") from None
        if not isinstance(parsed, dict):
            raise _bad("body must be a JSON object")
        return parsed

    @staticmethod
    async def _json(request: web.Request) -> dict[str, Any]:
        try:
            body = await request.json()
        except _BAD_BODY:
            raise _bad("body is not JSON") from None
        if not isinstance(body, dict):
            raise _bad("body must be a JSON object")
        return body

    async def h_health(self, request: web.Request) -> web.Response:
        active = sum(1 for s in self.store.sessions.values() if s.site == self.site and s.status == "active")
        return web.json_response(
            {
                "ok": True,
                "site": self.site,
                "reconciled": self.reconciled,
                "peer": {None: "unknown", True: "up", False: "down"}[self.peer_up],
                "sessions": active,
                "rules": len(self.store.live_rules()),
                "started": self.started,
                "counters": self.counters,
                "admission": self.admission.view(),
            }
        )

    async def h_login(self, request: web.Request) -> web.Response:
        body = await self._json(request)
        agent = _agent(self.directory, body)
        password = body.get("password")
        want = None
        if agent is not None and self.agent_secret is not None:
            want = auth.derive_password(self.agent_secret, agent.id)
        good = (
            agent is not None
            and isinstance(password, str)
            and (want is None or auth.same(password, want))  # constant time: no timing oracle on it
        )
        if not good or agent is None:
            self.counters["refused"] += 1
            return web.json_response({"error": "bad_credentials"}, status=401)
        avoid = body.get("avoid") or []
        if not isinstance(avoid, list):
            raise _bad("avoid must be a list of site codes")
        if self._too_late(body, agent.id):
            return web.json_response({"error": "deadline_passed"}, status=408)
        # A login over the limit waits in the UL for a place up to HOLD_S (and never past its client's
        # deadline less the time a login takes), then is deferred with a slot (stack/login/admission.py).
        deadline = body.get("deadline")
        hold = HOLD_S
        if isinstance(deadline, int | float) and not isinstance(deadline, bool):
            hold = min(hold, float(deadline) - time.time() - HOLD_MARGIN_S)
        decision = await self.admission.wait_turn(agent.id, hold)
        if not decision.admitted:
            return self._deferred(decision)
        quiet = body.get("left")
        try:
            reg = await self.login(agent, [str(s) for s in avoid], quiet if isinstance(quiet, dict) else None)
        finally:
            self.admission.done(decision)
        return web.json_response(reg)

    def _deferred(self, decision: Decision) -> web.Response:
        """429 with when to come back: ``Retry-After`` in whole seconds (HTTP's unit, rounded up) and
        ``retry_after`` in the body to the millisecond, with the ticket that keeps the agent's place. A
        deferral is not a refusal: nothing was allocated, and the client comes back (docs/performance.md)."""
        self.counters["deferred"] += 1
        after = float(decision.retry_after or 0.0)
        body = {"error": "deferred", "retry_after": round(after, 3), "ticket": decision.ticket,
                "position": decision.position}  # fmt: skip
        return web.json_response(body, status=429, headers={"Retry-After": str(max(1, math.ceil(after)))})

    async def h_logout(self, request: web.Request) -> web.Response:
        body = await self._json(request)
        token = body.get("token")
        try:
            claims = auth.verify(self.secret, token if isinstance(token, str) else "")
        except auth.TokenError as err:
            return web.json_response({"error": err.code}, status=401)
        except TypeError:  # a non-ASCII signature: hmac.compare_digest refuses to compare it
            return web.json_response({"error": "token_invalid"}, status=401)
        row = self.store.sessions.get(claims["agent"])
        if row is None or row.epoch != claims["epoch"] or row.site != self.site:
            return web.json_response({"ok": False, "reason": "not the current session"})
        row = SessionRow(row.agent, row.site, row.epoch, row.extension, "logged_out", time.time(), row.via)
        self.store.put_session(row)
        with contextlib.suppress(PeerUnavailable):
            await self._peer("POST", "/v1/fence", row.view())
        return web.json_response({"ok": True})

    def _too_late(self, body: dict[str, Any], agent: str) -> bool:
        """True when the request arrived after the deadline its sender gave (plus the clock skew allowed):
        its sender gave up (a cut held the request back, TCP delivered it when the cut healed), and a
        session allocated now would be a ghost whose newer epoch later fences the agent's real one at the
        other site (explore-82: 7 agents lost). Nothing is allocated."""
        deadline = body.get("deadline")
        if deadline is None:
            return False
        if isinstance(deadline, bool) or not isinstance(deadline, int | float):
            raise _bad("deadline must be a number (seconds since the epoch)")
        if time.time() <= float(deadline) + self.clock_skew:
            return False
        self.counters["late"] += 1
        log.info("ul %s: a login of %s arrived after its deadline: nothing allocated", self.site, agent)
        return True

    async def h_allocate(self, request: web.Request) -> web.Response:
        body = await self._signed(request)
        agent = _agent(self.directory, body)
        if agent is None:
            return web.json_response({"error": "unknown_agent"}, status=404)
        if self._too_late(body, agent.id):
            return web.json_response({"error": "deadline_passed"}, status=408)
        try:
            hold = max(0.0, float(body.get("hold") or 0.0))
        except (TypeError, ValueError):
            raise _bad("hold must be a number") from None
        if not math.isfinite(hold):
            raise _bad("hold must be a finite number")
        # Never deferred (the requesting UL admitted the login and would fall back to allocating at home),
        # but in flight and timed here: a site busy with the peer's allocations admits fewer of its own.
        tracked = self.admission.track()
        try:
            reg = await self.allocate_here(agent, "remote", tell_peer=False, hold=hold)
        finally:
            self.admission.done(tracked)
        self.counters["login"] += 1
        return web.json_response(reg)

    async def h_fence(self, request: web.Request) -> web.Response:
        row = _session_row(await self._signed(request))
        old = self.store.merge_session(row)
        cur = self.store.sessions.get(row.agent)
        dropped = True  # nothing active here to drop
        if old is not None and old.site == self.site and old.status == "active" and row.site != self.site:
            # Synchronous: the peer activates the agent only once this site's CTI has dropped it.
            self.counters["fenced"] += 1
            dropped = await self.cti_admin.fence(row.agent, row.epoch, row.site, row.extension)
        stale = old is None and cur is not None and cur.epoch > row.epoch
        return web.json_response(
            {"ok": True, "stale": stale, "epoch": cur.epoch if cur else row.epoch, "dropped": dropped}
        )

    async def h_sync(self, request: web.Request) -> web.Response:
        body = await self._signed(request)
        if "sessions" not in body:  # a rule replication: nothing to send back
            await self._merge(body)
            return web.json_response({"ok": True})
        mine = self.snapshot()
        await self._merge(body)
        # A full exchange is a reconciliation in both directions: the peer is up and we are in step.
        self.reconciled, self.peer_up = True, True
        return web.json_response(mine)

    def _epoch_view(self, agent: str) -> dict[str, Any]:
        row = self.store.sessions.get(agent)
        if row is None:
            return {"known": False, "agent": agent}
        return {"known": True, "agent": agent, "site": row.site, "epoch": row.epoch, "status": row.status}

    async def h_epoch(self, request: web.Request) -> web.Response:
        out = self._epoch_view(request.match_info["agent"])
        return web.json_response({**out, "reconciled": self.reconciled, "started": self.started})

    async def h_epochs(self, request: web.Request) -> web.Response:
        body = await self._json(request)
        agents = body.get("agents", [])
        if not isinstance(agents, list):
            raise _bad("agents must be a list of agent ids")
        out = {}
        for a in agents:
            row = self.store.sessions.get(a) if isinstance(a, str) else None
            if row is not None:
                out[row.agent] = {"site": row.site, "epoch": row.epoch, "status": row.status}
        return web.json_response({"agents": out, "reconciled": self.reconciled, "started": self.started})

    async def h_sessions(self, request: web.Request) -> web.Response:
        everything = request.query.get("all") in ("1", "true", "yes")
        rows = [
            s.view()
            for s in self.store.sessions.values()
            if everything or (s.site == self.site and s.status == "active")
        ]
        return web.json_response({"site": self.site, "reconciled": self.reconciled, "sessions": rows})

    async def h_rules(self, request: web.Request) -> web.Response:
        everything = request.query.get("all") in ("1", "true", "yes")
        rules = self.store.rules.values() if everything else self.store.live_rules()
        return web.json_response({"site": self.site, "rules": [r.view() for r in rules]})

    async def h_rule_add(self, request: web.Request) -> web.Response:
        body = await self._signed(request)
        scope, value, target = body.get("scope"), body.get("value"), body.get("target")
        if scope not in SCOPES:
            raise _bad(f"scope must be one of {SCOPES}")
        if not isinstance(value, str) or not value:
            raise _bad("value must be a non-empty string")
        if target not in self.directory.sites:
            raise _bad(f"target must be one of {self.directory.sites}")
        rule = self.store.add_rule(scope, value, target, bool(body.get("enabled", True)))
        replicated = await self._replicate(rule)
        moved = await self.order_switch(rule)
        return web.json_response({"rule": rule.view(), "replicated": replicated, "ordered_here": moved})

    async def h_rule_update(self, request: web.Request) -> web.Response:
        body = await self._signed(request)
        rule = self.store.rules.get(request.match_info["id"])
        if rule is None or rule.removed:
            return web.json_response({"error": "no such rule"}, status=404)
        if "enabled" in body:
            rule.enabled = bool(body["enabled"])
        rule.updated = max(time.time(), rule.updated + 1e-3)
        self.store.put_rule(rule)
        replicated = await self._replicate(rule)
        moved = await self.order_switch(rule)
        return web.json_response({"rule": rule.view(), "replicated": replicated, "ordered_here": moved})

    async def h_rule_remove(self, request: web.Request) -> web.Response:
        await self._signed(request)
        rule = self.store.rules.get(request.match_info["id"])
        if rule is None or rule.removed:
            return web.json_response({"error": "no such rule"}, status=404)
        rule.removed, rule.enabled = True, False
        rule.updated = max(time.time(), rule.updated + 1e-3)
        self.store.put_rule(rule)
        replicated = await self._replicate(rule)
        return web.json_response({"rule": rule.view(), "replicated": replicated})


def _bad(text: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(text=json.dumps({"error": text}), content_type="application/json")


def _agent(directory: Directory, body: dict[str, Any]) -> Any:
    """The directory's agent named by the body's ``agent`` (a string), or None."""
    agent = body.get("agent")
    return directory.agents.get(agent) if isinstance(agent, str) else None


_ROW_TYPES: dict[str, Any] = {
    "agent": str, "site": str, "epoch": int, "extension": str, "status": str, "since": int | float,
    "via": str,
}  # fmt: skip


def _session_row(raw: dict[str, Any]) -> SessionRow:
    """A peer's session row, every field of its type (a wrong one would reach the store): else a 400."""
    for name, kind in _ROW_TYPES.items():
        value = raw.get(name)
        if name == "via" and value is None:
            continue
        if not isinstance(value, kind) or isinstance(value, bool):
            raise _bad(f"session row: {name} missing or not a {getattr(kind, '__name__', 'number')}")
    return SessionRow(**{k: raw[k] for k in SessionRow.__dataclass_fields__ if k in raw})


class _Throttled:
    """A warning at most every ``every`` seconds, with how many were held back: a garbage flood is hundreds
    of bad requests a second, and a line for each would flood the log instead (stack/common/limits.py)."""

    def __init__(self, every: float = 5.0) -> None:
        self.every, self.last, self.held = every, float("-inf"), 0

    def note(self, what: str) -> None:
        now = time.monotonic()
        if now - self.last < self.every:
            self.held += 1
            return
        log.warning("ul: %s%s", what, f" (and {self.held} more since the last line)" if self.held else "")
        self.last, self.held = now, 0


_BAD_LOG = _Throttled()


@web.middleware
async def _refuse_bad_input(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """A request whose contents a handler could not use is a 400 with the reason, as the CTI answers
    bad_request: never a 500 with a traceback (the handlers check what they can; this is the net)."""
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except (KeyError, TypeError, AttributeError, *_BAD_BODY) as err:
        _BAD_LOG.note(f"{request.method} {request.path}: bad request ({type(err).__name__})")
        detail = f"{type(err).__name__}: {str(err)[:200]}"
        return web.json_response({"error": "bad_request", "detail": detail}, status=400)
