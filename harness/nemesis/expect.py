"""The expected outcome of a schedule: per agent, where it may be at the final read, and whether it must
move, must stay or may do either. Computed from the schedule, the topology and the profile before the
run, recorded in the history, judged by `check_schedule_outcome` (harness/checks/schedule_outcome.py).

The rules, from how the stack behaves (stack/agent/watch.py, failover.py, login.py; stack/cti/pbxwatch.py,
pbxlink.py, sessions.py; stack/login/server.py, peer.py) and the scenarios that prove it (test_anti_flap,
test_unplanned, test_split_brain, test_service_restored). W is the profile's confirmation window (3 s: a
silent CTI is confirmed within 2.6 s, stack/agent/state.py Timers.detection_bound). Where the stack's
behaviour is not certain, the rule says "may" rather than guess. docs/nemesis.md states them at more length.

1. The chain. An agent homed at h, served at s, depends on: the agents host of h, the CTI and the PBX of
   s, the CTI's probe of its PBX, and the inter-site link when s is not h (harness/nemesis/effects.py).
   The UL is not in it: a UL down, hung or cut off moves nobody (test_ul_down_online_agents_stay).
2. A break at s is the time the chain there is broken; breaks less than W apart count as one. Lengths
   are the schedule's durations; on the wire a fault lasts up to `heal_latency` longer (its heal is an
   SSH login and a command).
   - Clean and short: a part that keeps its state (port down, link cut, blackhole, partition, pause)
     gone for at most `stay_below` seconds on the wire (1 s: a 0.4 s fault) moves nobody: the CTI needs
     two failed PBX probes 0.5 s apart and the client confirms 0.6-1 s after that, when the part is back
     and probed again; a silent CTI is confirmed no sooner than 1.1 s (test_anti_flap, 0.3 s).
   - Hard and long: a cut of at least `move_above` seconds (5 s) moves every agent there: missed
     heartbeats, the confirmation and its re-check's timeout are over by then (test_unplanned).
   - Everything else may move it or not, but never loses it: a break between the two bounds; a lossy
     one at any length (a killed or powered-off PBX forgets every registration, a killed CTI every
     session, and the phones re-register only once their keep-alive has missed twice); gray failures
     (loss, rate limit).
3. Where a mover lands: the other site, surely, when that site's chain and UL are whole from the break's
   start until W after its end and nothing else (a planned switch, a logout) touches the agent the while;
   otherwise it may land at either (both sites broken at once: unservable during the overlap, back at
   one of them after the final heal; the client retries until a login works).
4. No failback without a plan: an agent that moved stays where it went (stack/agent/failover.py) unless a
   later break there moves it again, or a planned switch sends it.
5. A planned switch (scope=value -> to) moves every matching online agent to `to` while its rule is
   active, and nobody back when it is removed (stack/login/server.py orders only on add). Surely when
   the rule lasts at least `move_above` seconds and every site involved, both ULs and the inter-site link are
   whole, and no call or other switch touches the agent; otherwise it may move (to `to`, or home: a rule
   removed before the agent's login arrives sends it home). Logins while the rule is active go to `to`.
6. A logout takes the agent offline until a login of the schedule; a login lands at home when home is
   whole (or at `to` under an active rule), else anywhere. An agent logged in anew is in the swarm's
   state for a fresh login, not necessarily its earlier one: its state is not judged. An agent still
   logged out at the end must be offline, unless the final heal logs it in (`relogin`: where it lands).
7. Everything is healed at the final heal; after `settle` every agent that must be online is online
   exactly once, at a site it may be at, in its earlier state.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from harness.checks.schedule_outcome import AgentExpectation, Expectation
from harness.nemesis.effects import Break, Effect, chain_breaks, effects, ul_troubled
from harness.nemesis.profile import Profile
from harness.nemesis.schedule import Op, Schedule
from harness.nemesis.targets import role
from harness.topology import Agent, Topology

__all__ = ["AgentExpectation", "Episode", "Expectation", "episodes", "expected_outcome"]

CALL_REACH = 10.0  # seconds before a switch that a call to the agent may still be ringing or held
MAX_WHY = 8


@dataclass
class Episode:
    """Breaks of one chain less than a window apart, taken as one: what an agent there lives through."""

    start: float
    end: float
    hard_run: float = 0.0  # the longest stretch the chain was surely cut
    lossy: bool = False
    gray: bool = False
    notes: list[str] = field(default_factory=list)

    def outcome(self, p: Profile) -> str:
        if p.surely_moves(self.hard_run):
            return "leave"
        if not self.gray and not self.lossy and p.surely_stays(self.end - self.start):
            return "stay"
        return "may"

    def describe(self) -> str:
        kind = "lossy " if self.lossy else "gray " if self.gray and not self.hard_run else ""
        return (
            f"{_s(self.end - self.start)} s {kind}break at {_s(self.start)} s ({', '.join(self.notes[:3])})"
        )


def _s(x: float) -> str:
    return f"{round(x, 3):g}"


def _hard_run(breaks: list[Break]) -> float:
    best, cur_s, cur_e = 0.0, None, None
    for b in sorted((b for b in breaks if b.level == "hard"), key=lambda b: b.start):
        if cur_e is None or b.start > cur_e:
            cur_s, cur_e = b.start, b.end
        else:
            cur_e = max(cur_e, b.end)
        best = max(best, cur_e - (cur_s or 0.0))
    return best


def episodes(breaks: list[Break], p: Profile) -> list[Episode]:
    """Breaks less than a window apart merged, unless the episode so far surely moved everybody."""
    out: list[Episode] = []
    group: list[Break] = []

    def close() -> None:
        if group:
            ep = Episode(min(b.start for b in group), max(b.end for b in group), _hard_run(group))
            ep.lossy = any(b.lossy for b in group)
            ep.gray = any(b.level == "gray" for b in group)
            ep.notes = list(dict.fromkeys(b.note for b in group))
            out.append(ep)

    for b in breaks:
        if group and (b.start >= max(g.end for g in group) + p.window or p.surely_moves(_hard_run(group))):
            close()
            group = []
        group.append(b)
    close()
    return out


class _Model:
    """The schedule's world: effects, chain breaks per (home, site), switches and session events."""

    def __init__(self, schedule: Schedule, topo: Topology, p: Profile) -> None:
        self.topo, self.p = topo, p
        self.ops = schedule.sorted_ops()
        self.final_heal = schedule.span
        self.sites = sorted(topo.sites)
        self.effects: list[Effect] = effects(schedule, topo, self.final_heal)
        homes = sorted({a.home for a in topo.agents()})
        self.breaks = {(h, s): chain_breaks(self.effects, topo, h, s) for h in homes for s in self.sites}
        self.episodes = {k: episodes(v, p) for k, v in self.breaks.items()}
        self.switches = [o for o in self.ops if o.kind == "planned_switch"]

    def end(self, op: Op) -> float:
        return op.end if op.end is not None else self.final_heal

    def clean(self, home: str, site: str, lo: float, hi: float) -> bool:
        """The chain at `site` for agents of `home`, and the UL there, whole throughout [lo, hi]."""
        if any(b.start <= hi and b.end >= lo for b in self.breaks[(home, site)]):
            return False
        return not ul_troubled(self.effects, self.topo, home, site, lo, hi)

    def wan_cut(self, lo: float, hi: float) -> bool:
        return any(e.what == "wan" and e.start <= hi and e.end >= lo for e in self.effects)

    def matches(self, op: Op, a: Agent) -> bool:
        v = op.params.get("value")
        values = [str(x) for x in v] if isinstance(v, list | tuple) else [str(v)]
        scope = str(op.params.get("scope"))
        mine = a.id if scope == "agent" else str(getattr(a, scope, ""))
        return mine in values

    def touched(self, a: Agent, lo: float, hi: float, kinds: tuple[str, ...]) -> bool:
        """Whether an op of `kinds` aimed at this agent falls within [lo, hi]."""
        for o in self.ops:
            if o.kind not in kinds or not (o.at <= hi and self.end(o) >= lo):
                continue
            if o.kind == "planned_switch" and self.matches(o, a):
                return True
            if o.kind in ("agent_logout", "agent_login") and o.target == a.id:
                return True
            if o.kind == "call" and o.params.get("to") in (a.id, a.extension):
                return True
        return False

    def landing(self, a: Agent, t: float) -> set[str]:
        """Where a login at `t` lands: home when whole, `to` under an active rule, else anywhere."""
        w = self.p.window
        rules = [o for o in self.switches if o.at <= t < self.end(o) and self.matches(o, a)]
        if len(rules) == 1:
            to = str(rules[0].params.get("to"))
            if self.clean(a.home, to, t, t + w) and self.p.surely_moves(self.end(rules[0]) - t):
                return {to}
            return set(self.sites)
        if rules or self.touched(a, t, t + w, ("planned_switch",)):
            return set(self.sites)
        return {a.home} if self.clean(a.home, a.home, t, t + w) else set(self.sites)

    def unservable(self) -> list[dict[str, object]]:
        """Per home, the stretches when every site's chain was surely cut."""
        out: list[dict[str, object]] = []
        for h in sorted({h for h, _ in self.breaks}):
            spans: list[tuple[float, float]] | None = None
            for s in self.sites:
                mine = _union([(b.start, b.end) for b in self.breaks[(h, s)] if b.level == "hard"])
                spans = mine if spans is None else _intersect(spans, mine)
            out += [{"home": h, "from": round(x, 3), "to": round(y, 3)} for x, y in spans or [] if y > x]
        return out


