"""The system under test as services of the virtual lab's hosts: what runs where, with which arguments.

Each site's UL and CTI run on their hosts (data address for the stack's own traffic, the management address
as well so the controller can observe them from outside even when a data link is cut), each lab phone runs
on its own host, and each agents host runs the site's swarm. They are systemd-like services of the emulated
hosts, so the harness stops, kills and pauses them over SSH exactly as on a physical lab.
"""

from __future__ import annotations

import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from harness import credentials
from harness.topology import REPO_ROOT, Device, Topology
from virtual import netns

STACK_SECRET = credentials.STACK_SECRET_VAR
SWARM_SIP_PORT = 5060
PHONE_SIP_PORT = 5060
# UDP port of each CTI where its site's PBX pushes registration events (SIP MESSAGE, see virtual/pbx.py).
CTI_EVENT_PORT = 5090
# UDP port of the test callee (stack/callee.py) on each caller host: its site's trunk.
CALLEE_SIP_PORT = 5070


@dataclass
class Planned:
    device: str
    name: str
    argv: list[str]
    env: dict[str, str]
    probe: tuple[str, int] | None  # (address, port) that answers once the service is up
    wait: bool = True  # the lab is not ready until it answers


def tcp_answers(ns_path: str | None, address: str, port: int, timeout: float = 0.3) -> bool:
    s = netns.socket_in(ns_path, socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect((address, port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def _py(module: str) -> list[str]:
    return [sys.executable, "-m", module]


def _only(topo: Topology, kind: str, site: str) -> Device | None:
    devs = topo.of_kind(kind, site)
    return devs[0] if devs else None


def cti_events(topo: Topology, site: str) -> tuple[str, int] | None:
    """(address, port) where ``site``'s PBX pushes registration events: the site CTI's data address (the
    PBX and the CTI share the site's lab network), or None when the site has no CTI or no PBX."""
    cti, pbx = _only(topo, "cti", site), _only(topo, "pbx", site)
    if cti is None or pbx is None:
        return None
    return str(cti.spec.address), CTI_EVENT_PORT


def pbx_rpc_host(topo: Topology, pbx: Device) -> str | None:
    """The management address where ``pbx`` serves its JSON-RPC, or None (then on its SIP address, as
    before): the RPC drops registrations (``ul.rm``), so it is a management plane, off the data network
    where the agents' desktops are, whenever the PBX and its site's CTI both have a management address."""
    ctis = topo.of_kind("cti", pbx.site)
    if pbx.spec.mgmt and all(c.spec.mgmt for c in ctis):
        return str(pbx.spec.mgmt)
    return None


def rpc_clients(topo: Topology) -> list[str]:
    """The sources a PBX's RPC answers on its management address: the controller and the CTIs (the other
    hosts, agents' desktops included, share the management network only for the lab's own SSH)."""
    out = [str(topo.model.management.controller)]
    out += [str(c.spec.mgmt) for c in topo.of_kind("cti") if c.spec.mgmt]
    out += [str(u.spec.mgmt) for u in topo.of_kind("ul") if u.spec.mgmt]  # the console (docs/console.md)
    return out


def console_sites(topo: Topology) -> list[str]:
    """``--console-site`` options for a UL: every site's UL and CTI (data addresses), PBX RPC (management)."""
    out = []
    for code in topo.sites:
        parts = [code]
        ul, cti, pbx = (_only(topo, k, code) for k in ("ul", "cti", "pbx"))
        if ul is not None:
            parts.append(f"ul=http://{ul.spec.address}:{ul.spec.port}")
        if cti is not None:
            parts.append(f"cti={cti.spec.address}:{cti.spec.port}")
        if pbx is not None:
            parts.append(f"pbx=http://{pbx_rpc_host(topo, pbx) or pbx.spec.address}:{pbx.spec.rpc_port}/RPC")
        out += ["--console-site", ",".join(parts)]
    return out


def plan(topo: Topology, run_dir: Path, secrets: dict[str, str]) -> list[Planned]:
    out: list[Planned] = []
    sites = list(topo.sites)
    sip_secret = secrets.get(
        topo.model.credentials.sip_secret.var if topo.model.credentials.sip_secret else "", ""
    )
    for code in sites:
        peer = next((s for s in sites if s != code), code)
        pbx, cti, ul = (_only(topo, k, code) for k in ("pbx", "cti", "ul"))
        peer_ul = _only(topo, "ul", peer)
        if ul is not None and cti is not None and pbx is not None:
            s = ul.spec
            argv = _py("stack.login") + [
                "--site", code, "--bind", f"{s.address}:{s.port}",
                "--db", str(run_dir / ul.name / "ul.sqlite"),
                "--topology", str(topo.file), "--cti", f"{cti.spec.address}:{cti.spec.port}",
                "--pbx", f"{pbx.spec.address}:{pbx.spec.sip_port}", "--secret-env", STACK_SECRET,
                "--agent-secret-env", "LAB_AGENT_PASSWORD", "--sip-secret-env", "LAB_SIP_SECRET",
            ]  # fmt: skip
            if peer_ul is not None and peer_ul.name != ul.name:
                argv += ["--peer", f"http://{peer_ul.spec.address}:{peer_ul.spec.port}"]
            if s.mgmt:
                argv += ["--also-listen", str(s.mgmt)]
            argv += console_sites(topo)
            env = {"HIL_CONSOLE_USERS": "operator:operator,viewer:viewer"}  # passwords: secrets.env
            out.append(Planned(ul.name, s.service, argv, env, (str(s.address), s.port)))
        if cti is not None and pbx is not None:
            s = cti.spec
            argv = _py("stack.cti") + [
                "--site", code, "--bind", f"{s.address}:{s.port}",
                "--pbx-rpc", f"http://{pbx_rpc_host(topo, pbx) or pbx.spec.address}:{pbx.spec.rpc_port}/RPC",
                "--pbx-sip", f"{pbx.spec.address}:{pbx.spec.sip_port}",
                "--secret-env", STACK_SECRET,
            ]  # fmt: skip
            if ul is not None:
                argv += ["--ul", f"http://{ul.spec.address}:{ul.spec.port}"]
            events = cti_events(topo, code)
            if events is not None:
                argv += ["--pbx-events", f"{events[0]}:{events[1]}"]
            if s.mgmt:
                argv += ["--also-listen", str(s.mgmt)]
            out.append(Planned(cti.name, s.service, argv, {}, (str(s.address), s.port)))
        for ph in topo.of_kind("phone", code):
            s = ph.spec
            if not s.extension or pbx is None:
                continue
            api = str(s.mgmt or s.address)
            argv = _py("stack.phone") + [
                "--extension", s.extension, "--password-env", "PHONE_SIP_PASSWORD",
                "--registrar", f"{pbx.spec.address}:{pbx.spec.sip_port}",
                "--sip-bind", f"{s.address}:{PHONE_SIP_PORT}",
                "--api-bind", f"{api}:{s.api_port}", "--vendor", s.vendor, "--api-user",
                topo.model.credentials.phone.username if topo.model.credentials.phone else "admin",
                "--api-password-env", "LAB_PHONE_PASSWORD",
            ]  # fmt: skip
            env = {"PHONE_SIP_PASSWORD": credentials.sip_password(sip_secret, s.extension)}
            out.append(Planned(ph.name, "hil-phone", argv, env, (api, s.api_port)))
        for host in topo.of_kind("host", code):
            if host.spec.role == "caller" and host.spec.extension and pbx is not None:
                s = host.spec
                argv = _py("stack.callee") + [
                    "--extension", s.extension, "--password-env", "CALLEE_SIP_PASSWORD",
                    "--registrar", f"{pbx.spec.address}:{pbx.spec.sip_port}",
                    "--sip-bind", f"{s.address}:{CALLEE_SIP_PORT}",
                    "--record", str(run_dir / host.name / "callee.jsonl"),
                ]  # fmt: skip
                env = {"CALLEE_SIP_PASSWORD": credentials.sip_password(sip_secret, s.extension)}
                out.append(Planned(host.name, "hil-callee", argv, env, None))
            if host.spec.role != "agents":
                continue
            s = host.spec
            admin = str(s.mgmt or s.address)
            argv = _py("stack.swarm") + [
                "--topology", str(topo.file), "--site", code, "--sip-bind", f"{s.address}:{SWARM_SIP_PORT}",
                "--admin", f"{admin}:{s.admin_port}",
                "--log", str(run_dir / "logs" / f"{host.name}-events.jsonl"),
            ]  # fmt: skip
            out.append(Planned(host.name, "hil-swarm", argv, {}, (admin, s.admin_port), wait=False))
    return out


def ready_probe(ns_path: str, probe: tuple[str, int] | None) -> Callable[[], bool] | None:
    if probe is None:
        return None
    return lambda: tcp_answers(ns_path, probe[0], probe[1])


__all__ = ["CTI_EVENT_PORT", "Planned", "cti_events", "plan", "ready_probe", "tcp_answers", "REPO_ROOT"]
