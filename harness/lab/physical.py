"""The physical lab's backend: the lab's state read only through the devices' management interfaces.

Links from each switch's CLI (netmiko), services from `systemctl is-active` over SSH (paramiko), phones'
registrations from their HTTP APIs, outlets and console lines over serial (pyserial), and management
reachability from whether each of those logins worked. A device that cannot be read makes its entries
`unknown` and adds a problem, one line naming the device, the interface and what failed, so a checker
comparing the lab before and after a run answers `unknown`, not `valid`, and `preflight` can refuse a lab
before any fault is injected. The twin is driven through this backend (`--as-physical`), which is how this
path is tested here.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal

import paramiko

from harness.drivers import DeviceError, DeviceUnreachable, driver_for
from harness.lab.base import Lab, LabStatus, LinkStatus, ManagementStatus, OutletStatus, ProcessStatus, Tap
from harness.topology import REPO_ROOT, Device, SecretMissing, Topology

__all__ = ["LabUnusable", "PhysicalBackend", "interface_of"]

_READ_ERRORS = (DeviceError, DeviceUnreachable, SecretMissing, OSError, ValueError)
_WORKERS = 8  # devices read at once: a lab of 20 devices answers in about one login's time
LOG_LINES = 500  # journal lines of each service kept with a scenario's report


class LabUnusable(Exception):
    """A physical lab the harness cannot drive: one line per device that failed, exit 2 before any fault."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))

    def lines(self) -> list[str]:
        return list(self.problems)


def interface_of(dev: Device, topo: Topology) -> str:
    """The management interface the harness drives `dev` through, as a user reads it in an error."""
    spec = dev.spec
    if dev.kind == "phone":
        return f"http {dev.control_address}:{spec.api_port}"
    if dev.kind == "console":
        return f"serial {spec.url}"
    if dev.kind == "pdu":
        return f"serial {topo.device(spec.console).spec.url} (console {spec.console})"
    if dev.kind == "switch":
        return f"ssh {spec.mgmt}:{spec.ssh_port}"
    return f"ssh {dev.control_address}:{spec.ssh_port}"


