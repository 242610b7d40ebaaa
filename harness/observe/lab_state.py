"""The lab's own state as the history records it: who is who (roster), and links and processes."""

from __future__ import annotations

from typing import Any

from harness.history import History
from harness.lab import Lab

__all__ = ["lab_snapshot", "record_start", "roster"]


def roster(lab: Lab) -> dict[str, Any]:
    """Who is who, recorded once so the history is self-contained."""
    return {"agents": {a.id: {"site": a.home, "extension": a.extension} for a in lab.topology.agents()}}


def lab_snapshot(lab: Lab) -> dict[str, Any]:
    """Links, processes and (PDU) outlets of the lab, compared at start and end by check_faults_healed.

    A process is ``running`` when active and answering; PIDs are left out on purpose: a healed kill
    restarts the process under a new PID, and that is the lab as it began.
    """
    st = lab.status()
    if st is None:
        return {
            "links": {},
            "processes": {},
            "outlets": {},
            "management": {},
            "complete": False,
            "problems": ["no status"],
        }
    links = {f"{x.switch}:{x.port}": x.state for x in st.links if x.connects}
    procs = {}
    for p in st.processes:
        state = p.state
        if state == "active" and p.answers is False:
            state = "not_answering"
        procs[f"{p.device}:{p.name}"] = "running" if state == "active" else state
    mgmt = {m.device: m.state for m in st.management}
    outlets = {f"{o.pdu}:{o.outlet}": o.state for o in st.outlets if o.connects}
    return {
        "links": links,
        "processes": procs,
        "outlets": outlets,
        "management": mgmt,
        "complete": st.complete,
        "problems": st.problems,
    }


def record_start(lab: Lab, history: History) -> None:
    """The two observations every run begins with: the lab as it is, and the roster."""
    history.observe("lab_snapshot", "controller", lab_snapshot(lab))
    history.observe("roster", "topology", roster(lab))
