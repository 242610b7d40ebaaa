"""Refusals: a misbehaving client's requests were refused explicitly (and its connection closed)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from harness.checks.evidence import value_of
from harness.checks.verdict import Verdict, unknown
from harness.history import Event, pair_ops

__all__ = ["check_refused"]


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
