"""Cases `hil explore` found in the CTI (scenarios/schedules/): each a defect once, kept as a unit test of
the server alone next to its schedule, which replays it on the lab."""

from __future__ import annotations

import asyncio
import json
import time

from test_cti_server import CTI, FakePbxAndUl, agent, token, with_cti

from stack.cti.client import CtiConnection, CtiError
from stack.cti.server import CtiServer


def test_a_message_read_after_the_cti_stalled_past_the_lease_ends_the_session() -> None:
    """Found by `hil explore` (scenarios/schedules/cti-pause-8s.json): a CTI hung past its agents' lease
    read their buffered heartbeats on SIGCONT and acked them, while they were already active at the other
    site. The lease holds when a message is read, not only in the sweep (which skips a late round)."""

    async def body(fake: FakePbxAndUl, srv: CtiServer) -> None:
        srv.lease, srv.lease_late = 0.6, 0.2
        conn, events = await agent(fake, "a00001", "10001")
        await conn.request({"type": "heartbeat", "seq": 1, "t": int(time.monotonic() * 1000)})
        beat = asyncio.create_task(
            conn.request({"type": "heartbeat", "seq": 2, "t": int(time.monotonic() * 1000)})
        )
        await asyncio.sleep(0)  # the heartbeat is written; the CTI has not read it yet
        time.sleep(1.2)  # the CTI's event loop stalls twice the lease (this test shares its loop)
        try:
            reply = await asyncio.wait_for(beat, 5.0)
        except (CtiError, ConnectionError, asyncio.IncompleteReadError, EOFError) as err:
            reply = {"error": repr(err)}
        assert reply.get("type") != "heartbeat_ack", reply
        assert "a00001" not in srv.sessions and srv.expired == 1
        await conn.close()

    with_cti(body)


def test_a_fence_read_after_the_lease_ran_out_is_not_pushed_as_fenced() -> None:
    """The same stall seen from the UL's side: its fence of an agent now active at ntg is read after the
    session's lease ran out. The session ended at its lease (silently), not at the fence: no `fenced`
    event claims it lasted until now (the capture would show two sites at once)."""

    async def body(fake: FakePbxAndUl, srv: CtiServer) -> None:
        srv.lease, srv.lease_late = 0.6, 0.2
        conn, events = await agent(fake, "a00001", "10001")
        s = srv.sessions["a00001"]
        s.heard -= 1.2  # as after a stall of twice the lease, before the sweep has run
        assert srv.fence("a00001", s.epoch + 1, "ntg") == "lapsed"
        assert "a00001" not in srv.sessions and srv.expired == 1
        await asyncio.sleep(0.05)
        assert not [e for e in events if e.get("event") == "fenced"]
        await conn.close()

    with_cti(body)


def test_an_event_is_not_pushed_to_a_session_whose_lease_ran_out() -> None:
    """scenarios/schedules/cti-loss-then-pause.json: a CTI hung 16 s found its PBX link down on SIGCONT
    and pushed pbx_link_down to 22 sessions whose lease had run out in the stall (their agents were
    already at the other site): two sites at once on the wire. A push waits for the lease to be settled."""

    async def body(fake: FakePbxAndUl, srv: CtiServer) -> None:
        srv.lease, srv.lease_late = 0.6, 0.2
        conn, events = await agent(fake, "a00001", "10001")
        live, live_events = await agent(fake, "a00002", "10002")
        # As on SIGCONT after a stall of twice the lease: the PBX probe's loop finds the link down and
        # pushes before the lease sweep has run (in the same step here, so the sweep cannot come first).
        srv.sessions["a00001"].heard -= 1.2
        srv.sessions["a00002"].heard = time.monotonic()
        srv._broadcast({"type": "event", "event": "pbx_link_down"})
        for _ in range(200):
            if any(e.get("event") == "pbx_link_down" for e in live_events):
                break
            await asyncio.sleep(0.01)
        assert any(e.get("event") == "pbx_link_down" for e in live_events)  # the live one is told
        assert not [e for e in events if e.get("event") == "pbx_link_down"]
        await conn.close()
        await live.close()

    with_cti(body)


