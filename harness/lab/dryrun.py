"""The backend of a dry run: the topology only. Nothing is brought up, contacted or read."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Literal

from harness.lab.base import LabStatus, Tap
from harness.topology import Topology


class DryRunBackend:
    def __init__(self, topology: Topology) -> None:
        self.topology = topology
        self.kind: Literal["virtual", "physical"] = "virtual" if topology.kind == "virtual" else "physical"
        self._state = Path(tempfile.mkdtemp(prefix="hil-dry-run-"))

    def run_id(self) -> str:
        return f"dry-run:{self.topology.name}"

    def state_dir(self) -> Path:
        return self._state  # a dry run journals nothing real; kept apart from any live lab's journal

    def known_hosts(self) -> Path:
        return Path(self.topology.model.ssh.known_hosts).expanduser()

    def status(self) -> LabStatus | None:
        return None

    def ns_path(self, device: str) -> str | None:
        return None

    def console_url(self, console: str) -> str | None:
        return f"dry-run://{console}"

    def tap(self, switch: str, port: str) -> Tap | None:
        return Tap(f"{switch}:{port}", None)

    def logs_dir(self) -> Path | None:
        return None

    def environment(self) -> dict[str, str]:
        return {}

    def close(self) -> None:
        return None
