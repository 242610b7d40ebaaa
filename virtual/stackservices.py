"""The system under test as services of the virtual lab's hosts: what runs where, with which arguments.

Each site's UL and CTI run on their hosts (data address for the stack's own traffic, the management address
as well so the controller can observe them from outside even when a data link is cut), each lab phone runs
on its own host, and each agents host runs the site's swarm. They are systemd-like services of the emulated
hosts, so the harness stops, kills and pauses them over SSH exactly as on a physical lab.
"""

from __future__ import annotations

import shutil
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
# baresip on an agents host: its SIP port beside the swarm's, and its ctrl_tcp (loopback of that host)
BARESIP_SIP_PORT = 5062
BARESIP_CTRL_PORT = 4444
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
            linked = [a for a in topo.linked_agents() if a.home == code]
            if linked:
                argv = _linked_agents(topo, run_dir, host, code, argv)
                if any(topo.phone_of(a)[1] == "baresip" for a in linked):
                    out.append(_baresip(host, run_dir))
            out.append(Planned(host.name, "hil-swarm", argv, {}, (admin, s.admin_port), wait=False))
    return out


def _linked_agents(topo: Topology, run_dir: Path, host: Device, site: str, swarm: list[str]) -> list[str]:
    """The agents host's unit when some of its site's agents use desk phones or softphones: their agent
    process (stack/agent/__main__.py) with the swarm as its child, the swarm running only the other pools
    (one unit, so a restart of ``hil-swarm`` restarts every agent client of the host)."""
    plain = [n for n, p in topo.model.agents.pools.items() if p.home == site and not p.linked]
    swarm = swarm + [arg for n in plain for arg in ("--pool", n)]
    return _py("stack.agent") + [
        "--topology", str(topo.file), "--site", site,
        "--baresip-ctrl", f"127.0.0.1:{BARESIP_CTRL_PORT}",
        "--log", str(run_dir / "logs" / f"{host.name}-linked-events.jsonl"), "--", *swarm,
    ]  # fmt: skip


BARESIP_CONFIG = """\
# Written by the virtual lab (virtual/stackservices.py): baresip with no account; the agent client gives
# it the agent's account over ctrl_tcp (stack/phone/baresip.py).
poll_method\tepoll
net_interface\t{address}
sip_listen\t{sip}
audio_player\taufile,/dev/null
audio_source\tausine,440
module_path\t{modules}
module\tg711.so
module\tausine.so
module\taufile.so
module_app\taccount.so
module_app\tmenu.so
module_app\tctrl_tcp.so
ctrl_tcp_listen\t127.0.0.1:{ctrl}
"""


def _baresip(host: Device, run_dir: Path) -> Planned:
    """baresip on an agents host (Debian's ``baresip-core``): SIP and media on the host's data address (its
    ``net_interface``, else it takes the first interface, the management one, into its SDP), its control on
    the host's loopback, where only that host's agent process reaches it."""
    exe = shutil.which("baresip")
    if exe is None:
        raise RuntimeError(f"{host.name}: baresip is not installed (apt-get install baresip-core)")
    conf = run_dir / host.name / "baresip"
    conf.mkdir(parents=True, exist_ok=True)
    (conf / "accounts").write_text("")
    modules = "/usr/lib/baresip/modules"
    addr = str(host.spec.address)
    sip = f"{addr}:{BARESIP_SIP_PORT}"
    text = BARESIP_CONFIG.format(address=addr, sip=sip, modules=modules, ctrl=BARESIP_CTRL_PORT)
    (conf / "config").write_text(text)
    return Planned(host.name, "hil-baresip", [exe, "-f", str(conf)], {}, ("127.0.0.1", BARESIP_CTRL_PORT))


def ready_probe(ns_path: str, probe: tuple[str, int] | None) -> Callable[[], bool] | None:
    if probe is None:
        return None
    return lambda: tcp_answers(ns_path, probe[0], probe[1])


__all__ = ["CTI_EVENT_PORT", "Planned", "cti_events", "plan", "ready_probe", "tcp_answers", "REPO_ROOT"]