def test_a_late_login_of_an_earlier_connection_does_not_replace_the_live_session() -> None:
    """scenarios/schedules/cti-loss-replaced.json: under 60 % loss an agent's login timed out, it logged in
    on a new connection with the same token, and then the first login reached the CTI (retransmitted):
    it replaced the live session, and the client, told `replaced`, fenced itself for good. A login its
    client sent before the live session's login (same epoch) is refused; a later one still replaces."""

    async def body(fake: FakePbxAndUl, srv: CtiServer) -> None:
        await agent(fake, "a00001", "10001")  # registers the phone and the UL's epoch for the agent
        tok = token("a00001", "10001", 100)
        t0 = int(time.monotonic() * 1000)
        events: list[dict] = []
        live = await CtiConnection.open("127.0.0.1", CTI, on_event=events.append)
        await live.request({"type": "login", "agent": "a00001", "token": tok, "t": t0 + 50})
        late = await CtiConnection.open("127.0.0.1", CTI)
        try:
            await late.request({"type": "login", "agent": "a00001", "token": tok, "t": t0})
            raise AssertionError("a late login replaced the live session")
        except CtiError as err:
            assert err.code == "superseded"
        assert srv.sessions["a00001"].conn is not None and not live.closed
        assert (await live.request({"type": "heartbeat", "seq": 1}))["type"] == "heartbeat_ack"
        newer = await CtiConnection.open("127.0.0.1", CTI)
        await newer.request({"type": "login", "agent": "a00001", "token": tok, "t": t0 + 100})
        for _ in range(200):
            if any(e.get("event") == "replaced" for e in events):
                break
            await asyncio.sleep(0.01)
        assert [e["epoch"] for e in events if e.get("event") == "replaced"] == [100]
        await late.close()
        await newer.close()

    with_cti(body)


def test_a_logout_read_after_the_lease_ran_out_is_answered_lapsed() -> None:
    """scenarios/schedules/cti-loss-then-pause.json: the agent asked to log out just before its CTI hung;
    on SIGCONT the CTI read the logout and answered `logout_ok`, 16 s after the agent had logged in at the
    other site: the reply claimed the session lasted until then. Its lease had run out in the hang."""

    async def body(fake: FakePbxAndUl, srv: CtiServer) -> None:
        srv.lease, srv.lease_late = 0.6, 0.2
        conn, _ = await agent(fake, "a00001", "10001")
        srv.sessions["a00001"].heard -= 1.2  # as after a stall of twice the lease
        reply = await conn.request({"type": "logout"})
        assert reply["type"] == "logout_ok" and reply.get("lapsed") is True
        assert "a00001" not in srv.sessions and srv.lapsed == {"a00001": 100} and srv.expired == 1
        live, _ = await agent(fake, "a00002", "10002")
        reply = await live.request({"type": "logout"})
        assert reply["type"] == "logout_ok" and "lapsed" not in reply and "a00002" not in srv.lapsed

    with_cti(body)


def test_a_session_that_ends_with_its_connection_says_so() -> None:
    """explore seed 2 (both CTIs hung 12 s): an agent's login waited in a hung CTI, the client gave up and
    closed the connection, and logged in at the other site; on SIGCONT the hung CTI answered login_ok on
    the closed connection and dropped the session at once, silently: on the wire the agent looked active at
    both sites until the next read of the table. A session that ends with its connection says `ended`."""

    async def body(fake: FakePbxAndUl, srv: CtiServer) -> None:
        await agent(fake, "a00002", "10002")  # the UL and PBX fakes answer
        fake.epochs["a00001"] = {"site": "sha", "epoch": 100, "status": "active"}
        reader, writer = await asyncio.open_connection("127.0.0.1", CTI)
        line = {"type": "login", "agent": "a00001", "token": token("a00001", "10001", 100), "id": 1}
        writer.write(json.dumps(line).encode() + b"\n")
        writer.write_eof()  # the client gives up: its login and its FIN arrive together
        got = [json.loads(x) for x in (await asyncio.wait_for(reader.read(), 10)).splitlines()]
        assert [(m["type"], m.get("event")) for m in got] == [("login_ok", None), ("event", "ended")]
        assert "a00001" not in srv.sessions
        writer.close()

    with_cti(body)
