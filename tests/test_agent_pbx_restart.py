"""A PBX that restarted and forgot its registrations faster than the phones' keep-alive could notice
(scenarios/schedules/pbx-restart-unregistered.json, nemesis seed 110): the CTI sees the new run in its
probe's answer and reconciles; the agent, told its phone is unregistered while the phone says otherwise,
registers the phone again at the same PBX and stays. A PBX that will not take the phone back is a break:
the agent moves. The fake world is tests/test_agent_client.py's; the PBX side is stack/cti/pbxlink.py's."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import test_agent_client as world_mod
from test_agent_client import FakeConn, FakePhone, World, make, run, until

from sipcore.message import SipMessage
from stack.cti.pbxlink import PbxLink

# ---- the CTI: a new run of the PBX, seen in its OPTIONS answer ---------------------------------------------


def answer(boot: str | None) -> SipMessage:
    headers = [("Via", "SIP/2.0/UDP 198.18.1.20:5099;branch=z9hG4bKx"), ("CSeq", "1 OPTIONS")]
    if boot is not None:
        headers.append(("X-Pbx-Boot", boot))
    return SipMessage("SIP/2.0 200 OK", headers)


def probes(link: PbxLink, boots: list[str | None], monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """The restarts the link reports, one per probe answered with each boot id in turn."""
    seq = iter(boots)

    async def options_async(host: str, port: int, timeout: float = 1.0, source: Any = None) -> SipMessage:
        return answer(next(seq))

    monkeypatch.setattr("stack.cti.pbxlink.options_async", options_async)
    out = []
    for _ in boots:
        assert asyncio.run(link.probe()) is True
        out.append(link.take_restart())
    return out


def test_a_new_boot_in_the_probe_answer_is_a_restart(monkeypatch: pytest.MonkeyPatch) -> None:
    link = PbxLink("http://198.19.0.11:5071/RPC", sip=("198.18.1.10", 5060), events=True)
    link.pushed["10001"] = True  # an event said registered, in the old run
    link.seqs["10001"] = 4
    assert probes(link, ["b1", "b1", "b2", "b2"], monkeypatch) == [False, False, True, False]
    assert link.sip_boot == "b2" and link.up is True
    assert not link.says_registered("10001") and not link.seqs  # the old run's events forgotten


def test_a_pbx_that_does_not_name_its_run_is_never_restarted(monkeypatch: pytest.MonkeyPatch) -> None:
    link = PbxLink("http://198.19.0.11:5071/RPC", sip=("198.18.1.10", 5060))
    assert probes(link, [None, "b1", None, "b1"], monkeypatch) == [False, False, False, False]


# ---- the agent: told its phone is unregistered while the phone says registered -----------------------------


class ForgetfulConn(FakeConn):
    """The CTI of a site whose PBX forgot the phone (``forgot``) until it registers again."""

    async def request(self, msg: dict[str, Any], timeout: float = 1.0) -> dict[str, Any]:
        reply = await super().request(msg, timeout)
        forgot = getattr(self.w.sites[self.site], "forgot", False)
        if forgot and msg["type"] in ("heartbeat", "status"):
            reply = {**reply, "phone": "unregistered"}
        if forgot and msg["type"] == "link_phone":
            raise world_mod.CtiError("phone_not_registered")
        return reply


class StubbornPhone(FakePhone):
    """A phone whose re-registration at sha's PBX is refused (``refuse``), or heals the PBX's memory."""

    refuse = False

    async def set_server(self, host: str, port: int) -> bool:
        site = host.removeprefix("pbx-")
        if site == "sha" and self.refuse:
            self.moves.append(host)
            return False
        ok = await super().set_server(host, port)
        if ok:
            self.w.sites[site].forgot = False  # type: ignore[attr-defined]
        return ok


def forgetful(monkeypatch: pytest.MonkeyPatch, refuse: bool) -> tuple[World, Any, StubbornPhone]:
    monkeypatch.setattr(world_mod, "FakeConn", ForgetfulConn)
    monkeypatch.setattr(world_mod, "FakePhone", StubbornPhone)
    monkeypatch.setattr(StubbornPhone, "refuse", refuse)
    w = World()
    c, phone = make(w)
    assert isinstance(phone, StubbornPhone)
    return w, c, phone


def test_a_forgotten_registration_is_renewed_in_place(monkeypatch: pytest.MonkeyPatch) -> None:
    async def go() -> None:
        w, c, phone = forgetful(monkeypatch, refuse=False)
        c.start()
        await until(lambda: c.phase == "online")
        w.sites["sha"].forgot = True  # type: ignore[attr-defined]
        w.push("sha", {"event": "phone_unregistered", "extension": "10001"})
        await until(lambda: bool(c.events.recent(event="confirm")))
        last = c.events.recent(event="confirm")[-1]
        assert last["reason"] == "phone_unregistered" and last["broken"] is False
        assert c.events.recent(event="phone_refresh")
        assert phone.moves == ["pbx-sha"]  # registered again where it was, nowhere else
        assert c.site == "sha" and c.failovers == 0 and len(w.logins) == 1
        assert not w.sites["sha"].forgot  # type: ignore[attr-defined]
        await c.stop()

    run(go())


def test_a_pbx_that_will_not_take_the_phone_back_is_a_break(monkeypatch: pytest.MonkeyPatch) -> None:
    async def go() -> None:
        w, c, phone = forgetful(monkeypatch, refuse=True)
        c.start()
        await until(lambda: c.phase == "online")
        w.sites["sha"].forgot = True  # type: ignore[attr-defined]
        w.push("sha", {"event": "phone_unregistered", "extension": "10001"})
        await until(lambda: c.failovers == 1 and c.phase == "online")
        assert c.events.recent(event="confirm")[0]["broken"] is True
        assert c.site == "ntg" and phone.moves == ["pbx-sha", "pbx-ntg"]
        await c.stop()

    run(go())
