"""What is wrong with a run, as findings: each with a machine-readable category and kind for the gate, and a
prefixed line for people and for Allure's categories.

A finding's category is `defect` (the product failed: do not ship), `lab` (the lab failed: could not judge)
or `incomplete` (too little evidence: could not judge); its kind says which (`lost_agent`, `capture_drops`,
...). The verdict file carries them (`verdicts_payload`), so the release gate reads categories, never the
text of an assert message. The prefixes below start each line of `failure_message`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from harness.checks import Verdict
from harness.checks.recovery import seconds

__all__ = [
    "CATEGORY_RANK",
    "DEFECT",
    "DEFECT_DOUBLE_REGISTRATION",
    "DEFECT_LOST_AGENT",
    "DEFECT_LOST_CALL",
    "DEFECT_OTHER",
    "DEFECT_OVER_BOUND",
    "DEFECT_SPLIT_BRAIN",
    "DEFECT_WRONG_SITE",
    "EVIDENCE_INCOMPLETE",
    "INCOMPLETE_UNKNOWN",
    "KINDS",
    "LAB_CAPTURE_DROPS",
    "LAB_DEVICE_UNREACHABLE",
    "LAB_FAULT",
    "LAB_FAULT_NOT_HEALED",
    "Category",
    "Finding",
    "as_verdict",
    "failure_message",
    "findings",
    "lab_fault_message",
    "leaves",
    "worst",
]

DEFECT = "PRODUCT DEFECT"
LAB_FAULT = "LAB FAULT"
EVIDENCE_INCOMPLETE = "EVIDENCE INCOMPLETE"

DEFECT_LOST_AGENT = "PRODUCT DEFECT: lost agent"
DEFECT_SPLIT_BRAIN = "PRODUCT DEFECT: split brain"
DEFECT_DOUBLE_REGISTRATION = "PRODUCT DEFECT: double registration"
DEFECT_WRONG_SITE = "PRODUCT DEFECT: agent at the wrong site"
DEFECT_OVER_BOUND = "PRODUCT DEFECT: recovery over bound"
DEFECT_LOST_CALL = "PRODUCT DEFECT: lost call"
DEFECT_OTHER = "PRODUCT DEFECT: check failed"
LAB_DEVICE_UNREACHABLE = "LAB FAULT: device unreachable"
LAB_CAPTURE_DROPS = "LAB FAULT: capture drops"
LAB_FAULT_NOT_HEALED = "LAB FAULT: fault not healed"
INCOMPLETE_UNKNOWN = "EVIDENCE INCOMPLETE: verdict unknown"

Category = Literal["defect", "lab", "incomplete"]
CATEGORY_RANK: dict[str, int] = {"defect": 0, "lab": 1, "incomplete": 2}  # most severe first
_CATEGORY_PREFIX = {"defect": DEFECT, "lab": LAB_FAULT, "incomplete": EVIDENCE_INCOMPLETE}

# kind -> (category, line prefix): every kind a finding of this module can have.
KINDS: dict[str, tuple[Category, str]] = {
    "lost_agent": ("defect", DEFECT_LOST_AGENT),
    "split_brain": ("defect", DEFECT_SPLIT_BRAIN),
    "double_registration": ("defect", DEFECT_DOUBLE_REGISTRATION),
    "wrong_site": ("defect", DEFECT_WRONG_SITE),
    "recovery_over_bound": ("defect", DEFECT_OVER_BOUND),
    "lost_call": ("defect", DEFECT_LOST_CALL),
    "check_failed": ("defect", DEFECT_OTHER),
    "device_unreachable": ("lab", LAB_DEVICE_UNREACHABLE),
    "capture_drops": ("lab", LAB_CAPTURE_DROPS),
    "fault_not_healed": ("lab", LAB_FAULT_NOT_HEALED),
    "verdict_unknown": ("incomplete", INCOMPLETE_UNKNOWN),
}


@dataclass(frozen=True)
class Finding:
    """One thing wrong with a run: its category and kind, the check that found it and what it saw.

    `agents` are the agents it concerns (lost agents, agents in a split brain), for the gate's counts.
    """

    category: Category
    kind: str
    check: str
    detail: str
    agents: tuple[str, ...] = ()

    @property
    def prefix(self) -> str:
        known = KINDS.get(self.kind)
        return known[1] if known else f"{_CATEGORY_PREFIX[self.category]}: {self.kind.replace('_', ' ')}"

    def line(self) -> str:
        return f"{self.prefix}: {self.check}: {self.detail}"

    def to_dict(self) -> dict[str, Any]:
        """The finding as the verdict file holds it."""
        return {
            "category": self.category,
            "kind": self.kind,
            "check": self.check,
            "detail": self.detail,
            "agents": list(self.agents),
        }

    @classmethod
    def from_dict(cls, d: Any) -> Finding:
        """A finding read back from a verdict file; ValueError naming the field when it is not one."""
        if not isinstance(d, Mapping):
            raise ValueError(f"must be an object, got {type(d).__name__}")
        cat = d.get("category")
        if not isinstance(cat, str) or cat not in CATEGORY_RANK:
            raise ValueError(f"category: must be one of {', '.join(CATEGORY_RANK)}, got {cat!r}")
        for key in ("kind", "check", "detail"):
            if not isinstance(d.get(key), str) or (key == "kind" and not d[key]):
                raise ValueError(f"{key}: must be a string, got {d.get(key)!r}")
        known = KINDS.get(d["kind"])
        if known and known[0] != cat:
            raise ValueError(f"category: {cat!r} does not go with kind {d['kind']!r} ({known[0]})")
        agents = d.get("agents", [])
        if not isinstance(agents, list) or not all(isinstance(a, str) for a in agents):
            raise ValueError(f"agents: must be a list of agent ids, got {agents!r}")
        return cls(cat, d["kind"], d["check"], d["detail"], tuple(agents))


def _finding(kind: str, check: str, detail: str, agents: tuple[str, ...] = ()) -> Finding:
    return Finding(KINDS[kind][0], kind, check, detail, agents)


def worst(fs: Iterable[Finding]) -> Category | None:
    """The most severe category among the findings (defect, then lab, then incomplete); None if none."""
    cats = {f.category for f in fs}
    return min(cats, key=CATEGORY_RANK.__getitem__) if cats else None


def as_verdict(v: Verdict | Mapping[str, Any]) -> Verdict:
    """A Verdict from itself or from its `to_dict()` form (as read back from a verdict file).

    Raises ValueError naming the field when the dict is not a verdict.
    """
    if isinstance(v, Verdict):
        return v
    if not isinstance(v, Mapping):
        raise ValueError(f"a verdict must be an object, got {type(v).__name__}")
    for key, typ in (("name", str), ("result", str), ("reason", str)):
        if not isinstance(v.get(key), typ):
            raise ValueError(f"{key}: must be a string, got {v.get(key)!r}")
    wit, fig = v.get("witnesses", []), v.get("figures", {})
    if not isinstance(wit, list):
        raise ValueError(f"witnesses: must be a list, got {type(wit).__name__}")
    if not isinstance(fig, Mapping):
        raise ValueError(f"figures: must be an object, got {type(fig).__name__}")
    return Verdict(v["name"], v["result"], v["reason"], list(wit), dict(fig))


def _is_composed(v: Verdict) -> bool:
    """`checks.compose` keeps the worst sub-verdicts as witnesses (to_dict) and {name: result} figures."""
    return bool(v.witnesses) and all(
        isinstance(w, Mapping)
        and {"name", "result", "reason"} <= w.keys()
        and isinstance(w["name"], str)
        and w["name"] in v.figures
        for w in v.witnesses
    )


def leaves(verdicts: Verdict | Mapping[str, Any] | Iterable[Verdict | Mapping[str, Any]]) -> list[Verdict]:
    """The checkers' own verdicts, with composed ones (from `checks.compose`) opened up."""
    if isinstance(verdicts, Verdict | Mapping):
        verdicts = [verdicts]
    out: list[Verdict] = []
    for raw in verdicts:
        v = as_verdict(raw)
        if v.result != "valid" and _is_composed(v):
            out.extend(leaves(v.witnesses))
        else:
            out.append(v)
    return out


