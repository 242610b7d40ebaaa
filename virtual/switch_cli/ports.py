"""The switch's model as every dialect sees it: ports, their names in each vendor's spelling, and the
state that outlives a CLI session (descriptions, SPAN sessions, saves).

Why apart from the dialects: where port state really lives (``PortBackend``, the keeper's veths) and how a
port is named are the same for Cisco IOS and Huawei VRP; only the command language differs.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

VENDORS = ("cisco_ios", "huawei")


class PortBackend(Protocol):
    """Where port state really lives (the keeper: one veth per switch port)."""

    def set_admin(self, port: str, up: bool) -> None: ...

    def state(self, port: str) -> tuple[bool, bool]:
        """Return (admin up, link up)."""
        ...

    def description(self, port: str) -> str: ...


@runtime_checkable
class MirrorBackend(Protocol):
    """Optional: a backend that also implements SPAN (for example with tc mirred)."""

    def set_mirror(self, session: int, sources: dict[str, str], destination: str | None) -> None:
        """Apply one mirror session: sources maps port name to "rx", "tx" or "both"."""
        ...


@dataclass
class MirrorSession:
    sources: dict[str, str] = field(default_factory=dict)
    destination: str | None = None


class SwitchConfig:
    """State of one switch shared by all its CLI sessions, so a change outlives the session."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.descriptions: dict[str, str] = {}
        self.mirrors: dict[int, MirrorSession] = {}
        self.saves = 0
        self.boot_time = time.time()


_TYPES: dict[str, dict[str, str]] = {
    "cisco_ios": {
        "GigabitEthernet": "Gi",
        "FastEthernet": "Fa",
        "TenGigabitEthernet": "Te",
        "TwoGigabitEthernet": "Tw",
        "TwentyFiveGigE": "Twe",
        "FortyGigabitEthernet": "Fo",
        "HundredGigE": "Hu",
        "Ethernet": "Et",
    },
    "huawei": {
        "GigabitEthernet": "GE",
        "XGigabitEthernet": "XGE",
        "MultiGE": "MultiGE",
        "25GE": "25GE",
        "40GE": "40GE",
        "100GE": "100GE",
        "Ethernet": "Eth",
    },
}
_IFNAME = re.compile(r"^(\d+GE|[A-Za-z][A-Za-z-]*?)\s*(\d+(?:/\d+)*)$", re.I)


@dataclass(frozen=True)
class Port:
    name: str  # as the keeper named it; what the backend is called with
    full: str  # GigabitEthernet0/3
    short: str  # Gi0/3
    index: int


def _split_type(vendor: str, text: str, present: set[str] | None = None) -> tuple[str, str] | None:
    """Resolve 'gi0/3' / 'GE 0/0/3' to (full type name, number) the way the vendor CLI does."""
    m = _IFNAME.match(text.strip())
    if not m:
        return None
    typ, num = m.group(1).lower(), m.group(2)
    types = _TYPES[vendor]
    exact = [full for full, short in types.items() if short.lower() == typ or full.lower() == typ]
    cands = exact or [full for full in types if full.lower().startswith(typ)]
    if len(cands) > 1 and present:
        cands = [c for c in cands if c in present]
    return (cands[0], num) if len(cands) == 1 else None


class PortTable:
    """The switch's ports, found by any spelling the vendor CLI accepts."""

    def __init__(self, vendor: str, names: list[str]) -> None:
        self.vendor = vendor
        self.ports: list[Port] = []
        for index, name in enumerate(names, start=1):
            split = _split_type(vendor, name)
            if split:
                full = split[0] + split[1]
                short = _TYPES[vendor][split[0]] + split[1]
            else:
                full = short = name
            self.ports.append(Port(name=name, full=full, short=short, index=index))
        self._by_full = {p.full.lower(): p for p in self.ports}
        self._by_full.update({p.name.lower(): p for p in self.ports})
        self._present = {_split_type(vendor, p.full)[0] for p in self.ports if _split_type(vendor, p.full)}

    def resolve(self, text: str) -> Port | None:
        port = self._by_full.get(text.strip().lower())
        if port:
            return port
        split = _split_type(self.vendor, text, self._present)
        return self._by_full.get((split[0] + split[1]).lower()) if split else None

    def by_name(self, name: str) -> Port:
        return self._by_full[name.lower()]
