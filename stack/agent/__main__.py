"""A standalone agent process: the clients of a site's agents on desk phones and third-party softphones,
optionally with the site's swarm as its child.

``python -m stack.agent --topology FILE --site sha [--baresip-ctrl ADDR:PORT] [--log FILE]
[-- SWARM COMMAND...]``

Why a process apart from the swarm: those agents' phones are devices the stack did not write, each driven
through its own interface (stack/agent/linked.py), one agent client each (stack/agent/client.py), as an
agent's desktop would. Why the swarm may be its child: the lab treats "the agents of this host" as one
service (``hil-swarm``): restarting it must restart every agent client, so every scenario starts with all
of them home and their CTI connections opened under the capture. The child shares this process group, so
a stop, a kill or a pause of the unit reaches both; SIGTERM is passed on and waited for. When the child
exits by itself, this process exits with its status, so the unit fails as the swarm did.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys

from stack.common.addr import hostport
from stack.common.daemon import serve


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m stack.agent", description=__doc__.split("\n\n")[0])
    ap.add_argument("--topology", required=True)
    ap.add_argument("--site", required=True)
    ap.add_argument("--baresip-ctrl", type=hostport, default=("127.0.0.1", 4444), help="baresip's ctrl_tcp")
    ap.add_argument("--agent-secret-env", default="LAB_AGENT_PASSWORD")
    ap.add_argument("--sip-secret-env", default="LAB_SIP_SECRET")
    ap.add_argument("--initial-state", choices=("ready", "not_ready"), default="ready")
    ap.add_argument("--log", default=None, help="JSON-lines event log file (the swarm's format)")
    ap.add_argument("--log-level", default="WARNING")
    ap.add_argument("child", nargs=argparse.REMAINDER, help="-- the swarm's command line, run as a child")
    args = ap.parse_args(argv)
    args.child = args.child[1:] if args.child[:1] == ["--"] else args.child
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    early: list[int] = []  # a stop asked for before the event loop's handlers are in place
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, _frame: early.append(signum))
    # The swarm first: it starts while this process imports the agent client and the phone controls.
    child = subprocess.Popen(args.child) if args.child else None
    from stack.agent.standalone import run  # local: after the child's start (see above)

    status: list[int] = []

    async def _main() -> None:
        status.append(await run(args, child, stopped_early=bool(early)))

    serve(args, _main())
    return status[0] if status else 1


if __name__ == "__main__":
    sys.exit(main())
