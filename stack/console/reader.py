"""One read of one site: its UL over HTTP, its CTI over the CTI protocol, its PBX over its management RPC.

Why each part on its own wire, as the harness reads them: the console must show what each part says, and a
part that does not answer must cost only its own row ("cannot see ntg's CTI"), never the page. Every
failure becomes a :class:`Part` with ``ok`` False and a one-line reason; nothing here raises.
An endpoint a UL does not have yet (``/v1/ramps``, ``/v1/campaigns``: issue 14, items 1 and 4) reads as
``None``, which the page shows as "not available on this UL".
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from stack.console.config import SiteEndpoints
from stack.cti.client import CtiError, query

# What a read of a part that does not answer can raise (the reason is shown, the page goes on).
_UNREACHABLE = (TimeoutError, aiohttp.ClientError, OSError, ValueError, CtiError)


class Refused(Exception):
    """The part answered, but not with what was asked (an HTTP error, a JSON-RPC error, a wrong shape)."""


@dataclass
class Part:
    """What one read of one part (UL, CTI or PBX) of a site gave: its data, or why not."""

    ok: bool
    data: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    configured: bool = True
    at: float = field(default_factory=time.time)


def reason(err: BaseException) -> str:
    """One line a person can read: what failed, without a traceback."""
    if isinstance(err, TimeoutError):
        return "no answer (timeout)"
    if isinstance(err, aiohttp.ClientConnectorError):
        return f"connection failed: {err.os_error.strerror or err.os_error}"
    if isinstance(err, CtiError):
        return "connection refused" if err.refused else f"CTI: {err}"
    text = str(err) or type(err).__name__
    return text.splitlines()[0][:200]


class SiteReader:
    """Reads every part of one site with a shared HTTP session; ``timeout`` bounds each part's read."""

    def __init__(self, site: SiteEndpoints, http: aiohttp.ClientSession, timeout: float = 1.0) -> None:
        self.site, self.http = site, http
        self.timeout = timeout
        self._http_timeout = aiohttp.ClientTimeout(total=timeout)

    async def read(self) -> dict[str, Part]:
        ul, cti, pbx = await asyncio.gather(self.read_ul(), self.read_cti(), self.read_pbx())
        return {"ul": ul, "cti": cti, "pbx": pbx}

    async def _get(self, path: str, optional: bool = False) -> dict[str, Any] | None:
        assert self.site.ul is not None
        async with self.http.get(self.site.ul + path, timeout=self._http_timeout) as r:
            if optional and r.status in (404, 405):
                return None
            body = await r.json(content_type=None)
            if r.status != 200 or not isinstance(body, dict):
                raise Refused(f"{path} answered HTTP {r.status}")
            return body

    async def read_ul(self) -> Part:
        if self.site.ul is None:
            return Part(False, error="not configured", configured=False)
        try:
            health, sessions, rules, ramps, campaigns = await asyncio.gather(
                self._get("/v1/health"),
                self._get("/v1/sessions"),
                self._get("/v1/rules"),
                self._get("/v1/ramps", optional=True),
                self._get("/v1/campaigns", optional=True),
            )
        except (*_UNREACHABLE, Refused) as err:
            return Part(False, error=reason(err))
        data = {"health": health, "sessions": (sessions or {}).get("sessions", []),
                "rules": (rules or {}).get("rules", []), "ramps": ramps, "campaigns": campaigns}  # fmt: skip
        return Part(True, data)

    async def read_cti(self) -> Part:
        if self.site.cti is None:
            return Part(False, error="not configured", configured=False)
        host, port = self.site.cti
        try:
            reply = await query(host, port, {"type": "sessions"}, timeout=self.timeout)
        except _UNREACHABLE as err:
            return Part(False, error=reason(err))
        if not isinstance(reply.get("sessions"), list):
            return Part(False, error="the CTI's sessions reply has no sessions list")
        return Part(True, {"pbx_link": reply.get("pbx_link"), "sessions": reply["sessions"],
                           "expired": reply.get("expired")})  # fmt: skip

    async def _rpc(self, method: str, *params: Any) -> Any:
        assert self.site.pbx is not None
        payload = {"jsonrpc": "2.0", "method": method, "params": list(params), "id": 1}
        async with self.http.post(self.site.pbx, json=payload, timeout=self._http_timeout) as r:
            if r.status == 403:
                raise Refused("refused by the PBX RPC (HTTP 403): this host is not among its clients")
            reply = await r.json(content_type=None)
        if not isinstance(reply, dict) or "result" not in reply:
            err = reply.get("error") if isinstance(reply, dict) else None
            raise Refused(f"{method}: {err.get('message') if isinstance(err, dict) else 'not JSON-RPC'}")
        return reply["result"]

    async def read_pbx(self) -> Part:
        """Alive when its RPC answers ``core.uptime``; registered users from ``stats.get_statistics``
        (Kamailio's own count: one cheap call whatever the size of the location table; asked by the bare
        name, which Kamailio 5.6 answers ``["usrloc:registered_users = N"]``, where the qualified name
        answers ``[]``)."""
        if self.site.pbx is None:
            return Part(False, error="not configured", configured=False)
        try:
            uptime, stats = await asyncio.gather(
                self._rpc("core.uptime"), self._rpc("stats.get_statistics", "registered_users")
            )
        except (*_UNREACHABLE, Refused) as err:
            return Part(False, error=reason(err))
        registered = None
        for line in stats if isinstance(stats, list) else []:
            name, _, value = str(line).partition(" = ")
            if name.strip() == "usrloc:registered_users" and value.strip().isdigit():
                registered = int(value)
        up = uptime.get("uptime") if isinstance(uptime, dict) else None
        return Part(True, {"uptime": up, "registered": registered})