def _union(xs: list[tuple[float, float]]) -> list[tuple[float, float]]:
    out: list[tuple[float, float]] = []
    for s, e in sorted(xs):
        if out and s <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], e))
        else:
            out.append((s, e))
    return out


def _intersect(a: list[tuple[float, float]], b: list[tuple[float, float]]) -> list[tuple[float, float]]:
    return [(max(x, u), min(y, v)) for x, y in a for u, v in b if max(x, u) < min(y, v)]


@dataclass
class _Life:
    """One agent walked through the schedule: where it may be, and what may have happened to it."""

    start: str | None
    places: set[str]
    online: bool
    left: bool = False
    state: bool = True
    why: list[str] = field(default_factory=list)

    def say(self, text: str) -> None:
        if text not in self.why and len(self.why) < MAX_WHY:
            self.why.append(text)


def _walk(m: _Model, a: Agent, start: str | None) -> _Life:
    life = _Life(start, {start} if start else set(), start is not None)
    steps: list[tuple[float, int, str, object]] = []
    for s in m.sites:
        steps += [(ep.start, 0, "episode", (s, ep)) for ep in m.episodes[(a.home, s)]]
    for k, o in enumerate(m.ops):
        if o.kind == "planned_switch" and m.matches(o, a):
            steps.append((o.at, 1, "switch", (k, o)))
        elif o.kind in ("agent_logout", "agent_login") and o.target == a.id:
            steps.append((o.at, 2, o.kind, o))
    for t, _, kind, data in sorted(steps, key=lambda x: (x[0], x[1])):
        if kind == "episode":
            site, ep = data  # type: ignore[misc]
            _episode(m, a, life, site, ep)
        elif kind == "switch":
            k, op = data  # type: ignore[misc]
            _switch(m, a, life, k, op)
        elif kind == "agent_logout" and life.online:
            life.places, life.online, life.left = set(), False, True
            life.say(f"logged out at {_s(t)} s")
        elif kind == "agent_login":
            lands = m.landing(a, t)
            life.places = (life.places | lands) if life.online else lands
            life.online, life.left, life.state = True, True, False
            life.say(f"logged in at {_s(t)} s: lands at {' or '.join(sorted(lands))}")
    if any(e.what == "down" and e.lossy and role(m.topo, e.nodes[0]) == "agents" and
           m.topo.devices[e.nodes[0]].site == a.home for e in m.effects):  # fmt: skip
        life.state = False
        life.say(f"the agents host of {a.home} was killed or powered off: fresh logins")
    return life