def _agents(ws: Iterable[Any]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(str(w["agent"]) for w in ws if isinstance(w, Mapping) and "agent" in w))


def _short(agents: Sequence[str], n: int = 5) -> str:
    more = f" and {len(agents) - n} more" if len(agents) > n else ""
    return ", ".join(agents[:n]) + more


def _capture_problem(v: Verdict) -> bool:
    return v.name == "capture_complete" or "capture" in v.figures or v.reason.startswith("capture ")


def _recovery(v: Verdict, ws: list[Mapping[str, Any]]) -> list[Finding]:
    lost = [w for w in ws if w.get("problem") == "lost"]
    late = [w for w in ws if w.get("problem") == "over_bound"]
    out = []
    if lost:
        a = _agents(lost)
        out.append(_finding("lost_agent", v.name, f"{len(a)} agents not recovered: {_short(a)}", a))
    if late:
        a = _agents(late)
        slowest = max((w["recovery"] for w in late if _number(w.get("recovery"))), default=0)
        bound = v.figures.get("bound")
        over = f"the {seconds(bound)} bound" if _number(bound) else "the bound"
        detail = f"{len(a)} agents over {over} (slowest {seconds(slowest)}): {_short(a)}"
        out.append(_finding("recovery_over_bound", v.name, detail, a))
    return out or [_finding("check_failed", v.name, v.reason)]


