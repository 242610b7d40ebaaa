"""Detection of a silent CTI (a cut port, a blackhole, a hung process: no reset, only silence) within the
bound the client's timers promise, and no move for a break shorter than its window (issue 11). The fake
world is tests/test_agent_client.py's; the same breaks on the wire are scenarios/test_anti_flap.py."""

from __future__ import annotations

import asyncio

from test_agent_client import World, beats, make, run, until

from stack.agent.client import Timers

# ---- detection of a silent CTI within the bound, and no move for a break shorter than the window -----------

SILENT = Timers(
    heartbeat=0.3,
    heartbeat_timeout=0.4,
    heartbeat_misses=1,
    confirm_delay=0.2,
    confirm_timeout=0.2,
    ul_health_timeout=0.1,
    ul_timeout=0.3,
    cti_timeout=0.3,
    phone_timeout=0.3,
    link_attempts=2,
    link_retry=0.02,
    retry_delay=0.05,
    jitter=0.0,
)


def test_default_timers_confirm_a_silent_cti_within_3s() -> None:
    """Issue 11: detection plus confirmation of a cut, blackholed or hung CTI within 3 s; the break its
    answers must outlast to move anyone is a heartbeat wide and starts above a second."""
    t = Timers()
    assert t.detection_bound <= 3.0
    low, high = t.window
    assert 1.0 <= low < high == low + t.heartbeat and high < t.detection_bound


def test_silent_cti_is_confirmed_within_the_bound_after_one_miss() -> None:
    async def go() -> None:
        w = World()
        c, _ = make(w, timers=SILENT)
        c.start()
        await until(lambda: c.phase == "online")
        await beats(c.conn, 1)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        w.sites["sha"].cti_hung = True  # silent, not gone: its connections stay open
        w.sites["sha"].cti_up = False  # and a fresh connection gets nowhere either
        await until(lambda: len(w.logins) > 1, timeout=3.0)  # the failover's login elsewhere
        took = loop.time() - t0
        assert w.logins[1] == ("ntg", ["sha"])
        assert took <= SILENT.detection_bound + 0.25, took
        assert [e["misses"] for e in c.events.recent(event="heartbeat_missed")] == [1]
        confirm = c.events.recent(event="confirm")[-1]
        assert confirm["reason"] == "heartbeats_missed" and confirm["broken"] and confirm["cti"] is False
        await until(lambda: c.site == "ntg" and c.phase == "online")
        await c.stop()

    run(go())


def test_slow_cti_answering_within_the_heartbeat_timeout_raises_nothing() -> None:
    """Answers later than the interval but within ``heartbeat_timeout``: the session holds, nothing is
    confirmed, nothing re-opened, nobody moves."""

    async def go() -> None:
        w = World()
        c, _ = make(w, timers=SILENT)
        c.start()
        await until(lambda: c.phase == "online")
        conn = c.conn
        w.sites["sha"].cti_delay = 0.32  # later than the 0.3 s interval, within the 0.4 s wait
        await beats(conn, 4)
        w.sites["sha"].cti_delay = 0.0
        assert not c.events.recent(event="heartbeat_missed") and not c.events.recent(event="confirm")
        assert c.conn is conn and c.site == "sha" and len(w.logins) == 1 and len(w.conns) == 1
        await c.stop()

    run(go())


def test_cti_silence_ending_before_the_recheck_moves_nobody() -> None:
    """The answers stop long enough to miss a heartbeat, but the CTI answers again by the time the
    confirmation re-checks it: a blip; the agent re-attaches at the same site (its session's connection may
    be stuck) and never logs in elsewhere."""

    async def go() -> None:
        w = World()
        c, _ = make(w, timers=SILENT)
        c.start()
        await until(lambda: c.phase == "online")
        conn = c.conn
        conn.silent = True  # this connection only: the CTI itself still answers a fresh one
        await until(lambda: bool(c.events.recent(event="confirm")))
        await until(lambda: c.conn is not conn and c.phase == "online")
        assert not c.events.recent(event="confirm")[-1]["broken"]
        assert c.site == "sha" and c.failovers == 0 and len(w.logins) == 1
        await c.stop()

    run(go())


# ---- replaced by a login with its own token: a lost session, not a fence (issue 11, cti-loss-replaced) -----


def test_replaced_by_its_own_token_reattaches_and_by_a_newer_epoch_is_fenced() -> None:
    """A `replaced` event whose epoch is the agent's own came from one of its own earlier connections (a
    login that timed out and reached the CTI late): the agent re-attaches at the same site. One with
    another epoch is a newer login elsewhere: the agent stops, as when fenced."""

    async def go() -> None:
        w = World()
        c, _ = make(w)
        c.start()
        await until(lambda: c.phase == "online")
        first = c.conn
        w.push("sha", {"event": "replaced", "epoch": w.epoch})
        first.drop()  # the CTI closes the replaced connection
        await until(lambda: c.conn is not first and c.phase == "online")
        assert c.site == "sha" and c.failovers == 0 and len(w.logins) == 1
        assert c.events.recent(event="confirm")[-1]["reason"] == "replaced_by_own_login"
        w.push("sha", {"event": "replaced", "epoch": w.epoch + 1})
        await until(lambda: c.phase == "fenced")
        assert len(w.logins) == 1

    run(go())
