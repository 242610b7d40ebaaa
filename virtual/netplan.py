"""How a topology becomes namespaces, bridges and veths: a pure plan, so it can be tested and shown.

One network namespace per lab host, phone and switch management plane; one Linux bridge per switch; one
veth per switch port, its bridge side in the lab's core namespace (so a shutdown sets it down and the far
end loses carrier, as on a real switch). An inter-site link is a veth pair between two switch ports. The
management network is a separate bridge: cutting a data port never cuts the controller off a device.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from harness.topology import Topology

DATA_PREFIX = 16  # one L2 segment for the lab's data plane, joined across sites by the WAN link
MGMT_BRIDGE = "br-mgmt"
HOST_MGMT_IF = "hilmgmt"  # controller side of the management veth, in the controller's namespace
CORE_MGMT_IF = "ctl-mgmt"  # its peer, on the management bridge
IFNAMSIZ = 15


@dataclass(frozen=True)
class PortPlan:
    switch: str
    port: str
    index: int
    veth: str  # bridge side, in the core namespace
    peer_ns: str | None  # namespace of the far end (None: core, i.e. an inter-site link or nothing)
    peer_if: str
    link: str | None = None
    span_to: str | None = None  # a SPAN destination: its peer is this interface in the controller's namespace


@dataclass
class NetPlan:
    namespaces: list[str] = field(default_factory=list)
    bridges: list[str] = field(default_factory=list)
    ports: dict[tuple[str, str], PortPlan] = field(default_factory=dict)
    mgmt_veths: dict[str, str] = field(default_factory=dict)  # device -> core-side veth on br-mgmt
    addresses: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # ns -> [(ifname, cidr)]
    core_batch: list[str] = field(default_factory=list)
    mgmt_prefix: int = 24

    def span_ports(self) -> list[PortPlan]:
        return [pp for pp in self.ports.values() if pp.span_to]

    def port_veth(self, switch: str, port: str) -> str:
        return self.ports[(switch, port)].veth


def _ifname(base: str, suffix: str, fallback: str) -> str:
    name = f"{base}{suffix}"
    return name if len(name) <= IFNAMSIZ else fallback


def plan(topo: Topology) -> NetPlan:
    """Compute every object the virtual lab creates, with names that fit IFNAMSIZ and are recorded."""
    p = NetPlan(mgmt_prefix=topo.model.management.network.prefixlen)
    b = p.core_batch
    b.append(f"link add {MGMT_BRIDGE} type bridge")
    b.append(f"link set {MGMT_BRIDGE} up")

    def mgmt_leg(name: str, ns: str, ip: ipaddress.IPv4Address | None, i: int) -> None:
        if ip is None:
            return
        veth = _ifname("m-", name, f"m-{i}")
        p.mgmt_veths[name] = veth
        b.append(f"link add {veth} type veth peer name mgmt0 netns {ns}")
        b.append(f"link set {veth} master {MGMT_BRIDGE} up")
        p.addresses.setdefault(ns, []).append(("mgmt0", f"{ip}/{p.mgmt_prefix}"))

    hosts = [d for d in topo.devices.values() if d.kind in ("pbx", "cti", "ul", "host", "phone")]
    for i, d in enumerate(hosts):
        p.namespaces.append(d.name)
        b.append(f"netns add {d.name}")
        mgmt_leg(d.name, d.name, d.spec.mgmt, i)

    switches = topo.of_kind("switch")
    for si, sw in enumerate(switches):
        br = _ifname("br-", sw.name, f"br-s{si}")
        p.bridges.append(br)
        b.append(f"link add {br} type bridge")
        b.append(f"link set {br} up")
        p.namespaces.append(sw.name)  # the switch's management plane (its SSH server lives here)
        b.append(f"netns add {sw.name}")
        mgmt_leg(sw.name, sw.name, sw.spec.mgmt, 100 + si)

    link_ends = {}
    for lname, link in topo.model.links.items():
        link_ends[link.a] = (lname, link.b)
        link_ends[link.b] = (lname, link.a)

    for si, sw in enumerate(switches):
        br = p.bridges[si]
        for pi, (pname, port) in enumerate(sw.spec.ports.items(), start=1):
            veth = _ifname(sw.name, f"-{pi}", f"s{si}-{pi}")
            ref = f"{sw.name}:{pname}"
            target = port.connects
            if pname == sw.spec.span_port and sw.spec.capture_interface:
                # made from outside by the controller (like its management veth); never on the bridge
                p.ports[(sw.name, pname)] = PortPlan(
                    sw.name, pname, pi, veth, None, "", span_to=sw.spec.capture_interface
                )
            elif target in topo.model.links or ref in link_ends:
                lname, other = link_ends[ref]
                p.ports[(sw.name, pname)] = PortPlan(sw.name, pname, pi, veth, None, "", lname)
            elif target and target in topo.devices and target in p.namespaces:
                p.ports[(sw.name, pname)] = PortPlan(sw.name, pname, pi, veth, target, "eth0")
                dev = topo.devices[target].spec
                p.addresses.setdefault(target, []).append(("eth0", f"{dev.address}/{DATA_PREFIX}"))
            else:  # nothing plugged in: a dangling peer keeps the port "notconnect"
                p.ports[(sw.name, pname)] = PortPlan(sw.name, pname, pi, veth, None, f"{veth}x")

    done_links: set[str] = set()
    for (swname, _pname), pp in p.ports.items():
        br = p.bridges[[s.name for s in switches].index(swname)]
        if pp.link:
            if pp.link not in done_links:
                done_links.add(pp.link)
                link = topo.model.links[pp.link]
                a = p.ports[tuple(link.a.split(":", 1))]  # type: ignore[index]
                bb = p.ports[tuple(link.b.split(":", 1))]  # type: ignore[index]
                b.append(f"link add {a.veth} type veth peer name {bb.veth}")
        elif pp.span_to:
            continue
        elif pp.peer_ns:
            b.append(f"link add {pp.veth} type veth peer name {pp.peer_if} netns {pp.peer_ns}")
        else:
            b.append(f"link add {pp.veth} type veth peer name {pp.peer_if}")
    for (swname, _pname), pp in p.ports.items():
        br = p.bridges[[s.name for s in switches].index(swname)]
        if not pp.span_to:
            b.append(f"link set {pp.veth} master {br} up")
    return p
