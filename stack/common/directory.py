"""The agent directory and site addresses, read straight from the topology YAML.

Why a loader of its own: ``stack/`` is the system under test and must not import the lab controller, so it
reads the same file the harness reads. Agents are expanded with the same rule as
``harness.topology.Topology.agents()``: ids ``<prefix><n:05d>`` numbered across pools in file order,
extensions taken in order from the pool's range (zero-padded to the range's width), skill groups assigned
round-robin. No validation beyond what this module needs: the harness validates the file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


@dataclass(frozen=True, slots=True)
class Agent:
    """One agent: identity, extension and what a planned-switch rule can select it by."""

    id: str
    extension: str
    pool: str
    home: str
    system: str
    region: str
    skill_group: str

    def attribute(self, scope: str) -> str:
        """The agent's value for a rule scope (``system``, ``region``, ``skill_group`` or ``agent``)."""
        return self.id if scope == "agent" else str(getattr(self, scope))


@dataclass(frozen=True, slots=True)
class Service:
    """One service node of a site (PBX, CTI or UL): its name, address and ports."""

    name: str
    address: str
    port: int
    rpc_port: int | None = None


@dataclass
class Directory:
    """Agents by id and the first PBX/CTI/UL node of each site."""

    agents: dict[str, Agent]
    pbx: dict[str, Service] = field(default_factory=dict)
    cti: dict[str, Service] = field(default_factory=dict)
    ul: dict[str, Service] = field(default_factory=dict)
    sites: list[str] = field(default_factory=list)

    def of_site(self, site: str) -> list[Agent]:
        return [a for a in self.agents.values() if a.home == site]


def expand_agents(raw: dict[str, Any]) -> list[Agent]:
    """Agents of every pool, numbered across pools in file order (the harness's rule, copied)."""
    section = raw.get("agents") or {}
    prefix = section.get("id_prefix", "a")
    out: list[Agent] = []
    n = 0
    for pname, pool in (section.get("pools") or {}).items():
        lo, hi = str(pool["extensions"]).split("-")
        first, width = int(lo), len(lo)
        groups = list(pool["skill_groups"])
        for i in range(int(pool["count"])):
            n += 1
            out.append(
                Agent(
                    id=f"{prefix}{n:05d}",
                    extension=str(first + i).zfill(width),
                    pool=pname,
                    home=pool["home"],
                    system=pool["system"],
                    region=pool["region"],
                    skill_group=groups[i % len(groups)],
                )
            )
    return out


def _first(nodes: dict[str, Any] | None, port_key: str, default_port: int) -> Service | None:
    if not nodes:
        return None
    name, spec = next(iter(nodes.items()))
    rpc = spec.get("rpc_port", 5071) if port_key == "sip_port" else None
    return Service(name, str(spec["address"]), int(spec.get(port_key, default_port)), rpc)


def load(path: str | Path) -> Directory:
    """Read a topology file into a :class:`Directory`."""
    raw = yaml.safe_load(Path(path).read_text())
    d = Directory({a.id: a for a in expand_agents(raw)})
    for code, site in (raw.get("sites") or {}).items():
        d.sites.append(code)
        for kind, key, default in (("pbx", "sip_port", 5060), ("cti", "port", 7000), ("ul", "port", 8080)):
            svc = _first(site.get(kind), key, default)
            if svc is not None:
                getattr(d, kind)[code] = svc
    return d
