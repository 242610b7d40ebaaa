"""stack/cti/dial.py's bookkeeping on written dialog lists: what the PBX's dialogs say becomes progress
events in order, once each; a call that never reaches the PBX, or a PBX that stops answering, fails it."""

from __future__ import annotations

import time
from typing import Any

from stack.cti.dial import Dial, Dialer
from stack.cti.sessions import Session


class Conn:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.session: Session | None = None

    def send(self, msg: dict[str, Any]) -> None:
        self.sent.append(msg)

    def close(self) -> None:
        pass


class Cti(Dialer):
    site = "sha"

    def __init__(self) -> None:
        self.conn = Conn()
        self.sessions = {"a1": Session("a1", "19001", 1, self.conn)}

    def push(self, s: Session, msg: dict[str, Any]) -> bool:
        s.conn.send(msg)
        return True


def dlg(state: int, *, cid: str = "c1", to: str = "0215550001", start: int = 0, h: int = 7) -> dict[str, Any]:
    uris = {"from_uri": "sip:19001@198.18.1.10", "to_uri": f"sip:{to}@198.18.1.10"}
    return {"h_entry": 1, "h_id": h, "call-id": cid, **uris, "state": state, "init_ts": int(time.time()),
            "start_ts": start}  # fmt: skip


def followed(cti: Cti, ref: str = "sha-1") -> Dial:
    d = Dial(ref, "a1", "19001", "0215550001")
    d.referred = time.monotonic()
    cti.dials[ref] = d
    cti._progress(d, "dialing")
    return d


def states(cti: Cti) -> list[str]:
    return [m["state"] for m in cti.conn.sent]


def test_dialog_states_become_progress_in_order_once_each() -> None:
    cti = Cti()
    followed(cti)
    other = dlg(4, cid="inbound", to="19001", h=9)  # an inbound call of the same phone is not this one
    for seen in ([other], [other, dlg(1)], [dlg(2)], [dlg(2)], [dlg(4, start=1)], [dlg(4, start=1)], []):
        cti.follow(seen)
    assert states(cti) == ["dialing", "ringing", "answered", "ended"]
    assert cti.conn.sent[-1]["reason"] == "hangup" and cti.conn.sent[-1]["call_id"] == "c1"
    assert not cti.dials  # a final state ends the following


def test_an_unanswered_call_that_ends_fails_and_a_fast_answer_skips_ringing() -> None:
    cti = Cti()
    followed(cti)
    cti.follow([dlg(2)])
    cti.follow([dlg(5)])  # deleted, never started: not answered
    assert states(cti) == ["dialing", "ringing", "failed"] and cti.conn.sent[-1]["reason"] == "not_answered"
    cti = Cti()
    followed(cti)
    cti.follow([dlg(4, start=1)])
    cti.follow([dlg(5, start=1)])
    assert states(cti) == ["dialing", "answered", "ended"]


def test_no_call_at_the_pbx_and_a_pbx_that_stops_answering_fail_the_call() -> None:
    cti = Cti()
    d = followed(cti)
    d.referred = time.monotonic() - cti.dial_appear - 1  # the phone never placed the call
    cti.follow([])
    assert states(cti) == ["dialing", "failed"] and cti.conn.sent[-1]["reason"] == "no_call"
    cti = Cti()
    followed(cti)
    cti.follow([dlg(4, start=1)])
    for _ in range(int(cti.dial_lost / cti.dial_poll)):
        cti.follow([], ok=False)
    assert (
        states(cti) == ["dialing", "answered", "ended"] and cti.conn.sent[-1]["reason"] == "pbx_unreachable"
    )


def test_events_go_to_the_agents_current_session_and_none_after_it_left() -> None:
    cti = Cti()
    followed(cti)
    new = Conn()
    cti.sessions["a1"] = Session("a1", "19001", 2, new)  # the agent logged in again on a new connection
    cti.follow([dlg(2)])
    assert [m["state"] for m in new.sent] == ["ringing"]
    del cti.sessions["a1"]  # it moved to the other site
    cti.follow([dlg(4, start=1)])
    assert [m["state"] for m in new.sent] == ["ringing"]
    assert cti.dials  # still followed (its end is still to be told to nobody, and to free the agent's slot)
