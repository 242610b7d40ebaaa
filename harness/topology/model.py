"""The validated lab: devices by name and kind, agents expanded from their pools.

Why apart from the schema: everything else reads the lab through these views (``device``, ``of_kind``,
``agents``), never through the raw pydantic tree, so the file's shape can change without touching them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.topology.schema import Model, Site


@dataclass(frozen=True)
class Agent:
    """One agent expanded from a pool: who it is, where it lives, what a planned switch can select it by."""

    id: str
    extension: str
    pool: str
    home: str
    system: str
    region: str
    skill_group: str


@dataclass(frozen=True)
class Device:
    """Any named thing in the lab, with where it sits in the file (for messages) and its model."""

    name: str
    kind: str
    site: str
    path: str
    spec: Any

    @property
    def control_address(self) -> str:
        """Where the controller reaches the device: its management address when it has one (out of band,
        so a cut data link does not cut the controller off), its data address otherwise."""
        return str(getattr(self.spec, "mgmt", None) or self.spec.address)


DEVICE_KINDS = ("pbx", "cti", "ul", "hosts", "switches", "phones", "consoles", "power")
KIND_NAMES = {"hosts": "host", "switches": "switch", "phones": "phone", "consoles": "console", "power": "pdu"}


class Topology:
    """A validated lab; read-only views that the controller and the virtual lab build on."""

    def __init__(self, model: Model, file: Path):
        self.model = model
        self.file = file
        self.devices: dict[str, Device] = {}
        for code, site in model.sites.items():
            for kind in DEVICE_KINDS:
                for name, spec in getattr(site, kind).items():
                    self.devices[name] = Device(
                        name, KIND_NAMES.get(kind, kind), code, f"sites.{code}.{kind}.{name}", spec
                    )
        self._agents: list[Agent] | None = None

    @property
    def name(self) -> str:
        return self.model.name

    @property
    def kind(self) -> str:
        return self.model.kind

    @property
    def sites(self) -> dict[str, Site]:
        return self.model.sites

    def of_kind(self, kind: str, site: str | None = None) -> list[Device]:
        return [d for d in self.devices.values() if d.kind == kind and (site is None or d.site == site)]

    def device(self, name: str) -> Device:
        try:
            return self.devices[name]
        except KeyError:
            raise KeyError(f"no device {name!r} in {self.file}") from None

    def agents(self) -> list[Agent]:
        if self._agents is None:
            out: list[Agent] = []
            n = 0
            prefix = self.model.agents.id_prefix
            for pname, pool in self.model.agents.pools.items():
                exts = pool.extension_range()
                width = len(pool.extensions.split("-")[0])
                for i in range(pool.count):
                    n += 1
                    out.append(
                        Agent(
                            id=f"{prefix}{n:05d}",
                            extension=str(exts[i]).zfill(width),
                            pool=pname,
                            home=pool.home,
                            system=pool.system,
                            region=pool.region,
                            skill_group=pool.skill_groups[i % len(pool.skill_groups)],
                        )
                    )
            self._agents = out
        return self._agents

    def phone_of(self, agent: Agent) -> tuple[str | None, str | None]:
        """(the desk phone the agent links, the softphone it uses): both None for an agent of the swarm,
        whose phone the swarm emulates in-process."""
        pool = self.model.agents.pools[agent.pool]
        return pool.phone, pool.softphone

    def linked_agents(self) -> list[Agent]:
        """Agents on phones the stack did not write (desk phones, softphones), in roster order."""
        return [a for a in self.agents() if self.model.agents.pools[a.pool].linked]

    def extensions(self) -> list[str]:
        """Every extension a PBX must accept: all pools of all sites, and the lab's own phones (once each: a
        desk-phone agent's extension is its phone's)."""
        exts = [a.extension for a in self.agents()]
        exts += [d.spec.extension for d in self.of_kind("phone") if d.spec.extension]
        exts += [d.spec.extension for d in self.of_kind("host") if d.spec.extension]
        return list(dict.fromkeys(exts))

    def management_path(self) -> set[tuple[str, str]]:
        """Switch ports that carry the controller's management traffic: declared, or facing the controller."""
        path = {tuple(ref.split(":", 1)) for ref in self.model.management.path}
        for d in self.of_kind("switch"):
            for pname, port in d.spec.ports.items():
                if port.connects == "controller":
                    path.add((d.name, pname))
        return path  # type: ignore[return-value]
