"""Two runs compared: scenario by scenario, the verdict change and the per-agent time distributions side by
side, with whether a difference is more than noise.

Why per-agent times and a rank test: a release manager asks "is this build as good as the last one that
shipped?", and a p95 moved by a second says nothing without knowing whether the spread allows it. The
recovery checker keeps every agent's time (`figures.per_agent`), so the test runs over those, pooled over
a scenario's repeats. Mann-Whitney U (two-sided, normal approximation with the tie correction) needs no
assumption about the shape of the distribution; scipy is not a dependency, numpy is.

This module is pure (summaries in, comparison out); reading a run directory is `harness.gate.baseline`'s,
which knows the Allure results. docs/reports.md describes `hil compare`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from harness.checks.recovery import percentile

__all__ = [
    "ALPHA",
    "BASELINE_SCHEMA",
    "COMPARE_SCHEMA",
    "METRICS",
    "RATIO",
    "Comparison",
    "MetricDiff",
    "RunSummary",
    "ScenarioDiff",
    "ScenarioSummary",
    "compare",
    "distribution",
    "mann_whitney_p",
    "markdown",
    "scenario_verdict",
    "table",
]

BASELINE_SCHEMA = "hil-baseline/1"
COMPARE_SCHEMA = "hil-compare/1"
METRICS = ("recovery", "detection")  # per-agent seconds from the fault's start
ALPHA = 0.01  # a difference is significant below this p-value
RATIO = 1.5  # ... and a regression when, significant, p95 or max grows beyond this ratio of A's
EXIT_SAME, EXIT_REGRESSION, EXIT_CANNOT = 0, 1, 2


@dataclass
class ScenarioSummary:
    """One scenario of one run: how its runs ended and every agent's times, pooled over its repeats."""

    scenario: str
    verdict: str  # pass, fail, flaky (passed and failed), skipped, unjudged
    runs: int
    passes: int
    times: dict[str, list[float]] = field(default_factory=dict)  # metric -> per-agent seconds

    def dist(self, metric: str) -> dict[str, Any]:
        return distribution(self.times.get(metric, []))


@dataclass
class RunSummary:
    """What a comparison (or the gate's baseline) needs of one run; also the pinned baseline file's body."""

    name: str
    path: str
    topology: str | None
    versions: dict[str, str]
    scenarios: dict[str, ScenarioSummary]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["schema"] = BASELINE_SCHEMA
        for s in d["scenarios"].values():
            s["figures"] = {m: distribution(s["times"].get(m, [])) for m in METRICS}
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RunSummary:
        """A summary from a baseline file's JSON (ValueError on a wrong shape, naming the field)."""
        if d.get("schema") != BASELINE_SCHEMA:
            raise ValueError(f"schema: must be {BASELINE_SCHEMA!r}, got {d.get('schema')!r}")
        raw = d.get("scenarios")
        if not isinstance(raw, Mapping):
            raise ValueError("scenarios: must be an object")
        scen = {}
        for sid, s in raw.items():
            try:
                times = {
                    str(m): [float(x) for x in v]
                    for m, v in (s.get("times") or {}).items()
                    if isinstance(v, list)
                }
                scen[str(sid)] = ScenarioSummary(
                    str(sid), str(s["verdict"]), int(s["runs"]), int(s["passes"]), times
                )
            except (KeyError, TypeError, ValueError, AttributeError) as e:
                raise ValueError(
                    f"scenarios.{sid}: not a scenario summary ({type(e).__name__}: {e})"
                ) from None
        top = d.get("topology")
        vers = d.get("versions") if isinstance(d.get("versions"), Mapping) else {}
        return cls(
            str(d.get("name", "?")), str(d.get("path", "")), None if top is None else str(top),
            {str(k): str(v) for k, v in vers.items()}, scen,
        )  # fmt: skip


def scenario_verdict(outcomes: Sequence[str]) -> str:
    """A scenario's verdict from its runs' outcomes (pass, defect, incomplete, skipped): mixed pass and
    defect is flaky, which does not ship."""
    passed = sum(o == "pass" for o in outcomes)
    failed = sum(o == "defect" for o in outcomes)
    if passed and failed:
        return "flaky"
    if failed:
        return "fail"
    if any(o == "incomplete" for o in outcomes):
        return "unjudged"
    if passed:
        return "pass"
    return "skipped"


def distribution(values: Sequence[float]) -> dict[str, Any]:
    """n, p50, p95 (nearest rank: a time some agent had) and max, in seconds (None without values)."""
    v = sorted(float(x) for x in values if math.isfinite(float(x)))
    if not v:
        return {"n": 0, "p50": None, "p95": None, "max": None}
    return {"n": len(v), "p50": percentile(v, 50), "p95": percentile(v, 95), "max": v[-1]}


