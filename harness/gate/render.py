"""The gate's verdict for people and tools: a table for the terminal, gate.md, gate.json and JUnit XML."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

from harness.checks.recovery import seconds
from harness.gate.judge import NO_SHIP, UNJUDGED, GateReport

__all__ = ["junit_xml", "markdown", "table", "write_outputs"]

_MARK = {
    "pass": "PASS",
    "fail": "FAIL",
    "flaky": "FLAKY",
    "unjudged": "UNJUDGED",
    "skipped": "skipped",
    "info": "info",
    "ignored": "ignored",
}


def _secs(x: Any) -> str:
    """A time cell: "2.14 s" (three significant figures, the unit in the cell, not the header)."""
    if isinstance(x, int | float) and not isinstance(x, bool):
        return seconds(float(x))
    return "-" if x is None else str(x)


def _rows(rep: GateReport) -> list[list[str]]:
    rows = []
    for s in rep.scenarios:
        b = s.figures.get("bound") or {}
        bound = ", ".join(f"{q} {_secs(v)}" for q, v in b.items()) or "-"
        why = s.reasons[0] if s.verdict in ("fail", "flaky", "unjudged") and s.reasons else ""
        if s.verdict == "fail" and not s.regressions:  # the first reason that blocks the release
            why = next((f"run {k + 1}: {d}" for k, j in enumerate(s.runs) for d in j.defects), why)
        rows.append(
            [
                s.scenario,
                str(len(s.runs)),
                f"{s.passes}/{s.needed}" if s.listed else str(s.passes),
                _secs(s.figures.get("p95")),
                _secs(s.figures.get("max")),
                bound,
                _MARK[s.verdict],
                why,
            ]
        )
    return rows


_HEAD = ["scenario", "runs", "passed", "p95", "max", "bound", "verdict", "why"]


def table(rep: GateReport, width: int = 160) -> str:
    """The verdict table for a terminal (no header when no scenario was judged). Input errors are not in
    it: the callers print them one per line, `error: FILE: FIELD: problem`, on stderr."""
    rows = _rows(rep)
    cols = [max(len(h), *(len(r[k]) for r in rows)) if rows else len(h) for k, h in enumerate(_HEAD[:-1])]
    cols[0] = min(cols[0], 60)
    lines = []
    for r in [_HEAD, *rows] if rows else []:
        cells = [c[: cols[k]].ljust(cols[k]) for k, c in enumerate(r[:-1])]
        line = "  ".join(cells) + "  " + r[-1]
        lines.append(line[:width].rstrip())
    for m in rep.missing:
        lines.append(f"MISSING  {m}")
    for n in rep.notes:
        lines.append(f"NOTE     {n}")
    lines.append(f"gate: {rep.verdict.upper()} (exit {rep.exit_code})")
    return "\n".join(lines)


def _md_cell(s: str) -> str:
    return s.replace("|", "\\|").replace("\n", " ")


def summary_line(rep: GateReport) -> str:
    """One line a release manager reads first: counts by verdict, rules with no scenario, what blocks."""
    kinds = ("pass", "fail", "flaky", "unjudged")
    counts = {k: sum(1 for s in rep.scenarios if s.verdict == k) for k in kinds}
    blocking = [s for s in rep.scenarios if s.verdict in ("fail", "flaky", "unjudged")]
    first = ", ".join(
        f"`{s.scenario}` ({s.reasons[0] if s.reasons else _MARK[s.verdict]})" for s in blocking[:3]
    )
    more = f" and {len(blocking) - 3} more" if len(blocking) > 3 else ""
    return (
        f"**{len(rep.scenarios)} scenarios: {counts['pass']} pass, {counts['fail']} fail, "
        f"{counts['flaky']} flaky, {counts['unjudged']} not judged; "
        f"{len(rep.missing)} rules with no scenario; "
        f"blocking: {first + more if blocking else 'none'}**"
    )


def markdown(rep: GateReport) -> str:
    """gate.md: the verdict, the table, then every reason."""
    out = [
        f"# Release gate: {rep.verdict.upper()} (exit {rep.exit_code})",
        "",
        summary_line(rep),
        "",
        f"- policy: `{rep.policy}`",
        f"- results: `{rep.results}`",
        *([f"- baseline: `{rep.baseline}`"] if rep.baseline else []),
        f"- judged at: {rep.generated_at}",
        "",
        "| " + " | ".join(_HEAD) + " |",
        "|" + "---|" * len(_HEAD),
        *("| " + " | ".join(_md_cell(c) for c in r) + " |" for r in _rows(rep)),
        "",
    ]
    for title, items in (("Missing", rep.missing), ("Input errors", rep.problems), ("Notes", rep.notes)):
        if items:
            out += [f"## {title}", "", *(f"- {_md_cell(i)}" for i in items), ""]
    detail = [s for s in rep.scenarios if s.reasons]
    if detail:
        out += ["## Reasons", ""]
        for s in detail:
            out.append(f"### `{s.scenario}`: {_MARK[s.verdict]}")
            out += [f"- {_md_cell(r)}" for r in s.reasons] + [""]
    return "\n".join(out)


def junit_xml(rep: GateReport) -> str:
    """JUnit XML: one testcase per scenario, per missing rule, and one for input errors.

    A scenario that blocks the release is a <failure>; one that could not be judged an <error>.
    """
    cases: list[ET.Element] = []

    def case(classname: str, name: str, kind: str | None, message: str, text: str) -> None:
        tc = ET.Element("testcase", classname=classname, name=name, time="0")
        if kind is not None:
            el = ET.SubElement(tc, kind, message=message[:500])
            if kind != "skipped":
                el.set("type", NO_SHIP if kind == "failure" else UNJUDGED)
            el.text = text
        cases.append(tc)

    for s in rep.scenarios:
        kind = {
            "fail": "failure",
            "flaky": "failure",
            "unjudged": "error",
            "skipped": "skipped",
            "ignored": "skipped",
        }.get(s.verdict)
        msg = s.reasons[0] if s.reasons else s.verdict
        case("hil.gate.scenario", s.scenario, kind, msg, "\n".join(s.reasons))
    for m in rep.missing:
        case("hil.gate.policy", m.split(":")[0], "error", m, m)
    if rep.problems:
        case("hil.gate.inputs", "inputs", "error", rep.problems[0], "\n".join(rep.problems))
    if not cases:
        case("hil.gate", "verdict", "error" if rep.exit_code else None, rep.verdict, rep.verdict)
    failures = sum(1 for c in cases if c.find("failure") is not None)
    errors = sum(1 for c in cases if c.find("error") is not None)
    skipped = sum(1 for c in cases if c.find("skipped") is not None)
    attrs = {
        "tests": str(len(cases)),
        "failures": str(failures),
        "errors": str(errors),
        "skipped": str(skipped),
    }
    root = ET.Element("testsuites", name="hil gate", **attrs)
    suite = ET.SubElement(
        root, "testsuite", name=f"hil gate: {rep.verdict}", timestamp=rep.generated_at, **attrs
    )
    suite.extend(cases)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def write_outputs(rep: GateReport, out_dir: str | Path) -> dict[str, Path]:
    """Write gate.json, gate.md and gate-junit.xml into `out_dir`; returns their paths."""
    d = Path(out_dir)
    d.mkdir(parents=True, exist_ok=True)
    paths = {"json": d / "gate.json", "md": d / "gate.md", "junit": d / "gate-junit.xml"}
    paths["json"].write_text(json.dumps(rep.to_dict(), indent=1, default=str) + "\n")
    paths["md"].write_text(markdown(rep))
    paths["junit"].write_text(junit_xml(rep))
    return paths
