"""Real Kamailio PBXs on 127.0.0.1 (virtual/pbx.py) for the phone's tests, and what they hold.

Why a module of its own: the phone's SIP tests and its management-API tests each start their PBXs
(module-scoped fixtures) and read bindings the same way: over the PBX's JSON-RPC, never from the phone.
Ports: PBX A SIP 26100 / RPC 26101, PBX B 26102 / 26103.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from virtual import pbx
from virtual.pbx import PbxSpec

HOST = "127.0.0.1"
A_SIP, A_RPC, B_SIP, B_RPC = 26100, 26101, 26102, 26103
EXTS = {str(19000 + i): f"pw-{19000 + i}" for i in range(300)}


def start_pbx(spec: PbxSpec) -> Iterator[PbxSpec]:
    """Run one Kamailio for a fixture: ready (OPTIONS answered) on yield, stopped after."""
    argv = pbx.write_files(spec)
    with open(spec.log_file, "ab") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        pbx.wait_ready(spec.listen, spec.sip_port, 5.0, proc)
        yield spec
    finally:
        pbx.stop(proc)  # SIGTERM by PID, then its own process group if anything is left


def spec_a(workdir: Path) -> PbxSpec:
    """Site A's PBX (realm sha.lab) with every test extension."""
    return PbxSpec("sha-pbx1", HOST, A_SIP, A_RPC, "sha.lab", workdir, EXTS)


def spec_b(workdir: Path) -> PbxSpec:
    """Site B's PBX (realm ntg.lab), same extensions: a phone can move to it."""
    return PbxSpec("ntg-pbx1", HOST, B_SIP, B_RPC, "ntg.lab", workdir, EXTS)


def contacts(rpc_port: int, ext: str) -> list[str]:
    """The contact addresses the PBX holds for ``ext``."""
    return [c["Address"] for c in pbx.lookup(HOST, rpc_port, ext)]


async def until(cond: Callable[[], bool], timeout: float = 5.0, step: float = 0.02) -> bool:
    """Poll ``cond()`` until true or ``timeout``; the event loop (and the phones) keep running meanwhile."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        await asyncio.sleep(step)
    return False


async def no_contacts(rpc_port: int, ext: str, timeout: float = 10.0) -> bool:
    """Poll the PBX (a blocking RPC, off the loop) until it holds no binding of ``ext``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not await asyncio.to_thread(contacts, rpc_port, ext):
            return True
        await asyncio.sleep(0.02)
    return False
