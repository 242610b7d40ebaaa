"""HMAC-signed session tokens, signed service-to-service requests and derived passwords.

Why HMAC with one shared lab secret: the CTI must verify a token the UL minted without calling the UL
(offline), and the two sites' ULs and CTIs trust each other, so a symmetric key is enough. A token carries
agent, site, epoch, extension, issue and expiry time; the epoch is the fencing number (see stack/login).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any


class TokenError(Exception):
    """A token that is malformed, forged or expired; ``code`` says which for the wire."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def mint(secret: str, claims: dict[str, Any], ttl: float = 12 * 3600.0) -> str:
    """A token for ``claims`` (agent, site, epoch, ext) valid ``ttl`` seconds."""
    now = time.time()
    body = dict(claims, iat=round(now, 3), exp=round(now + ttl, 3))
    payload = _b64(json.dumps(body, separators=(",", ":"), sort_keys=True).encode())
    sig = _b64(hmac.new(secret.encode(), payload.encode(), hashlib.sha256).digest())
    return f"{payload}.{sig}"


def verify(secret: str, token: str, now: float | None = None) -> dict[str, Any]:
    """The claims of a genuine, unexpired token; raises TokenError("token_invalid"|"token_expired")."""
    if not isinstance(token, str) or token.count(".") != 1 or len(token) > 2048:
        raise TokenError("token_invalid", "token is not payload.signature")
    payload, sig = token.split(".")
    good = _b64(hmac.new(secret.encode(), payload.encode(), hashlib.sha256).digest())
    if not hmac.compare_digest(good, sig):
        raise TokenError("token_invalid", "token signature does not verify")
    try:
        claims = json.loads(_unb64(payload))
    except ValueError:
        raise TokenError("token_invalid", "token payload is not JSON") from None
    if not isinstance(claims, dict) or not {"agent", "site", "epoch", "exp"} <= claims.keys():
        raise TokenError("token_invalid", "token lacks agent, site, epoch or exp")
    if (time.time() if now is None else now) >= float(claims["exp"]):
        raise TokenError("token_expired", "token has expired")
    return claims


def derive_password(secret: str, name: str) -> str:
    """Per-name password HMAC-SHA256(secret, name)[:16]: the lab's rule for extensions and agents alike."""
    return hmac.new(secret.encode(), name.encode(), hashlib.sha256).hexdigest()[:16]


def sign_request(secret: str, method: str, path: str, body: bytes, ts: float | None = None) -> dict[str, str]:
    """Headers authenticating a UL-to-UL or admin request (method, path, body hash and time)."""
    ts_s = f"{time.time() if ts is None else ts:.3f}"
    msg = f"{method.upper()}\n{path}\n{ts_s}\n{hashlib.sha256(body).hexdigest()}".encode()
    return {"X-Hil-Time": ts_s, "X-Hil-Sig": hmac.new(secret.encode(), msg, hashlib.sha256).hexdigest()}


def check_request(secret: str, method: str, path: str, body: bytes, headers: Any, skew: float = 60.0) -> bool:
    """True when ``headers`` carry a valid, fresh signature for this request."""
    ts_s, sig = headers.get("X-Hil-Time"), headers.get("X-Hil-Sig")
    if not ts_s or not sig:
        return False
    try:
        if abs(time.time() - float(ts_s)) > skew:
            return False
    except ValueError:
        return False
    msg = f"{method.upper()}\n{path}\n{ts_s}\n{hashlib.sha256(body).hexdigest()}".encode()
    return hmac.compare_digest(hmac.new(secret.encode(), msg, hashlib.sha256).hexdigest(), sig)


def sign_message(secret: str, msg: dict[str, Any]) -> dict[str, Any]:
    """A CTI admin message with ``ts`` and ``sig`` (HMAC over the canonical JSON without ``sig``/``id``)."""
    body = dict(msg, ts=round(time.time(), 3))
    canon = json.dumps(body, separators=(",", ":"), sort_keys=True).encode()
    body["sig"] = hmac.new(secret.encode(), canon, hashlib.sha256).hexdigest()
    return body


def check_message(secret: str, msg: dict[str, Any], skew: float = 60.0) -> bool:
    """True when an admin message's ``sig`` verifies and its ``ts`` is fresh."""
    sig = msg.get("sig")
    ts = msg.get("ts")
    if not isinstance(sig, str) or not isinstance(ts, int | float) or abs(time.time() - ts) > skew:
        return False
    body = {k: v for k, v in msg.items() if k not in ("sig", "id")}  # the id is added per connection
    canon = json.dumps(body, separators=(",", ":"), sort_keys=True).encode()
    return hmac.compare_digest(hmac.new(secret.encode(), canon, hashlib.sha256).hexdigest(), sig)
