"""Speaking to a CTI as a (misbehaving) client: forged tokens, raw lines, and what comes back."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import socket
import time
from typing import Any

__all__ = ["cti_exchange", "forged_token"]


def forged_token(agent: str, site: str, extension: str, epoch: int | None = None) -> str:
    """A token shaped as the UL issues them (docs/cti-protocol.md) but signed with a key the lab never
    had: a CTI must refuse it (``token_invalid``)."""

    def b64(b: bytes) -> str:
        return base64.urlsafe_b64encode(b).rstrip(b"=").decode()

    now = int(time.time())
    claims = {"agent": agent, "site": site, "epoch": epoch or now * 1000, "ext": extension,
              "iat": now, "exp": now + 600}  # fmt: skip
    body = b64(json.dumps(claims, separators=(",", ":")).encode())
    sig = hmac.new(secrets.token_bytes(32), body.encode(), hashlib.sha256).digest()
    return f"{body}.{b64(sig)}"


def cti_exchange(host: str, port: int, lines: list[bytes], timeout: float = 2.0) -> list[Any]:
    """Send raw lines on one CTI connection and read what comes back until it goes quiet or closes:
    the replies (JSON objects, or raw bytes that are not JSON), then ``"closed"`` if the server closed."""
    out: list[Any] = []
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.settimeout(timeout)
        for line in lines:
            try:
                s.sendall(line)
            except OSError:
                out.append("closed")
                return out
        buf = b""
        while True:
            try:
                chunk = s.recv(65536)
            except TimeoutError:
                break
            except OSError:
                chunk = b""
            if not chunk:
                out.extend(_lines(buf))
                out.append("closed")
                return out
            buf += chunk
        out.extend(_lines(buf))
    return out


def _lines(buf: bytes) -> list[Any]:
    res: list[Any] = []
    for raw in buf.split(b"\n"):
        if raw.strip():
            try:
                res.append(json.loads(raw))
            except ValueError:
                res.append(raw[:200].decode(errors="replace"))
    return res
