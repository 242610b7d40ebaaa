"""The lab keeper: PID 1 of the virtual lab's own user, PID, mount and network namespaces.

Because the whole lab hangs off this one process, the kernel removes every namespace, interface and
process of the lab when it exits, however it exits (SIGKILL included): nothing can be left behind. It
builds the network from the plan, starts each site's kamailio, serves the emulated vendor interfaces (switch
CLIs over SSH and on consoles, host SSH endpoints) and answers status and control requests on a Unix socket.

Run by `virtual.lab.up()` through `unshare`; never imported by the controller.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from harness import credentials
from harness.topology import Topology, TopologyError, load
from sipcore import probe as sipprobe
from virtual import netns, pbx, stackservices
from virtual.capturehost import (
    CaptureHostPlan,
    build_commands,
    cable,
    capture_host_factory,
    capture_host_plans,
    tcpdump_env,
)
from virtual.console import PtyConsole
from virtual.host_cli import host_session_factory
from virtual.netplan import CORE_MGMT_IF, MGMT_BRIDGE, plan
from virtual.pdu import PowerBackend, pdu_session_factory
from virtual.services import Service, ServiceError, ServiceSupervisor
from virtual.sshserver import SSHServer, caller_host_factory, load_or_create_host_key
from virtual.switch_cli import switch_session_factory
from virtual.switchports import VethPorts
from virtual.toolhost import tool_host_factory

log = logging.getLogger("hil.keeper")
NETNS_DIR = "/run/netns"


def ns_path(name: str) -> str:
    return f"{NETNS_DIR}/{name}"


class Keeper:
    def __init__(self, topo: Topology, run_dir: Path, autostart_swarm: bool = True):
        self.topo = topo
        self.run_dir = run_dir
        self.net = plan(topo)
        self.secrets = credentials.read_env(run_dir / "secrets.env")
        os.environ.update(self.secrets)
        self.state: dict[str, Any] = {"lab": topo.name, "topology": str(topo.file), "phase": "starting"}
        self.stop_event = threading.Event()
        self.servers: list[SSHServer] = []
        self.consoles: dict[str, PtyConsole] = {}
        self.supervisors: dict[str, ServiceSupervisor] = {}
        self.probes: dict[tuple[str, str], Callable[[], bool] | None] = {}
        self.pdus: dict[str, PowerBackend] = {}
        self.powered_off: dict[str, list[str]] = {}  # device -> services that ran when its power went
        self.autostart_swarm = autostart_swarm
        self.logs = run_dir / "logs"
        self.logs.mkdir(exist_ok=True)

    # -- state file ----------------------------------------------------------------------------------
    def write_state(self, **kw: Any) -> None:
        self.state.update(kw)
        tmp = self.run_dir / "state.json.tmp"
        tmp.write_text(json.dumps(self.state, indent=1, default=str))
        os.replace(tmp, self.run_dir / "state.json")

    # -- network -------------------------------------------------------------------------------------
    def build_network(self) -> None:
        os.makedirs(NETNS_DIR, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=755", "hil-netns", NETNS_DIR], check=True)
        self._ip(["-batch", "-"], "\n".join(self.net.core_batch) + "\n")
        self._ip(["link", "set", "lo", "up"])
        for ns in self.net.namespaces:
            lines = ["link set lo up"]
            for ifname, cidr in self.net.addresses.get(ns, []):
                lines.append(f"addr add {cidr} dev {ifname}")
                lines.append(f"link set {ifname} up")
            self._ip(["-n", ns, "-batch", "-"], "\n".join(lines) + "\n")
        for ns in self.net.namespaces:
            # no routes leave the lab: drop anything not for the lab ranges
            self._ip(["-n", ns, "route", "add", "unreachable", "default"], check=False)

    def _ip(self, args: list[str], stdin: str | None = None, check: bool = True) -> None:
        r = subprocess.run(["ip", *args], input=stdin, capture_output=True, text=True)
        if check and r.returncode != 0:
            raise RuntimeError(f"ip {' '.join(args)}: {r.stderr.strip()}")

    def attach_controller(self, timeout: float = 10.0) -> None:
        """Wait for the controller's management veth (added from outside) and put it on the mgmt bridge."""
        deadline = time.monotonic() + timeout
        spans = [pp.veth for pp in self.net.span_ports()]
        while time.monotonic() < deadline:
            if netns.link_exists(CORE_MGMT_IF) and all(netns.link_exists(v) for v in spans):
                self._ip(["link", "set", CORE_MGMT_IF, "master", MGMT_BRIDGE, "up"])
                for v in spans:  # SPAN destinations: up, but never on the bridge
                    self._ip(["link", "set", v, "up"])
                return
            time.sleep(0.02)
        raise RuntimeError("the controller's management veth never arrived")

    # -- services ------------------------------------------------------------------------------------
    def start_pbxs(self) -> None:
        secret = self.secrets.get(credentials.referenced(self.topo)["LAB_SIP_SECRET"].var, "")
        exts = {e: credentials.sip_password(secret, e) for e in self.topo.extensions()}
        for d in self.topo.of_kind("pbx"):
            work = self.run_dir / d.name
            work.mkdir(exist_ok=True)
            # Registration changes are pushed to the site's CTI (it reconciles with ul.dump as well).
            events = stackservices.cti_events(self.topo, d.site)
            rpc_host = stackservices.pbx_rpc_host(self.topo, d)  # management only, to its clients only
            spec = pbx.PbxSpec(
                name=d.name,
                listen=str(d.spec.address),
                sip_port=d.spec.sip_port,
                rpc_port=d.spec.rpc_port,
                realm="lab",
                workdir=work,
                extensions=exts,
                rpc_listen=rpc_host,
                rpc_allow=stackservices.rpc_clients(self.topo) if rpc_host else [],
                event_target=f"{events[0]}:{events[1]}" if events else None,
            )
            argv = netns.nsenter_argv(ns_path(d.name)) + pbx.command(spec)
            sup = self.supervisors.setdefault(d.name, ServiceSupervisor())
            # Every start, restarts included (a healed service_kill), renders the config again with a new
            # boot id: the same boot id with an event seq starting again from 1 would make a CTI take the
            # new run's registration events for old ones.
            sup.add(
                Service(
                    name=d.spec.service,
                    argv=argv,
                    log_path=self.logs / f"{d.name}.log",
                    before_start=functools.partial(pbx.write_files, spec),
                )
            )
            sup.start(d.spec.service)

    def start_stack(self) -> None:
        """UL, CTI and phones in parallel (each waits until it answers), then the swarms."""
        planned = stackservices.plan(self.topo, self.run_dir, self.secrets)
        self.probes = {}
        for p in planned:
            (self.run_dir / p.device).mkdir(exist_ok=True)
            sup = self.supervisors.setdefault(p.device, ServiceSupervisor())
            ready = stackservices.ready_probe(ns_path(p.device), p.probe)
            self.probes[(p.device, p.name)] = ready
            sup.add(
                Service(
                    name=p.name,
                    argv=netns.nsenter_argv(ns_path(p.device)) + p.argv,
                    log_path=self.logs / f"{p.device}.log",
                    ready=ready if p.wait else None,
                    env=p.env or None,
                    cwd=str(stackservices.REPO_ROOT),
                    start_timeout=20.0,
                )
            )
        first = [p for p in planned if p.wait]
        with ThreadPoolExecutor(max_workers=max(1, len(first))) as pool:
            for f in [pool.submit(self.supervisors[p.device].start, p.name) for p in first]:
                f.result()
        for p in planned:
            if not p.wait and self.autostart_swarm:
                self.supervisors[p.device].start(p.name)

    def pbx_answers(self, name: str) -> bool:
        d = self.topo.device(name)
        with netns.entered(ns_path(name)):
            code = sipprobe.options_ping(str(d.spec.address), d.spec.sip_port, timeout=0.5)
        return code == 200

    def wait_pbxs(self, timeout: float = 8.0) -> None:
        deadline = time.monotonic() + timeout
        pending = {d.name for d in self.topo.of_kind("pbx")}
        while pending and time.monotonic() < deadline:
            pending = {n for n in pending if not self.pbx_answers(n)}
            if pending:
                time.sleep(0.05)
        if pending:
            raise RuntimeError(f"PBX not answering OPTIONS: {', '.join(sorted(pending))}")

    # -- emulated management interfaces ---------------------------------------------------------------
    def start_emulators(self) -> None:
        key = load_or_create_host_key(self.run_dir / "ssh_host_key")
        known = []
        creds = self.topo.model.credentials
        sw_user = creds.switch.username if creds.switch else "admin"
        sw_pass = creds.switch.password.reveal() if creds.switch else ""
        sw_secret = creds.switch.secret.reveal() if creds.switch and creds.switch.secret else None
        host_user = creds.host.username if creds.host else "labops"
        host_pass = creds.host.password.reveal() if creds.host else ""

        for sw in self.topo.of_kind("switch"):
            backend = VethPorts(sw.name, self.net, self.topo)
            facts = {"model": "vSwitch-24G" if sw.spec.device_type == "cisco_ios" else "S5735-L24T4X"}
            factory = switch_session_factory(
                sw.name, sw.spec.device_type, list(sw.spec.ports), backend, facts, enable_secret=sw_secret
            )  # one factory per switch: its sessions share one running config, as on a real switch
            lsock = netns.listener_in(ns_path(sw.name), str(sw.spec.mgmt), sw.spec.ssh_port)
            server = SSHServer(lsock, key, {sw_user: sw_pass}, factory, name=sw.name)
            server.start()
            self.servers.append(server)
            known.append(_known_line(str(sw.spec.mgmt), sw.spec.ssh_port, key))
            if sw.spec.console:
                self.consoles[sw.spec.console] = PtyConsole(factory, hostname=sw.name)

        for d in self.topo.devices.values():
            if d.kind not in ("pbx", "cti", "ul", "host") or d.spec.mgmt is None:
                continue
            sup = self.supervisors.setdefault(d.name, ServiceSupervisor())
            lsock = netns.listener_in(ns_path(d.name), str(d.spec.mgmt), d.spec.ssh_port)
            factory = host_session_factory(d.name, sup, netns_argv=netns.nsenter_argv(ns_path(d.name)))
            factory = tool_host_factory(factory, netns.nsenter_argv(ns_path(d.name)))  # harness.tools
            sftp_root = None
            if d.kind == "host" and d.spec.role == "caller":  # its test caller over SSH, results over SFTP
                sftp_root = self.run_dir / d.name
                sftp_root.mkdir(exist_ok=True)
                argv = netns.nsenter_argv(ns_path(d.name))
                factory = caller_host_factory(factory, d.spec.caller_command, sftp_root, argv)
            server = SSHServer(lsock, key, {host_user: host_pass}, factory, name=d.name, sftp_root=sftp_root)
            server.start()
            self.servers.append(server)
            known.append(_known_line(str(d.spec.mgmt), d.spec.ssh_port, key))
        caps = capture_host_plans(self.topo)  # what a far site's SPAN is cabled to in a physical lab
        known += [self.start_capture_host(c, key, {host_user: host_pass}) for c in caps]
        self.write_state(capture_hosts=[c.to_dict() for c in caps])  # for `hil lab up --as-physical`
        (self.run_dir / "known_hosts").write_text("\n".join(known) + "\n")

    def start_capture_host(self, cap: CaptureHostPlan, key: Any, users: dict[str, str]) -> str:
        """One capture host of the twin (virtual/capturehost.py): its namespace, management address and
        SPAN NIC, and its SSH server (tcpdump in its namespace, SFTP over its files). Its known_hosts line."""
        span_veth = self.net.port_veth(cap.switch, cap.span_port)
        for argv in build_commands(cap, MGMT_BRIDGE, self.net.mgmt_prefix):
            r = subprocess.run(argv, capture_output=True, text=True)
            if r.returncode != 0:
                raise RuntimeError(f"capture host {cap.name}: {' '.join(argv)}: {r.stderr.strip()}")
        root = self.run_dir / cap.name
        (root / "tmp").mkdir(parents=True, exist_ok=True)  # its workdir, /tmp
        argv = netns.nsenter_argv(ns_path(cap.name))
        shell = host_session_factory(cap.name, ServiceSupervisor(), netns_argv=argv)
        env = functools.partial(tcpdump_env, self.run_dir)
        cabled = functools.partial(cable, span_veth, cap.span_veth)
        factory = capture_host_factory(shell, root, argv, env=env, cabled=cabled)
        lsock = netns.listener_in(ns_path(cap.name), cap.mgmt, 22)
        server = SSHServer(lsock, key, users, factory, name=cap.name, sftp_root=root)
        server.start()
        self.servers.append(server)
        return _known_line(cap.mgmt, 22, key)

    # -- power distribution units -------------------------------------------------------------------
    def start_pdus(self) -> None:
        """Each PDU's CLI on its console (a pty), switching the outlets' hosts through power()."""
        login = self.topo.model.credentials.console
        users = {login.username: login.password.reveal()} if login else {}
        for pdu in self.topo.of_kind("pdu"):
            outlets = {n: o.connects for n, o in pdu.spec.outlets.items()}
            backend = PowerBackend(outlets, self.power)
            self.pdus[pdu.name] = backend
            factory = pdu_session_factory(pdu.name, outlets, backend, users)
            self.consoles[pdu.spec.console] = PtyConsole(factory, hostname=pdu.name)

    def power(self, device: str, on: bool) -> None:
        """An outlet feeding ``device`` switched. Off: its services die at once (SIGKILL, as a power cut)
        and its interfaces lose link. On: links up, then the services that ran come back (booting)."""
        if device not in self.net.namespaces:
            log.warning("power %s: not a host of this lab; outlet switched, nothing fed", device)
            return
        sup = self.supervisors.get(device)
        ifaces = [ifname for ifname, _ in self.net.addresses.get(device, [])]
        if not on:
            running = [st["name"] for st in sup.status_all() if st["pid"]] if sup else []
            self.powered_off[device] = [str(n) for n in running]
            for name in running:
                try:
                    sup.kill(str(name), signal.SIGKILL)  # type: ignore[union-attr]
                except ServiceError:
                    pass
            for ifname in ifaces:
                netns.set_link(ifname, False, ns_path(device))
            return
        for ifname in ifaces:
            netns.set_link(ifname, True, ns_path(device))
        names = self.powered_off.pop(device, [])
        if sup and names:
            threading.Thread(target=self._boot, args=(device, sup, names), daemon=True).start()

    def _boot(self, device: str, sup: ServiceSupervisor, names: list[str]) -> None:
        for name in names:
            try:
                sup.start(name)
            except ServiceError as e:
                log.warning("power on %s: %s did not start: %s", device, name, e)

    # -- status and control ---------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        links = []
        for (sw, port), pp in self.net.ports.items():
            admin, carrier = netns.link_state(pp.veth)
            links.append(
                {
                    "switch": sw,
                    "port": port,
                    "veth": pp.veth,
                    "connects": self.topo.device(sw).spec.ports[port].connects,
                    "admin": "up" if admin else "down",
                    "state": "up" if admin and carrier else "down",
                }
            )
        mgmt = []
        for dev, veth in self.net.mgmt_veths.items():
            admin, carrier = netns.link_state(veth)
            mgmt.append({"device": dev, "veth": veth, "state": "up" if admin and carrier else "down"})
        procs = []
        for dev, sup in self.supervisors.items():
            for st in sup.status_all():
                entry = dict(st)
                entry["device"] = dev
                if self.topo.device(dev).kind == "pbx" and st.get("state") == "active":
                    entry["answers"] = self.pbx_answers(dev)
                elif st.get("state") == "active" and (probe := self.probes.get((dev, str(st["name"])))):
                    entry["answers"] = probe()
                procs.append(entry)
        return {
            **self.state,
            "links": links,
            "management": mgmt,
            "processes": procs,
            "consoles": {k: c.path for k, c in self.consoles.items()},
        }

    def handle(self, req: dict[str, Any]) -> dict[str, Any]:
        op = req.get("op")
        if op == "status":
            return {"ok": True, "status": self.status()}
        if op == "down":
            self.stop_event.set()
            return {"ok": True}
        if op == "set_link":
            name = req["link"]
            allowed = {pp.veth for pp in self.net.ports.values()} | set(self.net.mgmt_veths.values())
            if name not in allowed:
                return {"ok": False, "error": f"{name} is not a link of this lab"}
            netns.set_link(name, bool(req["up"]))
            return {"ok": True}
        return {"ok": False, "error": f"unknown op {op!r}"}

    def bind_control(self) -> socket.socket:
        """Listen before the lab says it is ready, so a status request right after `up` finds the socket."""
        path = self.run_dir / "control.sock"
        if path.exists():
            path.unlink()
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        srv.bind(str(path))
        os.chmod(path, 0o600)
        srv.listen(16)
        srv.settimeout(0.2)
        return srv

    def serve_control(self, srv: socket.socket) -> None:
        while not self.stop_event.is_set():
            try:
                conn, _ = srv.accept()
            except TimeoutError:
                continue
            threading.Thread(target=self._serve_conn, args=(conn,), daemon=True).start()
        srv.close()

    def _serve_conn(self, conn: socket.socket) -> None:
        with conn:
            f = conn.makefile("rwb")
            for line in f:
                try:
                    reply = self.handle(json.loads(line))
                except Exception as e:  # a bad request must not take the lab down
                    reply = {"ok": False, "error": f"{type(e).__name__}: {e}"}
                f.write(json.dumps(reply, default=str).encode() + b"\n")
                f.flush()

    # -- lifecycle ------------------------------------------------------------------------------------
    def shutdown(self, grace: float = 0.5) -> None:
        """Ask every service to stop, all at once, for at most `grace` seconds. Whatever is left dies with
        this process: the kernel kills a PID namespace's members when its init exits."""
        stoppers = [threading.Thread(target=sup.stop_all, daemon=True) for sup in self.supervisors.values()]
        for t in stoppers:
            t.start()
        deadline = time.monotonic() + grace
        for t in stoppers:
            t.join(max(0.0, deadline - time.monotonic()))
        for s in self.servers:
            s.close()
        for c in self.consoles.values():
            c.close()

    def reap_orphans(self) -> None:
        """As PID 1 we inherit every orphan; reap those no supervisor waits for, so none stays a zombie."""
        owned = set()
        for sup in self.supervisors.values():
            owned |= sup.pids()
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) in owned or int(entry) == 1:
                continue
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[0] == "Z" and fields[1] == "1":
                try:
                    os.waitpid(int(entry), os.WNOHANG)
                except ChildProcessError:
                    pass

    def run(self) -> None:
        t0 = time.monotonic()
        self.build_network()
        self.write_state(phase="network")
        self.attach_controller()
        self.start_pbxs()
        self.start_emulators()
        self.start_pdus()
        self.wait_pbxs()
        self.start_stack()
        control = threading.Thread(target=self.serve_control, args=(self.bind_control(),), daemon=True)
        control.start()
        self.write_state(
            phase="ready",
            ready_after_s=round(time.monotonic() - t0, 3),
            netns={n: ns_path(n) for n in self.net.namespaces},
            ports={f"{sw}:{p}": pp.veth for (sw, p), pp in self.net.ports.items()},
            mgmt_veths=self.net.mgmt_veths,
            consoles={k: c.path for k, c in self.consoles.items()},
        )
        while not self.stop_event.wait(1.0):
            self.reap_orphans()
        self.shutdown()