def mann_whitney_p(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Two-sided p-value of the Mann-Whitney U test (normal approximation, tie-corrected, continuity
    corrected); None when either side is empty. All values equal on both sides: 1.0 (no difference)."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    n1, n2 = len(x), len(y)
    if n1 == 0 or n2 == 0:
        return None
    allv = np.concatenate([x, y])
    _, inv, counts = np.unique(allv, return_inverse=True, return_counts=True)
    first = np.cumsum(counts) - counts  # rank of each tie group: the mean of its positions, 1-based
    ranks = (first + (counts + 1) / 2.0)[inv]
    u1 = ranks[:n1].sum() - n1 * (n1 + 1) / 2.0
    n = n1 + n2
    tie = float((counts**3 - counts).sum())
    var = n1 * n2 / 12.0 * ((n + 1) - tie / (n * (n - 1))) if n > 1 else 0.0
    if var <= 0:
        return 1.0
    z = (abs(u1 - n1 * n2 / 2.0) - 0.5) / math.sqrt(var)
    return float(min(1.0, math.erfc(max(z, 0.0) / math.sqrt(2.0))))


@dataclass
class MetricDiff:
    metric: str
    a: dict[str, Any]
    b: dict[str, Any]
    delta: dict[str, float | None]  # b - a, seconds, per p50/p95/max
    p_value: float | None
    significant: bool
    slower: bool  # significant, and B's median is above A's


@dataclass
class ScenarioDiff:
    scenario: str
    presence: str  # both, new (only in B), vanished (only in A)
    verdict_a: str | None
    verdict_b: str | None
    metrics: list[MetricDiff]
    regressions: list[str]
    times_a: dict[str, list[float]] = field(default_factory=dict)  # the per-agent seconds, for the plot
    times_b: dict[str, list[float]] = field(default_factory=dict)


@dataclass
class Comparison:
    a: str
    b: str
    scenarios: list[ScenarioDiff]
    versions: dict[str, list[str]]  # changed only: key -> [A's, B's]
    problems: list[str]
    alpha: float
    ratio: float
    exit_code: int = EXIT_SAME

    @property
    def regressions(self) -> list[str]:
        return [f"{s.scenario}: {r}" for s in self.scenarios for r in s.regressions]

    def to_dict(self) -> dict[str, Any]:
        return {"schema": COMPARE_SCHEMA, **asdict(self), "regressions": self.regressions}


def _delta(a: Any, b: Any) -> float | None:
    return None if a is None or b is None else b - a


def _metric(metric: str, a: ScenarioSummary, b: ScenarioSummary, alpha: float) -> MetricDiff | None:
    ta, tb = a.times.get(metric, []), b.times.get(metric, [])
    if not ta and not tb:
        return None
    da, db = distribution(ta), distribution(tb)
    p = mann_whitney_p(ta, tb)
    sig = p is not None and p < alpha
    slower = sig and da["p50"] is not None and db["p50"] is not None and db["p50"] > da["p50"]
    delta = {q: _delta(da[q], db[q]) for q in ("p50", "p95", "max")}
    return MetricDiff(metric, da, db, delta, p, sig, slower)


def _regressions(
    a: ScenarioSummary, b: ScenarioSummary, metrics: list[MetricDiff], ratio: float
) -> list[str]:
    out = []
    if a.verdict == "pass" and b.verdict in ("fail", "flaky"):
        out.append(f"verdict went from pass to {b.verdict}")
    for m in metrics:
        if not m.slower:
            continue
        for q in ("p95", "max"):
            va, vb = m.a[q], m.b[q]
            if va is not None and vb is not None and vb > ratio * va:
                out.append(f"{m.metric} {q} {vb:.3f} s is {vb / va:.1f}x A's {va:.3f} s (allowed {ratio:g}x)")
    return out


def compare(a: RunSummary, b: RunSummary, *, alpha: float = ALPHA, ratio: float = RATIO) -> Comparison:
    """A against B (A the earlier, the reference). Exit code: 2 if they cannot be compared (another
    topology), 1 on a regression (a verdict from pass to fail or flaky; a significant slow-down whose p95
    or max grows beyond ``ratio``), else 0."""
    problems = []
    if a.topology and b.topology and a.topology != b.topology:
        problems.append(f"{b.path}: ran on topology {b.topology}, {a.path} on {a.topology}: not comparable")
    keys = sorted(set(a.versions) | set(b.versions))
    versions = {
        k: [a.versions.get(k, "-"), b.versions.get(k, "-")]
        for k in keys
        if a.versions.get(k) != b.versions.get(k)
    }
    out = []
    for sid in sorted(set(a.scenarios) | set(b.scenarios)):
        sa, sb = a.scenarios.get(sid), b.scenarios.get(sid)
        if sa is None or sb is None:
            only = sb or sa
            assert only is not None
            metrics = [
                MetricDiff(m, distribution(only.times.get(m, [])) if sa else distribution([]),
                           distribution(only.times.get(m, [])) if sb else distribution([]),
                           dict.fromkeys(("p50", "p95", "max")), None, False, False)
                for m in METRICS if only.times.get(m)
            ]  # fmt: skip
            out.append(
                ScenarioDiff(sid, "vanished" if sb is None else "new", sa and sa.verdict, sb and sb.verdict,
                             metrics, [], sa.times if sa else {}, sb.times if sb else {})
            )  # fmt: skip
            continue
        metrics = [d for m in METRICS if (d := _metric(m, sa, sb, alpha)) is not None]
        out.append(
            ScenarioDiff(
                sid,
                "both",
                sa.verdict,
                sb.verdict,
                metrics,
                _regressions(sa, sb, metrics, ratio),
                sa.times,
                sb.times,
            )  # fmt: skip
        )
    cmp = Comparison(a.path, b.path, out, versions, problems, alpha, ratio)
    cmp.exit_code = EXIT_CANNOT if problems else (EXIT_REGRESSION if cmp.regressions else EXIT_SAME)
    return cmp


# --- for people ----------------------------------------------------------------------------------------


def _s(x: float | None, signed: bool = False) -> str:
    """Seconds with millisecond precision (the capture's resolution is finer; people's is not)."""
    if x is None:
        return "-"
    return f"{x:+.3f}" if signed else f"{x:.3f}"


def _verdict(s: ScenarioDiff) -> str:
    if s.presence == "new":
        return f"(new) {s.verdict_b}"
    if s.presence == "vanished":
        return f"{s.verdict_a} (vanished)"
    return s.verdict_a if s.verdict_a == s.verdict_b else f"{s.verdict_a} -> {s.verdict_b}"


_HEAD = [
    "scenario",
    "verdict",
    "metric",
    "A p50/p95/max s (n)",
    "B p50/p95/max s (n)",
    "d p95 s",
    "p",
    "note",
]


def _dist(x: dict[str, Any]) -> str:
    return f"{_s(x['p50'])}/{_s(x['p95'])}/{_s(x['max'])} ({x['n']})" if x["n"] else "-"


def _rows(cmp: Comparison) -> list[list[str]]:
    rows = []
    for s in cmp.scenarios:
        note = "REGRESSION: " + "; ".join(s.regressions) if s.regressions else ""
        if not s.metrics:
            rows.append([s.scenario, _verdict(s), "-", "-", "-", "-", "-", note])
        for k, m in enumerate(s.metrics):
            p = "-" if m.p_value is None else f"{m.p_value:.2g}" + ("*" if m.significant else "")
            head = [s.scenario, _verdict(s)] if k == 0 else ["", ""]
            delta = _s(m.delta["p95"], signed=True)
            rows.append([*head, m.metric, _dist(m.a), _dist(m.b), delta, p, note if k == 0 else ""])
    return rows


def _summary_lines(cmp: Comparison, errors: bool) -> list[str]:
    lines = [f"A: {cmp.a}", f"B: {cmp.b}"]
    lines += [f"version {k}: {a} -> {b}" for k, a, b in ((k, *v) for k, v in cmp.versions.items())]
    lines += [f"error: {p}" for p in cmp.problems] if errors else []
    verdict = {EXIT_SAME: "no regression", EXIT_REGRESSION: "REGRESSION", EXIT_CANNOT: "could not compare"}
    lines.append(
        f"{verdict[cmp.exit_code]} (* significant: Mann-Whitney p < {cmp.alpha:g}; a regression grows"
        f" p95 or max beyond {cmp.ratio:g}x, or goes from pass to fail)"
    )
    return lines


def table(cmp: Comparison) -> str:
    """The comparison for a terminal (its problems are for stderr, one line each: the caller's)."""
    rows = _rows(cmp)
    cols = [max([len(h)] + [len(r[k]) for r in rows]) for k, h in enumerate(_HEAD)]
    fmt = "  ".join(f"{{:{w}}}" for w in cols[:-1]) + "  {}"
    body = [fmt.format(*_HEAD).rstrip()] + [fmt.format(*r).rstrip() for r in rows]
    return "\n".join(body + [""] + _summary_lines(cmp, errors=False))


def markdown(cmp: Comparison) -> str:
    """The comparison as a Markdown page."""
    esc = [[c.replace("|", "\\|") for c in r] for r in _rows(cmp)]
    lines = ["# hil compare", "", *(f"- {x}" for x in _summary_lines(cmp, errors=True)), ""]
    lines += ["| " + " | ".join(_HEAD) + " |", "|" + "---|" * len(_HEAD)]
    lines += ["| " + " | ".join(r) + " |" for r in esc]
    return "\n".join(lines) + "\n"
