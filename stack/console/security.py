"""Log-in, roles and CSRF for the console: every request passes :func:`guard` before its handler.

Why this way:
- The session is an encrypted cookie (aiohttp-session with Fernet): nothing to store on the UL, and a
  cookie nobody can read or forge without the key. ``SameSite=Strict`` and ``HttpOnly``; not ``Secure``,
  because the lab serves plain HTTP on its own addresses (a site behind TLS should terminate it in front).
- CSRF: one random token per session, sent back by every form (hidden field ``csrf``) and by htmx (header
  ``X-CSRF-Token``), compared in constant time; a POST without it is refused (403) before anything runs.
  The log-in form has one too (an anonymous session's), so nobody can log a browser in as someone else.
- Roles: a ``viewer`` reads; only an ``operator`` may POST anything but log-in and log-out (403).
- Not logged in: a page is redirected to the log-in form; the event stream and a POST get 401.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp_session import Session, get_session

CSRF_FIELD, CSRF_HEADER = "csrf", "X-CSRF-Token"
OPEN_PATHS = ("/login", "/static/")  # below the console's prefix: no log-in needed
ANY_ROLE_POSTS = ("/login", "/logout")
SAFE_METHODS = ("GET", "HEAD")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
PREFIX = web.AppKey("console_prefix", str)  # where the console is mounted (``/console``)
USER = web.RequestKey("console_user", tuple)  # (user, role) of the request, or None


def csrf_token(session: Session) -> str:
    """The session's CSRF token, made on first use."""
    token = session.get(CSRF_FIELD)
    if not isinstance(token, str) or len(token) < 32:
        token = secrets.token_urlsafe(32)
        session[CSRF_FIELD] = token
    return token


def _local(request: web.Request) -> str:
    """The path below the console's prefix (``/login``, ``/rules``)."""
    prefix = request.config_dict.get(PREFIX, "")
    path = request.path
    return path[len(prefix) :] if prefix and path.startswith(prefix) else path


async def _csrf_ok(request: web.Request, session: Session) -> bool:
    want = session.get(CSRF_FIELD)
    if not isinstance(want, str) or not want:
        return False
    got = request.headers.get(CSRF_HEADER)
    if not got and request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        got = str((await request.post()).get(CSRF_FIELD, ""))
    return bool(got) and secrets.compare_digest(got.encode(), want.encode())


def _refuse(status: int, text: str) -> web.Response:
    return web.Response(status=status, text=text + "\n", content_type="text/plain")


def user_of(session: Session) -> tuple[str, str] | None:
    """(user, role) of a logged-in session, else None."""
    user, role = session.get("user"), session.get("role")
    return (user, role) if isinstance(user, str) and isinstance(role, str) else None


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Log-in required (but for the log-in form and static files), CSRF on every POST, operator role for
    every POST that changes something."""
    local = _local(request)
    session = await get_session(request)
    who = user_of(session)
    if not local.startswith(OPEN_PATHS) and who is None:
        if request.method in SAFE_METHODS and local != "/events":
            raise web.HTTPFound(request.config_dict[PREFIX] + "/login")
        return _refuse(401, "log in first")
    if request.method not in SAFE_METHODS:
        if not await _csrf_ok(request, session):
            return _refuse(403, "forbidden: the form's CSRF token is missing or wrong (reload the page)")
        if local not in ANY_ROLE_POSTS and (who is None or who[1] != "operator"):
            return _refuse(403, f"forbidden: role {who[1] if who else 'none'} cannot change anything")
    request[USER] = who
    return await handler(request)


def identity(request: web.Request) -> dict[str, Any]:
    """The template's idea of who is looking."""
    who = request.get(USER)
    return {"user": who[0] if who else None, "role": who[1] if who else None,
            "operator": bool(who and who[1] == "operator")}  # fmt: skip