def _known_line(addr: str, port: int, key: Any) -> str:
    host = addr if port == 22 else f"[{addr}]:{port}"
    return f"{host} {key.get_name()} {key.get_base64()}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m virtual.keeper")
    ap.add_argument("--topology", required=True)
    ap.add_argument("--run-dir", required=True)
    ap.add_argument("--no-swarm", action="store_true", help="do not start the agent swarms with the lab")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    run_dir = Path(args.run_dir)
    try:
        topo = load(args.topology)
    except TopologyError as e:
        for line in e.lines():
            print(f"error: {line}", file=sys.stderr)
        return 2
    keeper = Keeper(topo, run_dir, autostart_swarm=not args.no_swarm)
    signal.signal(signal.SIGTERM, lambda *_: keeper.stop_event.set())
    signal.signal(signal.SIGINT, lambda *_: keeper.stop_event.set())
    try:
        keeper.run()
    except Exception as e:
        log.exception("lab failed to start")
        keeper.write_state(phase="failed", error=f"{type(e).__name__}: {e}")
        keeper.shutdown()
        logging.shutdown()
        os._exit(1)
    logging.shutdown()
    os._exit(0)  # do not wait for server threads: the kernel ends everything of the lab with us


if __name__ == "__main__":
    sys.exit(main())
