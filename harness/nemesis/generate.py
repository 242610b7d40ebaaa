"""Drawing a fault schedule from a seed, a profile and a topology (DESIGN.md: a random schedule is data).

Why it is built this way:
- Deterministic: one `random.Random` seeded from the seed's text (string seeds are hashed with SHA-512,
  untouched by PYTHONHASHSEED), every choice made over sorted lists, offsets and durations rounded; the
  same seed, profile and topology give the same schedule, byte for byte, on any machine.
- Only fair-game targets (harness/nemesis/targets.py follows the faults' own refusals), and the result is
  proven with `schedule.check_targets` before it is returned: a generated schedule always loads.
- Durations are drawn in confirmation windows (the profile's `limits.durations`), so schedules straddle
  the window: from well under it (a blip nobody may act on) to several times it (everybody must move).
- A fault hits the profile's first or second site, sometimes both at once (mirrored at the other site in
  the same role: sha-pbx1 and ntg-pbx1), and faults overlap up to `limits.overlap` at a time.
- Stack events ride along: logouts (and logins of the same agent after them), planned switches with a
  duration (the rule is removed when it ends), calls from a caller host through its site's PBX.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from harness.nemesis.profile import Profile
from harness.nemesis.schedule import FAULT_KINDS, KINDS, Op, Schedule, check_targets
from harness.nemesis.targets import Targets, link_sites, mirror, port_peer, targets
from harness.topology import Topology

__all__ = ["SCOPES", "available_kinds", "generate"]

SCOPES = ("agent", "skill_group", "region", "system")  # planned-switch scopes (harness.ulapi.SCOPES)
PLACE_TRIES = 12  # offsets tried for an op before it is left out (too many faults at once)
CALL_HOLDS = (0.5, 1.0, 2.0)


def _r(x: float) -> float:
    return round(x, 3)


def _num(x: float) -> float | int:
    """A whole number as an int (`percent: 30`, not `30.0`), so the JSON reads as a person would write it."""
    return int(x) if float(x).is_integer() else x


class _Draw:
    """One schedule being drawn: the random source, the targets, and the ops so far."""

    def __init__(self, topo: Topology, profile: Profile, seed: int) -> None:
        self.topo, self.p = topo, profile
        self.rng = random.Random(f"hil-nemesis/{seed}")
        self.t: Targets = targets(topo)
        self.ops: list[Op] = []
        self.span = profile.limits.span

    # -- choices -------------------------------------------------------------------------------------
    def site(self) -> str:
        sites = self.t.sites
        if len(sites) > 1 and self.rng.random() < self.p.sites.other:
            return self.rng.choice(sites[1:])
        return sites[0]

    def others(self, site: str) -> list[str]:
        return [s for s in self.t.sites if s != site]

    def duration(self) -> float:
        return _r(self.rng.choice(self.p.limits.durations) * self.p.window)

    def fault_duration(self) -> float | None:
        return None if self.rng.random() < self.p.limits.hold else self.duration()

    # -- placing ---------------------------------------------------------------------------------------
    def _active(self, at: float, end: float) -> int:
        """The most faults active at once within [at, end) with those drawn so far."""
        spans = [(o.at, o.end if o.end is not None else self.span) for o in self.ops if o.kind in FAULT_KINDS]
        points = [at] + [s for s, _ in spans if at <= s < end]
        return max((sum(1 for s, e in spans if s <= x < e) for x in points), default=0)

    def place(self, kind: str, target: str, duration: float | None, params: dict[str, Any]) -> float | None:
        """An offset for an op of `duration` that keeps within the span and the overlap limit."""
        length = duration if duration is not None else 0.0
        latest = self.span - length
        if latest < 0:
            return None
        for _ in range(PLACE_TRIES):
            at = round(self.rng.uniform(0.0, latest), 1)
            end = self.span if duration is None else at + duration
            if kind not in FAULT_KINDS or self._active(at, end) < self.p.limits.overlap:
                return at
        return None

    def add(self, at: float, kind: str, target: str, duration: float | None, params: dict[str, Any]) -> None:
        self.ops.append(Op(at=at, kind=kind, target=target, duration=duration, params=params))

    def fits(self, n: int) -> bool:
        return len(self.ops) + n <= self.p.limits.ops.max

    # -- one op of each kind: (target, params) at a site, and its mirror at another site ------------------
    def fault(self, kind: str, pick: Callable[[str], tuple[str, dict[str, Any]] | None]) -> None:
        site = self.site()
        first = pick(site)
        if first is None:
            return
        target, params = first
        duration = self.fault_duration()
        at = self.place(kind, target, duration, params)
        if at is None:
            return
        self.add(at, kind, target, duration, params)
        if self.rng.random() < self.p.sites.both and self.fits(1):
            for other in self.others(site):
                twin = self.mirrored(kind, target, params, other)
                if twin is not None and self._active(at, self.span if duration is None else at + duration) < (
                    self.p.limits.overlap
                ):
                    self.add(at, kind, twin[0], duration, twin[1])

    def mirrored(self, kind: str, target: str, params: dict[str, Any], site: str) -> tuple[str, dict] | None:
        topo, t = self.topo, self.t
        if kind == "port_down":
            peer = port_peer(topo, target)
            if peer is None:
                return None
            if peer in topo.model.links:
                twin = peer if site in link_sites(topo, peer) else None
            else:
                twin = mirror(topo, peer, site)
            port = t.port_of(site, twin, topo) if twin else None
            return (port, dict(params)) if port and port != target else None
        if kind == "link_cut":
            return None  # a link joins both sites already
        twin = mirror(topo, target, site)
        if twin is None:
            return None
        if kind == "partition":
            b = mirror(topo, str(params["b"]), site) or str(params["b"])
            if b == twin or b not in t.peers.get(twin, []):
                return None
            return twin, {**params, "b": b}
        if kind in ("service_kill", "service_stop", "service_pause"):
            svc = dict(t.services[site]).get(twin)
            return (twin, {**params, "service": svc}) if svc else None
        if kind == "power_off":
            return (twin, dict(params)) if twin in t.outlets[site] else None
        return (twin, dict(params)) if twin in t.network[site] else None

    def pick(self, kind: str, site: str) -> tuple[str, dict[str, Any]] | None:
        t, rng = self.t, self.rng
        if kind == "port_down":
            return (rng.choice(t.ports[site]), {}) if t.ports[site] else None
        if kind == "link_cut":
            return (rng.choice(t.links), {}) if t.links else None
        if kind in ("service_kill", "service_stop", "service_pause"):
            if not t.services[site]:
                return None
            dev, svc = rng.choice(t.services[site])
            return dev, {"service": svc}
        if kind == "power_off":
            return (rng.choice(t.outlets[site]), {}) if t.outlets[site] else None
        if not t.network[site]:
            return None
        host = rng.choice(t.network[site])
        if kind == "blackhole":
            return host, {}
        if kind == "loss":
            return host, {"percent": _num(rng.choice(self.p.limits.loss_percent))}
        if kind == "rate_limit":
            params: dict[str, Any] = {"kbit": _num(rng.choice(self.p.limits.rate_kbit))}
            if self.topo.kind == "virtual" and self.p.data_nic:
                params["dev"] = self.p.data_nic  # the twin's data NIC; a physical lab's is not known here
            return host, params
        if kind == "partition":
            peers = t.peers.get(host, [])
            if not peers:
                return None
            return host, {"b": rng.choice(peers), "one_way": rng.random() < self.p.one_way}
        raise ValueError(f"not a fault kind: {kind}")

    # -- stack events ------------------------------------------------------------------------------------
    def _free_agents(self, site: str) -> list[Any]:
        """Agents of `site` no logout or login of this schedule names yet (one session story per agent)."""
        used = {o.target for o in self.ops if o.kind in ("agent_logout", "agent_login")}
        return [a for a in self.t.agents[site] if a.id not in used]

    def logout(self, login_too: bool) -> None:
        agents = self._free_agents(self.site())
        if not agents:
            return
        agent = self.rng.choice(agents).id
        at = self.place("agent_logout", agent, None, {})
        if at is None:
            return
        self.add(at, "agent_logout", agent, None, {})
        if login_too and self.fits(1):
            back = _r(at + self.duration())
            if back <= self.span:
                self.add(back, "agent_login", agent, None, {})

    def login(self) -> None:
        agents = self._free_agents(self.site())
        if agents:
            agent = self.rng.choice(agents).id
            at = self.place("agent_login", agent, None, {})
            if at is not None:
                self.add(at, "agent_login", agent, None, {})

    def planned_switch(self) -> None:
        site = self.site()
        if not self.t.agents[site] or not self.t.uls[site] or len(self.t.sites) < 2:
            return
        agent = self.rng.choice(self.t.agents[site])
        scope = self.rng.choice(SCOPES)
        value = agent.id if scope == "agent" else str(getattr(agent, scope))
        params = {"scope": scope, "value": value, "to": self.rng.choice(self.others(site))}
        duration = self.duration()
        at = self.place("planned_switch", self.t.uls[site][0], duration, params)
        if at is not None:
            self.add(at, "planned_switch", self.t.uls[site][0], duration, params)

    def call(self) -> None:
        site = self.site()
        if not self.t.callers[site] or not self.t.pbxs[site] or not self.t.agents[site]:
            return
        caller = self.rng.choice(self.t.callers[site])
        params = {
            "to": self.rng.choice(self.t.agents[site]).id,
            "via": self.t.pbxs[site][0],
            "hold": self.rng.choice(CALL_HOLDS),
        }
        at = self.place("call", caller, None, params)
        if at is not None:
            self.add(at, "call", caller, None, params)

    def one(self, kind: str) -> None:
        if kind in FAULT_KINDS:
            self.fault(kind, lambda site: self.pick(kind, site))
        elif kind == "agent_logout":
            self.logout(self.rng.random() < self.p.relogin)
        elif kind == "agent_login":
            self.login()
        elif kind == "planned_switch":
            self.planned_switch()
        elif kind == "call":
            self.call()


def available_kinds(topo: Topology, profile: Profile) -> list[str]:
    """The op kinds with a weight above 0 that this topology offers a target for."""
    t = targets(topo)
    have = {
        "port_down": any(t.ports.values()),
        "link_cut": bool(t.links),
        "service_kill": any(t.services.values()),
        "power_off": any(t.outlets.values()),
        "blackhole": any(t.network.values()),
        "partition": any(t.peers.values()),
        "agent_logout": any(t.agents.values()),
        "planned_switch": any(t.uls.values()) and len(t.sites) > 1,
        "call": any(t.callers.values()) and any(t.pbxs.values()),
    }
    for k in ("service_stop", "service_pause"):
        have[k] = have["service_kill"]
    for k in ("loss", "rate_limit"):
        have[k] = have["blackhole"]
    have["agent_login"] = have["agent_logout"]
    return [k for k in KINDS if have.get(k) and profile.weights.of(k) > 0]


def generate(topo: Topology, profile: Profile, seed: int) -> Schedule:
    """A schedule drawn from `seed` over `topo`'s fair-game targets, as `profile` weighs and limits it."""
    d = _Draw(topo, profile, seed)
    kinds = available_kinds(topo, profile)
    if not any(k in FAULT_KINDS for k in kinds):
        raise ValueError(f"{topo.name}: no fault kind of profile {profile.name} has a target in this lab")
    weights = [profile.weights.of(k) for k in kinds]
    want = d.rng.randint(profile.limits.ops.min, profile.limits.ops.max)
    for _ in range(want * 4):  # an op may find no room (overlap) or no target: draw again, a few times
        if len(d.ops) >= want:
            break
        d.one(d.rng.choices(kinds, weights)[0])
    ops = sorted(d.ops, key=lambda o: (o.at, o.kind, o.target))
    sched = Schedule(
        seed=seed,
        profile=profile.name,
        topology=topo.name,
        settle=profile.settle,
        ops=ops,
        note=f"generated from seed {seed} with profile {profile.name}",
    )
    problems = check_targets(sched, topo, f"generated schedule (seed {seed})")
    if problems:  # a generator bug, never the user's: say which target it drew
        raise AssertionError("; ".join(problems))
    return sched
