"""The site PBX's management interface: Kamailio's JSON-RPC 2.0 over HTTP.

``POST http://<listen>:<rpc_port>/RPC`` with ``{"jsonrpc": "2.0", "method": m, "params": [positional...],
"id": 1}``; :func:`jsonrpc` wraps it and returns ``result``. HTTP on the SIP
port gets 403, other paths on the RPC port 404. Reply ``result`` shapes, captured from Kamailio 5.6.3 and
checked by tests/test_pbx.py::test_jsonrpc_shapes:

- ``core.uptime`` -> ``{"now": "Wed Nov 25 18:51:02 2026", "up_since": "<same format>", "uptime": 0}``
- ``ul.lookup ["location", "1001"]`` -> ``{"AoR": "1001", "Contacts": [{"Contact": {"Address":
  "sip:1001@127.0.0.1:25069", "Expires": 60, "Q": -1, "Call-ID": "...", "CSeq": 2, "User-Agent": "...",
  "Received": "[not set]", "Path": "[not set]", "State": "CS_NEW", "Flags": 0, "CFlags": 0,
  "Socket": "udp:127.0.0.1:25068", "Methods": 4294967295, "Ruid": "uloc-...", "Instance": "[not set]",
  "Reg-Id": 0, "Server-Id": 0, "Tcpconn-Id": -1, "Keepalive": 0, "Last-Keepalive": 1795632662,
  "KA-Roundtrip": 0, "Last-Modified": 1795632662}}]}`` ("Expires" is seconds left; times are Unix
  seconds). Not registered: HTTP 500 with ``"error": {"code": 500, "message": "AOR not found in
  location table"}`` (:func:`lookup` turns that into ``[]``).
- ``ul.dump ["brief"]`` -> ``{"Domains": [{"Domain": {"Domain": "location", "Size": 16384, "AoRs":
  [{"AoR": "1001"}, ...], "Stats": {"Records": 1, "Max-Slots": 1}}}]}`` (AORs only, no contacts;
  :func:`registered_aors`).
- ``ul.dump []`` -> the same, each AoR entry being ``{"Info": {"AoR": "1001", "HashID": <int>,
  "Contacts": [{"Contact": {<the ul.lookup fields>}}]}}`` (:func:`registrations`).
- ``stats.get_statistics ["all"]`` (or a group such as ``["usrloc:"]``) -> a flat list of strings
  ``["usrloc:registered_users = 1", "core:rcv_requests = 9", ...]`` (:func:`statistics` makes a dict).

Any failure is ``{"jsonrpc": "2.0", "error": {"code": 500, "message": "Method Not Found"}, "id": 1}``
(with HTTP status 500); :func:`jsonrpc` raises :class:`RpcError` for it.

Why a module of its own: the PBX's management interface is what the CTI, the tests and the benches read
registrations through; starting and stopping Kamailio (virtual/pbx.py) is another job.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any


class RpcError(RuntimeError):
    """A JSON-RPC error reply from Kamailio (``code`` is e.g. 404 for an unknown AOR)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{code} {message}")
        self.code = code
        self.message = message


def jsonrpc(host: str, port: int, method: str, *params: Any, timeout: float = 10.0) -> Any:
    """Call one Kamailio RPC over HTTP and return its ``result``; raises RpcError on an error reply."""
    hostport = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    payload = json.dumps({"jsonrpc": "2.0", "method": method, "params": list(params), "id": 1}).encode()
    req = urllib.request.Request(
        f"http://{hostport}/RPC", data=payload, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            reply = json.loads(resp.read())
    except urllib.error.HTTPError as err:  # Kamailio sends JSON-RPC errors with HTTP status 500
        with err:
            body = err.read()
        try:
            reply = json.loads(body or b"{}")
        except ValueError:
            raise RpcError(err.code, f"HTTP {err.code} {err.reason}") from None
    if "error" in reply:
        raise RpcError(int(reply["error"].get("code", 0)), str(reply["error"].get("message", "")))
    return reply.get("result")


def lookup(host: str, port: int, ext: str) -> list[dict[str, Any]]:
    """The contacts bound to ``ext`` (each the inner ``Contact`` object), empty when not registered."""
    try:
        res = jsonrpc(host, port, "ul.lookup", "location", ext)
    except RpcError as err:
        if "not found" in err.message.lower():
            return []
        raise
    return [c["Contact"] for c in res.get("Contacts", [])]


def registered_aors(host: str, port: int) -> set[str]:
    """Every AOR (extension) in the location table, via the cheap ``ul.dump brief``."""
    res = jsonrpc(host, port, "ul.dump", "brief")
    return {a["AoR"] for d in res.get("Domains", []) for a in d["Domain"].get("AoRs", [])}


def registrations(host: str, port: int) -> dict[str, list[dict[str, Any]]]:
    """Every AOR -> its contacts (full ``Contact`` objects), via ``ul.dump``."""
    res = jsonrpc(host, port, "ul.dump")
    out: dict[str, list[dict[str, Any]]] = {}
    for dom in res.get("Domains", []):
        for aor in dom["Domain"].get("AoRs", []):
            info = aor["Info"]
            out[info["AoR"]] = [c["Contact"] for c in info.get("Contacts", [])]
    return out


def statistics(host: str, port: int, group: str = "all") -> dict[str, int | str]:
    """``stats.get_statistics`` as a dict ``{"group:name": value}``."""
    out: dict[str, int | str] = {}
    for line in jsonrpc(host, port, "stats.get_statistics", group):
        name, _, value = str(line).partition(" = ")
        out[name.strip()] = int(value) if value.strip().lstrip("-").isdigit() else value.strip()
    return out
