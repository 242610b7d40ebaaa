"""Unit tests of the agent client's login flow (design steps 1-6, stack/agent/login.py) in the in-process
fake world of tests/test_agent_client.py: fake ULs, CTIs, PBXs and phone."""

from __future__ import annotations

from test_agent_client import World, make, run, until


def test_local_login() -> None:
    async def go() -> None:
        w = World()
        c, phone = make(w)
        assert await c.login_flow("sha", [])
        assert (c.phase, c.site, c.state) == ("online", "sha", "ready")
        assert w.logins == [("sha", [])] and phone.moves == []
        assert [e["event"] for e in c.events.recent()].count("phase") == 2

    run(go())


def test_local_ul_down_logs_in_at_remote() -> None:
    async def go() -> None:
        w = World()
        w.sites["sha"].ul_up = False
        c, phone = make(w)
        assert await c.login_flow("sha", [])
        assert c.site == "ntg" and w.logins == [("ntg", [])] and phone.moves == ["pbx-ntg"]
        assert c.events.recent(event="ul_unavailable")

    run(go())


def test_local_ul_healthy_but_login_fails_goes_remote() -> None:
    async def go() -> None:
        w = World()
        w.sites["sha"].ul_login_fails = True
        c, _ = make(w)
        assert await c.login_flow("sha", [])
        assert c.site == "ntg" and [s for s, _ in w.logins] == ["sha", "ntg"]

    run(go())


def test_planned_switch_rule_allocates_remote() -> None:
    async def go() -> None:
        w = World(rule="ntg")
        c, phone = make(w)
        assert await c.login_flow("sha", [])
        assert c.site == "ntg" and c.reg and c.reg["via"] == "remote" and phone.moves == ["pbx-ntg"]

    run(go())


def test_bad_password_is_refused_without_remote_attempt() -> None:
    async def go() -> None:
        w = World()
        c, _ = make(w, password="nope")
        assert not await c.login_flow("sha", [])
        assert c.phase == "login_failed" and w.logins == [("sha", [])]

    run(go())


def test_cti_registration_refused_logs_in_again_at_remote() -> None:
    async def go() -> None:
        w = World()
        w.sites["sha"].cti_refuse = "token_invalid"
        c, _ = make(w)
        assert await c.login_flow("sha", [])
        assert c.site == "ntg" and w.logins == [("sha", []), ("ntg", ["sha"])]
        assert c.events.recent(event="cti_refused")[0]["code"] == "token_invalid"

    run(go())


def test_cti_unreachable_logs_in_again_at_remote() -> None:
    async def go() -> None:
        w = World()
        w.sites["sha"].cti_up = False
        c, _ = make(w)
        assert await c.login_flow("sha", [])
        assert c.site == "ntg"

    run(go())


def test_phone_linkage_fails_logs_in_again_at_remote() -> None:
    async def go() -> None:
        w = World()
        w.sites["sha"].link_fails = True
        c, phone = make(w)
        assert await c.login_flow("sha", [])
        assert c.site == "ntg" and phone.moves == ["pbx-ntg"]
        assert w.conns[0].closed  # the failed site's CTI session was given up

    run(go())


def test_both_sites_fail_then_retry_succeeds() -> None:
    async def go() -> None:
        w = World()
        w.sites["sha"].cti_refuse = "fenced"
        w.sites["ntg"].cti_refuse = "fenced"
        c, _ = make(w)
        c.start()
        await until(lambda: c.phase == "login_failed")
        w.sites["sha"].cti_refuse = None
        await until(lambda: c.phase == "online")
        assert c.site == "sha"
        await c.stop()

    run(go())
