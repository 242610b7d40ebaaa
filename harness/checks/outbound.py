"""Agent-initiated calls, judged from the wire at the agent's PBX against the callees' records.

Why from the wire: the agent's client reports what its CTI told it (``call.dial`` completions with the
``call_progress`` states), which is the system's word about itself. The capture at the agent's PBX shows
what really happened (the phone's INVITE, the PBX's final answer to it, the INVITE the PBX relayed to the
trunk, the BYE), and the callee, which is no part of the system, recorded every call it got. The three
must agree; where the capture has gaps and the wire lacks what would decide, the answer is ``unknown``.

History read (docs/history.md): ``call.dial`` operations (invoke ``{"call", "agent", "extension",
"number"}``; ``ok`` ``{"dial", "states", "call_id"?, "reason"?}`` once the call ended or failed, ``fail``
with ``error`` when the CTI refused the dial, ``info`` when its outcome is unknown), ``sip`` observations
and ``callee_call`` observations (one per call a callee recorded, as stack/callee.py writes it).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from harness.checks.capture_complete import check_capture_complete
from harness.checks.evidence import by_time, rounded, value_of
from harness.checks.verdict import Verdict
from harness.history import SIP, Event, Obs, pair_ops

__all__ = ["CALLEE_CALL", "CALL_DIAL", "PROGRESS", "WireCall", "check_outbound_calls", "wire_calls"]

CALL_DIAL, CALLEE_CALL = "call.dial", "callee_call"
PROGRESS = ("dialing", "ringing", "answered", "ended", "failed")
AUTH = (401, 407)


@dataclass
class WireCall:
    """One call as the capture shows it: the phone's INVITE at its PBX and what followed, by Call-ID."""

    call_id: str
    t: float
    extension: str
    number: str
    pbx: str  # the address the phone sent its INVITE to
    site: str | None
    phone: str  # the phone's address
    final: int | None = None  # the PBX's last final answer to the phone's INVITE (challenges left out)
    relayed: bool = False  # the PBX sent the INVITE on (to the trunk)
    bye: bool = False
    sources: set[str] = field(default_factory=set)

    def view(self) -> dict[str, Any]:
        return {
            "call_id": self.call_id,
            "t": rounded(self.t),
            "extension": self.extension,
            "number": self.number,
            "site": self.site,
            "final": self.final,
            "relayed": self.relayed,
            "bye": self.bye,
        }


def wire_calls(history: Iterable[Event]) -> dict[str, WireCall]:
    """Every call the capture shows a phone placing at a PBX, by Call-ID (the earliest INVITE of a Call-ID
    is the phone's; the PBX is where it went)."""
    sip = [(ev, value_of(ev)) for ev in by_time(history) if isinstance(ev, Obs) and ev.kind == SIP]
    calls: dict[str, WireCall] = {}
    for ev, v in sip:
        cid = v.get("call_id")
        if v.get("method") != "INVITE" or not cid:
            continue
        src, dst = str(v.get("src_ip", "")), str(v.get("dst_ip", ""))
        c = calls.get(cid)
        if c is None:
            calls[cid] = c = WireCall(cid, ev.t, str(v.get("from_user") or ""), str(v.get("to_user") or ""),
                                      dst, v.get("site"), src)  # fmt: skip
        elif src == c.pbx and dst != c.phone:
            c.relayed = True
        c.sources.add(ev.source)
    for _, v in sip:
        c = calls.get(v.get("call_id") or "")
        if c is None:
            continue
        status = v.get("status")
        if v.get("method") == "BYE":
            c.bye = True
        elif (
            isinstance(status, int)
            and status >= 200
            and status not in AUTH
            and v.get("cseq_method") == "INVITE"
            and v.get("src_ip") == c.pbx
            and v.get("dst_ip") == c.phone
        ):
            c.final = status
    return calls


def _order_ok(states: list[str]) -> bool:
    """Progress states in order, none twice, a final state only at the end."""
    if any(s not in PROGRESS for s in states) or len(set(states)) != len(states):
        return False
    idx = [PROGRESS.index(s) for s in states]
    finals = [s for s in states if s in ("ended", "failed")]
    return idx == sorted(idx) and len(finals) <= 1 and (not finals or states[-1] == finals[0])