def _episode(m: _Model, a: Agent, life: _Life, site: str, ep: Episode) -> None:
    if site not in life.places:
        return
    outcome, others = ep.outcome(m.p), [s for s in m.sites if s != site]
    if outcome == "stay":
        life.say(f"{site}: {ep.describe()} moves nobody")
        return
    life.left = True
    lo, hi = ep.start, ep.end + m.p.window
    if outcome == "leave":
        sure = (
            len(others) == 1
            and m.clean(a.home, others[0], lo, hi)
            and not m.touched(a, lo, hi, ("planned_switch", "agent_logout", "agent_login"))
        )
        if sure:
            life.places = (life.places - {site}) | {others[0]}
            life.say(f"{site}: {ep.describe()} moves it to {others[0]}")
            return
        life.places |= set(others)
        life.say(
            f"{site}: {ep.describe()} moves it, but the other site is not whole the while: may land at either"
        )
        return
    life.places |= set(others)
    life.say(f"{site}: {ep.describe()} may move it")


def _switch(m: _Model, a: Agent, life: _Life, k: int, op: Op) -> None:
    to = str(op.params.get("to"))
    rule = f"planned switch {op.params.get('scope')}={op.params.get('value')} -> {to} at {_s(op.at)} s"
    if not life.online:
        return
    if life.places == {to}:
        life.say(f"{rule}: already there")
        return
    end = m.end(op)
    lo, hi = op.at, end + m.p.window
    others = [o for j, o in enumerate(m.ops) if j != k and o.kind == "planned_switch" and m.matches(o, a)]
    sure = (
        m.p.surely_moves(end - op.at)
        and all(m.clean(a.home, s, lo, hi) for s in m.sites)
        and not m.wan_cut(lo, hi)
        and not any(o.at <= end and m.end(o) >= op.at for o in others)
        and not m.touched(a, op.at - CALL_REACH, end, ("call",))
        and not m.touched(a, lo, hi, ("agent_logout", "agent_login"))
    )
    life.left = life.left or to != life.start or len(life.places) > 1
    if sure:
        life.places = {to}
        life.say(f"{rule}: moves it")
    else:
        life.places |= {to, a.home}
        life.say(f"{rule}: may move it (short rule, or something else going on)")


