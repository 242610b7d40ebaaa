"""``python -m stack.console --site sha --bind ADDR:PORT --secret-env VAR [--topology FILE]
--console-site CODE,ul=URL,cti=HOST:PORT,pbx=URL ...``: the console alone, at ``/console/``.

Why a standalone entry as well as :func:`stack.console.add_console`: the console reads every site over the
wire, the home UL included, so it runs the same beside a UL as inside it; a site that wants the view on
another host (or a lab test before the UL is wired) starts it this way. Secrets as every stack daemon's:
the stack secret from the variable named by ``--secret-env``, users and keys from the environment.
"""

from __future__ import annotations

import argparse
import sys

from aiohttp import web

from stack.common import directory
from stack.common.daemon import secret_from_env, serve, site_service_parser, until_signalled
from stack.console import add_console, add_console_args, console_config


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    ap = site_service_parser("python -m stack.console", "Management console of all sites", "console")
    ap.add_argument("--topology", default=None, help="topology YAML (agents' skill groups)")
    add_console_args(ap)
    args = ap.parse_args(argv)
    if not args.console_site:
        ap.error("at least one --console-site is needed")
    return args


async def run(args: argparse.Namespace, secret: str) -> None:
    try:
        config = console_config(args, secret, directory.load(args.topology) if args.topology else None)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
    assert config is not None
    app = web.Application()
    add_console(app, config)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    for addr in [args.bind[0], *args.also_listen]:
        await web.TCPSite(runner, addr, args.bind[1]).start()
    await until_signalled(f"READY console {args.site} {args.bind[0]}:{args.bind[1]}")
    await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    return serve(args, run(args, secret_from_env(args.secret_env)))


if __name__ == "__main__":
    sys.exit(main())
