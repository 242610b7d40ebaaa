"""Readers of the devices' own management protocols: a PBX's registrations, a CTI's sessions.

Kamailio JSON-RPC ``ul.dump`` on the PBX's management address (the full dump: ``ul.dump brief`` gives
AoRs without contacts on 5.6.3, so a second contact would hide), and the CTI ``sessions`` query
(docs/cti-protocol.md). They work against a contact center that is not ours.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request
from typing import Any

__all__ = [
    "ObserveError",
    "cti_query",
    "cti_sessions",
    "jsonrpc",
    "last_reply_at",
    "parse_ul_dump",
    "pbx_registrations",
    "reset_reply_clock",
]

# When the last byte of this thread's latest management reply arrived: a snapshot is stamped with it, not
# with the (later) moment it was parsed and written, which under load can trail by tens of milliseconds and
# make a table built before a fence look as if it were read after it.
_received = threading.local()


class ObserveError(Exception):
    """A device did not answer its management query (a lab fact, recorded, never a verdict by itself)."""


def reset_reply_clock() -> None:
    """Forget when this thread's last reply arrived (before a timed read)."""
    _received.t = None


def last_reply_at() -> float | None:
    """When the last byte of this thread's latest management reply arrived (monotonic), if known."""
    return getattr(_received, "t", None)


def jsonrpc(url: str, method: str, *params: Any, timeout: float = 1.0) -> Any:
    """One Kamailio JSON-RPC 2.0 call over HTTP; the ``result``, or ObserveError."""
    body = json.dumps({"jsonrpc": "2.0", "method": method, "params": list(params), "id": 1}).encode()
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            raw = r.read()
            _received.t = time.monotonic()
            reply = json.loads(raw)
    except urllib.error.HTTPError as e:
        try:
            reply = json.loads(e.read())
        except ValueError:
            raise ObserveError(f"{url}: HTTP {e.code}") from None
    except (OSError, ValueError) as e:
        raise ObserveError(f"{url}: {e}") from None
    if not isinstance(reply, dict) or "error" in reply:
        err = reply.get("error") if isinstance(reply, dict) else reply
        raise ObserveError(f"{url}: {method}: {err}")
    return reply.get("result")


def parse_ul_dump(result: Any) -> list[dict[str, Any]]:
    """``ul.dump`` (full) -> ``[{"extension", "contact", "expires"}]``, one entry per contact."""
    out: list[dict[str, Any]] = []
    for dom in (result or {}).get("Domains") or []:
        for aor in (dom.get("Domain") or {}).get("AoRs") or []:
            info = aor.get("Info") or aor
            ext = info.get("AoR")
            for c in info.get("Contacts") or []:
                contact = c.get("Contact") or {}
                out.append(
                    {
                        "extension": str(ext),
                        "contact": contact.get("Address"),
                        "expires": contact.get("Expires"),
                    }
                )
    return out


def pbx_registrations(url: str, timeout: float = 1.0) -> list[dict[str, Any]]:
    """Every contact in a PBX's location table."""
    return parse_ul_dump(jsonrpc(url, "ul.dump", timeout=timeout))


def cti_query(host: str, port: int, msg: dict[str, Any], timeout: float = 1.0) -> dict[str, Any]:
    """One CTI request on a fresh connection (newline-delimited JSON); its reply."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.settimeout(timeout)
            s.sendall(json.dumps(msg).encode() + b"\n")
            buf = b""
            while not buf.endswith(b"\n"):
                chunk = s.recv(1 << 20)
                if not chunk:
                    break
                buf += chunk
            _received.t = time.monotonic()
    except OSError as e:
        raise ObserveError(f"cti {host}:{port}: {e}") from None
    try:
        reply = json.loads(buf)
    except ValueError:
        raise ObserveError(f"cti {host}:{port}: no JSON reply ({len(buf)} bytes)") from None
    if not isinstance(reply, dict) or reply.get("type") == "error":
        raise ObserveError(f"cti {host}:{port}: {reply}")
    return reply


def cti_sessions(host: str, port: int, timeout: float = 1.0) -> list[dict[str, Any]]:
    """Every session a CTI holds, trimmed to what the checkers read."""
    reply = cti_query(host, port, {"type": "sessions", "id": 1}, timeout)
    keep = ("agent", "state", "epoch", "extension", "linked", "phone")
    return [{k: s[k] for k in keep if k in s} for s in reply.get("sessions") or []]
