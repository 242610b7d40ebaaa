"""``python -m stack.login --site sha --bind ADDR:PORT --db PATH --topology FILE --peer URL --cti HOST:PORT
--pbx HOST:PORT --secret-env VAR [--agent-secret-env VAR] [--sip-secret-env VAR]``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys

from aiohttp import web

from stack.common import directory
from stack.common.addr import hostport
from stack.common.loop import run_main
from stack.login.server import UnifiedLogin
from stack.login.store import Store


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m stack.login", description="Site unified login")
    ap.add_argument("--site", required=True)
    ap.add_argument("--bind", required=True, type=hostport, help="ADDR:PORT of the HTTP API")
    ap.add_argument(
        "--also-listen",
        action="append",
        default=[],
        metavar="ADDR",
        help="another address for the HTTP API (same port), e.g. the host's management address",
    )
    ap.add_argument("--db", required=True, help="SQLite file for sessions and rules")
    ap.add_argument("--topology", required=True, help="topology YAML (agent directory)")
    ap.add_argument("--peer", default=None, help="the other site's UL, e.g. http://198.18.2.30:8080")
    ap.add_argument("--cti", required=True, type=hostport, help="this site's CTI HOST:PORT")
    ap.add_argument("--pbx", required=True, type=hostport, help="this site's PBX registrar HOST:PORT")
    ap.add_argument("--secret-env", required=True, help="variable holding the shared lab secret")
    ap.add_argument("--agent-secret-env", default=None, help="variable from which agent passwords derive")
    ap.add_argument("--sip-secret-env", default=None, help="variable from which extension passwords derive")
    ap.add_argument("--token-ttl", type=float, default=12 * 3600.0)
    ap.add_argument("--peer-interval", type=float, default=1.0, help="seconds between peer health checks")
    ap.add_argument("--lease", type=float, default=2.5, help="the CTIs' session lease (seconds)")
    ap.add_argument(
        "--lease-margin", type=float, default=1.0, help="added to the lease for an unconfirmed fence"
    )
    ap.add_argument("--log-level", default="INFO")
    return ap.parse_args(argv)


def _env(name: str | None, required: bool) -> str | None:
    if name is None:
        return None
    value = os.environ.get(name)
    if required and not value:
        print(f"error: environment variable {name} is not set", file=sys.stderr)
        sys.exit(2)
    return value


async def run(args: argparse.Namespace) -> None:
    ul = UnifiedLogin(
        args.site,
        _env(args.secret_env, True) or "",
        directory.load(args.topology),
        Store(args.db),
        cti=args.cti,
        pbx=args.pbx,
        peer_url=args.peer,
        agent_secret=_env(args.agent_secret_env, True),
        sip_secret=_env(args.sip_secret_env, True),
        token_ttl=args.token_ttl,
        peer_interval=args.peer_interval,
        lease=args.lease,
        lease_margin=args.lease_margin,
    )
    runner = web.AppRunner(ul.app(), access_log=None)
    await runner.setup()
    for addr in [args.bind[0], *args.also_listen]:
        await web.TCPSite(runner, addr, args.bind[1], backlog=1024).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"READY ul {args.site} {args.bind[0]}:{args.bind[1]}", flush=True)
    await stop.wait()
    await runner.cleanup()
    ul.store.close()


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    run_main(run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