def _why(dev: str, e: BaseException) -> str:
    """The failure without the device name the drivers already put first."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return text.removeprefix(f"{dev}: ")


class PhysicalBackend:
    kind: Literal["physical"] = "physical"

    def __init__(self, topology: Topology, state_root: Path | None = None) -> None:
        self.topology = topology
        self._state_root = state_root or REPO_ROOT / "reports" / "state"

    def run_id(self) -> str:
        return f"physical:{self.topology.name}"

    def state_dir(self) -> Path:
        return self._state_root / self.topology.name

    def known_hosts(self) -> Path:
        return Path(self.topology.model.ssh.known_hosts).expanduser()

    def status(self) -> LabStatus | None:
        lab = Lab(self.topology, self)
        st = LabStatus()
        st.extra = {"phones": [], "consoles": []}
        readers: list[Callable[[], None]] = []
        readers += [lambda d=d: self._read_links(lab, d, st) for d in self.topology.of_kind("switch")]
        readers += [lambda d=d: self._read_host(lab, d, st) for d in self._hosts()]
        readers += [lambda d=d: self._read_outlets(lab, d, st) for d in self.topology.of_kind("pdu")]
        readers += [lambda d=d: self._read_phone(lab, d, st) for d in self.topology.of_kind("phone")]
        readers += [lambda d=d: self._read_console(lab, d, st) for d in self._switch_consoles()]
        with ThreadPoolExecutor(_WORKERS, thread_name_prefix="lab-status") as pool:
            list(pool.map(lambda f: f(), readers))  # list.append is atomic: the readers share `st`
        if not (st.links or st.processes or st.outlets or st.management):
            return None
        order = {name: i for i, name in enumerate(self.topology.devices)}
        st.links.sort(key=lambda x: (order.get(x.switch, 0), x.switch))
        st.processes.sort(key=lambda p: order.get(p.device, 0))
        st.management.sort(key=lambda m: order.get(m.device, 0))
        st.problems.sort()
        return st

    def preflight(self) -> LabStatus:
        """Read every device once; raise LabUnusable naming each that failed (nothing is changed)."""
        st = self.status()
        if st is None:
            raise LabUnusable([f"{self.topology.file}: the lab has no device with a management interface"])
        problems = st.problems + self._capture_problems(st.problems)
        if problems:
            raise LabUnusable(problems)
        return st

    def _capture_problems(self, known: list[str]) -> list[str]:
        """Each capture host a switch names can capture on its SPAN NIC: tcpdump there opens it (``-d``
        opens the interface, compiles the filter and exits) and its workdir is there for the pcaps (SFTP).
        A host already named in a problem (unreachable, wrong password) gets no second line."""
        lab, out = Lab(self.topology, self), []
        for sw in self.topology.of_kind("switch"):
            host, iface = sw.spec.capture_host, str(sw.spec.capture_interface)
            if host is None or any(p.startswith(f"{host}: ") for p in known):
                continue
            dev = self.topology.device(host)
            try:
                with driver_for(lab, host) as drv:
                    r = drv.run(f"tcpdump -i {shlex.quote(iface)} -d", action="capture_check")
                    if r.exit_code != 0:
                        said = [ln for ln in r.stderr.splitlines() if ln.strip()][:1]
                        raise DeviceError(f"tcpdump exited {r.exit_code}: {said[0] if said else ''}".strip())
                    sftp = drv.client.open_sftp()
                    try:
                        sftp.stat(dev.spec.workdir)
                    except OSError as e:
                        raise DeviceError(f"sftp: workdir {dev.spec.workdir}: {e}") from None
                    finally:
                        sftp.close()
            except (*_READ_ERRORS, EOFError, paramiko.SSHException) as e:
                out.append(f"{host}: {interface_of(dev, self.topology)}: capture on {iface}: {_why(host, e)}")
        return out

    # -- one reader per device: each appends its entries, and a problem line when it could not read ------
    def _fail(self, st: LabStatus, dev: Device, e: BaseException) -> None:
        st.problems.append(f"{dev.name}: {interface_of(dev, self.topology)}: {_why(dev.name, e)}")
        st.management.append(ManagementStatus(dev.name, "unknown"))

    def _hosts(self) -> list[Device]:
        return [d for d in self.topology.devices.values() if d.kind in ("pbx", "cti", "ul", "host")]

    def _switch_consoles(self) -> list[Device]:
        pdu_lines = {p.spec.console for p in self.topology.of_kind("pdu")}  # read with their outlets
        return [c for c in self.topology.of_kind("console") if c.name not in pdu_lines]

    def _read_links(self, lab: Lab, sw: Device, st: LabStatus) -> None:
        cabled = [(p, spec.connects) for p, spec in sw.spec.ports.items() if spec.connects]
        try:
            with driver_for(lab, sw.name) as drv:
                found = []
                for port, connects in cabled:
                    ps = drv.port_state(port)
                    state = "up" if ps.admin_up and ps.link_up else "down"
                    found.append(LinkStatus(sw.name, port, state, connects))
            st.links.extend(found)
            st.management.append(ManagementStatus(sw.name, "up"))
        except _READ_ERRORS as e:
            self._fail(st, sw, e)
            st.links.extend(LinkStatus(sw.name, p, "unknown", c) for p, c in cabled)

    def _read_host(self, lab: Lab, dev: Device, st: LabStatus) -> None:
        service = getattr(dev.spec, "service", None)
        if dev.kind == "host" and dev.spec.mgmt is None and not service:
            return  # a host the harness never drives (no management address, no service)
        try:
            with driver_for(lab, dev.name) as drv:
                if service:
                    active = drv.service_active(service)
                else:  # a caller or capture host: the login and one command are its state
                    drv.run("true", action="reachable", check=True)
            if service:
                st.processes.append(ProcessStatus(dev.name, service, "active" if active else "inactive"))
            st.management.append(ManagementStatus(dev.name, "up"))
        except _READ_ERRORS as e:
            self._fail(st, dev, e)
            if service:
                st.processes.append(ProcessStatus(dev.name, service, "unknown"))

    def _read_outlets(self, lab: Lab, pdu: Device, st: LabStatus) -> None:
        wired = [(o, spec.connects) for o, spec in pdu.spec.outlets.items()]
        try:
            with driver_for(lab, pdu.name) as drv:
                found = [
                    OutletStatus(pdu.name, o, "up" if drv.outlet_state(o) else "down", c) for o, c in wired
                ]
            st.outlets.extend(found)
            st.management.append(ManagementStatus(pdu.name, "up"))
        except _READ_ERRORS as e:
            self._fail(st, pdu, e)
            st.outlets.extend(OutletStatus(pdu.name, o, "unknown", c) for o, c in wired)

    def _read_phone(self, lab: Lab, phone: Device, st: LabStatus) -> None:
        try:
            with driver_for(lab, phone.name) as drv:
                reg = drv.registration()
            st.extra["phones"].append(
                {
                    "device": phone.name,
                    "state": reg.state,
                    "server": f"{reg.server}:{reg.port}",
                    "extension": reg.extension,
                }  # fmt: skip
            )
            st.management.append(ManagementStatus(phone.name, "up"))
        except _READ_ERRORS as e:
            self._fail(st, phone, e)
            st.extra["phones"].append({"device": phone.name, "state": "unknown"})

    def _read_console(self, lab: Lab, con: Device, st: LabStatus) -> None:
        try:
            with driver_for(lab, con.name) as drv:
                _ = drv.port  # opened and woken: the line answered with a prompt
            st.extra["consoles"].append({"device": con.name, "url": con.spec.url, "state": "up"})
            st.management.append(ManagementStatus(con.name, "up"))
        except _READ_ERRORS as e:
            self._fail(st, con, e)
            st.extra["consoles"].append({"device": con.name, "url": con.spec.url, "state": "unknown"})

    # -- what a physical lab does not have: the harness must manage without ---------------------------------
    def ns_path(self, device: str) -> str | None:
        return None

    def console_url(self, console: str) -> str | None:
        return None

    def tap(self, switch: str, port: str) -> Tap | None:
        return None

    def logs_dir(self) -> Path | None:
        """Each service's journal, fetched over SSH (`journalctl -u UNIT`) into the state directory, for the
        report. A host that cannot be read gets a log saying why: a report never fails on a log."""
        lab = Lab(self.topology, self)
        out = self.state_dir() / "logs"
        out.mkdir(parents=True, exist_ok=True)
        hosts = [d for d in self._hosts() if getattr(d.spec, "service", None) and d.spec.mgmt is not None]

        def fetch(dev: Device) -> None:
            unit = dev.spec.service
            try:
                with driver_for(lab, dev.name) as drv:
                    text = drv.fetch_log(unit, LOG_LINES)
            except _READ_ERRORS as e:
                text = f"not fetched: {interface_of(dev, self.topology)}: {_why(dev.name, e)}\n"
            (out / f"{dev.name}-{unit}.log").write_text(text)

        with ThreadPoolExecutor(_WORKERS, thread_name_prefix="lab-logs") as pool:
            list(pool.map(fetch, hosts))
        return out

    def environment(self) -> dict[str, str]:
        return {}

    def close(self) -> None:
        return None
