"""The physical lab's backend: the lab's state read only through the devices' management interfaces.

Links from each switch's CLI (netmiko), services from `systemctl is-active` over SSH (paramiko), management
reachability from whether that SSH login worked. A device that cannot be read makes its entries `unknown`
and adds a problem, so a checker comparing the lab before and after a run answers `unknown`, not `valid`.
The twin can be driven through this backend (`--as-physical`), which is how this path is tested here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from harness.drivers import DeviceError, DeviceUnreachable, driver_for
from harness.lab.base import Lab, LabStatus, LinkStatus, ManagementStatus, OutletStatus, ProcessStatus, Tap
from harness.topology import REPO_ROOT, Topology


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
        self._read_links(lab, st)
        self._read_services(lab, st)
        self._read_outlets(lab, st)
        if not (st.links or st.processes or st.outlets):
            return None
        return st

    def _read_links(self, lab: Lab, st: LabStatus) -> None:
        for sw in self.topology.of_kind("switch"):
            cabled = [(p, spec.connects) for p, spec in sw.spec.ports.items() if spec.connects]
            if not cabled:
                continue
            try:
                with driver_for(lab, sw.name) as drv:
                    for port, connects in cabled:
                        ps = drv.port_state(port)
                        state = "up" if ps.admin_up and ps.link_up else "down"
                        st.links.append(LinkStatus(sw.name, port, state, connects))
                st.management.append(ManagementStatus(sw.name, "up"))
            except (DeviceError, DeviceUnreachable, OSError) as e:
                st.problems.append(f"{sw.name}: links not read: {e}")
                st.management.append(ManagementStatus(sw.name, "unknown"))
                st.links.extend(LinkStatus(sw.name, p, "unknown", c) for p, c in cabled)

    def _read_services(self, lab: Lab, st: LabStatus) -> None:
        for dev in self.topology.devices.values():
            service = getattr(dev.spec, "service", None)
            if dev.kind not in ("pbx", "cti", "ul", "host") or not service:
                continue
            try:
                with driver_for(lab, dev.name) as drv:
                    active = drv.service_active(service)
                st.processes.append(ProcessStatus(dev.name, service, "active" if active else "inactive"))
                st.management.append(ManagementStatus(dev.name, "up"))
            except (DeviceError, DeviceUnreachable, OSError) as e:
                st.problems.append(f"{dev.name}: {service} not read: {e}")
                st.processes.append(ProcessStatus(dev.name, service, "unknown"))
                st.management.append(ManagementStatus(dev.name, "unknown"))

    def _read_outlets(self, lab: Lab, st: LabStatus) -> None:
        for pdu in self.topology.of_kind("pdu"):
            wired = [(o, spec.connects) for o, spec in pdu.spec.outlets.items()]
            try:
                with driver_for(lab, pdu.name) as drv:
                    for outlet, connects in wired:
                        on = drv.outlet_state(outlet)
                        st.outlets.append(OutletStatus(pdu.name, outlet, "up" if on else "down", connects))
            except (DeviceError, DeviceUnreachable, OSError) as e:
                st.problems.append(f"{pdu.name}: outlets not read: {e}")
                st.outlets.extend(OutletStatus(pdu.name, o, "unknown", c) for o, c in wired)

    def ns_path(self, device: str) -> str | None:
        return None

    def console_url(self, console: str) -> str | None:
        return None

    def tap(self, switch: str, port: str) -> Tap | None:
        return None

    def logs_dir(self) -> Path | None:
        return None

    def environment(self) -> dict[str, str]:
        return {}

    def close(self) -> None:
        return None
