"""What every stack daemon's entry point does: take its secrets from the environment, serve until signalled.

Why: the CTI, the unified login, the phone and the swarm are started by the lab (and by systemd on real
hosts) with their secrets in environment variables named on the command line, never in argv, and are
stopped with SIGTERM (SIGINT from a terminal). Each must refuse to start without a secret, saying which
variable is missing, and must stop cleanly (exit 0) on either signal. The site services (CTI, UL) also
share their first options and their connection caps, so they are spelled the same for both.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Coroutine
from typing import Any

from stack.common.addr import hostport
from stack.common.loop import run_main

UNSET = "error: environment variable {var} is not set"
LOG_FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"


def secret_from_env(var: str, *, status: int = 2, message: str = UNSET) -> str:
    """The value of environment variable ``var``.

    Unset or empty: print ``message`` (``{var}`` replaced by the name) on stderr and exit with ``status``
    (raises SystemExit). The value itself is never printed.
    """
    value = os.environ.get(var)
    if not value:
        print(message.format(var=var), file=sys.stderr, flush=True)
        raise SystemExit(status)
    return value


async def until_signalled(ready: str | None = None) -> None:
    """Return at the first SIGTERM or SIGINT, after printing ``ready`` (if given) on stdout.

    The handlers are in place before ``ready`` is printed, so a signal sent by whoever waits for that line
    is never lost. They stay in place afterwards: another signal during the caller's cleanup is ignored.
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if ready is not None:
        print(ready, flush=True)
    await stop.wait()


def site_service_parser(prog: str, description: str, serves: str) -> argparse.ArgumentParser:
    """A parser with the options every site service takes: ``--site``, ``--bind`` and ``--also-listen``
    (where ``serves`` is offered), ``--secret-env`` and ``--log-level``."""
    ap = argparse.ArgumentParser(prog=prog, description=description)
    ap.add_argument("--site", required=True)
    ap.add_argument("--bind", required=True, type=hostport, help=f"ADDR:PORT to listen on for the {serves}")
    ap.add_argument(
        "--also-listen",
        action="append",
        default=[],
        metavar="ADDR",
        help=f"another address to listen on for the {serves} (same port), e.g. the management address",
    )
    ap.add_argument("--secret-env", required=True, help="environment variable holding the shared lab secret")
    ap.add_argument("--log-level", default="INFO")
    return ap


def add_connection_caps(ap: argparse.ArgumentParser, *, total: int, per_source: int) -> None:
    """``--max-connections`` and ``--max-connections-per-source`` (stack/common/limits.py): a site service
    is on the data network with every agent's desktop, so one address must not take all it can serve."""
    ap.add_argument(
        "--max-connections",
        type=int,
        default=total,
        help=f"open connections in total, beyond which new ones are refused (default {total}, lowered to "
        "what the open-file limit allows)",
    )
    ap.add_argument(
        "--max-connections-per-source",
        type=int,
        default=per_source,
        help=f"open connections from one address (default {per_source}: a whole agents host of a "
        "10,000-agent lab; on a site where each agent has a desktop of its own, a handful)",
    )


def serve(args: argparse.Namespace, main: Coroutine[Any, Any, Any]) -> int:
    """Log at ``args.log_level`` and run ``main`` on the daemons' event loop (stack/common/loop.py);
    the exit status (0) once it returns."""
    logging.basicConfig(level=args.log_level, format=LOG_FORMAT)
    run_main(main)
    return 0
