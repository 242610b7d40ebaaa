"""What a topology offers the nemesis: the targets each op kind may touch, by site, and what each device is
to the stack (its role in an agent's chain).

Why one place: the generator draws only from these lists, and the expected outcome reads the same roles,
so a target the generator may pick is always one the outcome model understands. The lists follow the
faults' own refusals (harness/faults/safety.py, switch.py, power.py, host.py): cuttable ports and links
off the controller's management path, services the topology names on fair-game hosts, outlets marked
cuttable, packet filters only on hosts managed out of band. Everything is sorted, so a seed draws the same
schedule on every run and machine.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from harness.topology import Agent, Device, Topology

__all__ = ["CHAIN_ROLES", "Targets", "link_sites", "mirror", "port_peer", "role", "targets"]

CHAIN_ROLES = ("pbx", "cti")  # the servers in an agent's chain Client - CTI - PBX - phone (the UL is not)
SERVER_KINDS = ("pbx", "cti", "ul")


def role(topo: Topology, name: str) -> str:
    """What a device is to the stack: pbx, cti, ul, agents (a swarm's host), caller, phone, switch, other."""
    d = topo.devices.get(name)
    if d is None:
        return "unknown"
    if d.kind in SERVER_KINDS or d.kind in ("phone", "switch"):
        return d.kind
    if d.kind == "host":
        r = getattr(d.spec, "role", "other")
        return "agents" if r == "agents" else "caller" if r == "caller" else "other"
    return "other"


def port_peer(topo: Topology, ref: str) -> str | None:
    """What a switch port (`switch:port`) connects: a device name, a link name, or None (spare)."""
    sw, _, port = ref.partition(":")
    d = topo.devices.get(sw)
    if d is None or d.kind != "switch":
        return None
    spec = d.spec.ports.get(port)
    return spec.connects if spec is not None else None


def link_sites(topo: Topology, link: str) -> tuple[str, ...]:
    """The sites a topology link joins (two for the inter-site WAN)."""
    lk = topo.model.links.get(link)
    if lk is None:
        return ()
    out = []
    for end in (lk.a, lk.b):
        d = topo.devices.get(end.split(":", 1)[0])
        if d is not None and d.site not in out:
            out.append(d.site)
    return tuple(out)


def _index(topo: Topology, d: Device) -> int:
    same = sorted(
        x.name for x in topo.devices.values() if x.site == d.site and role(topo, x.name) == role(topo, d.name)
    )
    return same.index(d.name)


def mirror(topo: Topology, name: str, site: str) -> str | None:
    """The device at `site` in the same role and position as `name` (sha-pbx1 -> ntg-pbx1)."""
    d = topo.devices.get(name)
    if d is None:
        return None
    want = role(topo, name)
    same = sorted(x.name for x in topo.devices.values() if x.site == site and role(topo, x.name) == want)
    k = _index(topo, d)
    return same[k] if k < len(same) else None


@dataclass
class Targets:
    """Per site, what each op kind may act on (every list sorted)."""

    sites: list[str]
    ports: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))  # "switch:port"
    links: list[str] = field(default_factory=list)
    services: dict[str, list[tuple[str, str]]] = field(default_factory=lambda: defaultdict(list))
    outlets: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))  # devices fed
    network: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))  # packet filters
    peers: dict[str, list[str]] = field(default_factory=dict)  # partition: host -> the other ends
    uls: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    pbxs: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    callers: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    agents: dict[str, list[Agent]] = field(default_factory=lambda: defaultdict(list))  # by home

    def port_of(self, site: str, device_or_link: str, topo: Topology) -> str | None:
        """The cuttable port at `site` that connects a device or a link."""
        return next((p for p in self.ports[site] if port_peer(topo, p) == device_or_link), None)


def _network_ok(d: Device) -> bool:
    """A packet filter may act on a host only when it is managed out of band (harness.faults.host)."""
    mgmt = getattr(d.spec, "mgmt", None)
    return mgmt is not None and str(mgmt) != str(d.spec.address)


def targets(topo: Topology) -> Targets:
    """Everything a schedule may touch in `topo`, by kind and site."""
    t = Targets(sites=sorted(topo.sites))
    mgmt_path = topo.management_path()
    # A desk phone an agent links is in that agent's chain, which the expected-outcome model (effects.py)
    # does not follow yet: its port is left out of schedules rather than judged wrongly.
    linked = {topo.phone_of(a)[0] for a in topo.linked_agents()} - {None}
    for sw in sorted(topo.of_kind("switch"), key=lambda d: d.name):
        for pname, port in sorted(sw.spec.ports.items()):
            if port.connects in linked:
                continue
            if port.cuttable and port.connects != "controller" and (sw.name, pname) not in mgmt_path:
                t.ports[sw.site].append(f"{sw.name}:{pname}")
    for lname, lk in sorted(topo.model.links.items()):
        ends = [lk.a, lk.b]
        if lk.cuttable and all(e.split(":", 1)[1] in _cuttable(t, topo, e) for e in ends):
            t.links.append(lname)
    for name in sorted(topo.devices):
        d = topo.devices[name]
        r = role(topo, name)
        if r in SERVER_KINDS and d.spec.fair_game:
            if d.spec.service:
                t.services[d.site].append((name, str(d.spec.service)))
            if _network_ok(d):
                t.network[d.site].append(name)
        if r == "ul":
            t.uls[d.site].append(name)
        elif r == "pbx":
            t.pbxs[d.site].append(name)
        elif r == "caller":
            t.callers[d.site].append(name)
    for pdu in sorted(topo.of_kind("pdu"), key=lambda d: d.name):
        console = pdu.spec.console
        for _, outlet in sorted(pdu.spec.outlets.items()):
            fed = topo.devices.get(outlet.connects)
            if not outlet.cuttable or fed is None or outlet.connects in (pdu.name, console):
                continue
            if fed.kind == "switch" and any(sw == fed.name for sw, _ in mgmt_path):
                continue
            if fed.kind == "console":
                continue
            t.outlets[fed.site].append(fed.name)
    for site in t.sites:
        for host in t.network[site]:
            same = [
                n
                for n in sorted(topo.devices)
                if n != host and topo.devices[n].site == site and role(topo, n) in (*SERVER_KINDS, "agents")
            ]
            others = [m for s in t.sites if s != site for m in [mirror(topo, host, s)] if m]
            t.peers[host] = same + others
    for a in topo.agents():
        if topo.phone_of(a) == (None, None):  # logout/login events go through the swarm, which holds these
            t.agents[a.home].append(a)
    return t


def _cuttable(t: Targets, topo: Topology, end: str) -> list[str]:
    sw = end.split(":", 1)[0]
    d = topo.devices.get(sw)
    return [p.split(":", 1)[1] for p in t.ports[d.site] if p.startswith(sw + ":")] if d else []
