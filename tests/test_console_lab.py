"""The console on the virtual lab: opened on sha's UL host over HTTP, it sees both sites; with ntg's UL
stopped it says plainly that it cannot see ntg's UL, and the rest of the page goes on.

Until the UL's command line carries the console options (virtual/stackservices.py, the lead's), the console
runs here as its own process inside sha's UL host namespace (``python -m stack.console``), with the options
the lab's service plan will give the UL: each site's UL and CTI at their data addresses, each PBX's RPC at
its management address. Where that RPC does not yet admit the UL hosts, the page must say so (HTTP 403).
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
import requests

from harness.credentials import STACK_SECRET_VAR
from harness.faults import Injector
from harness.history import History
from harness.lab import Lab
from harness.topology import Topology
from stack.console import SiteEndpoints
from stack.console.reader import Part, SiteReader
from virtual import netns, stackservices

PORT = 8090
USERS = {"HIL_CONSOLE_USERS": "olga:operator", "HIL_CONSOLE_PASSWORD_OLGA": "olga-lab-pw"}
DEADLINE = 30.0


def site_options(topo: Topology) -> list[str]:
    out = []
    for code in topo.sites:
        ul, cti, pbx = (topo.of_kind(k, code)[0] for k in ("ul", "cti", "pbx"))
        rpc = stackservices.pbx_rpc_host(topo, pbx) or pbx.spec.address
        parts = [f"ul=http://{ul.spec.address}:{ul.spec.port}", f"cti={cti.spec.address}:{cti.spec.port}",
                 f"pbx=http://{rpc}:{pbx.spec.rpc_port}/RPC"]  # fmt: skip
        out += ["--console-site", ",".join([code, *parts])]
    return out


@pytest.fixture
def console(lab: Lab, tmp_path: Path) -> Iterator[str]:
    """The console's URL, served from sha's UL host (its management address, which the controller reaches)."""
    ul = lab.topology.of_kind("ul", "sha")[0]
    ns = lab.ns_path(ul.name)
    assert ns is not None
    argv = netns.nsenter_argv(ns) + [
        sys.executable, "-m", "stack.console", "--site", "sha", "--bind", f"{ul.spec.mgmt}:{PORT}",
        "--secret-env", STACK_SECRET_VAR, "--topology", str(lab.topology.file), "--console-interval", "0.5",
        *site_options(lab.topology),
    ]  # fmt: skip
    env = {**os.environ, **lab.backend.environment(), **USERS}
    log = (tmp_path / "console.log").open("w+")
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=log, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith("READY console sha"), (tmp_path / "console.log").read_text()
        yield f"http://{ul.spec.mgmt}:{PORT}/console"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()


def until(url: str, s: requests.Session, pattern: str) -> str:
    """The live part of the page once it matches ``pattern`` (polled; fails after the deadline)."""
    end = time.monotonic() + DEADLINE
    while True:
        page = s.get(url + "/sites", timeout=5).text
        if re.search(pattern, page):
            return page
        assert time.monotonic() < end, f"the console never showed {pattern!r}:\n{page}"
        time.sleep(0.2)  # a poll interval, not a wait for something to happen


def read_pbx(url: str) -> Part:
    async def go() -> Part:
        async with aiohttp.ClientSession() as http:
            return await SiteReader(SiteEndpoints("sha", pbx=url), http, timeout=5.0).read_pbx()

    return asyncio.run(go())


@pytest.mark.lab
def test_the_pbx_read_from_an_admitted_host(lab: Lab) -> None:
    """From the controller (a client the PBX RPC admits): alive, with Kamailio's own count of registered
    users (the swarm's agents and the lab phone)."""
    pbx = lab.topology.of_kind("pbx", "sha")[0]
    host = stackservices.pbx_rpc_host(lab.topology, pbx) or pbx.spec.address
    part = read_pbx(f"http://{host}:{pbx.spec.rpc_port}/RPC")
    assert part.ok, part.error
    assert isinstance(part.data["uptime"], int) and part.data["registered"] >= 1


@pytest.mark.lab
def test_the_console_sees_both_sites_and_names_the_one_it_cannot_see(
    lab: Lab, console: str, tmp_path: Path
) -> None:
    s = requests.Session()
    assert s.get(console + "/", allow_redirects=False, timeout=5).status_code == 302  # log in first
    csrf = re.search(r'name="csrf" value="([^"]+)"', s.get(console + "/login", timeout=5).text)
    assert csrf is not None
    r = s.post(console + "/login", data={"user": "olga", "password": "olga-lab-pw", "csrf": csrf.group(1)},
               timeout=5)  # fmt: skip
    assert r.status_code == 200 and "olga (operator)" in r.text
    # both sites, every UL and CTI seen (agents online at the CTIs: the swarms log in at lab start)
    page = until(console, s, r'id="site-ntg"(?s:.*)<td>total</td><td>[1-9]')
    assert not re.search(r"cannot see (site )?(sha|ntg) (UL|CTI)", page), page
    sha_ul = lab.topology.of_kind("ul", "sha")[0]
    if str(sha_ul.spec.mgmt) in stackservices.rpc_clients(lab.topology):
        assert "cannot see" not in page and page.count(" registered, up ") == 2
    else:  # the PBXs' RPC does not admit the UL hosts yet: said so, not an error page
        for code in ("sha", "ntg"):
            said = f"cannot see {code} PBX since .*: refused by the PBX RPC \\(HTTP 403\\)"
            assert re.search(said, page), page
    inj = Injector(lab, journal_path=tmp_path / "journal.jsonl", history=History(tmp_path / "history.jsonl"))
    try:
        with inj.fault(inj.make("service_stop", "ntg-ul1")):
            page = until(console, s, r"cannot see ntg UL since \d\d:\d\d:\d\d UTC")
            assert 'id="site-sha"' in page and "cannot see sha" not in page.replace("cannot see sha PBX", "")
            assert not re.search(r"cannot see ntg CTI", page)  # only what is gone is said to be
        until(console, s, r"^(?!(?s:.*)cannot see ntg UL)")  # healed: seen again
    finally:
        inj.heal_all()