def check_outbound_calls(history: Iterable[Event], *, f: str = CALL_DIAL, min_calls: int = 1) -> Verdict:
    """Each dialled call happened once, as the agent was told, at its PBX, and reached the callee as such.

    Invalid: progress out of order; a call dialled more than once; a call the agent was told was answered
    that the wire or the callee says was not (or the other way round); a call a callee got from a dialling
    agent's extension that nobody dialled. Unknown: a dial whose outcome is unknown, or evidence the
    capture would have shown missing while the capture has gaps; fewer than ``min_calls`` dials.
    """
    name = "outbound_calls"
    events = list(history)
    complete = check_capture_complete(events).valid
    wire = wire_calls(events)
    callee: dict[str, dict[str, Any]] = {}
    for ev in events:
        if isinstance(ev, Obs) and ev.kind == CALLEE_CALL and value_of(ev).get("call_id"):
            callee[str(value_of(ev)["call_id"])] = {**value_of(ev), "callee": ev.source}
    pairs = [p for p in pair_ops(events)[0] if p.invoke.f == f]
    invalid: list[dict[str, Any]] = []
    unsure: list[dict[str, Any]] = []
    claimed: set[str] = set()
    outcomes: dict[str, int] = defaultdict(int)
    sites: dict[str, int] = defaultdict(int)
    for p in pairs:
        asked = value_of(p.invoke)
        ext, number = str(asked.get("extension", "")), str(asked.get("number", ""))
        base = {
            "call": asked.get("call"),
            "agent": asked.get("agent"),
            "number": number,
            "t": rounded(p.invoke.t),
        }
        if p.outcome == "fail":
            outcomes["refused"] += 1
            continue
        if p.outcome != "ok" or p.completion is None:
            unsure.append({**base, "problem": "the dial's outcome is unknown"})
            continue
        done = value_of(p.completion)
        states = [str(s) for s in done.get("states") or []]
        end = p.completion.t
        mine = sorted(
            (
                c
                for c in wire.values()
                if c.extension == ext and c.number == number and p.invoke.t - 0.5 <= c.t <= end + 1
            ),
            key=lambda c: c.t,
        )
        claimed.update(c.call_id for c in mine)
        if not _order_ok(states) or states[-1:] not in (["ended"], ["failed"]):
            invalid.append({**base, "problem": f"progress out of order or unfinished: {states}"})
            continue
        if len(mine) > 1:
            invalid.append(
                {**base, "problem": f"dialled {len(mine)} times", "calls": [c.view() for c in mine]}
            )
            continue
        said_answered = "answered" in states
        outcomes["answered" if said_answered else "failed"] += 1
        cid = done.get("call_id") or (mine[0].call_id if mine else None)
        w = wire.get(cid) if cid else None
        rec = callee.get(cid) if cid else None
        if w is not None:
            sites[str(w.site)] += 1
        if said_answered:
            if w is None or w.final is None:
                (unsure if not complete else invalid).append(
                    {**base, "problem": "answered, but the capture shows no INVITE and answer at the PBX"}
                )
            elif w.final != 200:
                invalid.append(
                    {**base, "problem": f"answered, but the PBX answered {w.final}", "wire": w.view()}
                )
            elif rec is None or rec.get("outcome") != "answered":
                invalid.append(
                    {**base, "problem": "answered, but the callee has no answered call", "callee": rec}
                )
            continue
        if w is not None and w.final == 200:
            invalid.append({**base, "problem": "told failed, but the PBX answered 200", "wire": w.view()})
        elif rec is not None and rec.get("outcome") == "answered":
            invalid.append({**base, "problem": "told failed, but the callee answered it", "callee": rec})
        elif w is not None and w.final is None and not complete:
            unsure.append({**base, "problem": "failed: the capture shows no final answer and has gaps"})
    dialling = {str(value_of(p.invoke).get("extension")) for p in pairs}
    phantom = [
        r
        for cid, r in callee.items()
        if str(r.get("from")) in dialling and cid not in claimed and cid in wire
    ]
    phantom += [
        r for cid, r in callee.items() if str(r.get("from")) in dialling and cid not in wire and complete
    ]
    for r in phantom:
        invalid.append({"problem": "the callee got a call nobody dialled", "callee": r})
    figures = {
        "dials": len(pairs),
        **dict(outcomes),
        "wire_calls": len(wire),
        "callee_calls": len(callee),
        "invites_by_site": dict(sites),
        "capture_complete": complete,
    }
    if invalid:
        return Verdict(name, "invalid", f"{len(invalid)} of {len(pairs)} calls wrong", invalid, figures)
    if unsure:
        return Verdict(name, "unknown", f"{len(unsure)} of {len(pairs)} calls not decidable", unsure, figures)
    if len(pairs) < min_calls:
        return Verdict(
            name, "unknown", f"{len(pairs)} calls dialled, at least {min_calls} needed", [], figures
        )
    return Verdict(
        name, "valid", f"all {len(pairs)} dialled calls as the wire and the callees show", [], figures
    )
