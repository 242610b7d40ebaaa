"""Unit tests of the unified login: tokens, rules (matching, persistence, replication), allocation local /
remote / fallback, fencing and reconciliation. Two ULs run in-process on 127.0.0.1 (aiohttp), with a
stand-in CTI admin that records what the UL tells its CTI."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from stack.common import auth
from stack.common.directory import Agent, Directory, expand_agents
from stack.login import client as ulc
from stack.login.server import UnifiedLogin
from stack.login.store import Store

SECRET, AGENT_SECRET = "s3cret", "agent-s3cret"
PORTS = {"sha": 27862, "ntg": 27962}
RAW = {
    "agents": {
        "pools": {
            "sha-air": {"home": "sha", "count": 4, "extensions": "10001-10010", "system": "air",
                        "region": "east", "skill_groups": ["domestic", "vip"]},
            "ntg-hotel": {"home": "ntg", "count": 2, "extensions": "0201-0299", "system": "hotel",
                          "region": "south", "skill_groups": ["vip"]},
        }
    }
}  # fmt: skip


def directory() -> Directory:
    return Directory({a.id: a for a in expand_agents(RAW)}, sites=["sha", "ntg"])


def test_agent_expansion_matches_harness_rule() -> None:
    agents = expand_agents(RAW)
    assert [a.id for a in agents] == ["a00001", "a00002", "a00003", "a00004", "a00005", "a00006"]
    assert agents[1] == Agent("a00002", "10002", "sha-air", "sha", "air", "east", "vip")
    assert agents[4].extension == "0201"  # zero-padded to the range's width
    from harness import topology

    topo = topology.load()
    from stack.common.directory import load

    mine = load(topo.file)
    assert [tuple(vars(a).values()) for a in topo.agents()] == [
        (a.id, a.extension, a.pool, a.home, a.system, a.region, a.skill_group) for a in mine.agents.values()
    ]
    assert mine.ul["sha"].port == 8080 and mine.cti["ntg"].port == 7000 and mine.pbx["sha"].port == 5060


def test_tokens() -> None:
    tok = auth.mint(SECRET, {"agent": "a1", "site": "sha", "epoch": 5})
    assert auth.verify(SECRET, tok)["epoch"] == 5
    for bad, code in [
        (auth.mint("other", {"agent": "a1", "site": "sha", "epoch": 5}), "token_invalid"),
        (auth.mint(SECRET, {"agent": "a1", "site": "sha", "epoch": 5}, ttl=-1), "token_expired"),
        (auth.mint(SECRET, {"agent": "a1"}), "token_invalid"),
        ("x.y.z", "token_invalid"),
        (tok[:-2] + "AA", "token_invalid"),
    ]:
        with pytest.raises(auth.TokenError) as err:
            auth.verify(SECRET, bad)
        assert err.value.code == code
    msg = auth.sign_message(SECRET, {"op": "x"})
    assert auth.check_message(SECRET, {**msg, "id": 3})
    assert not auth.check_message(SECRET, {**msg, "op": "y"})


def test_store_rules_and_sessions_persist(tmp_path: Path) -> None:
    db = tmp_path / "ul.sqlite"
    s = Store(db)
    r1 = s.add_rule("system", "air", "ntg")
    r2 = s.add_rule("skill_group", "vip", "sha")
    attrs = {"agent": "a00002", "system": "air", "region": "east", "skill_group": "vip"}
    assert s.match(attrs) is r2  # skill group is more specific than system
    r2.enabled = False
    s.put_rule(r2)
    assert s.match(attrs) is r1
    e = s.next_epoch("a00002")
    from stack.login.store import SessionRow

    s.put_session(SessionRow("a00002", "sha", e, "10002", "active", time.time()))
    assert s.next_epoch("a00002") > e
    assert s.merge_session(SessionRow("a00002", "ntg", e - 1, "10002", "active", 0.0)) is None
    assert s.merge_session(SessionRow("a00002", "ntg", e + 5, "10002", "active", 0.0)) is not None
    s.close()
    again = Store(db)
    assert again.sessions["a00002"].site == "ntg" and again.sessions["a00002"].epoch == e + 5
    assert {r.id for r in again.live_rules()} == {r1.id, r2.id} and not again.rules[r2.id].enabled


class FakeCtiAdmin:
    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []

    async def send(self, op: str, **fields: Any) -> dict[str, Any]:
        self.sent.append((op, fields))
        return {"type": "admin_ok"}

    async def fence(self, agent: str, epoch: int, site: str, extension: str) -> bool:
        await self.send("fence", agent=agent, epoch=epoch, site=site, extension=extension)
        return self.confirm

    confirm = True  # what the CTI says: dropped (True) or no answer (False)

    async def close(self) -> None:
        pass


class Pair:
    """Two ULs (sha, ntg) in this event loop; either can be stopped and restarted on its database."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.uls: dict[str, UnifiedLogin] = {}
        self.runners: dict[str, web.AppRunner] = {}

    def url(self, site: str) -> str:
        return f"http://127.0.0.1:{PORTS[site]}"

    async def start(self, site: str) -> UnifiedLogin:
        other = "ntg" if site == "sha" else "sha"
        ul = UnifiedLogin(
            site, SECRET, directory(), Store(self.root / f"{site}.sqlite"),
            cti=("127.0.0.1", PORTS[site] + 1), pbx=("127.0.0.1", PORTS[site] + 2), peer_url=self.url(other),
            agent_secret=AGENT_SECRET, sip_secret="sip", peer_interval=0.1, peer_timeout=0.5,
        )  # fmt: skip
        ul.cti_admin = FakeCtiAdmin()  # type: ignore[assignment]
        runner = web.AppRunner(ul.app())
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", PORTS[site]).start()
        self.uls[site], self.runners[site] = ul, runner
        return ul

    async def stop(self, site: str) -> None:
        await self.runners.pop(site).cleanup()
        self.uls.pop(site).store.close()

    async def login(
        self, site: str, agent: str, avoid: list[str] | None = None, pw: str | None = None
    ) -> Any:
        body = {
            "agent": agent,
            "password": pw or auth.derive_password(AGENT_SECRET, agent),
            "avoid": avoid or [],
        }
        async with aiohttp.ClientSession() as s, s.post(self.url(site) + "/v1/login", json=body) as r:
            return r.status, await r.json()

    async def until(self, cond: Any, timeout: float = 10.0) -> None:
        end = time.monotonic() + timeout
        while not cond():
            assert time.monotonic() < end, "condition not met"
            await asyncio.sleep(0.02)


