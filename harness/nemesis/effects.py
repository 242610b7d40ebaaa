"""What each fault of a schedule does to the stack: which part it takes away, for how long, and whether
that part keeps its state; and from that, when an agent's chain at a site is broken.

Why apart from the outcome rules (harness/nemesis/expect.py): this is the physics (a port down isolates
the device behind it, a killed PBX forgets every registration, a partition cuts one pair of hosts), read
from the topology; the rules of who moves are stated over its result. The chain of an agent homed at h
and served at site s (DESIGN.md, steps 7-8) is: the agents host of h (the client and its phone) - the CTI
of s - the PBX of s, the CTI watching the PBX, and the inter-site link when s is not h. The UL is not in
the chain (an online agent never talks to it), but a move needs one.

An effect is one of:
- `down`: a part is gone or silent (killed, stopped, paused, powered off, its port down, blackholed);
  `lossy` when it loses its state (a killed or powered-off PBX forgets every registration, a killed CTI
  every session), so even a short one may move agents.
- `gray`: a part is degraded, not gone (loss, rate limit).
- `pair`: two hosts cannot talk (a partition, one way or both: request and answer ride the same pair, so a
  one-way drop breaks a TCP exchange, a heartbeat or a phone's keep-alive as surely as a two-way one).
- `wan`: the link between two sites is cut (a link cut, or a port down on its end).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from harness.nemesis.schedule import Op, Schedule
from harness.nemesis.targets import link_sites, port_peer, role
from harness.topology import Topology

__all__ = ["Break", "Effect", "chain_breaks", "effects", "ul_troubled"]

Level = Literal["hard", "gray"]


@dataclass(frozen=True)
class Effect:
    """One thing a fault takes away, from `start` to `end` (seconds from the schedule's start)."""

    start: float
    end: float
    what: Literal["down", "gray", "pair", "wan"]
    nodes: tuple[str, ...]  # down/gray: the device; pair: both ends; wan: the two sites
    lossy: bool
    note: str  # the op, for people: "service_kill sha-pbx1"


@dataclass(frozen=True)
class Break:
    """A stretch of time an agent's chain at a site is broken (hard) or may be (gray)."""

    start: float
    end: float
    level: Level
    lossy: bool
    note: str


def _note(op: Op) -> str:
    extra = ""
    if op.kind == "partition":
        extra = f" {'->' if op.params.get('one_way') else '<->'} {op.params.get('b')}"
    elif op.kind == "loss":
        extra = f" {op.params.get('percent')}%"
    return f"{op.kind} {op.target}{extra}"


def _behind(topo: Topology, device: str) -> list[tuple[str, tuple[str, ...]]]:
    """What is cut off when a device's links go dark: ("down", (device,)) or ("wan", sites)."""
    if topo.devices.get(device) is None or topo.devices[device].kind != "switch":
        return [("down", (device,))]
    out: list[tuple[str, tuple[str, ...]]] = []
    for pname in sorted(topo.devices[device].spec.ports):
        out += _port(topo, f"{device}:{pname}")
    return out


def _port(topo: Topology, ref: str) -> list[tuple[str, tuple[str, ...]]]:
    peer = port_peer(topo, ref)
    if peer is None or peer == "controller":
        return []
    if peer in topo.model.links:
        sites = link_sites(topo, peer)
        return [("wan", sites)] if len(sites) == 2 else []
    return [("down", (peer,))] if peer in topo.devices else []


def _parts(topo: Topology, op: Op) -> list[tuple[str, tuple[str, ...], bool]]:
    """What one fault takes away: (what, nodes, lossy) triples."""
    if op.kind == "port_down":
        parts = _port(topo, op.target) if ":" in op.target else _behind(topo, op.target)
        return [(what, nodes, False) for what, nodes in parts]
    if op.kind == "link_cut":
        sites = link_sites(topo, op.target)
        if len(sites) == 2:
            return [("wan", sites, False)]
        lk = topo.model.links.get(op.target)  # a link inside one site: what hangs off it may be cut off
        ends = [e.split(":", 1)[0] for e in (lk.a, lk.b)] if lk else []
        return [("gray" if w == "down" else w, n, False) for end in ends for w, n in _behind(topo, end)]
    if op.kind in ("service_kill", "service_stop", "service_pause"):
        return [("down", (op.target,), op.kind != "service_pause")]
    if op.kind == "power_off":
        return [(what, nodes, what == "down") for what, nodes in _behind(topo, op.target)]
    if op.kind == "blackhole":
        return [("down", (op.target,), False)]
    if op.kind == "partition":
        return [("pair", (op.target, str(op.params.get("b", ""))), False)]
    if op.kind in ("loss", "rate_limit"):
        return [("gray", (op.target,), False)]
    return []


def effects(schedule: Schedule, topo: Topology, final_heal: float) -> list[Effect]:
    """Every effect of the schedule's faults; a fault with no duration lasts until `final_heal`."""
    out: list[Effect] = []
    for op in schedule.sorted_ops():
        if op.is_fault:
            end = op.end if op.end is not None else final_heal
            for what, nodes, lossy in _parts(topo, op):
                out.append(Effect(op.at, end, what, nodes, lossy, _note(op)))  # type: ignore[arg-type]
    return out


def _chain_level(topo: Topology, e: Effect, home: str, site: str) -> Level | None:
    """How an effect touches the chain of agents homed at `home` and served at `site` (None: not)."""
    if e.what == "wan":
        return "hard" if home != site and {home, site} <= set(e.nodes) else None
    roles = {n: role(topo, n) for n in e.nodes}
    where = {n: topo.devices[n].site if n in topo.devices else None for n in e.nodes}

    def server(n: str) -> bool:
        return roles[n] in ("pbx", "cti") and where[n] == site

    def agents(n: str) -> bool:
        return roles[n] == "agents" and where[n] == home

    if e.what == "down":
        (n,) = e.nodes
        return "hard" if server(n) or agents(n) else None
    if e.what == "gray":
        (n,) = e.nodes
        return "gray" if server(n) or agents(n) else None
    a, b = e.nodes
    if server(a) and server(b):
        # the CTI cannot probe its PBX: it reports the link down to every agent
        return "hard" if {roles[a], roles[b]} == {"pbx", "cti"} else None
    if (agents(a) and server(b)) or (agents(b) and server(a)):
        # the client heartbeats its CTI; the phones keep their registrar alive (an OPTIONS every 0.75 s,
        # two unanswered and they call themselves unregistered: stack/phone/keepalive.py), so a cut of
        # either leg, either direction, is seen like a dead part
        return "hard"
    return None


def chain_breaks(effects: list[Effect], topo: Topology, home: str, site: str) -> list[Break]:
    """The breaks of the chain of agents homed at `home` when served at `site`, in time order."""
    out = []
    for e in effects:
        level = _chain_level(topo, e, home, site)
        if level is not None:
            out.append(Break(e.start, e.end, level, e.lossy and level == "hard", e.note))
    return sorted(out, key=lambda b: (b.start, b.end))


def ul_troubled(effects: list[Effect], topo: Topology, home: str, site: str, lo: float, hi: float) -> bool:
    """Whether the UL of `site` may fail agents homed at `home` at some moment of [lo, hi): it is down,
    degraded or partitioned from anything, or the inter-site link that leads to it is cut."""
    for e in effects:
        if e.end <= lo or e.start >= hi:
            continue
        if e.what == "wan":
            if home != site and {home, site} <= set(e.nodes):
                return True
            continue
        if any(role(topo, n) == "ul" and topo.devices[n].site == site for n in e.nodes if n in topo.devices):
            return True
    return False
