"""Integration on 127.0.0.1 with real processes: two Kamailio PBXs (virtual/pbx.py), two unified logins and
two CTI servers (``python -m stack.login`` / ``python -m stack.cti``), real emulated phones (stack/phone)
and agent clients in this process. Ports 27000-27999. The tests share one lab (tests/loopback.py) and run in
file order; each one uses its own agents and repairs what it breaks.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest
from loopback import (
    AGENT_SECRET,
    HOST,
    PORTS,
    SECRET,
    SIP_SECRET,
    UNREGISTRABLE_AT_SHA,
    Lab,
    registered,
    running,
    wait_reconciled,
)

from stack.agent.client import AgentClient, Timers, TokenBucket
from stack.common import auth
from stack.common.eventlog import EventLog
from stack.cti.client import CtiConnection, CtiError, query
from stack.login import client as ulc
from stack.phone.control import LocalPhoneControl
from stack.phone.ua import Phone, SipEndpoint
from virtual import pbx

if not os.path.exists(pbx.KAMAILIO):
    pytest.skip("kamailio is not installed", allow_module_level=True)

TIMERS = Timers(
    heartbeat=0.25,
    heartbeat_timeout=0.25,
    heartbeat_misses=3,
    confirm_delay=0.6,
    confirm_timeout=0.5,
    ul_health_timeout=0.5,
    ul_timeout=2.0,
    cti_timeout=1.0,
    phone_timeout=3.0,
    link_attempts=4,
    link_retry=0.15,
    retry_delay=0.5,
    jitter=0.05,
)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    lab = Lab(tmp_path_factory.mktemp("loopback"))
    try:
        with running(lab):
            yield lab
    finally:
        if os.environ.get("HIL_KEEP_LOGS"):
            shutil.copytree(lab.root, "/tmp/hil-loopback-logs", dirs_exist_ok=True)


class Agents:
    """Phones on one shared SIP endpoint and their agent clients, in the test's event loop."""

    def __init__(self, lab: Lab, ids: list[str]) -> None:
        self.lab, self.ids = lab, ids
        self.events = EventLog()
        self.clients: dict[str, AgentClient] = {}
        self.phones: dict[str, Phone] = {}
        self.endpoint: SipEndpoint | None = None

    async def __aenter__(self) -> Agents:
        self.endpoint = await SipEndpoint.open(HOST, 0)
        pacer = TokenBucket(rate=200, burst=50)
        for aid in self.ids:
            a = self.lab.directory.agents[aid]
            home = PORTS[a.home]["sip"]
            phone = Phone(
                self.endpoint, a.extension, auth.derive_password(SIP_SECRET, a.extension), (HOST, home)
            )
            self.phones[aid] = phone
            self.clients[aid] = AgentClient(
                aid, auth.derive_password(AGENT_SECRET, aid), a.extension, a.home,
                {s: self.lab.ul_url(s) for s in PORTS}, LocalPhoneControl(phone),
                timers=TIMERS, events=self.events, pacer=pacer,
            )  # fmt: skip
        for c in self.clients.values():
            c.start()
        await self.until(lambda: all(c.phase == "online" for c in self.clients.values()), 15)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.gather(*(c.stop() for c in self.clients.values()), return_exceptions=True)
        for c in self.clients.values():
            await c.ul.close()
        for p in self.phones.values():
            await p.unregister()
            p.close()
        assert self.endpoint is not None
        self.endpoint.close()

    def sites(self) -> dict[str, str | None]:
        return {aid: c.site for aid, c in self.clients.items()}

    async def until(self, cond: Any, timeout: float = 10.0) -> float:
        t0 = time.monotonic()
        while not cond():
            if time.monotonic() - t0 > timeout:
                states = {a: (c.phase, c.site) for a, c in self.clients.items()}
                tail = "\n".join(json.dumps(e) for e in self.events.recent(40))
                raise AssertionError(f"not reached in {timeout}s: {states}\n{tail}")
            await asyncio.sleep(0.02)
        return time.monotonic() - t0

    async def quiet(self, seconds: float) -> None:
        """At least ``seconds`` pass, and every client sends its CTI something after that: a check that
        nothing happened meanwhile then means something even when a busy machine ran the clients late."""
        after = time.monotonic() + seconds
        await self.until(
            lambda: all((c._sent_at or 0.0) > after for c in self.clients.values()), seconds + 10
        )