def run_pair(tmp_path: Path, body: Any) -> None:
    async def go() -> None:
        pair = Pair(tmp_path)
        try:
            await pair.start("sha")
            await pair.start("ntg")
            await pair.until(lambda: all(u.reconciled for u in pair.uls.values()))
            await body(pair)
        finally:
            for site in list(pair.runners):
                await pair.stop(site)

    asyncio.run(asyncio.wait_for(go(), 40))


def test_local_login_and_bad_password(tmp_path: Path) -> None:
    async def body(p: Pair) -> None:
        status, reg = await p.login("sha", "a00001")
        assert status == 200 and reg["site"] == "sha" and reg["via"] == "local" and reg["rule"] is None
        assert reg["cti"] == {"host": "127.0.0.1", "port": PORTS["sha"] + 1}
        assert reg["sip"] == {"user": "10001", "password": auth.derive_password("sip", "10001")}
        claims = auth.verify(SECRET, reg["token"])
        assert (claims["agent"], claims["site"], claims["epoch"], claims["ext"]) == (
            "a00001", "sha", reg["epoch"], "10001")  # fmt: skip
        assert (await p.login("sha", "a00001", pw="wrong"))[0] == 401
        assert (await p.login("sha", "nobody", pw="x"))[0] == 401
        # the peer learnt the session (it fences its own older one, if any)
        assert p.uls["ntg"].store.sessions["a00001"].site == "sha"

    run_pair(tmp_path, body)


