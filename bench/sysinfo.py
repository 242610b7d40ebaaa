"""What every benchmark's JSON file says about where it ran: the machine and the versions of what it used.

One place for it, so the four benchmarks (failover, register, capture, lab) describe a run the same way
and a figure can always be read next to the machine, its load and the revision that produced it.
"""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

# Tools and Python libraries a benchmark may run on; each is reported ("missing" when absent).
TOOLS = {
    "kamailio": ["kamailio", "-v"],
    "tcpdump": ["tcpdump", "--version"],
    "tshark": ["tshark", "--version"],
    "sipp": ["sipp", "-v"],
    "tcpreplay": ["tcpreplay", "--version"],
}
LIBRARIES = ("aiohttp", "uvloop", "orjson", "scapy", "netmiko", "paramiko")


def _first_line(argv: list[str]) -> str:
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "missing"
    text = (r.stdout or "") + (r.stderr or "")
    return next((ln.strip() for ln in text.splitlines() if ln.strip()), "unknown")


def _library(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "missing"


def machine() -> dict[str, Any]:
    """Cores, memory, CPU model, kernel and the load average when the benchmark started."""
    cpu = "unknown"
    try:
        cpu = next(
            (ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")),
            "unknown",
        )
    except OSError:
        pass
    return {
        "cores": os.cpu_count(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "cpu": cpu,
        "kernel": platform.release(),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def versions(tools: tuple[str, ...] = tuple(TOOLS)) -> dict[str, str]:
    """Python, the stack's event loop, the libraries, the ``tools`` asked for, and the git revision."""
    from stack.common.loop import name as loop_name

    out = {"python": platform.python_version(), "event_loop": loop_name()}
    out.update({lib: _library(lib) for lib in LIBRARIES})
    out.update({t: _first_line(TOOLS[t]) for t in tools})
    out["hil"] = _first_line(["git", "-C", str(ROOT), "describe", "--always", "--dirty"])
    return out


def describe(tools: tuple[str, ...] = tuple(TOOLS)) -> dict[str, Any]:
    """``{"machine": ..., "versions": ...}`` for a benchmark's JSON file."""
    return {"machine": machine(), "versions": versions(tools)}
