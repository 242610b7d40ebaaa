"""The virtual lab's backend: the twin's keeper answers for the lab's state.

The only module of harness/ that imports virtual/. Drivers still reach the twin's devices through their
vendor interfaces (SSH, HTTP, serial); this backend only adds what a physical lab reads off its devices:
the state of every veth and supervised service, the run's secrets and host keys, the namespaces.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from harness.lab.base import LabStatus, LinkStatus, ManagementStatus, ProcessStatus, Tap
from harness.topology import Topology
from virtual import lab as vlab
from virtual.lab import LabError, LabHandle

__all__ = ["LabError", "VirtualBackend", "attach", "bring_up", "find", "take_down"]


class VirtualBackend:
    kind: Literal["virtual"] = "virtual"

    def __init__(self, handle: LabHandle, owned: bool = False) -> None:
        self.handle = handle
        self.owned = owned

    @property
    def name(self) -> str:
        return self.handle.name

    @property
    def keeper_pid(self) -> int:
        return self.handle.keeper_pid

    def run_id(self) -> str:
        return f"{self.handle.name}:{self.handle.keeper_pid}:{self.handle.keeper_start}"

    def state_dir(self) -> Path:
        return Path(self.handle.run_dir)

    def known_hosts(self) -> Path:
        return self.handle.known_hosts()

    def raw_status(self) -> dict[str, Any]:
        """The keeper's own answer, for `hil lab status`."""
        return self.handle.status()

    def status(self) -> LabStatus | None:
        try:
            st = self.handle.status()
        except (LabError, OSError, ValueError):
            return None
        links = [
            LinkStatus(x["switch"], x["port"], x["state"], x.get("connects"), x.get("veth"))
            for x in st.get("links", [])
        ]
        procs = [
            ProcessStatus(p["device"], p["name"], str(p.get("state")), p.get("answers"), p.get("host_pid"))
            for p in st.get("processes", [])
        ]
        mgmt = [ManagementStatus(m["device"], m["state"]) for m in st.get("management", [])]
        extra = {k: v for k, v in st.items() if k not in ("links", "processes", "management")}
        return LabStatus(links, procs, mgmt, problems=[], extra=extra)

    def ns_path(self, device: str) -> str | None:
        return self.handle.ns_path(device)

    def core_netns(self) -> str:
        """The keeper's own network namespace, where the bridges and their veths live."""
        return f"/proc/{self.handle.keeper_pid}/ns/net"

    def console_url(self, console: str) -> str | None:
        path = self.handle.state().get("consoles", {}).get(console)
        return str(path) if path else None

    def tap(self, switch: str, port: str) -> Tap | None:
        veth = (self.handle.state().get("ports") or {}).get(f"{switch}:{port}")
        return Tap(veth, self.core_netns()) if veth else None

    def logs_dir(self) -> Path | None:
        d = Path(self.handle.run_dir) / "logs"
        return d if d.is_dir() else None

    def environment(self) -> dict[str, str]:
        return self.handle.secrets()

    def set_link(self, iface: str, up: bool) -> None:
        """Test-only lever on the twin's wiring (a cable pulled outside any switch); never used by faults."""
        self.handle.set_link(iface, up)

    def close(self) -> None:
        if self.owned:
            vlab.down(self.handle)
            self.owned = False


def find(name: str | None = None) -> VirtualBackend | None:
    h = vlab.find(name)
    return VirtualBackend(h) if h is not None else None


def attach(topo: Topology, bring_up: bool = True) -> VirtualBackend:
    """The running lab of this topology, brought up if it is not (and then owned by the caller)."""
    h = vlab.find(topo.name)
    if h is not None:
        backend = VirtualBackend(h)
    elif not bring_up:
        raise LabError(f"lab {topo.name} is not up; run `hil lab up`")
    else:
        backend = VirtualBackend(vlab.up(topo), owned=True)
    os.environ.update(backend.environment())
    return backend


def bring_up(topo: Topology) -> VirtualBackend:
    return VirtualBackend(vlab.up(topo), owned=True)


def take_down(backend: VirtualBackend | None = None) -> bool:
    """Take the given lab (or whichever is up) down; False when no lab was up."""
    return vlab.down(backend.handle if backend is not None else None)
