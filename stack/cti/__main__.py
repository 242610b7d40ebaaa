"""``python -m stack.cti --site sha --bind 198.18.1.20:7000 --pbx-rpc URL --ul URL --secret-env VAR
[--pbx-events 198.18.1.20:5090] [--max-connections N] [--max-connections-per-source N] [--login-timeout S]
[--max-line BYTES] [--stall-timeout S]``."""

from __future__ import annotations

import argparse
import sys
from urllib.parse import urlsplit

from stack.common.addr import hostport
from stack.common.daemon import (
    add_connection_caps,
    secret_from_env,
    serve,
    site_service_parser,
    until_signalled,
)
from stack.cti import protocol as P
from stack.cti import server as S
from stack.cti.server import CtiServer


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    ap = site_service_parser("python -m stack.cti", "Site CTI server", "CTI protocol")
    ap.add_argument("--pbx-rpc", default=None, help="Kamailio JSON-RPC URL, e.g. http://198.18.1.10:5071/RPC")
    ap.add_argument("--ul", default=None, help="this site's unified login, e.g. http://198.18.1.30:8080")
    ap.add_argument(
        "--pbx-sip",
        default=None,
        help="PBX SIP HOST:PORT for the OPTIONS half of the liveness probe (default: the RPC host, 5060; "
        "'none' to probe over JSON-RPC only)",
    )
    ap.add_argument(
        "--pbx-events",
        default=None,
        type=hostport,
        metavar="ADDR:PORT",
        help="UDP address where the PBX pushes registration events (SIP MESSAGE); without it the CTI "
        "learns registrations by polling only",
    )
    ap.add_argument(
        "--reconcile-interval",
        type=float,
        default=30.0,
        help="with --pbx-events: seconds between the bulk dumps that reconcile the pushed view",
    )
    ap.add_argument("--poll-interval", type=float, default=0.5, help="seconds between PBX polls")
    ap.add_argument("--pbx-fail-after", type=int, default=2, help="failed polls before the link is down")
    ap.add_argument("--epoch-interval", type=float, default=2.0, help="seconds between epoch sweeps")
    ap.add_argument(
        "--lease", type=float, default=2.5, help="seconds without a message before a session ends (0: never)"
    )
    add_connection_caps(ap, total=S.MAX_CONNECTIONS, per_source=S.MAX_PER_SOURCE)
    ap.add_argument(
        "--login-timeout",
        type=float,
        default=S.LOGIN_TIMEOUT,
        help="seconds a connection may stay silent without logging in before it is closed (0: never)",
    )
    ap.add_argument(
        "--max-line", type=int, default=P.MAX_LINE, help="bytes of one line; longer closes the connection"
    )
    ap.add_argument(
        "--stall-timeout",
        type=float,
        default=S.STALL_TIMEOUT,
        help="seconds a client may leave its replies unread before it is cut (0: only the 256 KiB cap)",
    )
    return ap.parse_args(argv)


def _pbx_sip(args: argparse.Namespace) -> tuple[str, int] | None:
    if args.pbx_sip is not None:
        return None if args.pbx_sip == "none" else hostport(args.pbx_sip)
    if not args.pbx_rpc:
        return None
    host = urlsplit(args.pbx_rpc).hostname
    return (host, 5060) if host else None


async def run(args: argparse.Namespace, secret: str) -> None:
    srv = CtiServer(
        args.site,
        secret,
        pbx_rpc=args.pbx_rpc,
        ul_url=args.ul,
        poll_interval=args.poll_interval,
        pbx_fail_after=args.pbx_fail_after,
        pbx_sip=_pbx_sip(args),
        pbx_events=args.pbx_events,
        reconcile_interval=args.reconcile_interval,
        epoch_interval=args.epoch_interval,
        lease=args.lease,
        max_connections=args.max_connections,
        max_per_source=args.max_connections_per_source,
        login_timeout=args.login_timeout,
        max_line=args.max_line,
        stall_timeout=args.stall_timeout,
    )
    await srv.start([args.bind[0], *args.also_listen] if args.also_listen else args.bind[0], args.bind[1])
    await until_signalled(f"READY cti {args.site} {args.bind[0]}:{srv.port}")
    await srv.stop()


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    return serve(args, run(args, secret_from_env(args.secret_env)))


if __name__ == "__main__":
    sys.exit(main())