def expected_outcome(
    schedule: Schedule,
    topo: Topology,
    profile: Profile,
    *,
    start: Mapping[str, str | None] | None = None,
) -> Expectation:
    """The expected outcome of `schedule` on `topo` (module docstring). `start`: where each agent is before
    the schedule (agent -> site, None for offline), when not at home (an earlier schedule moved it)."""
    m = _Model(schedule, topo, profile)
    agents: dict[str, AgentExpectation] = {}
    unservable = m.unservable()
    heal_busy = any(e.end >= m.final_heal - profile.window for e in m.effects)
    for a in topo.agents():
        where = start[a.id] if start is not None and a.id in start else a.home
        life = _walk(m, a, where)
        for u in unservable:
            if u["home"] == a.home and life.online:
                life.say(f"both sites broken {u['from']}-{u['to']} s: unservable, back after the final heal")
        if not life.online:
            relogin = tuple(m.sites) if heal_busy else tuple(sorted(m.landing(a, m.final_heal)))
            agents[a.id] = AgentExpectation(where, False, (), "may", False, tuple(life.why), relogin)
            continue
        if not life.left and life.places == {where}:
            move = "stay"
        elif where not in life.places:
            move = "must"
        else:
            move = "may"
        agents[a.id] = AgentExpectation(
            where,
            True,
            tuple(sorted(life.places)),
            move,
            life.state,
            tuple(life.why),  # type: ignore[arg-type]
        )
    return Expectation(
        agents=agents,
        window=profile.window,
        settle=schedule.settle,
        final_heal=round(m.final_heal, 3),
        unservable=unservable,
        seed=schedule.seed,
        topology=topo.name,
    )
