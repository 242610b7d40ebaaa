"""HMAC-signed session tokens, signed service-to-service requests and derived passwords.

Why HMAC with one shared lab secret: the CTI must verify a token the UL minted without calling the UL
(offline), and the two sites' ULs and CTIs trust each other, so a symmetric key is enough. A token carries
agent, site, epoch, extension, issue and expiry time; the epoch is the fencing number (see stack/login).
A token also carries a ``lease``: how many seconds after issue a CTI that cannot ask its UL may still
accept it on the signature alone (a stolen token must not be good for hours against a cut-off CTI).

A signed request's time is to the microsecond, so its signature is unique to it (the signature is its
nonce: two requests alike to the microsecond are one); an admin message carries a random nonce. The
receiver remembers each one it accepted for as long as the signature's time could still pass
(:class:`NonceWindow`), so a captured request cannot be replayed within its validity window.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import math
import secrets
import time
from collections import deque
from typing import Any

log = logging.getLogger("hil.auth")

SKEW = 60.0  # seconds a signature's time may be off the receiver's clock
TOKEN_LEASE = 120.0  # seconds a token is good without its UL's word (``lease`` claim)
NONCE_CAP = 65536  # nonces remembered at most: a flood beyond it is refused, not remembered


class NonceWindow:
    """The nonces accepted within the last ``2 * skew`` seconds: O(1) per check, memory bounded.

    Why twice the skew: a request's time may be up to ``skew`` behind or ahead of this clock, so it can be
    accepted during ``2 * skew`` seconds of this clock; remembered that long, a nonce is never reusable.
    """

    def __init__(self, skew: float = SKEW, cap: int = NONCE_CAP) -> None:
        self.span, self.cap = 2 * skew, cap
        self._seen: set[str] = set()
        self._order: deque[tuple[float, str]] = deque()

    def __len__(self) -> int:
        return len(self._seen)

    def admit(self, nonce: str, now: float | None = None) -> str | None:
        """None when ``nonce`` is new (now remembered); else why not: "replayed" or "replay_window_full"."""
        now = time.monotonic() if now is None else now
        order = self._order
        while order and order[0][0] <= now:
            self._seen.discard(order.popleft()[1])
        if nonce in self._seen:
            return "replayed"
        if len(self._seen) >= self.cap:
            return "replay_window_full"
        self._seen.add(nonce)
        order.append((now + self.span, nonce))
        return None


# The nonces of this process's signed HTTP requests and of its CTI admin messages: one window each, shared
# by every check in the process (a nonce is random: two servers in one process never see the same one).
REQUESTS = NonceWindow()
MESSAGES = NonceWindow()


def new_nonce() -> str:
    return secrets.token_hex(12)


def same(a: str | bytes, b: str | bytes) -> bool:
    """Constant-time equality of two secrets; False (never an exception) for mixed or non-ASCII input."""
    try:
        aa = a.encode() if isinstance(a, str) else a
        bb = b.encode() if isinstance(b, str) else b
        return hmac.compare_digest(aa, bb)
    except (TypeError, AttributeError, UnicodeEncodeError):
        return False


class TokenError(Exception):
    """A token that is malformed, forged or expired; ``code`` says which for the wire."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def mint(secret: str, claims: dict[str, Any], ttl: float = 12 * 3600.0, lease: float = TOKEN_LEASE) -> str:
    """A token for ``claims`` (agent, site, epoch, ext) valid ``ttl`` seconds, ``lease`` of them offline."""
    now = math.floor(time.time() * 1000) / 1000  # issued at, never after now (a lease of 0 is over at once)
    body = dict(claims, iat=now, exp=round(now + ttl, 3), lease=round(min(lease, ttl), 3))
    payload = _b64(json.dumps(body, separators=(",", ":"), sort_keys=True).encode())
    sig = _b64(hmac.new(secret.encode(), payload.encode(), hashlib.sha256).digest())
    return f"{payload}.{sig}"


def verify(secret: str, token: str, now: float | None = None) -> dict[str, Any]:
    """The claims of a genuine, unexpired token; raises TokenError("token_invalid"|"token_expired")."""
    if not isinstance(token, str) or token.count(".") != 1 or len(token) > 2048:
        raise TokenError("token_invalid", "token is not payload.signature")
    payload, sig = token.split(".")
    good = _b64(hmac.new(secret.encode(), payload.encode(), hashlib.sha256).digest())
    if not same(good, sig):
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


