"""The things an observer polls: every PBX's registrations and every CTI's sessions of a lab."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from harness.lab import Lab
from harness.observe.readers import cti_sessions, last_reply_at, pbx_registrations, reset_reply_clock

__all__ = ["Endpoint", "endpoints"]


@dataclass(frozen=True)
class Endpoint:
    """One thing the observer polls: a PBX's registrations or a CTI's sessions."""

    kind: str  # "pbx" or "cti"
    device: str
    site: str
    host: str
    port: int

    @property
    def obs_kind(self) -> str:
        return f"{self.kind}_snapshot"

    @property
    def rpc_url(self) -> str:
        """A PBX's JSON-RPC URL (kamailio's jsonrpcs over HTTP)."""
        return f"http://{self.host}:{self.port}/RPC"

    def read(self, timeout: float) -> dict[str, Any]:
        """The snapshot value for the history (docs/history.md)."""
        if self.kind == "pbx":
            return {"site": self.site, "registrations": pbx_registrations(self.rpc_url, timeout)}
        return {"site": self.site, "sessions": cti_sessions(self.host, self.port, timeout)}

    def read_timed(self, timeout: float) -> tuple[dict[str, Any], float, float]:
        """(value, when the request was sent, when the reply's last byte arrived). The table the device
        sent is from some moment in between; ``read_ms`` in the value says how wide that window is."""
        t_sent = time.monotonic()
        reset_reply_clock()
        value = self.read(timeout)
        t_recv = last_reply_at() or time.monotonic()
        value["read_ms"] = round((t_recv - t_sent) * 1000, 1)
        return value, t_sent, t_recv


def endpoints(lab: Lab) -> list[Endpoint]:
    """Every PBX and CTI of the lab, at the address the controller reaches (management if it has one)."""
    out = []
    for d in lab.topology.of_kind("pbx"):
        out.append(Endpoint("pbx", d.name, d.site, d.control_address, d.spec.rpc_port))
    for d in lab.topology.of_kind("cti"):
        out.append(Endpoint("cti", d.name, d.site, d.control_address, d.spec.port))
    return out
