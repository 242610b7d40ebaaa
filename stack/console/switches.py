"""Planned switches changed from the console: through the home UL's signed rule API, as ``hil switch`` does.

Why over HTTP to the UL and not into its store: the UL is the authority on rules (it validates them,
replicates them to the peer and orders its CTI to move the agents a rule sends away); the console is one
more client of ``POST /v1/rules`` and ``DELETE /v1/rules/{id}`` (docs/cti-protocol.md), signed with the lab
secret, each request signed anew (the UL refuses a signature it has seen).
"""

from __future__ import annotations

import json
from typing import Any

import aiohttp

from stack.common import auth

SCOPES = ("system", "region", "skill_group", "agent")  # the UL's rule scopes (stack/login/store.py)


class SwitchRefused(Exception):
    """The UL refused the change or could not be reached; the message says why, for the operator."""


async def _signed(
    http: aiohttp.ClientSession, base: str, secret: str, method: str, path: str, body: dict[str, Any] | None
) -> dict[str, Any]:
    data = json.dumps(body).encode() if body is not None else b""
    headers = {"Content-Type": "application/json", **auth.sign_request(secret, method, path, data)}
    try:
        async with http.request(
            method, base + path, data=data or None, headers=headers, timeout=aiohttp.ClientTimeout(total=10)
        ) as r:
            reply = await r.json(content_type=None)
            status = r.status
    except (TimeoutError, aiohttp.ClientError, OSError, ValueError) as err:
        raise SwitchRefused(f"the UL at {base} cannot be reached: {err or type(err).__name__}") from None
    if status != 200 or not isinstance(reply, dict):
        detail = reply.get("reason") or reply.get("error") if isinstance(reply, dict) else reply
        raise SwitchRefused(f"the UL refused it (HTTP {status}): {detail}")
    return reply


def check_rule(scope: str, value: str, target: str, sites: list[str]) -> str | None:
    """Why a rule from the form cannot be sent (None: it can); the UL checks again."""
    if scope not in SCOPES:
        return f"scope must be one of {', '.join(SCOPES)}"
    if not value or len(value) > 128 or not value.isprintable():
        return "value must be 1 to 128 printable characters"
    if target not in sites:
        return f"target must be one of {', '.join(sites)}"
    return None


async def add_rule(
    http: aiohttp.ClientSession, base: str, secret: str, scope: str, value: str, target: str
) -> dict[str, Any]:
    """The UL's answer to the new rule: ``{rule, replicated, ordered_here}``."""
    return await _signed(
        http, base, secret, "POST", "/v1/rules", {"scope": scope, "value": value, "target": target}
    )


async def remove_rule(http: aiohttp.ClientSession, base: str, secret: str, rule_id: str) -> dict[str, Any]:
    return await _signed(http, base, secret, "DELETE", f"/v1/rules/{rule_id}", None)