def run(coro: Any, timeout: float = 40.0) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def ul_sessions(site: str) -> set[str]:
    """The agents a UL holds active at its site, read off the event loop (the clients keep heartbeating)."""
    reply = await asyncio.to_thread(ulc.sessions, f"http://{HOST}:{PORTS[site]['ul']}")
    return {s["agent"] for s in reply["sessions"]}


async def cti_sessions(site: str) -> dict[str, dict[str, Any]]:
    reply = await query(HOST, PORTS[site]["cti"], {"type": "sessions"})
    return {s["agent"]: s for s in reply["sessions"]}


# ---- scenarios ------------------------------------------------------------------------------------------


def test_local_login(lab: Lab) -> None:
    async def go() -> None:
        async with Agents(lab, ["a00001", "a00002", "a00025"]) as ag:
            assert ag.sites() == {"a00001": "sha", "a00002": "sha", "a00025": "ntg"}
            sha = await cti_sessions("sha")
            assert {"a00001", "a00002"} <= set(sha) and sha["a00001"]["linked"]
            assert sha["a00001"]["state"] == "ready" and sha["a00001"]["extension"] == "10001"
            regs = await asyncio.to_thread(registered, PORTS["sha"]["rpc"])
            assert "10001" in regs and "10002" in regs
            held = await ul_sessions("sha")
            assert {"a00001", "a00002"} <= held and "a00025" not in held

    run(go())


def test_forged_expired_and_fenced_tokens_are_refused(lab: Lab) -> None:
    async def go() -> None:
        async with Agents(lab, ["a00003"]) as ag:
            c = ag.clients["a00003"]
            good = c.reg["token"]
            conn = await CtiConnection.open(HOST, PORTS["sha"]["cti"])
            forged = auth.mint(
                "not-the-secret", {"agent": "a00003", "site": "sha", "epoch": 10**15, "ext": "10003"}
            )
            payload, sig = good.split(".")
            tampered = auth.mint(SECRET, {}, 0).split(".")[0] + "." + sig
            expired = auth.mint(SECRET, {"agent": "a00003", "site": "sha", "epoch": c.reg["epoch"]}, ttl=-1)
            other_site = auth.mint(SECRET, {"agent": "a00003", "site": "ntg", "epoch": c.reg["epoch"]})
            old = auth.mint(
                SECRET, {"agent": "a00003", "site": "sha", "epoch": c.reg["epoch"] - 1, "ext": "10003"}
            )
            for token, code in [
                (forged, "token_invalid"),
                (tampered, "token_invalid"),
                ("garbage", "token_invalid"),
                (expired, "token_expired"),
                (other_site, "wrong_site"),
                (old, "fenced"),
            ]:
                with pytest.raises(CtiError) as err:
                    await conn.request({"type": "login", "token": token})
                assert err.value.code == code, token
            await conn.close()
            assert c.phase == "online" and c.site == "sha"  # the real session is untouched

    run(go())


def test_garbage_on_one_connection_does_not_disturb_other_agents(lab: Lab) -> None:
    async def go() -> None:
        async with Agents(lab, ["a00004", "a00005"]) as ag:
            before = {a: c.conn for a, c in ag.clients.items()}
            reader, writer = await asyncio.open_connection(HOST, PORTS["sha"]["cti"])
            writer.write(b"{not json\n[1,2]\n\x00\xff\n")
            replies = [json.loads(await reader.readline()) for _ in range(3)]
            assert [r["code"] for r in replies] == ["bad_json", "bad_json", "bad_json"]
            writer.write(b'{"type": "heartbeat"}\n{"type": "nope"}\n{"type": "set_state"}\n')
            codes = [json.loads(await reader.readline())["code"] for _ in range(3)]
            assert codes == ["not_logged_in", "unknown_type", "not_logged_in"]
            writer.write(b"x" * 70000 + b"\n")
            assert json.loads(await reader.readline())["code"] == "too_large"
            try:  # closed after an oversized line (a reset when our unread bytes were still queued)
                assert await reader.read() == b""
            except ConnectionResetError:
                pass
            writer.close()
            await ag.quiet(3 * TIMERS.heartbeat)
            for aid, c in ag.clients.items():
                assert c.phase == "online" and c.conn is before[aid] and c.site == "sha"
            assert not ag.events.recent(event="confirm")

    run(go())


