"""The release gate: from a run's Allure results to ship (0), do not ship (1) or could not judge (2).

A release manager gates a site rollout on this, so it is strict in one direction: it says "ship" only when
every scenario the policy requires passed as often as the policy asks, each with its verdict file and the
history it was computed from, within the policy's bounds. Anything it cannot read, any unknown verdict, any
missing or skipped required scenario and any lab fault makes it "could not judge" (2), never "ship"; a proven
defect (a failed scenario, an invalid verdict, a bound exceeded) makes it "do not ship" (1).

Inputs (docs/gate.md): the policy (`gate.yaml`, validated with pydantic, unknown keys refused), and the Allure
results directory: each `*-result.json` (status, labels, parameters, attachments, with those of its fixtures'
`*-container.json`) and its `hil-verdicts.json` and `history.jsonl` attachments, which `harness.report`
writes. The verdicts are classified by `harness.report.findings`, the same code that writes the scenarios'
failure messages, so the report's categories and the gate agree.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal
from xml.etree import ElementTree as ET

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from harness import report
from harness.history import History, HistoryError, HistoryWarning

EXIT_SHIP, EXIT_NO_SHIP, EXIT_UNJUDGED = 0, 1, 2
SHIP, NO_SHIP, UNJUDGED = "ship", "do not ship", "could not judge"
_EXIT = {SHIP: EXIT_SHIP, NO_SHIP: EXIT_NO_SHIP, UNJUDGED: EXIT_UNJUDGED}

DEFAULT_POLICY = report.REPO_ROOT / "gate.yaml"
STATUSES = ("passed", "failed", "broken", "skipped", "unknown")


# -- the policy -------------------------------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Recovery(_Strict):
    """Recovery-time bounds in seconds, over the agents of one scenario run (nearest-rank percentiles)."""

    p50: float | None = Field(None, gt=0)
    p95: float | None = Field(None, gt=0)
    max: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _one(self) -> Recovery:
        if self.p50 is None and self.p95 is None and self.max is None:
            raise ValueError("give at least one of p50, p95, max")
        return self


class Rule(_Strict):
    """Scenarios whose id matches `match` (a regex, searched): how often they must pass, within what."""

    match: str
    required: bool = True
    repeat: int | None = Field(None, ge=1)
    recovery: Recovery | None = None
    verdicts: bool = True

    @field_validator("match")
    @classmethod
    def _regex(cls, v: str) -> str:
        try:
            re.compile(v)
        except re.error as e:
            raise ValueError(f"not a valid regular expression: {e}") from None
        return v


class Policy(_Strict):
    """The release policy (gate.yaml); docs/gate.md explains each field."""

    version: Literal[1] = 1
    repeat: int = Field(1, ge=1)
    max_lost_agents: int = Field(0, ge=0)
    max_split_brain: int = Field(0, ge=0)
    min_scenarios: int = Field(1, ge=0)
    unlisted: Literal["judge", "ignore"] = "judge"
    scenarios: list[Rule] = Field(default_factory=list)


class GateInputError(Exception):
    """The policy or the results cannot be read; one (file, field, problem) per line."""

    def __init__(self, problems: Sequence[tuple[str, str, str]]):
        self.problems = list(problems)
        super().__init__("; ".join(_problem_line(p) for p in self.problems))

    def lines(self) -> list[str]:
        return [_problem_line(p) for p in self.problems]


def _problem_line(p: tuple[str, str, str]) -> str:
    file, where, what = p
    return ": ".join(x for x in (file, where, what) if x)


def _loc(loc: Iterable[Any]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def load_policy(path: str | Path) -> Policy:
    """Read and validate a policy; raise GateInputError naming the file and each bad field."""
    p = Path(path)
    f = str(path)
    try:
        raw = yaml.safe_load(p.read_text())
    except OSError as e:
        raise GateInputError([(f, "", f"cannot read the policy: {e.strerror or e}")]) from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise GateInputError([(f, where, f"not valid YAML: {getattr(e, 'problem', e)}")]) from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise GateInputError([(f, "", "the policy must be a mapping (version, repeat, scenarios, ...)")])
    try:
        return Policy.model_validate(raw)
    except ValidationError as e:
        problems = []
        for err in e.errors():
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = "unknown key"
            elif err["type"] == "missing":
                msg = "required field is missing"
            elif "input" in err and err["type"].endswith("_type"):
                msg += f" (got {type(err['input']).__name__} {err['input']!r})"
            problems.append((f, _loc(err["loc"]), msg))
        raise GateInputError(problems) from None


def recovery_bound(policy: Policy | str | Path | None, scenario: str, default: float) -> float:
    """The per-agent recovery bound a scenario should check with (`check_recovery_time(bound=...)`): the
    smallest `recovery.max` of the rules whose `match` finds `scenario` (its Allure id or its name), else
    `default`. So the checker's bound and the gate's are one number, set in one file."""
    if policy is None:
        return default
    pol = policy if isinstance(policy, Policy) else load_policy(policy)
    bounds = [
        r.recovery.max
        for r in pol.scenarios
        if r.recovery is not None and r.recovery.max is not None and re.search(r.match, scenario)
    ]
    return min(bounds) if bounds else default


# -- reading the results ----------------------------------------------------------------------------------


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


def _attachments(
    node: Mapping[str, Any], where: str, problems: list[tuple[str, str, str]], file: str
) -> list[Attachment]:
    out: list[Attachment] = []
    atts = node.get("attachments") or []
    if not isinstance(atts, list):
        problems.append((file, f"{where}attachments", "must be a list"))
        atts = []
    for k, a in enumerate(atts):
        if not isinstance(a, Mapping) or not isinstance(a.get("source"), str):
            problems.append((file, f"{where}attachments[{k}]", "needs a source file name"))
            continue
        out.append(Attachment(str(a.get("name") or a["source"]), a["source"], a.get("type")))
    steps = node.get("steps") or []
    if isinstance(steps, list):
        for k, s in enumerate(steps):
            if isinstance(s, Mapping):
                out += _attachments(s, f"{where}steps[{k}].", problems, file)
    return out


def scenario_id(result: Mapping[str, Any]) -> str:
    """`fullName` (module#function, as allure-pytest writes it) plus its parameters, e.g.
    `scenarios.test_unplanned#test_pbx_killed[fault=port]` (string values without their repr quotes);
    repeats of one test share the id."""
    base = str(result.get("fullName") or result.get("name") or "?")
    params = []
    for p in result.get("parameters") or []:
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


def _read_json_object(path: Path, problems: list[tuple[str, str, str]]) -> Mapping[str, Any] | None:
    """The JSON object in a file, or None with the reason added to ``problems``."""
    try:
        obj = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        problems.append((str(path), "", f"not readable JSON: {e}"))
        return None
    if not isinstance(obj, Mapping):
        problems.append((str(path), "", "must be a JSON object"))
        return None
    return obj


def read_results(results_dir: str | Path) -> tuple[list[TestRun], list[tuple[str, str, str]]]:
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
    problems: list[tuple[str, str, str]] = []
    extra: dict[str, list[Attachment]] = {}
    for n in names:
        if not n.endswith("-container.json"):
            continue
        f = str(d / n)
        c = _read_json_object(d / n, problems)
        if c is None:
            continue
        fixture_atts: list[Attachment] = []
        for key in ("befores", "afters"):
            for k, fx in enumerate(c.get(key) or []):
                if isinstance(fx, Mapping):
                    fixture_atts += _attachments(fx, f"{key}[{k}].", problems, f)
        for child in c.get("children") or []:
            extra.setdefault(str(child), []).extend(fixture_atts)
    runs: list[TestRun] = []
    for n in names:
        if not n.endswith("-result.json"):
            continue
        f = str(d / n)
        r = _read_json_object(d / n, problems)
        if r is None:
            continue
        status = r.get("status")
        if status not in STATUSES:
            problems.append((f, "status", f"must be one of {', '.join(STATUSES)}, got {status!r}"))
            continue
        if not isinstance(r.get("fullName") or r.get("name"), str):
            problems.append((f, "fullName", "missing: the result names no test"))
            continue
        labels: dict[str, list[str]] = {}
        for lab in r.get("labels") or []:
            if isinstance(lab, Mapping) and "name" in lab:
                labels.setdefault(str(lab["name"]), []).append(str(lab.get("value", "")))
        details = r.get("statusDetails") if isinstance(r.get("statusDetails"), Mapping) else {}
        uuid = str(r.get("uuid") or n.removesuffix("-result.json"))
        runs.append(
            TestRun(
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
        )
    return runs, problems


# -- judging ----------------------------------------------------------------------------------------------

Outcome = Literal["pass", "defect", "incomplete", "skipped"]
_WORST = {"pass": 0, "skipped": 1, "incomplete": 2, "defect": 3}


@dataclass
class RunJudgement:
    file: str
    uuid: str
    status: str
    outcome: Outcome
    reasons: list[str] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)


@dataclass
class ScenarioJudgement:
    scenario: str
    listed: bool
    required: bool
    needed: int
    passes: int
    verdict: Literal["pass", "fail", "unjudged", "skipped", "info", "ignored"]
    reasons: list[str]
    rules: list[int]
    labels: dict[str, list[str]]
    figures: dict[str, Any]
    runs: list[RunJudgement]


@dataclass
class GateReport:
    verdict: str
    exit_code: int
    policy: str
    results: str
    generated_at: str
    scenarios: list[ScenarioJudgement] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _first_line(s: str) -> str:
    """The message's first line, from our prefix on when it has one (drops "AssertionError: ")."""
    line = s.strip().splitlines()[0] if s.strip() else ""
    for p in (report.DEFECT, report.LAB_FAULT, report.EVIDENCE_INCOMPLETE):
        if p in line:
            return line[line.index(p) :]
    return line


def _read_verdicts(
    path: Path, shown: str
) -> tuple[dict[str, Any] | None, list[report.Finding], list[Any], str | None]:
    """(payload, findings, verdicts, problem) of one verdict attachment."""
    try:
        payload = json.loads(path.read_text())
    except OSError as e:
        return None, [], [], f"{shown}: cannot read: {e.strerror or e}"
    except ValueError as e:
        return None, [], [], f"{shown}: not valid JSON: {e}"
    if not isinstance(payload, Mapping):
        return None, [], [], f"{shown}: must be a JSON object"
    if payload.get("schema") != report.VERDICTS_SCHEMA:
        return (
            None,
            [],
            [],
            f"{shown}: schema: must be {report.VERDICTS_SCHEMA!r}, got {payload.get('schema')!r}",
        )
    raw = payload.get("verdicts")
    if not isinstance(raw, list):
        return None, [], [], f"{shown}: verdicts: must be a list"
    vs = []
    for k, v in enumerate(raw):
        try:
            vs.append(report.as_verdict(v))
        except ValueError as e:
            return None, [], [], f"{shown}: verdicts[{k}].{e}"
    return dict(payload), report.findings(vs), report.leaves(vs), None


def _judge_run(
    run: TestRun, rules: Sequence[Rule], policy: Policy, results: Path, problems: list[str]
) -> RunJudgement:
    j = RunJudgement(run.file, run.uuid, run.status, "pass")
    outcome: list[Outcome] = []

    def add(o: Outcome, why: str) -> None:
        outcome.append(o)
        j.reasons.append(why)

    msg = _first_line(run.message)
    if run.status == "skipped":
        add("skipped", f"skipped: {msg}" if msg else "skipped")
    elif run.status == "failed":
        if report.DEFECT in run.message or not (
            report.LAB_FAULT in run.message or report.EVIDENCE_INCOMPLETE in run.message
        ):
            add("defect", f"failed: {msg}" if msg else "failed")
        else:
            add("incomplete", f"failed on the lab, not the product: {msg}")
    elif run.status == "broken":
        if report.DEFECT in run.message:
            add("defect", f"broken: {msg}")
        else:
            add("incomplete", f"broken (lab or harness error): {msg}" if msg else "broken")
    elif run.status != "passed":
        add("incomplete", f"status {run.status}")

    vfiles = [a for a in run.attachments if a.name == report.VERDICTS_NAME]
    need_verdicts = any(r.verdicts for r in rules)
    if not vfiles:
        if need_verdicts and run.status != "skipped":
            add("incomplete", f"no {report.VERDICTS_NAME} attached")
    hist_atts = {a.source: a for a in run.attachments if a.name == report.HISTORY_NAME}
    lost: set[str] = set()
    split: set[str] = set()
    recoveries: list[Any] = []
    for att in vfiles:
        shown = f"{results / att.source}"
        payload, fs, leaves, problem = _read_verdicts(results / att.source, shown)
        if problem or payload is None:
            problems.append(problem or shown)
            add("incomplete", problem or shown)
            continue
        hist = payload.get("history")
        if not isinstance(hist, Mapping) or not isinstance(hist.get("sha256"), str):
            add("incomplete", f"{report.VERDICTS_NAME} names no history: the verdict cannot be checked again")
        else:
            _check_history(hist["sha256"], hist_atts, results, add)
        for f in fs:
            if f.prefix == report.DEFECT_LOST_AGENT:
                lost.update(f.agents or (f"?{len(lost)}",))
            elif f.prefix == report.DEFECT_SPLIT_BRAIN:
                split.update(f.agents or (f"?{len(split)}",))
            elif f.kind == "defect":
                add("defect", f.line())
            else:
                add("incomplete", f.line())
        recoveries += [v for v in leaves if v.name == "recovery_time"]
    if lost:
        j.figures["lost_agents"] = len(lost)
        if len(lost) > policy.max_lost_agents:
            who = ", ".join(sorted(lost)[:5])
            add("defect", f"{len(lost)} lost agents (policy allows {policy.max_lost_agents}): {who}")
    if split:
        j.figures["split_brain"] = len(split)
        if len(split) > policy.max_split_brain:
            add("defect", f"{len(split)} agents in a split brain (policy allows {policy.max_split_brain})")
    for v in recoveries:
        for q in ("p50", "p95", "max"):
            if v.figures.get(q) is not None:
                j.figures[q] = max(j.figures.get(q, 0.0), float(v.figures[q]))
    for rule in rules:
        if rule.recovery is None or run.status == "skipped":
            continue
        if not recoveries:
            add("incomplete", f"no recovery_time verdict to check the bound of rule {rule.match!r}")
            continue
        for v in recoveries:
            for q in ("p50", "p95", "max"):
                bound = getattr(rule.recovery, q)
                if bound is None:
                    continue
                val = v.figures.get(q)
                if not isinstance(val, int | float):
                    add("incomplete", f"recovery_time has no {q} figure ({v.reason})")
                elif val > bound:
                    add("defect", f"{q} recovery {val}s over the policy bound {bound}s")
    j.outcome = max(outcome, key=lambda o: _WORST[o]) if outcome else "pass"
    return j


def _check_history(
    sha: str, hist_atts: Mapping[str, Attachment], results: Path, add: Callable[[Outcome, str], None]
) -> None:
    """The history the verdicts name must be attached, match their sha256, and read back as a history."""
    if not hist_atts:
        add("incomplete", f"{report.HISTORY_NAME} not attached")
        return
    for src in hist_atts:
        p = results / src
        try:
            data = p.read_bytes()
        except OSError as e:
            add("incomplete", f"{p}: history attachment missing: {e.strerror or e}")
            continue
        if hashlib.sha256(data).hexdigest() != sha:
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", HistoryWarning)
                History.load(p)
        except (HistoryError, ValueError) as e:
            add("incomplete", f"{p}: history does not read back: {e}")
        return
    add("incomplete", f"no attached {report.HISTORY_NAME} matches the sha256 in {report.VERDICTS_NAME}")


def judge(policy: Policy, runs: Sequence[TestRun], results: Path, problems: list[str]) -> GateReport:
    """Apply the policy to the runs; the report's verdict and exit code follow docs/gate.md."""
    by_scenario: dict[str, list[TestRun]] = {}
    for r in sorted(runs, key=lambda r: (r.scenario, r.start or 0, r.uuid)):
        by_scenario.setdefault(r.scenario, []).append(r)
    rx = [re.compile(rule.match) for rule in policy.scenarios]
    matched_rules: set[int] = set()
    out: list[ScenarioJudgement] = []
    for sid, rs in by_scenario.items():
        idx = [k for k, c in enumerate(rx) if c.search(sid)]
        matched_rules.update(idx)
        rules = [policy.scenarios[k] for k in idx]
        listed = bool(rules)
        if not listed and policy.unlisted == "ignore":
            out.append(ScenarioJudgement(sid, False, False, 0, 0, "ignored", [], [], rs[0].labels, {}, []))
            continue
        required = any(r.required for r in rules)
        needed = max((r.repeat or policy.repeat for r in rules), default=0)
        judged = [_judge_run(r, rules, policy, results, problems) for r in rs]
        passes = sum(j.outcome == "pass" for j in judged)
        figures: dict[str, Any] = {}
        for jr in judged:
            for k, v in jr.figures.items():
                figures[k] = max(figures.get(k, v), v)
        reasons = [f"run {k + 1}: {why}" for k, jr in enumerate(judged) for why in jr.reasons]
        bounds = [r.recovery for r in rules if r.recovery is not None]
        if bounds:
            figures["bound"] = {
                q: min(getattr(b, q) for b in bounds if getattr(b, q) is not None)
                for q in ("p50", "p95", "max")
                if any(getattr(b, q) is not None for b in bounds)
            }
        verdict: Literal["pass", "fail", "unjudged", "skipped", "info", "ignored"]
        if any(j.outcome == "defect" for j in judged):
            verdict = "fail"
        elif not listed:
            verdict = "info"
        elif any(j.outcome == "incomplete" for j in judged):
            verdict = "unjudged"
        elif passes >= needed:
            verdict = "pass"
        elif passes == 0 and not required:
            verdict = "skipped"
        else:
            verdict = "unjudged"
            reasons.append(f"passed {passes} times, the policy needs {needed}")
        out.append(
            ScenarioJudgement(
                sid, listed, required, needed, passes, verdict, reasons, idx, rs[0].labels, figures, judged
            )
        )
    missing = [
        f"rule {k + 1} ({rule.match!r}): no scenario in the results matches it"
        for k, rule in enumerate(policy.scenarios)
        if rule.required and k not in matched_rules
    ]
    rep = GateReport(
        verdict=SHIP,
        exit_code=EXIT_SHIP,
        policy="",
        results=str(results),
        generated_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        scenarios=out,
        missing=missing,
        problems=list(problems),
    )
    counted = [s for s in out if s.verdict not in ("ignored",)]
    if len(counted) < policy.min_scenarios:
        rep.missing.append(
            f"{len(counted)} scenarios in the results, the policy needs at least {policy.min_scenarios}"
        )
    if any(s.verdict == "fail" for s in out) and not problems:
        rep.verdict = NO_SHIP
    elif problems or rep.missing or any(s.verdict == "unjudged" for s in out):
        rep.verdict = UNJUDGED
    for s in out:
        if s.verdict == "info" and any(j.outcome == "incomplete" for j in s.runs):
            rep.notes.append(
                f"{s.scenario} (not in the policy) could not be judged; it does not hold the gate"
            )
    rep.exit_code = _EXIT[rep.verdict]
    return rep


def run_gate(policy_path: str | Path | None, results: str | Path) -> GateReport:
    """Read policy and results and judge; input errors become a "could not judge" report, never a raise."""
    ppath = (
        Path(policy_path)
        if policy_path
        else (Path("gate.yaml") if Path("gate.yaml").exists() else DEFAULT_POLICY)
    )
    now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    try:
        policy = load_policy(ppath)
        runs, probs = read_results(results)
    except GateInputError as e:
        return GateReport(UNJUDGED, EXIT_UNJUDGED, str(ppath), str(results), now, problems=e.lines())
    rep = judge(policy, runs, Path(results), [_problem_line(p) for p in probs])
    rep.policy = str(ppath)
    return rep


# -- output -----------------------------------------------------------------------------------------------

_MARK = {
    "pass": "PASS",
    "fail": "FAIL",
    "unjudged": "UNJUDGED",
    "skipped": "skipped",
    "info": "info",
    "ignored": "ignored",
}


def _fmt(x: Any) -> str:
    return "-" if x is None else (f"{x:g}" if isinstance(x, float) else str(x))


def _rows(rep: GateReport) -> list[list[str]]:
    rows = []
    for s in rep.scenarios:
        b = s.figures.get("bound") or {}
        bound = "/".join(f"{q} {_fmt(v)}" for q, v in b.items()) or "-"
        why = s.reasons[0] if s.verdict in ("fail", "unjudged") and s.reasons else ""
        if s.verdict == "fail":
            why = next(
                (r for r in s.reasons if "PRODUCT DEFECT" in r or "over the policy" in r or "failed" in r),
                why,
            )
        rows.append(
            [
                s.scenario,
                str(len(s.runs)),
                f"{s.passes}/{s.needed}" if s.listed else str(s.passes),
                _fmt(s.figures.get("p95")),
                _fmt(s.figures.get("max")),
                bound,
                _MARK[s.verdict],
                why,
            ]
        )
    return rows


_HEAD = ["scenario", "runs", "passed", "p95 s", "max s", "bound s", "verdict", "why"]


def table(rep: GateReport, width: int = 160) -> str:
    """The verdict table for a terminal."""
    rows = _rows(rep)
    cols = [max(len(h), *(len(r[k]) for r in rows)) if rows else len(h) for k, h in enumerate(_HEAD[:-1])]
    cols[0] = min(cols[0], 60)
    lines = []
    for r in [_HEAD, *rows]:
        cells = [c[: cols[k]].ljust(cols[k]) for k, c in enumerate(r[:-1])]
        line = "  ".join(cells) + "  " + r[-1]
        lines.append(line[:width].rstrip())
    for m in rep.missing:
        lines.append(f"MISSING  {m}")
    for p in rep.problems:
        lines.append(f"ERROR    {p}")
    for n in rep.notes:
        lines.append(f"NOTE     {n}")
    lines.append(f"gate: {rep.verdict.upper()} (exit {rep.exit_code})")
    return "\n".join(lines)


def _md_cell(s: str) -> str:
    return s.replace("|", "\\|").replace("\n", " ")


def markdown(rep: GateReport) -> str:
    """gate.md: the verdict, the table, then every reason."""
    out = [
        f"# Release gate: {rep.verdict.upper()} (exit {rep.exit_code})",
        "",
        f"- policy: `{rep.policy}`",
        f"- results: `{rep.results}`",
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
        kind = {"fail": "failure", "unjudged": "error", "skipped": "skipped", "ignored": "skipped"}.get(
            s.verdict
        )
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