def test_rule_sends_login_to_peer_and_falls_back_when_peer_down(tmp_path: Path) -> None:
    async def body(p: Pair) -> None:
        rep = await asyncio.to_thread(ulc.add_rule, p.url("sha"), SECRET, "skill_group", "vip", "ntg")
        assert rep["replicated"]
        assert [r["id"] for r in (await asyncio.to_thread(ulc.list_rules, p.url("ntg")))] == [
            rep["rule"]["id"]
        ]
        _, reg = await p.login("sha", "a00002")  # vip
        assert reg["site"] == "ntg" and reg["via"] == "remote" and reg["rule"] == rep["rule"]["id"]
        assert auth.verify(SECRET, reg["token"])["site"] == "ntg"
        _, reg = await p.login("sha", "a00001")  # domestic: local
        assert reg["site"] == "sha"
        _, reg = await p.login("sha", "a00004", avoid=["ntg"])  # vip, but the client avoids ntg
        assert reg["site"] == "sha" and "avoids" in reg["note"]
        await p.stop("ntg")
        _, reg = await p.login("sha", "a00002")
        assert reg["site"] == "sha" and "remote UL unreachable" in reg["note"]
        with pytest.raises(ulc.UlError) as err:
            await asyncio.to_thread(ulc.add_rule, p.url("sha"), "wrong-secret", "system", "air", "ntg")
        assert err.value.status == 403
        with pytest.raises(ulc.UlError) as err:
            await asyncio.to_thread(ulc.add_rule, p.url("sha"), SECRET, "colour", "red", "ntg")
        assert err.value.status == 400

    run_pair(tmp_path, body)


def test_rule_orders_switch_of_online_agents_at_each_site(tmp_path: Path) -> None:
    async def body(p: Pair) -> None:
        for a in ("a00001", "a00002", "a00004"):
            await p.login("sha", a)
        await p.login("ntg", "a00005")
        rep = await asyncio.to_thread(ulc.add_rule, p.url("ntg"), SECRET, "skill_group", "vip", "ntg")
        assert rep["ordered_here"] == 0  # ntg's vip agents are already at ntg
        await p.until(lambda: p.uls["sha"].cti_admin.sent)
        op, fields = p.uls["sha"].cti_admin.sent[-1]
        assert op == "switch_order" and sorted(fields["agents"]) == ["a00002", "a00004"]
        assert fields["target"] == "ntg"
        removed = await asyncio.to_thread(ulc.remove_rule, p.url("sha"), SECRET, rep["rule"]["id"])
        assert removed["replicated"] and (await asyncio.to_thread(ulc.list_rules, p.url("ntg"))) == []

    run_pair(tmp_path, body)


