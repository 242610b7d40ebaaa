"""Opening and closing a lab: scripts, the CLI and the pytest plugin all start here."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from harness import credentials
from harness.lab.base import Lab
from harness.lab.physical import LabUnusable, PhysicalBackend
from harness.lab.virtual import LabError, attach
from harness.topology import Topology

__all__ = ["LabError", "LabUnusable", "close_lab", "lab_session", "open_lab"]


def open_lab(topo: Topology, bring_up: bool = True) -> Lab:
    """Attach to the lab: bring a virtual one up if it is not, and load its secrets into the environment."""
    credentials.register(topo)
    if topo.kind != "virtual":
        backend = PhysicalBackend(topo)
        backend.preflight()  # a lab that cannot be judged is refused before any fault (LabUnusable)
        return Lab(topo, backend)
    backend = attach(topo, bring_up)
    return Lab(topo, backend, backend.owned)


def close_lab(lab: Lab) -> None:
    if lab.owned:
        lab.backend.close()


@contextmanager
def lab_session(topo: Topology) -> Iterator[Lab]:
    lab = open_lab(topo)
    try:
        yield lab
    finally:
        close_lab(lab)
