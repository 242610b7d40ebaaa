"""The shared session timeline: registration and session tables as the evidence shows them, event by event.

Every source of evidence about where an agent is (a PBX's or a CTI's full table, a captured REGISTER
reply, a captured CTI message, an agent's state read) is normalised here into one shape, so the checkers
that replay the history (recovery time, split brain) agree on what each event means.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any

from harness.checks.evidence import ENDED_STATES, site_of, value_of
from harness.history import AGENT_STATE, CTI, CTI_SNAPSHOT, PBX_SNAPSHOT, SIP, Event, Obs

__all__ = ["SessionEvent", "Tables", "registrations_in", "session_event", "sessions_in", "sip_registration"]


def registrations_in(ev: Obs) -> Counter[str]:
    """Extension -> number of contacts in a `pbx_snapshot`."""
    regs = value_of(ev).get("registrations") or []
    return Counter(str(r["extension"]) for r in regs if isinstance(r, dict) and "extension" in r)


def sessions_in(ev: Obs) -> dict[str, list[tuple[str | None, Any]]]:
    """Agent -> active sessions (state, epoch) in a `cti_snapshot`; ended (fenced, logged out) left out."""
    out: dict[str, list[tuple[str | None, Any]]] = defaultdict(list)
    for s in value_of(ev).get("sessions") or []:
        if isinstance(s, dict) and "agent" in s and s.get("state") not in ENDED_STATES:
            out[str(s["agent"])].append((s.get("state"), s.get("epoch")))
    return out


@dataclass(frozen=True, slots=True)
class SessionEvent:
    site: str
    agent: str
    active: bool
    state: str | None
    epoch: Any
    exact: bool  # a CTI-confirmed login / logout / fencing, not a state read at some moment


def session_event(ev: Obs) -> SessionEvent | None:
    """Normalise a `cti` message or an `agent_state` read into one agent's session at one site."""
    v = value_of(ev)
    site, agent = site_of(ev), v.get("agent")
    if not site or agent is None:
        return None
    state = v.get("state")
    if ev.kind == CTI:
        event = v.get("event")
        if event in ("logout", "fenced"):
            return SessionEvent(site, str(agent), False, None, v.get("epoch"), True)
        if event == "lapsed":  # over by now, ended at some earlier moment the wire did not show
            return SessionEvent(site, str(agent), False, None, v.get("epoch"), False)
        if event == "login":
            return SessionEvent(site, str(agent), True, state, v.get("epoch"), True)
        if event != "state":
            return None
    if state in ENDED_STATES:
        return SessionEvent(site, str(agent), False, None, v.get("epoch"), False)
    return SessionEvent(site, str(agent), True, state, v.get("epoch"), False)


def sip_registration(ev: Obs) -> tuple[str, str, bool] | None:
    """(site, extension, registered) from a captured 200 OK to a REGISTER; None for any other message."""
    v = value_of(ev)
    method = v.get("cseq_method") or v.get("method")
    if method != "REGISTER" or v.get("status") != 200 or v.get("extension") is None:
        return None
    site = site_of(ev)
    if not site:
        return None
    expires = v.get("expires")
    return site, str(v["extension"]), not (isinstance(expires, int | float) and expires <= 0)


class Tables:
    """The registration and session tables as last seen, updated event by event."""

    def __init__(self) -> None:
        self.regs: dict[str, Counter[str]] = defaultdict(Counter)  # site -> extension -> contacts
        self.sess: dict[str, dict[str, tuple[str | None, Any]]] = defaultdict(dict)  # site -> agent -> s
        self.last_state: dict[str, str] = {}  # agent -> last active state seen anywhere

    def apply(self, ev: Event) -> tuple[str, str | None, str | None] | None:
        """Apply one event; return what it touched: (site, extension, agent), None meaning all."""
        if not isinstance(ev, Obs):
            return None
        if ev.kind == PBX_SNAPSHOT:
            site = site_of(ev)
            if site:
                self.regs[site] = registrations_in(ev)
                return site, None, None
        elif ev.kind == SIP:
            r = sip_registration(ev)
            if r:
                site, ext, registered = r
                self.regs[site][ext] = max(1, self.regs[site][ext]) if registered else 0
                return site, ext, None
        elif ev.kind == CTI_SNAPSHOT:
            site = site_of(ev)
            if site:
                table = {a: ss[-1] for a, ss in sessions_in(ev).items()}
                self.sess[site] = table
                for a, (state, _) in table.items():
                    if state:
                        self.last_state[a] = state
                return site, None, None
        elif ev.kind in (CTI, AGENT_STATE):
            se = session_event(ev)
            if se:
                table = self.sess[se.site]
                if se.active:
                    old = table.get(se.agent)
                    state = se.state if se.state is not None else (old[0] if old else None)
                    table[se.agent] = (state, se.epoch)
                    if state:
                        self.last_state[se.agent] = state
                else:
                    table.pop(se.agent, None)
                return se.site, None, se.agent
        return None