def within_lease(claims: dict[str, Any], now: float | None = None, default: float = TOKEN_LEASE) -> bool:
    """True while a verified token is young enough to be accepted without its UL (``iat + lease``)."""
    lease, iat = claims.get("lease", default), claims.get("iat", 0)
    if not isinstance(lease, int | float) or not isinstance(iat, int | float):
        return False
    return (time.time() if now is None else now) < float(iat) + float(lease)


def derive_password(secret: str, name: str) -> str:
    """Per-name password HMAC-SHA256(secret, name)[:16]: the lab's rule for extensions and agents alike."""
    return hmac.new(secret.encode(), name.encode(), hashlib.sha256).hexdigest()[:16]


def _request_mac(secret: str, method: str, path: str, ts_s: str, body: bytes) -> str:
    msg = f"{method.upper()}\n{path}\n{ts_s}\n{hashlib.sha256(body).hexdigest()}".encode()
    return hmac.new(secret.encode(), msg, hashlib.sha256).hexdigest()


def sign_request(secret: str, method: str, path: str, body: bytes, ts: float | None = None) -> dict[str, str]:
    """Headers authenticating a UL-to-UL or admin request (method, path, time to the microsecond and body
    hash): sign each request, and each try of it, anew; the same headers twice are a replay."""
    ts_s = f"{time.time() if ts is None else ts:.6f}"
    return {"X-Hil-Time": ts_s, "X-Hil-Sig": _request_mac(secret, method, path, ts_s, body)}


def request_refusal(
    secret: str,
    method: str,
    path: str,
    body: bytes,
    headers: Any,
    skew: float = SKEW,
    window: NonceWindow | None = REQUESTS,
) -> str | None:
    """None for a valid, fresh, first-seen signed request; else why not ("unsigned", "stale",
    "bad_signature", "replayed", "replay_window_full"). A replay is logged. Never raises."""
    ts_s, sig = headers.get("X-Hil-Time"), headers.get("X-Hil-Sig")
    if not ts_s or not sig:
        return "unsigned"
    try:
        if len(ts_s) > 32 or not abs(time.time() - float(ts_s)) <= skew:  # NaN is never fresh
            return "stale"
        good = _request_mac(secret, method, path, ts_s, body)
    except (ValueError, UnicodeEncodeError):
        return "stale"
    if not same(good, sig):
        return "bad_signature"
    why = window.admit(good) if window is not None else None  # the signature is the request's nonce
    if why is not None:
        log.warning("refused a signed %s %s of %s: %s", method.upper(), path, ts_s, why)
    return why


def check_request(secret: str, method: str, path: str, body: bytes, headers: Any, skew: float = SKEW) -> bool:
    """True when ``headers`` carry a valid, fresh signature for this request not seen before."""
    return request_refusal(secret, method, path, body, headers, skew) is None


def _message_mac(secret: str, msg: dict[str, Any]) -> str:
    body = {k: v for k, v in msg.items() if k not in ("sig", "id")}  # the id is added per connection
    canon = json.dumps(body, separators=(",", ":"), sort_keys=True).encode()
    return hmac.new(secret.encode(), canon, hashlib.sha256).hexdigest()


def sign_message(secret: str, msg: dict[str, Any]) -> dict[str, Any]:
    """A CTI admin message with ``ts``, ``nonce`` and ``sig`` (HMAC over the canonical JSON without
    ``sig``/``id``)."""
    body = dict(msg, ts=round(time.time(), 3), nonce=new_nonce())
    body["sig"] = _message_mac(secret, body)
    return body


def message_refusal(
    secret: str, msg: dict[str, Any], skew: float = SKEW, window: NonceWindow | None = MESSAGES
) -> str | None:
    """None for a valid, fresh, first-seen admin message; else why not (as :func:`request_refusal`)."""
    sig, ts, nonce = msg.get("sig"), msg.get("ts"), msg.get("nonce")
    if not isinstance(sig, str) or not isinstance(nonce, str) or not 0 < len(nonce) <= 64:
        return "unsigned"
    if isinstance(ts, bool) or not isinstance(ts, int | float) or not abs(time.time() - ts) <= skew:
        return "stale"
    try:
        good = _message_mac(secret, msg)
    except (TypeError, ValueError):
        return "bad_signature"
    if not same(good, sig):
        return "bad_signature"
    why = window.admit(nonce) if window is not None else None
    if why is not None:
        log.warning("refused an admin message %r: %s (nonce %s)", msg.get("op"), why, nonce)
    return why


def check_message(secret: str, msg: dict[str, Any], skew: float = SKEW) -> bool:
    """True when an admin message's ``sig`` verifies, its ``ts`` is fresh and its nonce is new."""
    return message_refusal(secret, msg, skew) is None
