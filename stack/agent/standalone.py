"""The life of the standalone agent process (``python -m stack.agent``): the clients of a site's agents on
desk phones and third-party softphones, beside the swarm it runs as its child.

Why apart from the entry point: the entry point starts the swarm first, before these imports (aiohttp,
the agent client, the phone controls: a few tenths of a second), so a restart of the agents host's unit
costs every scenario no more than the swarm's own start.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import subprocess

from stack.agent.client import AgentClient, Timers, UlHttp
from stack.agent.linked import linked_agents, phone_control
from stack.common import auth, directory
from stack.common.daemon import secret_from_env
from stack.common.eventlog import EventLog

__all__ = ["CHILD_STOP_S", "run"]

log = logging.getLogger("stack.agent")

CHILD_STOP_S = 4.0  # under the lab's stop timeout (5 s), after which the whole group is killed


async def _stop_child(child: subprocess.Popen[bytes], exited: asyncio.Future[int]) -> None:
    if child.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            child.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.shield(exited), CHILD_STOP_S)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                child.kill()
    await exited


async def run(
    args: argparse.Namespace, child: subprocess.Popen[bytes] | None, *, stopped_early: bool = False
) -> int:
    """Run the site's linked agents until SIGTERM/SIGINT (then stop the child too) or until the child
    exits (then stop, with its status); the exit status. ``stopped_early``: a signal came before this."""
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
    if stopped_early:
        stop.set()
    exited = asyncio.ensure_future(asyncio.to_thread(child.wait)) if child is not None else None
    for c in clients:
        c.start()
    print(f"READY agents {args.site} linked={len(clients)} child={child.pid if child else '-'}", flush=True)
    stopped = asyncio.ensure_future(stop.wait())
    await asyncio.wait([stopped] + ([exited] if exited else []), return_when=asyncio.FIRST_COMPLETED)
    stopped.cancel()
    stopping = [c.stop() for c in clients]
    if child is not None and exited is not None:
        stopping.append(_stop_child(child, exited))
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
