"""The faults the failover bench makes at sha, and when each one showed (the fault time of every figure).

Why a clock per kind: detection is measured from the moment the fault took hold, not from when its command
was sent (an SSH or switch-CLI round trip is 0.1-0.6 s). A killed process is gone from /proc, a paused one
is in state T there (both polled every 2 ms); a shut switch port is down in the lab keeper's view (polled
every 10 ms). A packet filter leaves no such trace outside the host, so a blackhole's time is bounded from
the wire: not before its command started, and not before the last packet the host sent (captured on its
switch port); whatever is left (``uncertainty``) only makes the measured detection longer, never shorter.
"""

from __future__ import annotations

import mmap
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.decode import iter_frames
from harness.drivers import Step
from harness.lab import Lab


@dataclass(frozen=True)
class BenchFault:
    """One fault of the bench: the harness fault kind, the role it hits at sha, its params, and how its
    moment is seen (``gone``, ``paused``, ``port``, ``filter``)."""

    kind: str
    role: str
    params: dict[str, Any] = field(default_factory=dict)
    clock: str = "gone"


FAULTS = {
    "pbx-kill": BenchFault("service_kill", "pbx", {"service": "kamailio"}),
    "pbx-port": BenchFault("port_down", "pbx", {}, "port"),
    "pbx-pause": BenchFault("service_pause", "pbx", {"service": "kamailio"}, "paused"),
    "pbx-blackhole": BenchFault("blackhole", "pbx", {}, "filter"),
    "cti-kill": BenchFault("service_kill", "cti", {"service": "hil-cti"}),
    "cti-port": BenchFault("port_down", "cti", {}, "port"),
    "cti-pause": BenchFault("service_pause", "cti", {"service": "hil-cti"}, "paused"),
    "cti-blackhole": BenchFault("blackhole", "cti", {}, "filter"),
}


def _state(pid: int) -> str | None:
    """The process state letter from /proc/<pid>/stat (None when it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


class FaultClock(threading.Thread):
    """Stamps (wall clock) the moment a fault shows; for a ``filter`` fault, the span of its command, from
    the injector's driver steps (:meth:`on_step`), refined later from the capture (:meth:`refine`)."""

    def __init__(self, lab: Lab, fault: BenchFault, pid: int | None, device: str) -> None:
        super().__init__(daemon=True)
        self.lab, self.fault, self.pid, self.device = lab, fault, pid, device
        self.t: float | None = None
        self.uncertainty = 0.0  # seconds the true moment may lie after ``t``
        self.how = ""
        self.step: tuple[float, float] | None = None  # (start, end) of the fault's command, wall clock
        self._offset = time.time() - time.monotonic()
        self._halt = threading.Event()

    def on_step(self, step: Step) -> None:
        """A driver step sink: keeps the span of the fault's inject command."""
        if step.action == f"{self.fault.kind}.inject" and step.ok and step.t_end is not None:
            self.step = (step.t_start + self._offset, step.t_end + self._offset)

    def run(self) -> None:
        clock = self.fault.clock
        if clock == "filter":
            return  # nothing to poll: see refine()
        self.how = {
            "gone": "process gone from /proc (polled every 2 ms)",
            "paused": "process in state T in /proc (polled every 2 ms)",
            "port": "switch port down in the lab keeper's view (polled every 10 ms)",
        }[clock]
        while not self._halt.is_set():
            if clock == "port":
                st = self.lab.status()
                if st and any(x.connects == self.device and x.state != "up" for x in st.links):
                    self.t = time.time()
                    return
                time.sleep(0.01)
                continue
            state = _state(self.pid) if self.pid is not None else None
            if (clock == "gone" and state in (None, "Z", "X")) or (clock == "paused" and state in ("T", "t")):
                self.t = time.time()
                return
            time.sleep(0.002)

    def stop(self) -> None:
        self._halt.set()

    def refine(self, pcap: Path | None) -> None:
        """For a ``filter`` fault: the fault time is the later of its command's start and the last packet
        the host sent before the command returned (``pcap``: a capture of the host's own packets)."""
        if self.fault.clock != "filter" or self.step is None:
            return
        start, end = self.step
        last = last_packet_before(pcap, end) if pcap is not None else None
        self.t = max(start, last) if last is not None else start
        self.uncertainty = end - self.t
        self.how = (
            "later of the blackhole command's start and the host's last packet on its switch port before "
            "the command returned"
        )


def last_packet_before(pcap: Path, end: float) -> float | None:
    """Time of the last frame in ``pcap`` at or before ``end`` (None if none)."""
    if not pcap.exists() or pcap.stat().st_size <= 24:
        return None
    last = None
    with pcap.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        for _n, ts, *_rest in iter_frames(mm):
            if ts <= end:
                last = ts if last is None or ts > last else last
    return last
