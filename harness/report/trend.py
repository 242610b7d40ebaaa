"""Trends across kept runs: detection and recovery p50/p95/max per scenario per run, labelled by revision.

Why: a release manager asks whether this build is as good as the ones before; one run's figures cannot say.
The points come from each kept run's verdict files (the `hil-verdicts.json` attachments in its Allure
results: the recovery checker's `per_agent` and `per_agent_detection` seconds, pooled over repeats), so the
trend needs nothing but the runs under `reports/runs/`. The page and the picture are written to
`reports/trend.html` and `reports/trend.png` (the newest), and a copy into the run they were made after, so
the run's report attaches what it was shown. docs/reports.md describes it.

The report layer may not import the gate, so results are read here with plain JSON (scenario ids as the
gate spells them: `fullName` plus non-excluded parameters).
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any

from harness.checks.recovery import seconds
from harness.plots import _png, _pyplot
from harness.report import runs
from harness.report.compare import METRICS, distribution
from harness.report.verdictfile import VERDICTS_NAME

__all__ = [
    "TREND_HTML",
    "TREND_PNG",
    "RunPoint",
    "collect",
    "read_point",
    "trend_html",
    "trend_png",
    "write_trend",
]

TREND_HTML = "trend.html"
TREND_PNG = "trend.png"
_PER_AGENT = {"recovery": "per_agent", "detection": "per_agent_detection"}
_STATS = ("p50", "p95", "max")


@dataclass
class RunPoint:
    """One run on the trend: its name, revision, start, and per scenario each metric's distribution."""

    name: str
    revision: str
    started: str
    scenarios: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)  # id -> metric -> dist

    @property
    def label(self) -> str:
        """The x tick: the revision, and the start time (two runs of one build stay apart)."""
        t = self.name.split("-", 1)[0]
        return f"{self.revision}\n{t[4:6]}-{t[6:8]} {t[9:11]}:{t[11:13]}" if len(t) >= 13 else self.revision


def _scenario_id(result: Mapping[str, Any]) -> str:
    base = str(result.get("fullName") or result.get("name") or "?")
    params = []
    for p in result.get("parameters") or []:
        if not isinstance(p, Mapping) or p.get("excluded"):
            continue
        if str(p.get("name", "")).startswith("__pytest_repeat"):
            continue
        v = str(p.get("value"))
        v = v[1:-1] if len(v) >= 2 and v[0] == v[-1] and v[0] in "'\"" else v
        params.append(f"{p.get('name')}={v}")
    return f"{base}[{','.join(params)}]" if params else base


def _attachment_sources(node: Mapping[str, Any]) -> list[str]:
    """The verdict files attached to a result, its steps, or a fixture (before/after) of a container."""
    out = [
        str(a.get("source"))
        for a in node.get("attachments") or []
        if isinstance(a, Mapping) and a.get("name") == VERDICTS_NAME and a.get("source")
    ]
    for key in ("steps", "befores", "afters"):
        for s in node.get(key) or []:
            if isinstance(s, Mapping):
                out += _attachment_sources(s)
    return out


