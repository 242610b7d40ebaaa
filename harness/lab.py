"""A lab the controller works on: the topology plus how to reach it.

For a physical lab that is the topology and the environment's secrets. For the virtual lab it is also the
running lab's own secrets, its known_hosts file and its namespaces (so captures, phones and test callers can
be started inside it). Scripts and the pytest plugin both start here.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from harness import credentials
from harness.topology import Topology


@dataclass
class Lab:
    topology: Topology
    handle: object | None = None  # virtual.lab.LabHandle for the virtual lab
    owned: bool = False  # True when this controller brought the lab up (and must take it down)

    @property
    def virtual(self) -> bool:
        return self.topology.kind == "virtual"

    def ns_path(self, device: str) -> str | None:
        """The network namespace of a virtual device (None in a physical lab)."""
        if self.handle is None:
            return None
        self.topology.device(device)
        return self.handle.ns_path(device)  # type: ignore[attr-defined]

    def known_hosts(self) -> Path:
        if self.handle is not None:
            return self.handle.known_hosts()  # type: ignore[attr-defined]
        return Path(self.topology.model.ssh.known_hosts).expanduser()

    def sip_password(self, extension: str) -> str:
        secret = self.topology.model.credentials.sip_secret
        return credentials.sip_password(credentials.reveal(secret, "sip_secret"), extension)


def open_lab(topo: Topology, bring_up: bool = True) -> Lab:
    """Attach to the lab: bring a virtual one up if it is not, and load its secrets into the environment."""
    credentials.register(topo)
    if topo.kind != "virtual":
        return Lab(topo)
    from virtual import lab as vlab

    handle = vlab.find(topo.name)
    owned = False
    if handle is None:
        if not bring_up:
            raise vlab.LabError(f"lab {topo.name} is not up; run `hil lab up`")
        handle = vlab.up(topo)
        owned = True
    os.environ.update(handle.secrets())
    return Lab(topo, handle, owned)


def close_lab(lab: Lab) -> None:
    if lab.owned and lab.handle is not None:
        from virtual import lab as vlab

        vlab.down(lab.handle)  # type: ignore[arg-type]


@contextmanager
def lab_session(topo: Topology) -> Iterator[Lab]:
    lab = open_lab(topo)
    try:
        yield lab
    finally:
        close_lab(lab)
