"""The management console of all sites (issue 14, item 3), served by each site's UL under ``/console/``.

Why a sub-application of the UL's aiohttp app: it shares the UL's port and process (no other daemon to run
or to fail over) but not its middlewares: the session cookie, log-in and CSRF checks (security.py) apply to
the console's routes only, never to the agents' ``/v1/login``. It reads every site's UL, CTI and PBX on
their own wires (reader.py), only while someone watches (collector.py), and changes planned switches only
through the home UL's signed rule API (switches.py). docs/console.md says how to open it.
"""

from __future__ import annotations

from pathlib import Path

import aiohttp
import aiohttp_jinja2
import jinja2
from aiohttp import web
from aiohttp_session import setup as setup_session
from aiohttp_session.cookie_storage import EncryptedCookieStorage

from stack.console.accounts import Accounts
from stack.console.collector import Collector
from stack.console.config import ConsoleConfig, SiteEndpoints, add_console_args, console_config, parse_site
from stack.console.model import clock
from stack.console.security import PREFIX, guard
from stack.console.views import COLLECTOR, CONFIG, HTTP, routes

__all__ = [
    "Accounts",
    "ConsoleConfig",
    "SiteEndpoints",
    "add_console",
    "add_console_args",
    "console_app",
    "console_config",
    "parse_site",
]

HERE = Path(__file__).parent
COOKIE = "hil_console"


def console_app(config: ConsoleConfig, prefix: str = "/console") -> web.Application:
    """The console as an application of its own, to be mounted at ``prefix``."""
    app = web.Application(client_max_size=64 * 1024)
    storage = EncryptedCookieStorage(
        config.key, cookie_name=COOKIE, max_age=config.max_age, httponly=True, samesite="Strict", path=prefix
    )
    setup_session(app, storage)
    app.middlewares.append(guard)  # after the session middleware: it reads the session
    loader = jinja2.FileSystemLoader(HERE / "templates")
    env = aiohttp_jinja2.setup(app, loader=loader, autoescape=True, undefined=jinja2.StrictUndefined)
    env.filters["clock"] = clock
    app[PREFIX] = prefix
    app[CONFIG] = config
    collector = Collector(config)
    app[COLLECTOR] = collector
    app.add_routes(routes())
    app.router.add_static("/static/", HERE / "static", append_version=True)

    async def start(app: web.Application) -> None:
        app[HTTP] = aiohttp.ClientSession()
        await collector.start()

    async def stop(app: web.Application) -> None:
        await collector.stop()
        await app[HTTP].close()

    app.on_startup.append(start)
    app.on_shutdown.append(collector.shutdown)
    app.on_cleanup.append(stop)
    return app


def add_console(app: web.Application, config: ConsoleConfig, prefix: str = "/console") -> None:
    """Mount the console on a UL's application (before it starts): ``/console/`` on the UL's port (and
    ``/console`` redirected there)."""

    async def to_console(request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound(prefix + "/")

    app.router.add_get(prefix, to_console)  # before the sub-app, which would otherwise take it (404)
    app.add_subapp(prefix, console_app(config, prefix))
