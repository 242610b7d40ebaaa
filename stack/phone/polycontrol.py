"""An agent client's control of a Poly-style desk phone, through the Poly UC Software REST API.

Why its own class: the Poly API is not the Yealink one (``/api/v1/...`` JSON with a ``Status`` code instead
of ``/servlet?phonecfg=...``; the server is ``reg.1.server.1.*``, not ``account.1.sip_server.1.*``), but an
agent client must not care which phone is on the desk: both are a :class:`stack.phone.control.PhoneControl`.

- ``GET /api/v1/mgmt/lineInfo`` -> the line's ``RegistrationStatus``, ``ProxyAddress`` and ``Port``;
- ``GET /api/v1/webCallControl/callStatus`` -> the call (``CallState`` Connected or Ringing), 4007 idle;
- ``POST /api/v1/mgmt/config/set`` ``{"data": {"reg.1.server.1.address": H, "reg.1.server.1.port": P}}``
  moves the line; like a real VVX it answers at once and re-registers after, so :meth:`set_server` polls.
"""

from __future__ import annotations

from typing import Any

import aiohttp

from stack.phone.control import BasicAuthHttp, settle, unreachable

__all__ = ["PolyPhoneControl"]

OK = "2000"
NO_CALL = "4007"


class PolyPhoneControl(BasicAuthHttp):
    """Control of line ``line`` of a Poly-style phone at ``base_url`` (HTTP basic auth)."""

    def __init__(self, base_url: str, username: str, password: str, *, line: int = 1, **kw: Any) -> None:
        super().__init__(base_url, username, password, **kw)
        self.line = line

    async def _call(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        async with self._http().request(
            method, self.base_url + path, json=body, headers=self._headers, timeout=self._timeout
        ) as resp:
            if resp.status == 401:
                resp.raise_for_status()
            out = await resp.json(content_type=None)
            return out if isinstance(out, dict) else {}

    async def _call_state(self) -> str:
        body = await self._call("GET", "/api/v1/webCallControl/callStatus")
        if body.get("Status") != OK:
            return "idle"
        return "in_call" if (body.get("data") or {}).get("CallState") == "Connected" else "ringing"

    async def registration(self) -> dict[str, Any]:
        try:
            body = await self._call("GET", "/api/v1/mgmt/lineInfo")
            if body.get("Status") != OK:
                raise ValueError(f"lineInfo Status {body.get('Status')}")
            line = next(x for x in body["data"] if int(x["LineNumber"]) == self.line)
            port = int(line["Port"])
            call_state = await self._call_state()
        except (TimeoutError, aiohttp.ClientError, KeyError, StopIteration, ValueError, TypeError) as err:
            return unreachable(err)
        return {
            "extension": line.get("UserID"),
            "registered": line.get("RegistrationStatus") == "registered",
            "host": line.get("ProxyAddress"),
            "port": port,
            "call_state": call_state,
        }

    async def set_server(self, host: str, port: int) -> bool:
        n = self.line
        data = {f"reg.{n}.server.1.address": host, f"reg.{n}.server.1.port": str(int(port))}
        try:
            body = await self._call("POST", "/api/v1/mgmt/config/set", {"data": data})
        except (TimeoutError, aiohttp.ClientError, ValueError):
            return False
        if body.get("Status") != OK:
            return False
        return await settle(self, host, port, self.settle_timeout)
