"""Unit tests of the agent client's watch, confirmation and failover (design steps 7-8), with an
in-process fake world: fake ULs, CTIs, PBXs and phone (the login steps 1-6 in the same world are
tests/test_agent_login.py). Real sockets are in tests/test_agent_loopback.py."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pytest

from stack.agent.client import AgentClient, Timers, UlRefused, UlUnavailable
from stack.cti.client import CtiError

FAST = Timers(
    heartbeat=0.05,
    heartbeat_timeout=0.05,
    heartbeat_misses=3,
    confirm_delay=0.1,
    confirm_timeout=0.1,
    ul_health_timeout=0.05,
    ul_timeout=0.2,
    cti_timeout=0.2,
    phone_timeout=0.3,
    link_attempts=2,
    link_retry=0.02,
    retry_delay=0.05,
    jitter=0.0,
)


@dataclass
class Site:
    ul_up: bool = True
    ul_login_fails: bool = False
    cti_up: bool = True
    cti_hung: bool = False  # requests wait; answered if it ends before their timeout (TCP delivers late)
    cti_delay: float = 0.0  # a slow CTI: every answer this late
    cti_refuse: str | None = None
    pbx_up: bool = True
    link_fails: bool = False


@dataclass
class World:
    sites: dict[str, Site] = field(default_factory=lambda: {"sha": Site(), "ntg": Site()})
    rule: str | None = None  # target site of a planned-switch rule for the agent
    logins: list[tuple[str, list[str]]] = field(default_factory=list)
    conns: list[FakeConn] = field(default_factory=list)
    epoch: int = 0
    logouts: list[str] = field(default_factory=list)
    lefts: list[dict[str, Any] | None] = field(default_factory=list)
    wire: list[tuple[str, str]] = field(default_factory=list)  # (site, type) of every request, in order
    hold: float = 0.0  # what the UL says to wait before the CTI login

    def push(self, site: str, event: dict[str, Any]) -> None:
        for c in self.conns:
            if c.site == site and not c.closed and c.on_event:
                c.on_event({"type": "event", **event})


class FakeUl:
    def __init__(self, world: World) -> None:
        self.w = world

    async def health(self, url: str, timeout: float) -> bool:
        return self.w.sites[url.rsplit("/", 1)[-1]].ul_up

    async def login(
        self,
        url: str,
        agent: str,
        password: str,
        avoid: list[str],
        timeout: float,
        left: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        site = url.rsplit("/", 1)[-1]
        self.w.logins.append((site, avoid))
        self.w.lefts.append(left)
        s = self.w.sites[site]
        if not s.ul_up or s.ul_login_fails:
            raise UlUnavailable("down")
        if password != "pw":
            raise UlRefused("401")
        at, via = site, "local"
        if (
            self.w.rule
            and self.w.rule != site
            and self.w.rule not in avoid
            and self.w.sites[self.w.rule].ul_up
        ):
            at, via = self.w.rule, "remote"
        elif site in avoid:
            at, via = ("ntg" if site == "sha" else "sha"), "remote"
        self.w.epoch += 1
        return {
            "site": at,
            "epoch": self.w.epoch,
            "token": f"tok-{at}-{self.w.epoch}",
            "cti": {"host": f"cti-{at}", "port": 7000},
            "pbx": {"host": f"pbx-{at}", "port": 5060},
            "via": via,
            "hold": self.w.hold,
        }

    async def logout(self, url: str, token: str, timeout: float) -> None:
        self.w.logouts.append(token)


class FakeConn:
    def __init__(self, world: World, site: str, on_event: Any, on_close: Any) -> None:
        self.w, self.site, self.on_event, self.on_close = world, site, on_event, on_close
        self.closed = False
        self.silent = False
        self.state = None
        self.sent: list[dict[str, Any]] = []

    async def request(self, msg: dict[str, Any], timeout: float = 1.0) -> dict[str, Any]:
        s = self.w.sites[self.site]
        self.sent.append(msg)
        self.w.wire.append((self.site, msg["type"]))
        if self.closed:
            raise CtiError("disconnected")
        if not s.cti_up:
            await asyncio.sleep(timeout)
            raise CtiError("timeout")
        loop = asyncio.get_running_loop()
        start = loop.time()
        while s.cti_hung or self.silent or loop.time() < start + s.cti_delay:
            if loop.time() >= start + timeout:
                raise CtiError("timeout")
            await asyncio.sleep(0.005)
        if self.closed:
            raise CtiError("disconnected")
        t = msg["type"]
        if t == "login":
            if s.cti_refuse:
                raise CtiError(s.cti_refuse)
            return {"type": "login_ok"}
        if t == "link_phone":
            if s.link_fails or not s.pbx_up:
                raise CtiError("phone_not_registered")
            return {"type": "link_ok"}
        if t == "set_state":
            self.state = msg["state"]
            return {"type": "state_ok"}
        if t == "heartbeat":
            return {"type": "heartbeat_ack", "pbx_link": "up" if s.pbx_up else "down", "phone": "registered"}
        if t == "status":
            up = "up" if s.pbx_up else "down"
            return {"type": "status", "pbx_link": up, "phone": "registered" if s.pbx_up else "unknown"}
        if t == "logout":
            self.closed = True
            return {"type": "logout_ok"}
        raise CtiError("unknown_type")

    def drop(self) -> None:
        self.closed = True
        if self.on_close:
            self.on_close()

    async def close(self, logout: bool = False) -> None:
        if logout and not self.closed:
            self.w.wire.append((self.site, "logout"))
        self.closed = True


class FakePhone:
    def __init__(self, world: World, home: str) -> None:
        self.w = world
        self.host, self.port = f"pbx-{home}", 5060
        self.registered = True
        self.call_state = "idle"
        self.moves: list[str] = []

    async def registration(self) -> dict[str, Any]:
        site = self.host.removeprefix("pbx-")
        up = self.registered and self.w.sites[site].pbx_up
        return {
            "extension": "10001",
            "registered": up,
            "host": self.host,
            "port": self.port,
            "call_state": self.call_state,
        }

    async def set_server(self, host: str, port: int) -> bool:
        self.moves.append(host)
        self.host, self.port = host, port
        self.registered = self.w.sites[host.removeprefix("pbx-")].pbx_up
        return self.registered


def make(world: World, **kw: Any) -> tuple[AgentClient, FakePhone]:
    phone = FakePhone(world, "sha")

    async def cti_open(host: str, port: int, *, timeout: float, on_event: Any = None, on_close: Any = None):
        site = host.removeprefix("cti-")
        if not world.sites[site].cti_up:
            raise CtiError("disconnected")
        c = FakeConn(world, site, on_event, on_close)
        world.conns.append(c)
        return c

    async def options(host: str, port: int, timeout: float) -> int | None:
        return 200 if world.sites[host.removeprefix("pbx-")].pbx_up else None

    client = AgentClient(
        "a00001",
        kw.pop("password", "pw"),
        "10001",
        "sha",
        {"sha": "http://ul/sha", "ntg": "http://ul/ntg"},
        phone,
        timers=kw.pop("timers", FAST),
        ul_api=FakeUl(world),
        cti_open=cti_open,
        sip_options=options,
        **kw,
    )
    return client, phone


async def until(cond: Any, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():
        if loop.time() > end:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 30))


def heartbeats(conn: FakeConn) -> int:
    return sum(1 for m in conn.sent if m["type"] == "heartbeat")


async def beats(conn: FakeConn, n: int) -> None:
    """Until the client has sent ``n`` more heartbeats on ``conn``: time passing by its own clock, so a
    check that nothing happens meanwhile means something however slow the machine is."""
    start = heartbeats(conn)
    await until(lambda: heartbeats(conn) >= start + n, timeout=5.0)


# ---- steps 7-8 -------------------------------------------------------------------------------------------


def test_pbx_failure_confirmed_fails_over_and_restores_state() -> None:
    async def go() -> None:
        w = World()
        c, phone = make(w)
        c.start()
        await until(lambda: c.phase == "online")
        await c.set_state("not_ready")
        w.sites["sha"].pbx_up = False
        w.push("sha", {"event": "pbx_link_down"})
        await until(lambda: c.site == "ntg" and c.phase == "online")
        assert c.failovers == 1 and c.state == "not_ready" and phone.moves == ["pbx-ntg"]
        assert w.conns[-1].state == "not_ready"
        assert w.logins[-1] == ("ntg", ["sha"])
        confirm = c.events.recent(event="confirm")[-1]
        assert confirm["broken"] and not confirm["sip"]
        await beats(c.conn, 4)
        assert c.site == "ntg"  # no automatic failback
        await c.stop()

    run(go())


def test_blip_shorter_than_confirmation_does_not_move() -> None:
    async def go() -> None:
        w = World()
        c, _ = make(w)
        c.start()
        await until(lambda: c.phase == "online")
        w.sites["sha"].pbx_up = False
        w.push("sha", {"event": "pbx_link_down"})
        await until(lambda: c.phase == "confirming")  # healed within the confirmation delay
        w.sites["sha"].pbx_up = True
        await until(lambda: bool(c.events.recent(event="confirm")))
        await beats(c.conn, 4)
        assert c.site == "sha" and c.phase == "online" and c.failovers == 0
        assert not c.events.recent(event="confirm")[-1]["broken"]
        await c.stop()

    run(go())


def test_missed_heartbeats_with_dead_cti_fail_over() -> None:
    async def go() -> None:
        w = World()
        c, _ = make(w)
        c.start()
        await until(lambda: c.phase == "online")
        w.sites["sha"].cti_hung = True
        w.sites["sha"].cti_up = False
        await until(lambda: c.site == "ntg" and c.phase == "online", 3)
        assert len(c.events.recent(event="heartbeat_missed")) >= 3
        assert c.events.recent(event="confirm")[-1]["reason"] == "heartbeats_missed"
        await c.stop()

    run(go())


def test_dropped_cti_connection_with_healthy_cti_reattaches_same_site() -> None:
    async def go() -> None:
        w = World()
        c, _ = make(w)
        c.start()
        await until(lambda: c.phase == "online")
        first = c.conn
        first.drop()
        await until(lambda: c.conn is not first and c.phase == "online")
        assert c.site == "sha" and c.failovers == 0 and len(w.logins) == 1

    run(go())


def test_phone_losing_registration_is_confirmed_and_fails_over() -> None:
    async def go() -> None:
        w = World()
        c, phone = make(w)
        c.start()
        await until(lambda: c.phase == "online")
        phone.registered = False  # lost its binding and does not get it back by itself
        await until(lambda: c.site == "ntg" and c.phase == "online")
        assert c.events.recent(event="confirm")[-1]["phone"] is False
        await c.stop()

    run(go())


def test_planned_switch_moves_idle_agent() -> None:
    async def go() -> None:
        w = World()
        c, _ = make(w)
        c.start()
        await until(lambda: c.phase == "online")
        w.rule = "ntg"
        w.push("sha", {"event": "switch_ordered", "target": "ntg", "rule": "r1"})
        await until(lambda: c.site == "ntg" and c.phase == "online")
        assert c.switches == 1 and c.failovers == 0
        assert not c.events.recent(event="confirm")
        await c.stop()

    run(go())


def test_planned_switch_waits_for_call_to_end() -> None:
    async def go() -> None:
        w = World()
        c, phone = make(w)
        c.start()
        await until(lambda: c.phase == "online")
        phone.call_state = "in_call"
        await until(lambda: c.state == "on_call")
        w.rule = "ntg"
        w.push("sha", {"event": "switch_ordered", "target": "ntg", "rule": "r1"})
        await until(lambda: c.pending_switch == "ntg")
        await beats(c.conn, 6)
        assert c.site == "sha" and c.pending_switch == "ntg"
        phone.call_state = "idle"
        await until(lambda: c.site == "ntg" and c.phase == "online")
        assert c.state == "ready"
        await c.stop()

    run(go())


def test_fenced_session_stops_without_moving() -> None:
    async def go() -> None:
        w = World()
        c, _ = make(w)
        c.start()
        await until(lambda: c.phase == "online")
        w.push("sha", {"event": "fenced", "epoch": 99, "site": "ntg"})
        await until(lambda: c.phase == "fenced")
        assert len(w.logins) == 1

    run(go())


def test_remote_ul_unreachable_on_failover_goes_through_local_ul() -> None:
    async def go() -> None:
        w = World()
        c, _ = make(w)
        c.start()
        await until(lambda: c.phase == "online")
        w.sites["ntg"].ul_up = False  # the client cannot reach ntg's UL; sha's UL asks ntg for it
        w.sites["sha"].pbx_up = False
        w.push("sha", {"event": "pbx_link_down"})
        await until(lambda: c.site == "ntg" and c.phase == "online")
        assert ("sha", ["sha"]) in w.logins
        await c.stop()

    run(go())


@pytest.mark.parametrize("state", ["ready", "not_ready"])
def test_set_state_validates(state: str) -> None:
    async def go() -> None:
        c, _ = make(World())
        assert await c.login_flow("sha", [])
        await c.set_state(state)
        assert c.conn.state == state
        with pytest.raises(ValueError):
            await c.set_state("on_call")

    run(go())


def test_planned_switch_is_break_before_make() -> None:
    """The old CTI hears the logout before the new CTI hears the login; the UL is told how long the
    client has been silent at the site it left."""

    async def go() -> None:
        w = World()
        c, _ = make(w)
        c.start()
        await until(lambda: c.phase == "online")
        w.rule = "ntg"
        w.push("sha", {"event": "switch_ordered", "target": "ntg", "rule": "r1"})
        await until(lambda: c.site == "ntg" and c.phase == "online")
        assert w.wire.index(("sha", "logout")) < w.wire.index(("ntg", "login"))
        left = w.lefts[-1]
        assert left is not None and left["site"] == "sha" and 0 <= left["seconds"] < 1.0
        await c.stop()

    run(go())


def test_unplanned_failover_leaves_first_and_waits_the_uls_hold() -> None:
    async def go() -> None:
        w = World()
        c, _ = make(w)
        c.start()
        await until(lambda: c.phase == "online")
        w.hold = 0.3
        w.sites["sha"].pbx_up = False
        w.push("sha", {"event": "pbx_link_down"})
        await until(lambda: c.site == "ntg" and c.phase == "online", timeout=3.0)
        assert w.wire.index(("sha", "logout")) < w.wire.index(("ntg", "login"))
        replied = c.events.recent(event="ul_reply")[-1]["mono"]
        logged = c.events.recent(event="cti_login")[-1]["mono"]
        assert logged - replied >= 0.29 and c.events.recent(event="hold")
        await c.stop()

    run(go())
