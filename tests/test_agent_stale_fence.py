"""A fence by a login older than the agent's own session is no fence of it (scenarios/schedules/
cti-loss-replaced.json under load: a fence of the agent's earlier login at ntg reached sha's CTI after the
agent had logged in there again; the CTI evicted the newer session and the agent stopped, lost). The CTI no
longer evicts for an older epoch (tests/test_cti_server.py); the agent, should one reach it, re-attaches
at the same site instead of stopping. The fake world is tests/test_agent_client.py's."""

from __future__ import annotations

from test_agent_client import World, make, run, until


def test_a_fence_by_an_older_login_reattaches_and_a_newer_one_stops() -> None:
    async def go() -> None:
        w = World()
        c, _ = make(w)
        c.start()
        await until(lambda: c.phase == "online")
        first = c.conn
        w.push("sha", {"event": "fenced", "epoch": w.epoch - 1, "site": "ntg"})
        first.drop()  # the CTI closes the connection it evicted
        await until(lambda: c.conn is not first and c.phase == "online")
        assert c.site == "sha" and c.failovers == 0 and len(w.logins) == 1
        assert c.events.recent(event="confirm")[-1]["reason"] == "fenced_by_older_login"
        w.push("sha", {"event": "fenced", "epoch": w.epoch + 1, "site": "ntg"})
        await until(lambda: c.phase == "fenced")
        assert len(w.logins) == 1

    run(go())
