"""``python -m stack.login --site sha --bind ADDR:PORT --db PATH --topology FILE --peer URL --cti HOST:PORT
--pbx HOST:PORT --secret-env VAR --agent-secret-env VAR [--sip-secret-env VAR] [--max-connections N]
[--max-connections-per-source N] [--request-timeout S] [--idle-timeout S] [--max-header BYTES]``.

Both secrets are required: a UL without one refuses to start (exit 2, one line naming it)."""

from __future__ import annotations

import argparse
import sys

from stack.common import auth, directory
from stack.common.addr import hostport
from stack.common.daemon import (
    add_connection_caps,
    secret_from_env,
    serve,
    site_service_parser,
    until_signalled,
)
from stack.common.httpguard import HttpLimits
from stack.console import add_console_args, console_config
from stack.login.server import UnifiedLogin
from stack.login.store import Store

STACK_UNSET = "error: stack secret: environment variable {var} (--secret-env) is not set"
AGENT_UNSET = "error: agent secret: environment variable {var} (--agent-secret-env) is not set"
SIP_UNSET = "error: SIP secret: environment variable {var} (--sip-secret-env) is not set"


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    ap = site_service_parser("python -m stack.login", "Site unified login", "HTTP API")
    ap.add_argument("--db", required=True, help="SQLite file for sessions and rules")
    ap.add_argument("--topology", required=True, help="topology YAML (agent directory)")
    ap.add_argument("--peer", default=None, help="the other site's UL, e.g. http://198.18.2.30:8080")
    ap.add_argument("--cti", required=True, type=hostport, help="this site's CTI HOST:PORT")
    ap.add_argument("--pbx", required=True, type=hostport, help="this site's PBX registrar HOST:PORT")
    ap.add_argument(
        "--agent-secret-env", default=None, help="variable from which agent passwords derive (required)"
    )
    ap.add_argument("--sip-secret-env", default=None, help="variable from which extension passwords derive")
    ap.add_argument("--token-ttl", type=float, default=12 * 3600.0)
    ap.add_argument(
        "--token-lease",
        type=float,
        default=auth.TOKEN_LEASE,
        help="seconds after issue a CTI that cannot reach this UL still accepts a token",
    )
    ap.add_argument("--peer-interval", type=float, default=1.0, help="seconds between peer health checks")
    ap.add_argument("--lease", type=float, default=2.5, help="the CTIs' session lease (seconds)")
    ap.add_argument(
        "--lease-margin", type=float, default=1.0, help="added to the lease for an unconfirmed fence"
    )
    d = HttpLimits()
    add_connection_caps(ap, total=d.max_connections, per_source=d.max_per_source)
    ap.add_argument(
        "--request-timeout",
        type=float,
        default=d.request_timeout,
        help="seconds from a request's first byte to its last before it is answered 408 and closed (0: none)",
    )
    ap.add_argument(
        "--idle-timeout",
        type=float,
        default=d.idle_timeout,
        help="seconds a kept-alive connection may wait between requests (above the clients' own, 15 s)",
    )
    ap.add_argument(
        "--max-header", type=int, default=d.max_header, help="bytes of the request line and of one header"
    )
    add_console_args(ap)
    return ap.parse_args(argv)


def _optional_secret(var: str | None) -> str | None:
    return None if var is None else secret_from_env(var, message=SIP_UNSET)


def secrets_of(args: argparse.Namespace) -> tuple[str, str]:
    """The stack secret and the agent secret; either missing: one line naming it, exit 2 (SystemExit).
    Without the agent secret a UL would take any password, so it is required, not optional."""
    stack = secret_from_env(args.secret_env, message=STACK_UNSET)
    if not args.agent_secret_env:
        print("error: agent secret: --agent-secret-env is required (agent passwords derive from it)",
              file=sys.stderr, flush=True)  # fmt: skip
        raise SystemExit(2)
    return stack, secret_from_env(args.agent_secret_env, message=AGENT_UNSET)


async def run(args: argparse.Namespace, stack_secret: str, agent_secret: str) -> None:
    ul = UnifiedLogin(
        args.site,
        stack_secret,
        directory.load(args.topology),
        Store(args.db),
        cti=args.cti,
        pbx=args.pbx,
        peer_url=args.peer,
        agent_secret=agent_secret,
        sip_secret=_optional_secret(args.sip_secret_env),
        token_ttl=args.token_ttl,
        token_lease=args.token_lease,
        peer_interval=args.peer_interval,
        lease=args.lease,
        lease_margin=args.lease_margin,
        limits=HttpLimits(
            max_connections=args.max_connections,
            max_per_source=args.max_connections_per_source,
            request_timeout=args.request_timeout,
            idle_timeout=args.idle_timeout,
            max_header=args.max_header,
        ),
    )
    try:
        console = console_config(args, stack_secret, ul.directory)
    except ValueError as err:  # HIL_CONSOLE_USERS malformed: one line, exit 2, as a missing secret
        print(f"error: {err}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
    runner = ul.runner(console)
    await runner.setup()
    for addr in [args.bind[0], *args.also_listen]:
        await ul.listener(runner, addr, args.bind[1]).start()
    await until_signalled(f"READY ul {args.site} {args.bind[0]}:{args.bind[1]}")
    await runner.cleanup()
    ul.store.close()


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    stack_secret, agent_secret = secrets_of(args)
    return serve(args, run(args, stack_secret, agent_secret))


if __name__ == "__main__":
    sys.exit(main())
