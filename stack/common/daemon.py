"""What every stack daemon's entry point does: take its secrets from the environment, serve until signalled.

Why: the CTI, the unified login, the phone and the swarm are started by the lab (and by systemd on real
hosts) with their secrets in environment variables named on the command line, never in argv, and are
stopped with SIGTERM (SIGINT from a terminal). Each must refuse to start without a secret, saying which
variable is missing, and must stop cleanly (exit 0) on either signal.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys

UNSET = "error: environment variable {var} is not set"


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
