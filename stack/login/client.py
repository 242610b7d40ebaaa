"""Client functions for the unified login's API: agent login and the planned-switch rules.

``harness/cli.py`` wraps the rule functions as ``hil switch add|list|remove``; they are synchronous
(stdlib urllib) so a CLI needs no event loop. Rule changes are signed with the shared lab secret.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from stack.common import auth


class UlError(Exception):
    """The UL refused (``status`` is the HTTP status) or could not be reached (``status`` 0)."""

    def __init__(self, status: int, body: Any) -> None:
        super().__init__(f"UL answered {status}: {body}" if status else f"UL unreachable: {body}")
        self.status = status
        self.body = body


def _call(
    base: str,
    method: str,
    path: str,
    body: dict[str, Any] | None = None,
    secret: str | None = None,
    timeout: float = 5.0,
) -> dict[str, Any]:
    data = json.dumps(body).encode() if body is not None else b""
    headers = {"Content-Type": "application/json"}
    if secret is not None:
        headers.update(auth.sign_request(secret, method, urllib.parse.urlsplit(base + path).path, data))
    req = urllib.request.Request(base.rstrip("/") + path, data=data or None, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as err:
        raw = err.read()
        try:
            detail: Any = json.loads(raw)
        except ValueError:
            detail = raw.decode(errors="replace")
        raise UlError(err.code, detail) from None
    except (urllib.error.URLError, OSError) as err:
        raise UlError(0, str(getattr(err, "reason", err))) from None


def add_rule(
    base: str, secret: str, scope: str, value: str, target: str, enabled: bool = True
) -> dict[str, Any]:
    """Add a planned-switch rule (scope: system, region, skill_group or agent); returns the UL's reply
    ``{"rule": {...}, "replicated": bool, "ordered_here": n}``."""
    return _call(
        base,
        "POST",
        "/v1/rules",
        {"scope": scope, "value": value, "target": target, "enabled": enabled},
        secret,
    )


def list_rules(base: str, include_removed: bool = False) -> list[dict[str, Any]]:
    """The rules the UL holds (each: id, scope, value, target, enabled, created, updated, removed)."""
    return _call(base, "GET", "/v1/rules" + ("?all=1" if include_removed else ""))["rules"]


def remove_rule(base: str, secret: str, rule_id: str) -> dict[str, Any]:
    """Remove a rule by id (a tombstone that replicates to the peer)."""
    return _call(base, "DELETE", f"/v1/rules/{urllib.parse.quote(rule_id)}", None, secret)


def set_rule_enabled(base: str, secret: str, rule_id: str, enabled: bool) -> dict[str, Any]:
    return _call(base, "POST", f"/v1/rules/{urllib.parse.quote(rule_id)}", {"enabled": enabled}, secret)


def sessions(base: str, include_all: bool = False) -> dict[str, Any]:
    """The sessions the UL holds (``include_all``: also the ones it knows at the peer, and logged out)."""
    return _call(base, "GET", "/v1/sessions" + ("?all=1" if include_all else ""))


def health(base: str, timeout: float = 2.0) -> dict[str, Any]:
    return _call(base, "GET", "/v1/health", timeout=timeout)


def login(base: str, agent: str, password: str, avoid: list[str] | None = None) -> dict[str, Any]:
    """Registration information for an agent (site, cti, pbx, extension credentials, token, epoch)."""
    return _call(base, "POST", "/v1/login", {"agent": agent, "password": password, "avoid": avoid or []})
