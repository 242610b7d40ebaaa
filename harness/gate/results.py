"""Reading a run's Allure results: each test result with its labels and attachments (its fixtures' too),
and the verdict files (`hil-verdicts.json`) attached to them.

Nothing in a results directory can crash the gate: an unreadable or malformed file is a problem naming the
file, the field and what is wrong, and the run it belongs to cannot be judged.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import report
from harness.checks import Verdict
from harness.gate.inputs import GateInputError, Problem, read_json_object

__all__ = ["STATUSES", "Attachment", "TestRun", "VerdictFile", "read_results", "read_verdicts", "scenario_id"]

STATUSES = ("passed", "failed", "broken", "skipped", "unknown")


@dataclass
class Attachment:
    name: str
    source: str
    type: str | None = None


@dataclass
class TestRun:
    """One Allure test result: one run of one scenario."""

    file: str
    uuid: str
    scenario: str
    name: str
    status: str
    message: str
    start: int | None
    labels: dict[str, list[str]]
    attachments: list[Attachment]


def _list(node: Mapping[str, Any], key: str, where: str, file: str, problems: list[Problem]) -> list[Any]:
    """``node[key]`` when it is a list (absent or null: empty); else a problem, and empty."""
    v = node.get(key)
    if v is None:
        return []
    if not isinstance(v, list):
        problems.append((file, f"{where}{key}", f"must be a list, got {type(v).__name__}"))
        return []
    return v


def _attachments(node: Mapping[str, Any], where: str, problems: list[Problem], file: str) -> list[Attachment]:
    out: list[Attachment] = []
    for k, a in enumerate(_list(node, "attachments", where, file, problems)):
        if not isinstance(a, Mapping) or not isinstance(a.get("source"), str):
            problems.append((file, f"{where}attachments[{k}]", "needs a source file name"))
            continue
        out.append(Attachment(str(a.get("name") or a["source"]), a["source"], a.get("type")))
    for k, s in enumerate(_list(node, "steps", where, file, problems)):
        if isinstance(s, Mapping):
            out += _attachments(s, f"{where}steps[{k}].", problems, file)
    return out


def scenario_id(result: Mapping[str, Any]) -> str:
    """`fullName` (module#function, as allure-pytest writes it) plus its parameters, e.g.
    `scenarios.test_unplanned#test_pbx_killed[fault=port]` (string values without their repr quotes);
    repeats of one test share the id."""
    base = str(result.get("fullName") or result.get("name") or "?")
    params = []
    raw = result.get("parameters")
    for p in raw if isinstance(raw, list) else []:
        if (
            not isinstance(p, Mapping)
            or p.get("excluded")
            or str(p.get("name", "")).startswith("__pytest_repeat")
        ):
            continue
        v = str(p.get("value"))
        if len(v) >= 2 and v[0] == v[-1] and v[0] in "'\"":
            v = v[1:-1]  # allure-pytest writes repr(): 'sha' -> sha
        params.append(f"{p.get('name')}={v}")
    return f"{base}[{','.join(params)}]" if params else base


def _fixture_attachments(d: Path, names: list[str], problems: list[Problem]) -> dict[str, list[Attachment]]:
    """Attachments of function-scoped fixtures (`*-container.json`), by the uuid of the test they served."""
    extra: dict[str, list[Attachment]] = {}
    for n in names:
        if not n.endswith("-container.json"):
            continue
        f = str(d / n)
        c = read_json_object(d / n, "Allure container file", problems)
        if c is None:
            continue
        fixture_atts: list[Attachment] = []
        for key in ("befores", "afters"):
            for k, fx in enumerate(_list(c, key, "", f, problems)):
                if isinstance(fx, Mapping):
                    fixture_atts += _attachments(fx, f"{key}[{k}].", problems, f)
        for child in _list(c, "children", "", f, problems):
            extra.setdefault(str(child), []).extend(fixture_atts)
    return extra


def _run(d: Path, n: str, extra: dict[str, list[Attachment]], problems: list[Problem]) -> TestRun | None:
    f = str(d / n)
    r = read_json_object(d / n, "Allure result file", problems)
    if r is None:
        return None
    status = r.get("status")
    if status not in STATUSES:
        problems.append((f, "status", f"must be one of {', '.join(STATUSES)}, got {status!r}"))
        return None
    if not isinstance(r.get("fullName") or r.get("name"), str):
        problems.append((f, "fullName", "missing: the result names no test"))
        return None
    if "parameters" in r and r["parameters"] is not None and not isinstance(r["parameters"], list):
        problems.append((f, "parameters", f"must be a list, got {type(r['parameters']).__name__}"))
        return None
    labels: dict[str, list[str]] = {}
    for k, lab in enumerate(_list(r, "labels", "", f, problems)):
        if isinstance(lab, Mapping) and isinstance(lab.get("name"), str):
            labels.setdefault(lab["name"], []).append(str(lab.get("value", "")))
        else:
            problems.append((f, f"labels[{k}]", "must be an object with a name"))
    details = r.get("statusDetails") if isinstance(r.get("statusDetails"), Mapping) else {}
    uuid = str(r.get("uuid") or n.removesuffix("-result.json"))
    return TestRun(
        file=f,
        uuid=uuid,
        scenario=scenario_id(r),
        name=str(r.get("name") or r.get("fullName")),
        status=str(status),
        message=str(details.get("message") or ""),
        start=r.get("start") if isinstance(r.get("start"), int) else None,
        labels=labels,
        attachments=_attachments(r, "", problems, f) + extra.get(uuid, []),
    )


def read_results(results_dir: str | Path) -> tuple[list[TestRun], list[Problem]]:
    """Every test result of a directory, and the problems met (file, field, what) reading them.

    An unreadable directory raises GateInputError; an unreadable result is a problem, not a crash.
    """
    d = Path(results_dir)
    if not d.exists():
        raise GateInputError([(str(results_dir), "", "no such results directory")])
    if not d.is_dir():
        raise GateInputError([(str(results_dir), "", "not a directory")])
    try:
        names = sorted(p.name for p in d.iterdir())
    except OSError as e:
        raise GateInputError([(str(results_dir), "", f"cannot list it: {e.strerror or e}")]) from None
    problems: list[Problem] = []
    extra = _fixture_attachments(d, names, problems)
    runs = [r for n in names if n.endswith("-result.json") for r in [_run(d, n, extra, problems)] if r]
    return runs, problems


@dataclass
class VerdictFile:
    """One `hil-verdicts.json`: its findings (each with category and kind), the checkers' own verdicts,
    and the sha256 of the history they were computed from (None if it names none)."""

    path: Path
    findings: list[report.Finding]
    verdicts: list[Verdict]
    history_sha256: str | None
    unexplained: list[Verdict]  # not valid, yet no finding names its check: the file contradicts itself


def _findings(raw: Any, verdicts: list[Verdict]) -> list[report.Finding]:
    """The file's findings; a file written before they were carried gets them from its verdicts."""
    if raw is None:
        try:
            return report.findings(verdicts)
        except (TypeError, ValueError) as e:  # a witness of a shape no checker writes
            raise ValueError(f"verdicts: cannot be classified: {e}") from None
    if not isinstance(raw, list):
        raise ValueError(f"findings: must be a list, got {type(raw).__name__}")
    out = []
    for k, f in enumerate(raw):
        try:
            out.append(report.Finding.from_dict(f))
        except ValueError as e:
            raise ValueError(f"findings[{k}].{e}") from None
    return out


def read_verdicts(path: Path) -> tuple[VerdictFile | None, Problem | None]:
    """One verdict attachment, or the problem (file, field, what) that makes it unreadable."""
    problems: list[Problem] = []
    payload = read_json_object(path, "verdict file", problems)
    if payload is None:
        return None, problems[0]
    f = str(path)
    if payload.get("schema") != report.VERDICTS_SCHEMA:
        return None, (f, "schema", f"must be {report.VERDICTS_SCHEMA!r}, got {payload.get('schema')!r}")
    raw = payload.get("verdicts")
    if not isinstance(raw, list):
        return None, (f, "verdicts", "must be a list")
    vs = []
    for k, v in enumerate(raw):
        try:
            vs.append(report.as_verdict(v))
        except ValueError as e:
            return None, (f, f"verdicts[{k}].{e}", "")
    try:
        leaves = report.leaves(vs)  # a composed verdict's parts are read here
    except ValueError as e:
        return None, (f, "verdicts", f"a composed verdict holds a part that is not a verdict: {e}")
    try:
        fs = _findings(payload.get("findings"), vs)
    except ValueError as e:
        return None, (f, str(e), "")
    hist = payload.get("history")
    sha = hist.get("sha256") if isinstance(hist, Mapping) else None
    named = {x.check for x in fs}
    unexplained = [v for v in leaves if v.result != "valid" and v.name not in named]
    return VerdictFile(path, fs, leaves, sha if isinstance(sha, str) else None, unexplained), None