def _load(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # a broken file leaves a gap on the trend; the gate reports it for the run itself


def read_point(run_dir: Path, manifest: Mapping[str, Any]) -> RunPoint:
    """A run's point: every scenario with recovery or detection times, pooled over its repeats."""
    versions = manifest.get("versions") if isinstance(manifest.get("versions"), Mapping) else {}
    point = RunPoint(
        str(manifest.get("name") or run_dir.name),
        str(versions.get("git_describe") or "?"),
        str(manifest.get("started") or ""),
    )
    results = run_dir / "allure-results"
    ids: dict[str, str] = {}
    sources: dict[str, list[str]] = {}
    for f in sorted(results.glob("*-result.json")):
        r = _load(f)
        if isinstance(r, dict) and r.get("uuid"):
            ids[str(r["uuid"])] = sid = _scenario_id(r)
            sources.setdefault(sid, []).extend(_attachment_sources(r))
    for f in sorted(results.glob("*-container.json")):
        c = _load(f)
        if isinstance(c, dict):
            for child in c.get("children") or []:
                if str(child) in ids:
                    sources.setdefault(ids[str(child)], []).extend(_attachment_sources(c))
    for sid, srcs in sorted(sources.items()):
        times: dict[str, list[float]] = {}
        for src in dict.fromkeys(srcs):  # a container serving one test lists it once
            payload = _load(results / src)
            for v in payload.get("verdicts") or [] if isinstance(payload, dict) else []:
                if not isinstance(v, dict) or v.get("name") != "recovery_time":
                    continue
                for metric, key in _PER_AGENT.items():
                    per = (v.get("figures") or {}).get(key)
                    if isinstance(per, dict):
                        vals = [float(x) for x in per.values() if isinstance(x, int | float)]
                        times.setdefault(metric, []).extend(vals)
        if times:
            point.scenarios[sid] = {m: distribution(times.get(m, [])) for m in METRICS}
    return point


def collect(reports: Path, current: Path | None = None) -> list[RunPoint]:
    """The points of the kept runs that completed (and of `current`, the run being finished), oldest first."""
    out = []
    for r in runs.list_runs(reports):
        if r.status == "complete" or (current is not None and r.path.resolve() == current.resolve()):
            out.append(read_point(r.path, r.manifest))
    return out


def _scenarios(points: Sequence[RunPoint]) -> list[str]:
    return sorted({s for p in points for s in p.scenarios})


def trend_png(points: Sequence[RunPoint], path: str | Path | None = None) -> bytes:
    """A row per scenario, detection left and recovery right: p50, p95 and max per run. PNG bytes."""
    plt = _pyplot()
    names = _scenarios(points)
    if not names:
        fig, ax = plt.subplots(figsize=(8, 2))
        ax.text(0.5, 0.5, f"no recovery or detection times in {len(points)} kept run(s)", ha="center")
        ax.set_axis_off()
        return _png(fig, path)
    fig, axes = plt.subplots(len(names), 2, figsize=(12, 2.6 * len(names) + 1.0), squeeze=False)
    xs = list(range(len(points)))
    for row, sid in enumerate(names):
        for col, metric in enumerate(("detection", "recovery")):
            ax = axes[row][col]
            for stat, style in zip(_STATS, ("o-", "s--", "^:"), strict=True):
                ys = [(p.scenarios.get(sid, {}).get(metric) or {}).get(stat) for p in points]
                ys = [float("nan") if y is None else y for y in ys]
                ax.plot(xs, ys, style, label=stat, markersize=4)
            ax.set_title(f"{sid.rsplit('#', 1)[-1][:60]}: {metric}", fontsize=9)
            ax.set_ylabel("s from the fault's start", fontsize=8)
            ax.set_xticks(xs, [p.label for p in points], fontsize=7, rotation=30, ha="right")
            ax.set_xlim(-0.5, len(points) - 0.5)
            ax.grid(alpha=0.3)
            if row == 0:
                ax.legend(fontsize=7, loc="upper left")
    fig.suptitle(f"detection and recovery per run ({len(points)} runs, oldest left)", fontsize=10)
    fig.tight_layout()
    return _png(fig, path)


def _fmt(x: Any) -> str:
    return "-" if x is None else seconds(x)


def trend_html(points: Sequence[RunPoint], png: bytes) -> str:
    """The trend page: the picture (embedded, so the page stands alone as an attachment) and a table per
    scenario, newest run first."""
    img = base64.b64encode(png).decode()
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>hil trend</title><style>",
        "body{font-family:sans-serif;margin:1em}table{border-collapse:collapse;margin-bottom:1.5em}",
        "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}td:first-child{text-align:left}",
        "</style></head><body>",
        f"<h1>Detection and recovery across {len(points)} kept runs</h1>",
        "<p>Seconds from the fault's start, per agent, pooled over a scenario's repeats (p95: nearest rank).",
        " Points from each run's verdict files under reports/runs/.</p>",
        f"<img alt='trend' src='data:image/png;base64,{img}' style='max-width:100%'>",
    ]
    head = "".join(f"<th>{m} {s}</th>" for m in ("detection", "recovery") for s in (*_STATS, "n"))
    for sid in _scenarios(points):
        parts.append(f"<h2>{escape(sid)}</h2><table><tr><th>run</th><th>revision</th>{head}</tr>")
        for p in reversed(points):
            d = p.scenarios.get(sid)
            if d is None:
                continue
            cells = "".join(
                f"<td>{_fmt(d[m].get(s)) if s != 'n' else d[m].get('n', 0)}</td>"
                for m in ("detection", "recovery")
                for s in (*_STATS, "n")
            )
            parts.append(f"<tr><td>{escape(p.name)}</td><td>{escape(p.revision)}</td>{cells}</tr>")
        parts.append("</table>")
    if not _scenarios(points):
        parts.append("<p>No run kept holds recovery or detection times yet.</p>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


def _write_atomic(path: Path, data: bytes) -> None:
    """Replace `path` whole: two runs finishing together must not leave a half-written page."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def write_trend(reports: Path, current: Path | None = None) -> list[Path]:
    """`reports/trend.html` and `reports/trend.png` from the kept runs, and a copy in `current` (the run
    whose report attaches them). Returns the copies' paths (in `current`, else in `reports`)."""
    points = collect(reports, current)
    png = trend_png(points)
    html = trend_html(points, png).encode()
    reports.mkdir(parents=True, exist_ok=True)
    for where in [reports] + ([current] if current is not None else []):
        _write_atomic(where / TREND_PNG, png)
        _write_atomic(where / TREND_HTML, html)
    where = current if current is not None else reports
    return [where / TREND_PNG, where / TREND_HTML]
