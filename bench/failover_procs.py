"""The lab's service processes for the failover bench: their trees, CPU seconds and memory, and py-spy.

Read from /proc of the controller's PID namespace (the keeper reports each service's host PID), so the
figures are the kernel's, never the stack's word.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

from harness.lab import Lab

CLK_TCK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None


def alive(pid: int) -> bool:
    st = _stat(pid)
    return st is not None and st[0] not in ("Z", "X")


def children_map() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for e in os.listdir("/proc"):
        if e.isdigit():
            st = _stat(int(e))
            if st is not None:
                kids.setdefault(int(st[1]), []).append(int(e))
    return kids


def tree(pid: int, kids: dict[int, list[int]]) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for p in pids:
        st = _stat(p)
        if st is not None:
            total += int(st[11]) + int(st[12])  # utime, stime (fields 14, 15)
    return total / CLK_TCK


def pss_mib(pids: list[int]) -> float:
    kib = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        kib += int(line.split()[1])
                        break
        except OSError:
            pass
    return kib / 1024


def status_kib(pid: int, key: str) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


class Services:
    """The lab's service processes (host PIDs from the keeper) and their process trees."""

    def __init__(self, lab: Lab) -> None:
        st = lab.status()
        self.main: dict[str, int] = {}
        for p in st.processes if st else []:
            if p.pid and p.name != "hil-phone":
                self.main[f"{p.device}/{p.name}"] = p.pid
        self.refresh()

    def refresh(self) -> None:
        kids = children_map()
        self.trees = {k: tree(pid, kids) for k, pid in self.main.items() if alive(pid)}

    def cpu(self) -> dict[str, float]:
        return {k: cpu_seconds(pids) for k, pids in self.trees.items()}

    def pss(self) -> dict[str, float]:
        return {k: pss_mib(pids) for k, pids in self.trees.items()}


class MemSampler(threading.Thread):
    """Peak PSS per service, sampled every ``every`` seconds."""

    def __init__(self, svc: Services, every: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.svc, self.every = svc, every
        self.peak: dict[str, float] = {}
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            for k, v in self.svc.pss().items():
                if v > self.peak.get(k, 0.0):
                    self.peak[k] = v
            self._halt.wait(self.every)

    def stop(self) -> dict[str, float]:
        self._halt.set()
        self.join()
        return {k: round(v, 1) for k, v in self.peak.items()}


def py_spy(
    svc: Services, keys: list[str], seconds: float, out: Path, tag: str
) -> list[subprocess.Popen[bytes]]:
    """Sample the given services with py-spy (when installed) for ``seconds``; raw folded stacks."""
    exe = Path(sys.executable).with_name("py-spy")
    if not exe.exists():
        print("py-spy not installed in the venv: no profile", flush=True)
        return []
    out.mkdir(parents=True, exist_ok=True)
    procs = []
    for k in keys:
        if k in svc.main:
            name = k.replace("/", "-")
            argv = [
                str(exe),
                "record",
                "-p",
                str(svc.main[k]),
                "-d",
                str(int(seconds)),
                "-r",
                "50",
                "-f",
                "raw",
                "-o",
                str(out / f"{tag}-{name}.txt"),
            ]
            procs.append(subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    return procs


PROFILED = [
    "sha-agents1/hil-swarm",
    "ntg-agents1/hil-swarm",
    "ntg-cti1/hil-cti",
    "sha-cti1/hil-cti",
    "ntg-ul1/hil-login",
]
