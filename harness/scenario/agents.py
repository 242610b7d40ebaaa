"""The agents and the lab's shape as a scenario needs them: who is homed where, with which extension."""

from __future__ import annotations

from harness.lab import Lab

__all__ = ["SWARM_UNIT", "agent_hosts", "agents_extensions", "agents_homes", "agents_where", "uplink"]

SWARM_UNIT = "hil-swarm"


def agents_homes(lab: Lab) -> dict[str, str]:
    return {a.id: a.home for a in lab.topology.agents()}


def agents_extensions(lab: Lab) -> dict[str, str]:
    return {a.id: a.extension for a in lab.topology.agents()}


def agents_where(lab: Lab, **attrs: str) -> list[str]:
    """Agents whose attributes match (``home="sha"``, ``system="air"``, ``skill_group="vip"``...)."""
    return [a.id for a in lab.topology.agents() if all(getattr(a, k) == v for k, v in attrs.items())]


def uplink(lab: Lab, site: str) -> str:
    """The site's uplink, as ``switch:port``: the port of one of its switches that carries a topology link."""
    for sw in lab.topology.of_kind("switch", site):
        for pname, port in sw.spec.ports.items():
            if port.connects in lab.topology.model.links:
                return f"{sw.name}:{pname}"
    raise ValueError(f"site {site} has no switch port on an inter-site link")


def agent_hosts(lab: Lab, sites: list[str] | tuple[str, ...] | None = None) -> list[str]:
    """The agents hosts (where the swarms run), of ``sites`` if given."""
    return [
        d.name
        for d in lab.topology.of_kind("host")
        if d.spec.role == "agents" and (sites is None or d.site in sites)
    ]