def _number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def _sites(w: Mapping[str, Any], key: str) -> list[Any]:
    """A witness's list of sites (a verdict file read back may hold anything there)."""
    v = w.get(key)
    return v if isinstance(v, list) else [v] if v else []


def _registration(v: Verdict, ws: list[Mapping[str, Any]]) -> list[Finding]:
    twice = [w for w in ws if len(_sites(w, "registered_at")) > 1 or len(_sites(w, "sessions_at")) > 1]
    nowhere = [
        w for w in ws if w not in twice and not _sites(w, "registered_at") and not _sites(w, "sessions_at")
    ]
    wrong = [w for w in ws if w not in twice and w not in nowhere]
    out = []
    for group, kind, what in (
        (twice, "double_registration", "registered or logged in more than once"),
        (nowhere, "lost_agent", "registered and logged in nowhere"),
        (wrong, "wrong_site", "not registered and logged in at the expected site"),
    ):
        if group:
            a = _agents(group)
            out.append(_finding(kind, v.name, f"{len(a)} agents {what}: {_short(a)}", a))
    return out or [_finding("check_failed", v.name, v.reason)]


# The head of a schedule_outcome witness's problem (harness/checks/schedule_outcome.py) -> the kind the
# scripted scenarios' checkers give the same failure, and how a finding's line says it. Heads not here
# (a state not restored, a logged-out agent online, a must-stay agent logged in anew) are check_failed.
_OUTCOME_KINDS: dict[str, tuple[str, str]] = {
    "lost": ("lost_agent", "lost (no session or no registration anywhere)"),
    "doubled": ("double_registration", "registered or logged in more than once"),
    "half": ("wrong_site", "not where the schedule leaves them"),
    "did not move": ("wrong_site", "not where the schedule leaves them"),
    "failback": ("wrong_site", "not where the schedule leaves them"),
    "moved": ("wrong_site", "not where the schedule leaves them"),
    "wrong site": ("wrong_site", "not where the schedule leaves them"),
    "must stay at": ("wrong_site", "not where the schedule leaves them"),
}


def _outcome_head(problem: str) -> str:
    """`lost: no session...` -> `lost`; `must stay at ntg, but was seen at sha` -> `must stay at`."""
    head = problem.split(":")[0].split(",")[0]
    return "must stay at" if head.startswith("must stay at ") else head


