"""``python -m stack.login --site sha --bind ADDR:PORT --db PATH --topology FILE --peer URL --cti HOST:PORT
--pbx HOST:PORT --secret-env VAR [--agent-secret-env VAR] [--sip-secret-env VAR]``."""

from __future__ import annotations

import argparse
import sys

from aiohttp import web

from stack.common import directory
from stack.common.addr import hostport
from stack.common.daemon import secret_from_env, serve, site_service_parser, until_signalled
from stack.login.server import UnifiedLogin
from stack.login.store import Store


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    ap = site_service_parser("python -m stack.login", "Site unified login", "HTTP API")
    ap.add_argument("--db", required=True, help="SQLite file for sessions and rules")
    ap.add_argument("--topology", required=True, help="topology YAML (agent directory)")
    ap.add_argument("--peer", default=None, help="the other site's UL, e.g. http://198.18.2.30:8080")
    ap.add_argument("--cti", required=True, type=hostport, help="this site's CTI HOST:PORT")
    ap.add_argument("--pbx", required=True, type=hostport, help="this site's PBX registrar HOST:PORT")
    ap.add_argument("--agent-secret-env", default=None, help="variable from which agent passwords derive")
    ap.add_argument("--sip-secret-env", default=None, help="variable from which extension passwords derive")
    ap.add_argument("--token-ttl", type=float, default=12 * 3600.0)
    ap.add_argument("--peer-interval", type=float, default=1.0, help="seconds between peer health checks")
    ap.add_argument("--lease", type=float, default=2.5, help="the CTIs' session lease (seconds)")
    ap.add_argument(
        "--lease-margin", type=float, default=1.0, help="added to the lease for an unconfirmed fence"
    )
    return ap.parse_args(argv)


def _optional_secret(var: str | None) -> str | None:
    return None if var is None else secret_from_env(var)


async def run(args: argparse.Namespace) -> None:
    ul = UnifiedLogin(
        args.site,
        secret_from_env(args.secret_env),
        directory.load(args.topology),
        Store(args.db),
        cti=args.cti,
        pbx=args.pbx,
        peer_url=args.peer,
        agent_secret=_optional_secret(args.agent_secret_env),
        sip_secret=_optional_secret(args.sip_secret_env),
        token_ttl=args.token_ttl,
        peer_interval=args.peer_interval,
        lease=args.lease,
        lease_margin=args.lease_margin,
    )
    runner = web.AppRunner(ul.app(), access_log=None)
    await runner.setup()
    for addr in [args.bind[0], *args.also_listen]:
        await web.TCPSite(runner, addr, args.bind[1], backlog=1024).start()
    await until_signalled(f"READY ul {args.site} {args.bind[0]}:{args.bind[1]}")
    await runner.cleanup()
    ul.store.close()


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    return serve(args, run(args))


if __name__ == "__main__":
    sys.exit(main())
