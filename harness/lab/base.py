"""What the controller knows of a lab, and the one interface through which it reads the lab's state.

A lab is its topology plus a backend. The backend answers the questions the harness cannot answer from the
topology alone: is each link up, is each service running, where are the host keys, where may run-scoped
state (the fault journal) live, where can a switch port be tapped. The virtual backend asks the twin's
keeper; the physical backend asks the devices through their management interfaces. Either may not know:
then it says so (`known=False` entries, or no status at all), and a checker answers `unknown`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

from harness import credentials
from harness.topology import Topology

State = Literal["up", "down", "unknown"]


@dataclass(frozen=True)
class LinkStatus:
    """A switch port with the device it is cabled to."""

    switch: str
    port: str
    state: State
    connects: str | None = None
    iface: str | None = None  # the virtual lab's bridge-side veth; None on hardware


@dataclass(frozen=True)
class ProcessStatus:
    """A service of a lab host: `state` is systemd's word (active, inactive, failed, ...) or `unknown`."""

    device: str
    name: str
    state: str
    answers: bool | None = None  # answers on its protocol (None: not probed)
    pid: int | None = None


@dataclass(frozen=True)
class OutletStatus:
    """A PDU outlet with the device it powers: `up` means powered."""

    pdu: str
    outlet: str
    state: State
    connects: str | None = None


@dataclass(frozen=True)
class ManagementStatus:
    """Whether the controller reaches a device's management interface."""

    device: str
    state: State


@dataclass
class LabStatus:
    """One read of the lab. `problems` lists what could not be read; a partial read is not a clean one."""

    links: list[LinkStatus] = field(default_factory=list)
    processes: list[ProcessStatus] = field(default_factory=list)
    management: list[ManagementStatus] = field(default_factory=list)
    outlets: list[OutletStatus] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)  # backend facts for `hil lab status` only

    @property
    def complete(self) -> bool:
        return not self.problems


@dataclass(frozen=True)
class Tap:
    """Where a switch port's traffic can be captured from the controller: an interface in a namespace."""

    iface: str
    netns: str | None


@runtime_checkable
class LabBackend(Protocol):
    """How the harness reaches one running lab; only the virtual backend touches virtual/."""

    kind: Literal["virtual", "physical"]

    def run_id(self) -> str:
        """Identifies this run of the lab (a rebuilt virtual lab is a new run)."""
        ...

    def state_dir(self) -> Path:
        """A directory for run-scoped controller state (the fault journal); created on demand."""
        ...

    def known_hosts(self) -> Path: ...

    def status(self) -> LabStatus | None:
        """Links, services and management reachability; None when the lab cannot be read at all."""
        ...

    def ns_path(self, device: str) -> str | None:
        """The network namespace a controller-side helper must enter to act as `device` (None: run here)."""
        ...

    def console_url(self, console: str) -> str | None:
        """The serial URL of a console whose topology url is `virtual` (None: the backend has none)."""
        ...

    def tap(self, switch: str, port: str) -> Tap | None:
        """Where a switch port can be captured without SPAN (None: only SPAN works, as on hardware)."""
        ...

    def logs_dir(self) -> Path | None:
        """Device logs the backend collects (kamailio, CTI, UL, swarm), for the report."""
        ...

    def environment(self) -> dict[str, str]:
        """Secrets the lab generated for this run, exported so drivers and daemons can read them."""
        ...

    def close(self) -> None:
        """Take the lab down if this controller brought it up; otherwise nothing."""
        ...


@dataclass
class Lab:
    """A lab the controller works on: the topology plus the backend that reaches it."""

    topology: Topology
    backend: LabBackend
    owned: bool = False  # True when this controller brought the lab up (and must take it down)

    @property
    def virtual(self) -> bool:
        return self.backend.kind == "virtual"

    def ns_path(self, device: str) -> str | None:
        self.topology.device(device)
        return self.backend.ns_path(device)

    def known_hosts(self) -> Path:
        return self.backend.known_hosts()

    def status(self) -> LabStatus | None:
        return self.backend.status()

    def state_dir(self) -> Path:
        d = self.backend.state_dir()
        d.mkdir(parents=True, exist_ok=True)
        return d

    def sip_password(self, extension: str) -> str:
        secret = self.topology.model.credentials.sip_secret
        return credentials.sip_password(credentials.reveal(secret, "sip_secret"), extension)