def _schedule_outcome(v: Verdict, ws: list[Mapping[str, Any]]) -> list[Finding]:
    """A nemesis schedule's outcome, in the kinds the scripted checkers give: its agent witnesses by their
    problem, and the split brain it folded in (a `no_split_brain` verdict among its witnesses) as such."""
    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    other: list[Mapping[str, Any]] = []
    out: list[Finding] = []
    for w in ws:
        if w.get("name") == "no_split_brain" and w.get("result") == "invalid":
            sb = [x for x in w.get("witnesses") or () if isinstance(x, Mapping)]
            a = _agents(sb)
            reason = str(w.get("reason", "split brain"))
            out.append(_finding("split_brain", v.name, f"{reason}: {_short(a)}" if a else reason, a))
        elif "agent" in w and isinstance(w.get("problem"), str):
            kind = _OUTCOME_KINDS.get(_outcome_head(w["problem"]))
            if kind:
                groups.setdefault(kind, []).append(w)
            else:
                other.append(w)
    for (kind, what), group in groups.items():
        a = _agents(group)
        out.append(_finding(kind, v.name, f"{len(a)} agents {what}: {_short(a)}", a))
    if other:
        a = _agents(other)
        said = [f"{w['agent']} ({w['problem']})" for w in other[:3]]
        more = f" and {len(other) - 3} more" if len(other) > 3 else ""
        out.append(_finding("check_failed", v.name, f"{len(a)} agents: {'; '.join(said)}{more}", a))
    return out or [_finding("check_failed", v.name, v.reason)]


def findings(verdicts: Verdict | Mapping[str, Any] | Iterable[Verdict | Mapping[str, Any]]) -> list[Finding]:
    """Classify every verdict that is not valid, most severe first (defects, lab faults, incomplete)."""
    out: list[Finding] = []
    for v in leaves(verdicts):
        if v.result == "valid":
            continue
        if v.result == "unknown":
            lossy = _capture_problem(v) and ("dropped" in v.reason or "incomplete" in v.reason)
            out.append(_finding("capture_drops" if lossy else "verdict_unknown", v.name, v.reason))
            continue
        ws = [w for w in v.witnesses if isinstance(w, Mapping)]
        if v.name == "recovery_time":
            out += _recovery(v, ws)
        elif v.name == "no_split_brain":
            a = _agents(ws)
            detail = f"{v.reason}: {_short(a)}" if a and a[0] not in v.reason else v.reason
            out.append(_finding("split_brain", v.name, detail, a))
        elif v.name == "single_registration":
            out += _registration(v, ws)
        elif v.name == "no_lost_call":
            out.append(_finding("lost_call", v.name, v.reason))
        elif v.name == "schedule_outcome":
            out += _schedule_outcome(v, ws)
        elif v.name == "faults_healed":
            out.append(_finding("fault_not_healed", v.name, v.reason))
        else:
            out.append(_finding("check_failed", v.name, v.reason))
    return sorted(out, key=lambda f: CATEGORY_RANK[f.category])


def failure_message(verdicts: Verdict | Mapping[str, Any] | Iterable[Verdict | Mapping[str, Any]]) -> str:
    """The assert message of a scenario: one line per finding, the most severe first.

    `assert overall.valid, failure_message(verdicts)`: the first line starts with a prefix constant of this
    module, which the report's categories match. A run with every verdict valid gets "all N checks valid".
    """
    fs = findings(verdicts)
    if not fs:
        return f"all {len(leaves(verdicts))} checks valid"
    return "\n".join(f.line() for f in fs)


def lab_fault_message(exc: BaseException) -> str:
    """Message for a scenario that stops on a lab fault (e.g. `DeviceUnreachable`): `pytest.fail(...)` in
    the `except` block, so the lab fault stays the failure's context and `run_outcome` files it as lab."""
    name = type(exc).__name__
    prefix = LAB_DEVICE_UNREACHABLE if name == "DeviceUnreachable" else f"{LAB_FAULT}: {name}"
    return f"{prefix}: {exc}"
