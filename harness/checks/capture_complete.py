"""Capture complete: the packet evidence lost nothing; checkers that read it answer unknown when it did."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from typing import Any

from harness.checks.evidence import by_time, value_of
from harness.checks.verdict import Checker, Verdict, unknown
from harness.history import CAPTURE_STATS, CTI, SIP, Event, Obs

__all__ = ["CAPTURE_KINDS", "check_capture_complete", "depends_on_capture"]

# Observation kinds decoded from packet captures: the evidence that capture loss can make incomplete.
CAPTURE_KINDS: frozenset[str] = frozenset({SIP, CTI})


def _int(x: Any) -> int:
    return int(x) if isinstance(x, int | float) and not isinstance(x, bool) else 0


def _drops(v: Mapping[str, Any]) -> int:
    """`drops`, else tcpdump's kernel + interface drop counters (as `CaptureResult.to_dict` writes them)."""
    if "drops" in v:
        return _int(v["drops"])
    return _int(v.get("packets_dropped_by_kernel")) + _int(v.get("packets_dropped_by_interface"))


def check_capture_complete(history: Iterable[Event]) -> Verdict:
    """Every capture point reports `complete` and no drops. Never invalid: a lossy capture is the
    harness's failure, not the system's, so it can only make the evidence insufficient (unknown)."""
    name = "capture_complete"
    stats: dict[str, dict[str, Any]] = {}
    for ev in by_time(history):
        if isinstance(ev, Obs) and ev.kind == CAPTURE_STATS:
            v = value_of(ev)
            point = str(v.get("capture") or v.get("name") or ev.source)
            prev = stats.get(point, {"drops": 0, "complete": True, "packets": 0})
            stats[point] = {
                # counters are cumulative per capture point: keep the worst seen
                "drops": max(prev["drops"], _drops(v)),
                "complete": prev["complete"]
                and v.get("complete") is not False
                and v.get("lossless") is not False,
                "packets": max(prev["packets"], _int(v.get("packets", v.get("packets_captured")))),
            }
    if not stats:
        return unknown(name, "no capture_stats observation: capture completeness not recorded")
    figures = {"captures": stats, "drops": sum(s["drops"] for s in stats.values())}
    bad = [(p, s) for p, s in sorted(stats.items()) if s["drops"] > 0 or not s["complete"]]
    if bad:
        parts = [
            f"capture dropped {s['drops']} packets on {p}" if s["drops"] else f"capture incomplete on {p}"
            for p, s in bad
        ]
        return Verdict(name, "unknown", "; ".join(parts), [{"capture": p, **s} for p, s in bad], figures)
    return Verdict(name, "valid", f"{len(stats)} captures complete, no drops", [], figures)


def depends_on_capture(checker: Checker) -> Checker:
    """Wrap a checker whose evidence comes (partly) from packet captures.

    If any capture dropped packets or was incomplete, or the history holds captured messages (`sip`, `cti`)
    but no capture statistics, the wrapped checker answers unknown with the capture's reason, whatever the
    inner checker said (kept in figures as `unchecked_result`): missing packets can fake a lost agent as
    easily as hide a split brain.
    """

    @functools.wraps(checker)
    def wrapped(history: Iterable[Event], **params: Any) -> Verdict:
        events = list(history)
        inner = checker(events, **params)
        cap = check_capture_complete(events)
        if cap.result == "valid":
            return inner
        if cap.figures.get("captures") is None and not any(
            isinstance(e, Obs) and e.kind in CAPTURE_KINDS for e in events
        ):
            return inner  # no capture stats, but nothing captured was used either
        return Verdict(
            inner.name,
            "unknown",
            cap.reason,
            inner.witnesses,
            {**inner.figures, "unchecked_result": inner.result, "capture": cap.figures},
        )

    return wrapped
