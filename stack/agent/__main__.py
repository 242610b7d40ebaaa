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
import asyncio
import contextlib
import logging
import signal
import sys

from stack.agent.client import AgentClient, Timers, UlHttp
from stack.agent.linked import linked_agents, phone_control
from stack.common import auth, directory
from stack.common.addr import hostport
from stack.common.daemon import secret_from_env, serve
from stack.common.eventlog import EventLog

log = logging.getLogger("stack.agent")

CHILD_STOP_S = 4.0  # under the lab's stop timeout (5 s), after which the whole group is killed


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


async def _stop_child(child: asyncio.subprocess.Process) -> None:
    if child.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            child.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(child.wait(), CHILD_STOP_S)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                child.kill()
            await child.wait()


async def run(args: argparse.Namespace) -> int:
    topo = directory.load(args.topology)
    uls = {s: f"http://{svc.address}:{svc.port}" for s, svc in topo.ul.items()}
    agent_secret = secret_from_env(args.agent_secret_env, status=1)
    sip_secret = secret_from_env(args.sip_secret_env, status=1)
    events = EventLog(size=10_000, path=args.log)
    ul = UlHttp()
    timers = Timers(jitter=0.0)
    clients = [
        AgentClient(
            la.agent.id,
            auth.derive_password(agent_secret, la.agent.id),
            la.agent.extension,
            la.agent.home,
            uls,
            phone_control(la, sip_secret, args.baresip_ctrl),
            timers=timers,
            events=events,
            ul_api=ul,
            initial_state=args.initial_state,
        )  # fmt: skip
        for la in linked_agents(args.topology, args.site)
    ]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    child = await asyncio.create_subprocess_exec(*args.child) if args.child else None
    for c in clients:
        c.start()
    print(f"READY agents {args.site} linked={len(clients)} child={child.pid if child else '-'}", flush=True)
    waits = [asyncio.ensure_future(stop.wait())]
    if child is not None:
        waits.append(asyncio.ensure_future(child.wait()))
    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    for w in waits:
        w.cancel()
    stopping = [c.stop() for c in clients] + ([_stop_child(child)] if child is not None else [])
    await asyncio.gather(*stopping, return_exceptions=True)
    for c in clients:
        close = getattr(c.phone, "close", None)
        if close is not None:
            await close()
    await ul.close()
    events.close()
    if child is not None and not stop.is_set():
        log.error("the child %s exited with %s", args.child[:3], child.returncode)
        return child.returncode or 1
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    status: list[int] = []

    async def _main() -> None:
        status.append(await run(args))

    serve(args, _main())
    return status[0] if status else 1


if __name__ == "__main__":
    sys.exit(main())
