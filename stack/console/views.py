"""The console's pages, its live stream and its two actions (add, remove a planned switch).

Why server-rendered fragments over SSE: the browser needs no logic of its own (htmx swaps the fragment the
server sends on each read), the page works the same on a lab machine without internet (htmx is vendored in
static/), and a viewer sees a change one read after it happened. Every action answers a fragment for htmx
and a redirect for a plain form post, so the console also works with scripts off (without live updates).
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any

import aiohttp
import aiohttp_jinja2
from aiohttp import web
from aiohttp_session import get_session, new_session
from aiohttp_sse import EventSourceResponse

from stack.console.accounts import Accounts
from stack.console.collector import Collector
from stack.console.config import ConsoleConfig
from stack.console.security import PREFIX, USER, csrf_token, identity
from stack.console.switches import SwitchRefused, add_rule, check_rule, remove_rule

log = logging.getLogger("stack.console")

COLLECTOR = web.AppKey("console_collector", Collector)
CONFIG = web.AppKey("console_config", ConsoleConfig)
HTTP = web.AppKey("console_http", aiohttp.ClientSession)
RULE_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
STREAM_WAIT = 15.0  # seconds a stream waits for a read before sending the same view again (keeps it open)


async def _context(request: web.Request, **extra: Any) -> dict[str, Any]:
    session = await get_session(request)
    return {
        "prefix": request.config_dict[PREFIX],
        "me": identity(request),
        "csrf": csrf_token(session),
        **extra,
    }


async def index(request: web.Request) -> web.Response:
    view = await request.config_dict[COLLECTOR].fresh()
    return aiohttp_jinja2.render_template("index.html", request, await _context(request, view=view))


async def sites(request: web.Request) -> web.Response:
    """The live part alone (what each stream event carries), for a poll or a test."""
    view = await request.config_dict[COLLECTOR].fresh()
    return aiohttp_jinja2.render_template("_sites.html", request, await _context(request, view=view))


async def events(request: web.Request) -> web.StreamResponse:
    """Server-sent events: ``sites``, the rendered live part, after every read of the sites."""
    collector = request.config_dict[COLLECTOR]
    await collector.fresh()
    collector.streams += 1
    stream = EventSourceResponse()
    try:
        await stream.prepare(request)
        gone = asyncio.ensure_future(stream.wait())  # ends when the viewer does (its ping fails)
        version = -1
        while stream.is_connected() and not collector.closing:
            if collector.version != version:
                version = collector.version
                ctx = await _context(request, view=collector.view)
                await stream.send(aiohttp_jinja2.render_string("_sites.html", request, ctx), event="sites")
            newer = asyncio.ensure_future(collector.wait_newer(version, STREAM_WAIT))
            await asyncio.wait((newer, gone), return_when=asyncio.FIRST_COMPLETED)
            newer.cancel()
    except (ConnectionResetError, aiohttp.ClientConnectionResetError, TimeoutError):
        pass  # the viewer went away (or stalled): nothing more to send
    finally:
        collector.streams -= 1
        collector.watch()  # a reload reconnects at once: keep reading a little longer
        if stream.prepared:
            stream.stop_streaming()
            await stream.wait()
    return stream


async def login_form(request: web.Request) -> web.Response:
    return aiohttp_jinja2.render_template("login.html", request, await _context(request, error=None))


async def login(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    user, password = str(form.get("user", "")), str(form.get("password", ""))
    accounts: Accounts = request.config_dict[CONFIG].accounts
    role = accounts.check(user, password)
    if role is None:
        log.warning("console: failed log-in as %r from %s", user[:64], request.remote)
        ctx = await _context(request, error="wrong user or password")
        return aiohttp_jinja2.render_template("login.html", request, ctx, status=401)
    session = await new_session(request)  # a new session (and CSRF token): no fixation of the old one
    session["user"], session["role"] = user, role
    csrf_token(session)
    log.info("console: %s logged in (%s) from %s", user, role, request.remote)
    raise web.HTTPSeeOther(request.config_dict[PREFIX] + "/")


async def logout(request: web.Request) -> web.StreamResponse:
    session = await get_session(request)
    session.invalidate()
    raise web.HTTPSeeOther(request.config_dict[PREFIX] + "/login")


async def _answer(request: web.Request, ok: bool, message: str) -> web.StreamResponse:
    """A fragment for htmx (then the live view is read again at once); a redirect for a plain form."""
    if ok:
        await request.config_dict[COLLECTOR].refresh()
    if request.headers.get("HX-Request") != "true":
        if not ok:
            return web.Response(status=400, text=message + "\n", content_type="text/plain")
        raise web.HTTPSeeOther(request.config_dict[PREFIX] + "/")
    ctx = await _context(request, ok=ok, message=message)
    # htmx swaps 2xx answers only: a refusal is 200 with the reason shown as one (and 4xx without htmx)
    return aiohttp_jinja2.render_template("_result.html", request, ctx)


async def rule_add(request: web.Request) -> web.StreamResponse:
    config: ConsoleConfig = request.config_dict[CONFIG]
    form = await request.post()
    scope, value, target = (str(form.get(k, "")).strip() for k in ("scope", "value", "target"))
    why = check_rule(scope, value, target, [s.code for s in config.sites])
    if why is not None:
        return await _answer(request, False, f"not sent: {why}")
    home = config.endpoints(config.home).ul
    if home is None:
        return await _answer(request, False, f"no UL configured for {config.home}")
    try:
        reply = await add_rule(request.config_dict[HTTP], home, config.secret, scope, value, target)
    except SwitchRefused as err:
        return await _answer(request, False, str(err))
    rule = reply.get("rule", {})
    user = request[USER][0]
    log.info("console: %s added rule %s: %s=%s to %s", user, rule.get("id"), scope, value, target)
    repl = "replicated to the other site" if reply.get("replicated") else "not yet replicated (peer down)"
    return await _answer(
        request, True, f"rule {rule.get('id')} added: {scope}={value} to {target}; {repl}; "
        f"{reply.get('ordered_here', 0)} online agents ordered to move from {config.home}"
    )  # fmt: skip


async def rule_remove(request: web.Request) -> web.StreamResponse:
    config: ConsoleConfig = request.config_dict[CONFIG]
    rule_id = request.match_info["id"]
    home = config.endpoints(config.home).ul
    if not RULE_ID.match(rule_id) or home is None:
        return await _answer(request, False, "no such rule")
    try:
        await remove_rule(request.config_dict[HTTP], home, config.secret, rule_id)
    except SwitchRefused as err:
        return await _answer(request, False, str(err))
    log.info("console: %s removed rule %s", request[USER][0], rule_id)
    return await _answer(request, True, f"rule {rule_id} removed")


def routes() -> list[web.AbstractRouteDef]:
    return [
        web.get("/", index),
        web.get("/sites", sites),
        web.get("/events", events),
        web.get("/login", login_form),
        web.post("/login", login),
        web.post("/logout", logout),
        web.post("/rules", rule_add),
        web.post("/rules/{id}/remove", rule_remove),
    ]
