"""The CTI wire protocol's framing and vocabulary (docs/cti-protocol.md is the full reference).

One JSON object per line (UTF-8, ``\\n`` terminated), at most MAX_LINE bytes and MAX_DEPTH levels of
nesting. Requests carry ``type`` and an optional ``id`` that the reply echoes; server-pushed events carry
``type: "event"`` and no ``id``.
"""

from __future__ import annotations

from typing import Any

from stack.common import fastjson

MAX_LINE = 16 * 1024
# Objects and arrays nested in one message. No message of the protocol goes past 4; a line nested a
# thousand deep parsed (orjson allows 1,024) but then broke whatever walked it (repr, logging, json), so
# deeper lines are bad_json.
MAX_DEPTH = 32
STATES = ("ready", "not_ready", "on_call")

# Error codes a reply can carry in {"type": "error", "code": ...}.
ERRORS = {
    "bad_json": "the line is not a JSON object",
    "too_large": "the line is longer than MAX_LINE; the connection is closed",
    "bad_request": "a field is missing or has the wrong type",
    "unknown_type": "no such message type",
    "not_logged_in": "this message needs a logged-in agent on the connection",
    "token_invalid": "the token is forged or malformed",
    "token_expired": "the token has expired",
    "wrong_site": "the token was issued for another site",
    "fenced": "a newer login of this agent exists (the token's epoch is old)",
    "unknown_session": "the unified login holds no session for this agent",
    "reconciling": "the unified login has restarted and not yet reconciled with its peer; retry",
    "wrong_extension": "the extension is not the one the token was issued for",
    "phone_not_registered": "the PBX has no registration for the extension",
    "pbx_unreachable": "the CTI cannot reach its PBX",
    "forbidden": "an admin message whose signature does not verify",
    "not_yet": "the token is not valid yet (nbf): the old site's lease has not surely expired; retry_after",
    "superseded": "a later login of this agent (same token) holds the session; this one was sent before it",
    "too_many_connections": "beyond a connection cap (per source or in total); the connection is closed",
    "login_timeout": "no login within the login timeout (silence before a login); the connection is closed",
}


def encode(msg: dict[str, Any]) -> bytes:
    """One wire line for ``msg``."""
    return fastjson.dumpb(msg) + b"\n"


def decode(line: bytes) -> dict[str, Any]:
    """The object on one wire line; ValueError when it is not a JSON object (or nested too deep)."""
    try:
        obj = fastjson.loads(line)
    except RecursionError:  # the standard library's json, when orjson is missing
        raise ValueError("nested too deep") from None
    if not isinstance(obj, dict):
        raise ValueError("not a JSON object")
    # Depth never exceeds the number of brackets: only a line with many is walked (cheap, C-speed count).
    if line.count(b"{") + line.count(b"[") > MAX_DEPTH and depth(obj) > MAX_DEPTH:
        raise ValueError(f"nested deeper than {MAX_DEPTH}")
    return obj


def depth(obj: Any) -> int:
    """Levels of objects and arrays in ``obj`` (0 for a scalar), walked without recursion; stops counting
    once past MAX_DEPTH."""
    deepest = 0
    todo: list[tuple[Any, int]] = [(obj, 1)] if isinstance(obj, dict | list) else []
    while todo:
        item, level = todo.pop()
        deepest = max(deepest, level)
        if level > MAX_DEPTH:
            break
        for child in item.values() if isinstance(item, dict) else item:
            if isinstance(child, dict | list):
                todo.append((child, level + 1))
    return deepest


def echo_id(req: dict[str, Any]) -> dict[str, Any]:
    """``{"id": ...}`` of the request, to spread into its reply (empty when the request has none)."""
    return {"id": req["id"]} if "id" in req else {}


def error(code: str, req: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    """An error reply echoing the request's id."""
    out: dict[str, Any] = {"type": "error", "code": code, "message": ERRORS.get(code, code), **extra}
    if req is not None and "id" in req:
        out["id"] = req["id"]
    return out
