"""harness/checks/outbound.py on written histories: agent-initiated calls against the wire and the callees."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.checks.outbound import CALL_DIAL, CALLEE_CALL, check_outbound_calls, wire_calls
from harness.history import History

PBX, PHONE, TRUNK = "198.18.1.10", "198.18.1.100", "198.18.1.90"
COMPLETE = {"capture": "sha-sw1-span", "complete": True, "lossless": True, "packets": 100}


class Run:
    """A history written with a fake clock: one agent-initiated call at a time."""

    def __init__(self, tmp: Path) -> None:
        self.now = 100.0
        self.h = History(tmp / "history.jsonl", clock=lambda: self.now, wall_clock=lambda: 1e9 + self.now)
        self.n = 0

    def sip(self, src: str, dst: str, call_id: str, **v: Any) -> None:
        self.now += 0.05
        value = {"src_ip": src, "dst_ip": dst, "call_id": call_id, "site": "sha", **v}
        self.h.observe("sip", "sha-pbx1", value)

    def call(
        self, cid: str, *, final: int = 200, states: list[str] | None = None, callee: str | None = "answered",
        invites: int = 1, number: str = "02155500001",
    ) -> None:  # fmt: skip
        self.n += 1
        proc = f"agent:a00001:{self.n}"
        self.h.invoke(proc, CALL_DIAL, {"call": f"d{self.n}", "agent": "a00001", "extension": "19001",
                                        "number": number})  # fmt: skip
        for k in range(invites):
            c = cid if k == 0 else f"{cid}-again{k}"
            inv = {"method": "INVITE", "from_user": "19001", "to_user": number}
            self.sip(PHONE, PBX, c, **inv)
            self.sip(PBX, PHONE, c, status=407, cseq_method="INVITE")
            self.sip(PHONE, PBX, c, **inv)
            self.sip(PBX, TRUNK, c, **inv)
            self.sip(PBX, PHONE, c, status=final, cseq_method="INVITE")
            if final == 200:
                self.sip(TRUNK, PBX, c, method="BYE")
        if callee:
            self.h.observe(CALLEE_CALL, "sha-caller1", {"call_id": cid, "from": "19001", "number": number,
                                                        "outcome": callee})  # fmt: skip
        if states is None:
            states = ["dialing", "ringing", "answered", "ended"] if final == 200 else ["dialing", "failed"]
        self.now += 1
        self.h.ok(proc, CALL_DIAL, {"dial": f"sha-{self.n}", "states": states, "call_id": cid})

    def done(self, complete: bool = True) -> History:
        self.h.observe("capture_stats", "sha-sw1", {**COMPLETE, "complete": complete})
        return self.h


def test_answered_and_busy_calls_agree_with_the_wire_and_the_callee(tmp_path: Path) -> None:
    r = Run(tmp_path)
    r.call("c1")
    r.call("c2", final=486, callee="busy", number="02155500486")
    h = r.done()
    calls = wire_calls(h)
    assert calls["c1"].final == 200 and calls["c1"].relayed and calls["c1"].bye and calls["c1"].pbx == PBX
    assert calls["c2"].final == 486  # the 407 challenge is not the answer
    v = check_outbound_calls(h)
    assert v.result == "valid", v
    assert (
        v.figures["answered"] == 1 and v.figures["failed"] == 1 and v.figures["invites_by_site"] == {"sha": 2}
    )


def test_told_answered_but_the_callee_never_got_it_is_invalid(tmp_path: Path) -> None:
    r = Run(tmp_path)
    r.call("c1", callee=None)
    v = check_outbound_calls(r.done())
    assert v.result == "invalid" and "callee" in v.witnesses[0]["problem"]


def test_told_failed_but_answered_on_the_wire_is_invalid(tmp_path: Path) -> None:
    r = Run(tmp_path)
    r.call("c1", states=["dialing", "failed"])
    v = check_outbound_calls(r.done())
    assert v.result == "invalid" and "200" in v.witnesses[0]["problem"]


def test_dialled_twice_and_out_of_order_are_invalid(tmp_path: Path) -> None:
    r = Run(tmp_path)
    r.call("c1", invites=2)
    v = check_outbound_calls(r.done())
    assert v.result == "invalid" and "2 times" in v.witnesses[0]["problem"]
    r = Run(tmp_path / "b")
    r.call("c1", states=["dialing", "answered", "ringing", "ended"])
    assert check_outbound_calls(r.done()).result == "invalid"


def test_a_call_nobody_dialled_is_invalid(tmp_path: Path) -> None:
    r = Run(tmp_path)
    r.call("c1")
    r.h.observe(CALLEE_CALL, "sha-caller1", {"call_id": "ghost", "from": "19001", "outcome": "answered"})
    v = check_outbound_calls(r.done())
    assert v.result == "invalid" and v.witnesses[0]["problem"] == "the callee got a call nobody dialled"


def test_gaps_in_the_capture_make_missing_wire_evidence_unknown(tmp_path: Path) -> None:
    r = Run(tmp_path)
    r.h.invoke(
        "agent:x", CALL_DIAL, {"call": "d1", "agent": "a00001", "extension": "19001", "number": "021555"}
    )
    r.h.ok("agent:x", CALL_DIAL, {"dial": "sha-1", "states": ["dialing", "ringing", "answered", "ended"]})
    assert check_outbound_calls(r.done(complete=False)).result == "unknown"
    r = Run(tmp_path / "b")
    r.h.invoke(
        "agent:x", CALL_DIAL, {"call": "d1", "agent": "a00001", "extension": "19001", "number": "021555"}
    )
    r.h.ok("agent:x", CALL_DIAL, {"dial": "sha-1", "states": ["dialing", "ringing", "answered", "ended"]})
    assert check_outbound_calls(r.done()).result == "invalid"  # a complete capture that shows nothing


def test_unknown_outcome_refusals_and_too_few_calls(tmp_path: Path) -> None:
    r = Run(tmp_path)
    assert check_outbound_calls(r.done()).result == "unknown"  # nothing dialled: nothing tested
    r = Run(tmp_path / "b")
    r.h.invoke(
        "agent:x", CALL_DIAL, {"call": "d1", "agent": "a00001", "extension": "19001", "number": "021555"}
    )
    r.h.fail("agent:x", CALL_DIAL, {"call": "d1"}, error="busy")
    r.call("c1")
    v = check_outbound_calls(r.done())
    assert v.result == "valid" and v.figures["refused"] == 1
    r = Run(tmp_path / "c")
    r.h.invoke(
        "agent:x", CALL_DIAL, {"call": "d1", "agent": "a00001", "extension": "19001", "number": "021555"}
    )
    r.h.info("agent:x", CALL_DIAL, {"call": "d1"}, error="swarm answer lost")
    assert check_outbound_calls(r.done()).result == "unknown"