def test_local_ul_down_logs_in_at_remote(lab: Lab) -> None:
    lab.stop("sha-ul")
    try:

        async def go() -> None:
            async with Agents(lab, ["a00006"]) as ag:
                assert ag.sites() == {"a00006": "ntg"}
                assert ag.events.recent(event="ul_unavailable")
                assert "a00006" in await cti_sessions("ntg")

        run(go())
    finally:
        lab.start_ul("sha")
        wait_reconciled(lab, "sha")


def test_cti_registration_refused_logs_in_at_remote(lab: Lab) -> None:
    lab.stop("sha-cti")
    lab.env["HIL_WRONG_SECRET"] = "some-other-secret"
    lab.start_cti("sha", secret_env="HIL_WRONG_SECRET")  # refuses every token the UL mints
    try:

        async def go() -> None:
            async with Agents(lab, ["a00007"]) as ag:
                assert ag.sites() == {"a00007": "ntg"}
                refused = ag.events.recent(event="cti_refused")
                assert refused and refused[0]["code"] == "token_invalid" and refused[0]["at"] == "sha"
                assert ag.events.recent(event="ul_login")[-1]["avoid"] == ["sha"]

        run(go())
    finally:
        lab.stop("sha-cti")
        lab.start_cti("sha")


def test_phone_linkage_failure_logs_in_at_remote(lab: Lab) -> None:
    async def go() -> None:
        async with Agents(lab, ["a00012"]) as ag:  # its extension cannot register at sha's PBX
            assert ag.sites() == {"a00012": "ntg"}
            assert ag.events.recent(event="phone_move_failed")[0]["at"] == "sha"
            assert UNREGISTRABLE_AT_SHA in await asyncio.to_thread(registered, PORTS["ntg"]["rpc"])

    run(go())


@pytest.mark.parametrize(
    ("scope", "value", "ids", "movers"),
    [
        ("skill_group", "vip", ["a00013", "a00014", "a00015", "a00016"], {"a00013", "a00015"}),
        ("region", "north", ["a00017", "a00018", "a00008", "a00009"], {"a00017", "a00018"}),
        ("system", "air", ["a00010", "a00011", "a00019", "a00020"], {"a00010", "a00011"}),
    ],
)
def test_planned_switch_moves_only_selected_agents(
    lab: Lab, scope: str, value: str, ids: list[str], movers: set[str]
) -> None:
    async def go() -> None:
        async with Agents(lab, ids) as ag:
            assert set(ag.sites().values()) == {"sha"}
            reply = await asyncio.to_thread(ulc.add_rule, lab.ul_url("sha"), SECRET, scope, value, "ntg")
            rule = reply["rule"]["id"]
            try:
                assert reply["replicated"] and reply["ordered_here"] >= len(movers)
                assert rule in {r["id"] for r in await asyncio.to_thread(ulc.list_rules, lab.ul_url("ntg"))}
                await ag.until(lambda: all(ag.clients[a].site == "ntg" for a in movers), 10)
                await ag.quiet(0.5)
                for aid, site in ag.sites().items():
                    assert site == ("ntg" if aid in movers else "sha"), aid
                    assert ag.clients[aid].phase == "online"
                for aid in movers:
                    assert ag.clients[aid].switches == 1 and ag.clients[aid].failovers == 0
                ntg = await cti_sessions("ntg")
                assert movers <= set(ntg)
                assert not movers & set(await cti_sessions("sha"))
            finally:
                await asyncio.to_thread(ulc.remove_rule, lab.ul_url("sha"), SECRET, rule)
            assert rule not in {r["id"] for r in await asyncio.to_thread(ulc.list_rules, lab.ul_url("ntg"))}

    run(go())