def test_fencing_and_reconcile_after_restart(tmp_path: Path) -> None:
    async def body(p: Pair) -> None:
        _, old = await p.login("sha", "a00001")
        _, new = await p.login("ntg", "a00001")
        assert new["epoch"] > old["epoch"]
        fenced = {"agent": "a00001", "epoch": new["epoch"], "site": "ntg", "extension": old["extension"]}
        assert p.uls["sha"].cti_admin.sent[-1] == ("fence", fenced)  # before ntg answered: synchronous
        assert new["hold"] == 0 and "nbf" not in auth.verify(SECRET, new["token"])
        assert "a00001" not in {
            s["agent"] for s in (await asyncio.to_thread(ulc.sessions, p.url("sha")))["sessions"]
        }

        # sha goes away; meanwhile a00003 (held at sha) logs in at ntg; sha comes back and reconciles
        _, a3 = await p.login("sha", "a00003")
        await p.stop("sha")
        _, a3n = await p.login("ntg", "a00003")
        ul = await p.start("sha")
        assert ul.store.sessions["a00003"].site == "sha"  # what its database says before reconciling
        async with aiohttp.ClientSession() as s, s.get(p.url("sha") + "/v1/epoch/a00003") as r:
            first = await r.json()
        await p.until(lambda: ul.reconciled)
        assert not first["reconciled"] or first["site"] == "ntg"
        assert ul.store.sessions["a00003"].site == "ntg" and ul.store.sessions["a00003"].epoch == a3n["epoch"]
        fenced = {"agent": "a00003", "epoch": a3n["epoch"], "site": "ntg", "extension": a3n["extension"]}
        assert ("fence", fenced) in ul.cti_admin.sent
        # sha was away when ntg logged a00003 in: nobody confirmed the drop, so ntg's token waits for
        # the old session's lease (lease + margin; the client told nothing of its silence)
        assert a3n["hold"] == pytest.approx(3.5)
        assert auth.verify(SECRET, a3n["token"])["nbf"] > time.time() + 2
        sha = {s["agent"] for s in (await asyncio.to_thread(ulc.sessions, p.url("sha")))["sessions"]}
        ntg = {s["agent"] for s in (await asyncio.to_thread(ulc.sessions, p.url("ntg")))["sessions"]}
        assert not sha & ntg and {"a00001", "a00003"} <= ntg

    run_pair(tmp_path, body)


def test_signed_peer_endpoints_refuse_unsigned(tmp_path: Path) -> None:
    async def body(p: Pair) -> None:
        async with aiohttp.ClientSession() as s:
            for path in ("/v1/allocate", "/v1/fence", "/v1/sync", "/v1/rules"):
                async with s.post(p.url("sha") + path, json={"agent": "a00001"}) as r:
                    assert r.status == 403, path
            async with s.post(p.url("sha") + "/v1/login", data=b"not json") as r:
                assert r.status == 400

    run_pair(tmp_path, body)


def test_a_login_that_arrives_after_its_deadline_allocates_nothing(tmp_path: Path) -> None:
    """explore-82 (both CTIs powered off, the WAN cut): an agent's login to ntg's UL timed out, it logged
    in at sha; its request reached ntg when the cut healed and ntg allocated a newer epoch that, at the
    next reconciliation, fenced the agent's real session at sha: 7 agents lost. A login past the deadline
    its client gave (more than the clock skew allowed) is refused and allocates nothing."""

    async def body(p: Pair) -> None:
        async def login(deadline: object) -> tuple[int, dict]:
            req = {
                "agent": "a00001",
                "password": auth.derive_password(AGENT_SECRET, "a00001"),
                "deadline": deadline,
            }
            async with aiohttp.ClientSession() as s, s.post(p.url("ntg") + "/v1/login", json=req) as r:
                return r.status, await r.json()

        before = p.uls["ntg"].store.sessions.get("a00001")
        status, reply = await login(time.time() - 5.0)
        assert (status, reply) == (408, {"error": "deadline_passed"})
        assert p.uls["ntg"].store.sessions.get("a00001") is before  # nothing allocated
        assert (await login(time.time() - 0.5))[0] == 200  # within the clock skew allowed (1 s)
        assert (await login(time.time() + 3.0))[0] == 200
        assert (await login("soon"))[0] == 400
        # the same for the peer's allocation: sha gave up on ntg (and allocated at home) before it arrived
        req = json.dumps({"agent": "a00002", "requested_by": "sha", "deadline": time.time() - 5.0}).encode()
        headers = {
            "Content-Type": "application/json",
            **auth.sign_request(SECRET, "POST", "/v1/allocate", req),
        }
        async with (
            aiohttp.ClientSession() as s,
            s.post(p.url("ntg") + "/v1/allocate", data=req, headers=headers) as r,
        ):
            assert r.status == 408 and "a00002" not in p.uls["ntg"].store.sessions

    run_pair(tmp_path, body)
