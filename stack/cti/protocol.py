"""The CTI wire protocol's framing and vocabulary (docs/cti-protocol.md is the full reference).

One JSON object per line (UTF-8, ``\\n`` terminated), at most MAX_LINE bytes. Requests carry ``type`` and
an optional ``id`` that the reply echoes; server-pushed events carry ``type: "event"`` and no ``id``.
"""

from __future__ import annotations

from typing import Any

from stack.common import fastjson

MAX_LINE = 16 * 1024
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
}


def encode(msg: dict[str, Any]) -> bytes:
    """One wire line for ``msg``."""
    return fastjson.dumpb(msg) + b"\n"


def decode(line: bytes) -> dict[str, Any]:
    """The object on one wire line; ValueError when it is not a JSON object."""
    obj = fastjson.loads(line)
    if not isinstance(obj, dict):
        raise ValueError("not a JSON object")
    return obj


def echo_id(req: dict[str, Any]) -> dict[str, Any]:
    """``{"id": ...}`` of the request, to spread into its reply (empty when the request has none)."""
    return {"id": req["id"]} if "id" in req else {}


def error(code: str, req: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    """An error reply echoing the request's id."""
    out: dict[str, Any] = {"type": "error", "code": code, "message": ERRORS.get(code, code), **extra}
    if req is not None and "id" in req:
        out["id"] = req["id"]
    return out