def test_short_pbx_blip_does_not_fail_over(lab: Lab) -> None:
    async def go() -> None:
        async with Agents(lab, ["a00021", "a00022"]) as ag:
            pid = lab.procs["sha-pbx"].pid
            os.killpg(pid, signal.SIGSTOP)
            await asyncio.sleep(0.3)
            os.killpg(pid, signal.SIGCONT)
            await ag.quiet(TIMERS.confirm_delay + 4 * TIMERS.heartbeat + 1.0)
            assert ag.sites() == {"a00021": "sha", "a00022": "sha"}
            assert all(c.failovers == 0 and c.phase == "online" for c in ag.clients.values())

    run(go())


def test_pbx_killed_confirmed_automatic_failover(lab: Lab) -> None:
    ids = ["a00023", "a00024", "a00001", "a00002"]

    async def go() -> float:
        async with Agents(lab, ids) as ag:
            await ag.clients["a00023"].set_state("not_ready")
            t0 = time.monotonic()
            lab.stop("sha-pbx", signal.SIGKILL)
            took = await ag.until(lambda: all(s == "ntg" for s in ag.sites().values()), 15)
            await ag.until(lambda: all(c.phase == "online" for c in ag.clients.values()), 5)
            for c in ag.clients.values():
                assert c.failovers == 1
                confirm = ag.events.recent(event="confirm", agent=c.agent)[-1]
                assert confirm["broken"] and confirm["sip"] is False
            ntg = await cti_sessions("ntg")
            assert ntg["a00023"]["state"] == "not_ready" and ntg["a00024"]["state"] == "ready"
            regs = await asyncio.to_thread(registered, PORTS["ntg"]["rpc"])
            assert {lab.directory.agents[a].extension for a in ids} <= regs
            print(
                f"\nPBX kill -> {len(ids)} agents online at ntg in {took:.2f}s ({time.monotonic() - t0:.2f}s)"
            )
            return took

    try:
        assert run(go()) < 10
    finally:
        lab.start_pbx("sha")


def test_site_comes_back_each_agent_active_at_exactly_one_site(lab: Lab) -> None:
    ids = ["a00002", "a00003", "a00004", "a00005"]

    async def go() -> None:
        async with Agents(lab, ids) as ag:
            assert set(ag.sites().values()) == {"sha"}
            stale = {a: c.reg["token"] for a, c in ag.clients.items()}
            lab.stop("sha-ul", signal.SIGKILL)  # the whole site's control plane dies
            lab.stop("sha-cti", signal.SIGKILL)
            await ag.until(lambda: all(s == "ntg" for s in ag.sites().values()), 15)
            # off the event loop: a Python daemon's start-up on a busy machine can outlast the CTI's lease,
            # and the clients must keep heartbeating meanwhile
            await asyncio.to_thread(lab.start_ul, "sha")  # comes back with its old sessions in SQLite
            await asyncio.to_thread(lab.start_cti, "sha")
            await asyncio.to_thread(wait_reconciled, lab, "sha")
            sha_ul, ntg_ul = await ul_sessions("sha"), await ul_sessions("ntg")
            sha_cti, ntg_cti = set(await cti_sessions("sha")), set(await cti_sessions("ntg"))
            for a in ids:
                assert (a in sha_ul) + (a in ntg_ul) == 1, a
                assert a in ntg_ul and a in ntg_cti and a not in sha_cti
            conn = await CtiConnection.open(HOST, PORTS["sha"]["cti"])  # a pre-outage token is now fenced
            with pytest.raises(CtiError) as err:
                await conn.request({"type": "login", "token": stale["a00002"]})
            assert err.value.code == "fenced"
            await conn.close()
            await ag.quiet(1.0)
            assert set(ag.sites().values()) == {"ntg"}  # and nobody fails back

    run(go())
