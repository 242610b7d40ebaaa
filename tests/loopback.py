"""The loopback lab of the stack's integration tests: two Kamailio PBXs (virtual/pbx.py), two unified
logins and two CTI servers (``python -m stack.login`` / ``python -m stack.cti``) as real processes on
127.0.0.1, each started and stopped by its own PID. Used by tests/test_agent_loopback.py and
tests/test_swarm.py, each on its own ports."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from stack.common import auth
from stack.common.directory import load as load_directory
from stack.login import client as ulc
from virtual import pbx

HOST = "127.0.0.1"
PORTS = {
    "sha": {"sip": 27060, "rpc": 27061, "ul": 27062, "cti": 27063},
    "ntg": {"sip": 27160, "rpc": 27161, "ul": 27162, "cti": 27163},
}
SECRET, SIP_SECRET, AGENT_SECRET = "lab-secret-1", "sip-secret-1", "agent-secret-1"
ENV = {"HIL_TEST_SECRET": SECRET, "HIL_TEST_SIP": SIP_SECRET, "HIL_TEST_AGENT": AGENT_SECRET}
UNREGISTRABLE_AT_SHA = "10012"  # a00012's extension is missing from sha's PBX: phone linkage fails there

TOPOLOGY = """
name: loopback
kind: virtual
management: {network: 198.19.0.0/24, controller: 198.19.0.1}
sites:
  sha: {city: Shanghai, region: east, pbx: {sha-pbx1: {address: 127.0.0.1}}}
  ntg: {city: Nantong, region: south, pbx: {ntg-pbx1: {address: 127.0.0.1}}}
agents:
  pools:
    sha-air: {home: sha, count: 12, extensions: 10001-10100, system: air, region: east,
              skill_groups: [domestic, international]}
    sha-hotel: {home: sha, count: 12, extensions: 11001-11100, system: hotel, region: north,
                skill_groups: [vip, domestic]}
    ntg-air: {home: ntg, count: 4, extensions: 20001-20100, system: air, region: south,
              skill_groups: [international]}
"""


def wait_port(port: int, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        with socket.socket() as s:
            if s.connect_ex((HOST, port)) == 0:
                return
        time.sleep(0.02)
    raise TimeoutError(f"nothing listening on {port}")


class Lab:
    """The processes of the loopback lab, each started and stopped by its own PID."""

    def __init__(
        self, root: Path, ports: dict[str, dict[str, int]] = PORTS, topology: str = TOPOLOGY
    ) -> None:
        self.root = root
        self.ports = ports
        self.topology = root / "topology.yaml"
        self.topology.write_text(topology)
        self.directory = load_directory(self.topology)
        self.procs: dict[str, Any] = {}
        self.env = {**os.environ, **ENV}

    def ul_url(self, site: str) -> str:
        return f"http://{HOST}:{self.ports[site]['ul']}"

    def start_pbx(self, site: str) -> None:
        exts = {
            a.extension: auth.derive_password(SIP_SECRET, a.extension)
            for a in self.directory.agents.values()
            if not (site == "sha" and a.extension == UNREGISTRABLE_AT_SHA)
        }
        p = self.ports[site]
        spec = pbx.PbxSpec(
            f"{site}-pbx1", HOST, p["sip"], p["rpc"], f"{site}.lab", self.root / f"{site}-pbx", exts
        )
        self.procs[f"{site}-pbx"] = pbx.start(spec)
        pbx.wait_ready(HOST, p["sip"], 10.0)
        wait_port(p["rpc"])

    def start_ul(self, site: str) -> None:
        other = "ntg" if site == "sha" else "sha"
        p = self.ports[site]
        argv = [
            sys.executable, "-m", "stack.login", "--site", site, "--bind", f"{HOST}:{p['ul']}",
            "--db", str(self.root / f"{site}-ul.sqlite"), "--topology", str(self.topology),
            "--peer", self.ul_url(other), "--cti", f"{HOST}:{p['cti']}", "--pbx", f"{HOST}:{p['sip']}",
            "--secret-env", "HIL_TEST_SECRET", "--agent-secret-env", "HIL_TEST_AGENT",
            "--sip-secret-env", "HIL_TEST_SIP", "--peer-interval", "0.3", "--log-level", "WARNING",
        ]  # fmt: skip
        self._spawn(f"{site}-ul", argv)
        wait_port(p["ul"])

    def start_cti(self, site: str, secret_env: str = "HIL_TEST_SECRET") -> None:
        p = self.ports[site]
        argv = [
            sys.executable, "-m", "stack.cti", "--site", site, "--bind", f"{HOST}:{p['cti']}",
            "--pbx-rpc", f"http://{HOST}:{p['rpc']}/RPC", "--ul", self.ul_url(site),
            "--secret-env", secret_env, "--poll-interval", "0.2", "--epoch-interval", "0.5",
            "--log-level", "WARNING",
        ]  # fmt: skip
        self._spawn(f"{site}-cti", argv)
        wait_port(p["cti"])

    def _spawn(self, name: str, argv: list[str]) -> None:
        log = open(self.root / f"{name}.log", "ab")  # noqa: SIM115
        self.procs[name] = subprocess.Popen(argv, env=self.env, stdout=log, stderr=subprocess.STDOUT)

    def stop(self, name: str, sig: int = signal.SIGTERM) -> None:
        proc = self.procs.pop(name, None)
        if proc is None:
            return
        if name.endswith("-pbx"):
            if sig == signal.SIGKILL:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
            else:
                pbx.stop(proc)
            return
        proc.send_signal(sig)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    def stop_all(self) -> None:
        for name in list(self.procs):
            self.stop(name)


def wait_reconciled(lab: Lab, site: str, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            if ulc.health(lab.ul_url(site))["reconciled"]:
                return
        except ulc.UlError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"UL {site} did not reconcile")


@contextmanager
def running(lab: Lab) -> Iterator[Lab]:
    """Both sites up (PBX, UL, CTI) and the ULs reconciled; every process stopped afterwards."""
    try:
        for site in ("sha", "ntg"):
            lab.start_pbx(site)
            lab.start_ul(site)
            lab.start_cti(site)
        for site in ("sha", "ntg"):
            wait_reconciled(lab, site)
        yield lab
    finally:
        lab.stop_all()


def registered(rpc_port: int) -> set[str]:
    """Extensions in a PBX's location table (Kamailio ``ul.dump brief`` over JSON-RPC)."""
    body = json.dumps({"jsonrpc": "2.0", "method": "ul.dump", "params": ["brief"], "id": 1}).encode()
    req = urllib.request.Request(f"http://{HOST}:{rpc_port}/RPC", data=body)
    with urllib.request.urlopen(req, timeout=3) as resp:
        res = json.loads(resp.read())["result"]
    out = set()
    for dom in res["Domains"]:
        for aor in dom["Domain"]["AoRs"]:
            out.add(aor["Info"]["AoR"] if "Info" in aor else aor["AoR"])
    return out
