"""Refusals: a misbehaving client's requests were refused explicitly (and its connection closed), as its
operations say (``check_refused``) and as the wire shows (``check_answered_on_wire``: the CTI's answers on
connections that are no agent's, harness/observe/wire.py ``refused``/``admin_ok`` observations)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from harness.checks.evidence import value_of
from harness.checks.verdict import Verdict, unknown
from harness.history import CTI, Event, Obs, pair_ops

__all__ = ["check_answered_on_wire", "check_refused", "wire_answers"]

WIRE_ANSWERS = ("refused", "admin_ok")  # the `cti` observations of answers to a connection no agent's


def _closed(value: Any) -> bool:
    """The completion says the server closed the connection (`closed: true`, or a `"closed"` reply)."""
    v = value if isinstance(value, dict) else {}
    return v.get("closed") is True or "closed" in (v.get("replies") or [])


def check_refused(history: Iterable[Event], f: str, codes: Sequence[str], *, closed: bool = False) -> Verdict:
    """Every ``f`` operation was refused explicitly (``fail`` whose error names one of ``codes``), and with
    ``closed`` the server also closed the connection. An operation that succeeded, or a connection left
    open, is invalid; no ``f`` operation at all is unknown."""
    name = f"refused_{f.replace('.', '_')}"
    pairs = [p for p in pair_ops(history)[0] if p.invoke.f == f]
    if not pairs:
        return unknown(name, f"no {f} operation in the history")
    want = "/".join(codes) + (" and closed" if closed else "")
    bad = []
    for p in pairs:
        err = p.completion.error if p.completion is not None else None
        problems = []
        if p.outcome != "fail" or not err or not any(c in err for c in codes):
            problems.append(f"not refused with {'/'.join(codes)}")
        if closed and not (p.completion is not None and _closed(value_of(p.completion))):
            problems.append("connection left open")
        if problems:
            bad.append(
                {"value": p.invoke.value, "outcome": p.outcome, "error": err, "problem": ", ".join(problems)}
            )
    figures = {"operations": len(pairs)}
    if bad:
        return Verdict(name, "invalid", f"{len(bad)} of {len(pairs)} {f} not refused ({want})", bad, figures)
    return Verdict(name, "valid", f"all {len(pairs)} {f} refused ({want})", [], figures)


def _answer(v: Mapping[str, Any]) -> str:
    """``code:reason`` (or ``code``) of a refusal, the event's name otherwise."""
    if v.get("event") == "refused":
        return f"{v.get('code')}:{v['reason']}" if v.get("reason") else str(v.get("code"))
    return str(v.get("event"))


def wire_answers(history: Iterable[Event], client_ip: str, ports: tuple[int, int]) -> dict[int, list[str]]:
    """The CTI's answers on the wire to ``client_ip``'s connections from local ports ``ports`` (lo, hi),
    by local port, in capture order."""
    lo, hi = ports
    out: dict[int, list[str]] = {}
    for ev in history:
        if not isinstance(ev, Obs) or ev.kind != CTI:
            continue
        v = value_of(ev)
        ip, _, port = str(v.get("client", "")).rpartition(":")
        if v.get("event") in WIRE_ANSWERS and ip.strip("[]") == client_ip and port.isdigit():
            if lo <= int(port) <= hi:
                out.setdefault(int(port), []).append(_answer(v))
    return out


def check_answered_on_wire(history: Iterable[Event], client_ip: str, wanted: Mapping[str, str]) -> Verdict:
    """Each operation ``f`` of ``wanted`` (its completion's ``local_port``: the connection it used) was
    answered on the wire as expected: an error ``code[:reason]`` or ``admin_ok``. An answer other than the
    expected one is invalid; an operation without a port, or no answer captured, is unknown."""
    name = "wire_answers"
    events = list(history)
    pairs = pair_ops(events)[0]
    answers = wire_answers(events, client_ip, (1, 65535))
    bad, missing, seen = [], [], {}
    for f, want in wanted.items():
        ports = [
            int(value_of(p.completion).get("local_port") or 0)
            for p in pairs
            if p.invoke.f == f and p.completion is not None
        ]
        got = [a for port in ports if port for a in answers.get(port, [])]
        seen[f] = got
        if not got:
            missing.append(f)
        elif want not in got:
            bad.append({"what": f, "ports": ports, "want": want, "got": got})
    figures = {"answers": seen}
    if bad:
        return Verdict(name, "invalid", f"{len(bad)} of {len(wanted)} not answered as expected", bad, figures)
    if missing:
        return Verdict(name, "unknown", f"no answer captured for {', '.join(missing)}", [], figures)
    return Verdict(name, "valid", f"all {len(wanted)} answered on the wire as expected", [], figures)
