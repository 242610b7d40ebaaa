"""What a run leaves for people: Allure attachments, labels, environment and categories, and the HTML report.

Scenarios call three things (docs/gate.md has the contract):

- `failure_message(verdicts)` for their asserts. It starts with one of the prefixes below, so the report's
  categories tell a product defect (recovery over the bound, split brain, lost agent, lost call) from a lab
  fault (device unreachable, capture drops) or from evidence that is merely incomplete, and so the release
  gate can tell "do not ship" from "could not judge".
- `attach_run(history, verdicts, ...)` once per scenario, before asserting. It attaches the verdicts as
  `hil-verdicts.json` (what `hil gate` reads), the history, the pcaps, a ladder diagram, a timeline, a
  histogram, device logs and the topology.
- `apply_labels(...)` for epic / feature / story / severity / site.

The session writes `environment.properties` and `categories.json` once (`write_environment`,
`write_categories`), and `hil report` runs `build_report`, which turns the results into the HTML report with
Allure 3 (the npm package `allure`, installed in the repository's `node_modules` by `make setup`).

Everything here except the `attach_*`/`apply_labels` calls is pure or writes only the files it is given, so
it runs from a plain script too; without an Allure-enabled pytest session the attach calls do nothing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import shutil
import subprocess
import tempfile
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

from harness.checks import Verdict

log = logging.getLogger("hil.report")

REPO_ROOT = Path(__file__).resolve().parents[1]

# -- failure messages: the prefixes the categories and the gate match -------------------------------------

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

Kind = Literal["defect", "lab", "incomplete"]


@dataclass(frozen=True)
class Finding:
    """One thing wrong with a run, as a report line: its prefix, the check that found it and what it saw.

    `agents` are the agents it concerns (lost agents, agents in a split brain), for the gate's counts.
    """

    prefix: str
    check: str
    detail: str
    agents: tuple[str, ...] = ()

    @property
    def kind(self) -> Kind:
        if self.prefix.startswith(DEFECT):
            return "defect"
        return "lab" if self.prefix.startswith(LAB_FAULT) else "incomplete"

    def line(self) -> str:
        return f"{self.prefix}: {self.check}: {self.detail}"


_KIND_RANK = {"defect": 0, "lab": 1, "incomplete": 2}


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
        isinstance(w, Mapping) and {"name", "result", "reason"} <= w.keys() and w.get("name") in v.figures
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


def findings(verdicts: Verdict | Mapping[str, Any] | Iterable[Verdict | Mapping[str, Any]]) -> list[Finding]:
    """Classify every verdict that is not valid, most severe first (defects, lab faults, incomplete)."""
    out: list[Finding] = []
    for v in leaves(verdicts):
        if v.result == "valid":
            continue
        if v.result == "unknown":
            lossy = _capture_problem(v) and ("dropped" in v.reason or "incomplete" in v.reason)
            prefix = LAB_CAPTURE_DROPS if lossy else INCOMPLETE_UNKNOWN
            out.append(Finding(prefix, v.name, v.reason))
            continue
        ws = [w for w in v.witnesses if isinstance(w, Mapping)]
        if v.name == "recovery_time":
            lost = [w for w in ws if w.get("problem") == "lost"]
            late = [w for w in ws if w.get("problem") == "over_bound"]
            if lost:
                a = _agents(lost)
                out.append(
                    Finding(DEFECT_LOST_AGENT, v.name, f"{len(a)} agents not recovered: {_short(a)}", a)
                )
            if late:
                a = _agents(late)
                worst = max((w.get("recovery", 0) for w in late), default=0)
                bound = v.figures.get("bound")
                out.append(
                    Finding(
                        DEFECT_OVER_BOUND,
                        v.name,
                        f"{len(a)} agents over the {bound}s bound (slowest {worst}s): {_short(a)}",
                        a,
                    )
                )
            if not lost and not late:
                out.append(Finding(DEFECT_OTHER, v.name, v.reason))
        elif v.name == "no_split_brain":
            a = _agents(ws)
            detail = f"{v.reason}: {_short(a)}" if a and a[0] not in v.reason else v.reason
            out.append(Finding(DEFECT_SPLIT_BRAIN, v.name, detail, a))
        elif v.name == "single_registration":
            twice = [
                w for w in ws if len(w.get("registered_at") or []) > 1 or len(w.get("sessions_at") or []) > 1
            ]
            nowhere = [
                w for w in ws if w not in twice and not w.get("registered_at") and not w.get("sessions_at")
            ]
            wrong = [w for w in ws if w not in twice and w not in nowhere]
            for group, prefix, what in (
                (twice, DEFECT_DOUBLE_REGISTRATION, "registered or logged in more than once"),
                (nowhere, DEFECT_LOST_AGENT, "registered and logged in nowhere"),
                (wrong, DEFECT_WRONG_SITE, "not registered and logged in at the expected site"),
            ):
                if group:
                    a = _agents(group)
                    out.append(Finding(prefix, v.name, f"{len(a)} agents {what}: {_short(a)}", a))
            if not ws:
                out.append(Finding(DEFECT_OTHER, v.name, v.reason))
        elif v.name == "no_lost_call":
            out.append(Finding(DEFECT_LOST_CALL, v.name, v.reason))
        elif v.name == "faults_healed":
            out.append(Finding(LAB_FAULT_NOT_HEALED, v.name, v.reason))
        else:
            out.append(Finding(DEFECT_OTHER, v.name, v.reason))
    return sorted(out, key=lambda f: _KIND_RANK[f.kind])


def failure_message(verdicts: Verdict | Mapping[str, Any] | Iterable[Verdict | Mapping[str, Any]]) -> str:
    """The assert message of a scenario: one line per finding, the most severe first.

    `assert overall.valid, failure_message(verdicts)`: the first line starts with a prefix constant of this
    module, which the report's categories and the release gate match. A run with every verdict valid gets
    a plain "all N checks valid".
    """
    fs = findings(verdicts)
    if not fs:
        return f"all {len(leaves(verdicts))} checks valid"
    return "\n".join(f.line() for f in fs)


def lab_fault_message(exc: BaseException) -> str:
    """Message for a scenario that stops on a lab fault (e.g. `DeviceUnreachable`): `pytest.fail(...)`."""
    name = type(exc).__name__
    prefix = LAB_DEVICE_UNREACHABLE if name == "DeviceUnreachable" else f"{LAB_FAULT}: {name}"
    return f"{prefix}: {exc}"


# -- categories.json --------------------------------------------------------------------------------------


def _contains(text: str) -> str:
    """A regex that Allure 2 (Java `matches`, whole string) and Allure 3 (JS `test`, search) both accept as
    "the text contains this", across lines: no inline flags, which JavaScript lacks."""
    special = set("\\^$.|?*+()[]{}")
    return "[\\s\\S]*" + "".join("\\" + c if c in special else c for c in text) + "[\\s\\S]*"


_FAILED = ["failed"]
_ANY = ["failed", "broken"]

# First match wins in Allure 3: product defects before lab faults before incomplete evidence, so a run with
# a proven defect is filed as a defect whatever else went wrong.
CATEGORIES: list[dict[str, Any]] = [
    *(
        {
            "name": p.replace(DEFECT, "Product defect"),
            "matchedStatuses": _FAILED,
            "messageRegex": _contains(p),
        }
        for p in (
            DEFECT_LOST_AGENT,
            DEFECT_SPLIT_BRAIN,
            DEFECT_DOUBLE_REGISTRATION,
            DEFECT_WRONG_SITE,
            DEFECT_OVER_BOUND,
            DEFECT_LOST_CALL,
            DEFECT_OTHER,
        )
    ),
    {
        "name": "Lab fault: device unreachable",
        "matchedStatuses": _ANY,
        "messageRegex": _contains("DeviceUnreachable"),
    },
    {
        "name": "Lab fault: device unreachable",
        "matchedStatuses": _ANY,
        "messageRegex": _contains(LAB_DEVICE_UNREACHABLE),
    },
    {
        "name": "Lab fault: device unreachable",
        "matchedStatuses": ["broken"],
        "traceRegex": _contains("DeviceUnreachable"),
    },
    {
        "name": "Lab fault: capture drops",
        "matchedStatuses": _ANY,
        "messageRegex": _contains(LAB_CAPTURE_DROPS),
    },
    {
        "name": "Lab fault: fault not healed",
        "matchedStatuses": _ANY,
        "messageRegex": _contains(LAB_FAULT_NOT_HEALED),
    },
    {"name": "Lab fault: other", "matchedStatuses": _ANY, "messageRegex": _contains(LAB_FAULT + ": ")},
    {"name": "Evidence incomplete", "matchedStatuses": _ANY, "messageRegex": _contains(EVIDENCE_INCOMPLETE)},
    {"name": "Product defect: unclassified assertion", "matchedStatuses": _FAILED},
    {"name": "Harness error (test broken)", "matchedStatuses": ["broken"]},
]


def write_categories(results_dir: str | Path) -> Path:
    """Write `categories.json` (Allure 2 format, which Allure 3 reads too) into the results directory."""
    d = Path(results_dir)
    d.mkdir(parents=True, exist_ok=True)
    p = d / "categories.json"
    p.write_text(json.dumps(CATEGORIES, indent=1) + "\n")
    return p


# -- environment.properties -------------------------------------------------------------------------------


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def _flatten(prefix: str, v: Any, out: dict[str, str]) -> None:
    if isinstance(v, Mapping):
        for k, sub in v.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), sub, out)
    elif isinstance(v, list | tuple):
        out[prefix] = ", ".join(str(x) for x in v)
    elif v is not None:
        out[prefix] = str(v)


def environment_facts(
    facts: Mapping[str, Any] | None = None, *, topology: str | Path | None = None
) -> dict[str, str]:
    """The run's environment as flat `key -> text`: versions of hil, Python and the libraries that talk to
    devices, the topology, then `facts` (nested dicts become dotted keys), e.g.
    `{"kamailio": {"sha-pbx1": "5.6.3"}, "switch": {"sha-sw1": {"version": "15.2(7)E"}},
    "phone": {"sha-phone1": {"firmware": "66.86.0.15"}}}`."""
    out: dict[str, str] = {
        "hil": _version("hil-failover-lab"),
        "python": platform.python_version(),
        "netmiko": _version("netmiko"),
        "paramiko": _version("paramiko"),
        "allure-pytest": _version("allure-pytest"),
        "os": f"{platform.system()} {platform.release()}",
    }
    if topology is not None:
        out["topology"] = str(topology)
        try:
            from harness import topology as topology_mod

            topo = topology_mod.load(topology)
            out["topology.name"] = topo.name
            out["topology.kind"] = topo.kind
            out["topology.sites"] = ", ".join(topo.sites)
            out["topology.agents"] = str(len(topo.agents()))
        except Exception as e:  # a report must not fail on the file the lab already validated or refused
            out["topology.error"] = str(e).splitlines()[0] if str(e) else type(e).__name__
    _flatten("", dict(facts or {}), out)
    return out


def _prop_escape(s: str, key: bool) -> str:
    out = []
    for i, c in enumerate(s):
        if c == "\\":
            out.append("\\\\")
        elif c == "\n":
            out.append("\\n")
        elif c == "\r":
            out.append("\\r")
        elif c == "\t":
            out.append("\\t")
        elif c in "=:#!" or (c == " " and (key or i == 0)):
            out.append("\\" + c)
        elif ord(c) > 0x7E or ord(c) < 0x20:
            out.append(f"\\u{ord(c):04x}" if ord(c) <= 0xFFFF else c)
        else:
            out.append(c)
    return "".join(out)


def properties_text(values: Mapping[str, str]) -> str:
    """Java .properties text (what Allure reads), keys and values escaped."""
    return "".join(f"{_prop_escape(k, True)}={_prop_escape(v, False)}\n" for k, v in values.items())


def write_environment(
    results_dir: str | Path, facts: Mapping[str, Any] | None = None, *, topology: str | Path | None = None
) -> Path:
    """Write `environment.properties` into the results directory (see `environment_facts`)."""
    d = Path(results_dir)
    d.mkdir(parents=True, exist_ok=True)
    p = d / "environment.properties"
    p.write_text(properties_text(environment_facts(facts, topology=topology)), encoding="latin-1")
    return p


# -- labels -----------------------------------------------------------------------------------------------

SEVERITIES = ("blocker", "critical", "normal", "minor", "trivial")


def labels(
    *,
    epic: str | None = None,
    feature: str | None = None,
    story: str | None = None,
    severity: str | None = None,
    site: str | Sequence[str] | None = None,
) -> list[tuple[str, str]]:
    """The (name, value) Allure labels of a scenario; `site` may name several sites."""
    if severity is not None and severity not in SEVERITIES:
        raise ValueError(f"severity must be one of {', '.join(SEVERITIES)}, got {severity!r}")
    out = [
        (n, v)
        for n, v in (("epic", epic), ("feature", feature), ("story", story), ("severity", severity))
        if v
    ]
    sites = [site] if isinstance(site, str) else list(site or [])
    out += [("site", s) for s in sites]
    return out


def apply_labels(**kw: Any) -> list[tuple[str, str]]:
    """Put `labels(**kw)` on the running test (allure.dynamic); returns them."""
    import allure

    pairs = labels(**kw)
    for name, value in pairs:
        allure.dynamic.label(name, value)
    return pairs


# -- attachments ------------------------------------------------------------------------------------------

VERDICTS_SCHEMA = "hil-verdicts/1"
VERDICTS_NAME = "hil-verdicts.json"
HISTORY_NAME = "history.jsonl"
LADDER_NAME = "ladder.svg"
TIMELINE_NAME = "timeline.png"
HISTOGRAM_NAME = "recovery-histogram.png"
TOPOLOGY_NAME = "topology.yaml"
PCAP_MIME = "application/vnd.tcpdump.pcap"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verdicts_payload(
    verdicts: Sequence[Verdict],
    *,
    history: str | Path | None = None,
    scenario: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The verdict file the gate reads (docs/gate.md): every checker's verdict, the overall result, the
    failure message, and the sha256 of the history they were computed from (attached as `history.jsonl`).
    `extra` (timings, settings...) is kept under its own keys; it cannot replace the fields above."""
    from harness.checks import compose

    vs = [as_verdict(v) for v in verdicts]
    overall = compose(*leaves(vs)) if vs else compose()
    payload: dict[str, Any] = {
        "schema": VERDICTS_SCHEMA,
        "scenario": scenario,
        "result": overall.result,
        "message": "" if overall.valid else failure_message(vs),
        "verdicts": [v.to_dict() for v in vs],
    }
    if history is not None:
        hp = Path(history)
        payload["history"] = {"name": HISTORY_NAME, "sha256": _sha256(hp), "bytes": hp.stat().st_size}
    return {**dict(extra or {}), **payload}


def attach_verdicts(
    verdicts: Sequence[Verdict],
    *,
    history: str | Path | None = None,
    scenario: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Attach the verdict file (and the history it names) to the running test; returns the payload."""
    import allure

    payload = verdicts_payload(verdicts, history=history, scenario=scenario, extra=extra)
    allure.attach(
        json.dumps(payload, indent=1, default=str),
        name=VERDICTS_NAME,
        attachment_type=allure.attachment_type.JSON,
    )
    if history is not None:
        allure.attach.file(str(history), name=HISTORY_NAME, attachment_type="text/plain", extension="jsonl")
    return payload


def _roster_extensions(events: Iterable[Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    for e in events:
        if getattr(e, "kind", None) == "roster" and isinstance(e.value, Mapping):
            for a, info in (e.value.get("agents") or {}).items():
                if isinstance(info, Mapping) and info.get("extension") is not None:
                    out[str(a)] = str(info["extension"])
    return out


def _cti_ports(topo: Any) -> list[int]:
    return sorted({d.spec.port for d in topo.of_kind("cti")}) if topo is not None else []


def attach_run(
    history: str | Path,
    verdicts: Sequence[Verdict],
    *,
    pcaps: Sequence[str | Path] = (),
    logs: Mapping[str, str | Path] | None = None,
    topology: str | Path | None = None,
    events: Iterable[Any] | None = None,
    scenario: str | None = None,
    sample: int = 4,
    window: tuple[float, float] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> list[str]:
    """Attach a scenario's evidence to the running Allure test; call it before asserting.

    In this order: the verdict file (`hil-verdicts.json`, what the gate reads) and the history, then the
    ladder diagram (from `events`, decoded capture events, else decoded from `pcaps`), the timeline and
    histogram (from each `recovery_time` verdict), the pcaps, the device `logs` (name -> file) and the
    topology. `extra` goes into the verdict file as is (e.g. timings). `window` is the ladder's time span
    in seconds around the first fault (default: 2 s before it to 2 s after the slowest recovery). A picture
    or file that cannot be made does not stop the others: the reason is attached as `attach-errors.txt`
    and logged. Returns the names attached.
    """
    import allure

    from harness import plots
    from harness.history import History

    names: list[str] = []
    errors: list[str] = []
    hist = Path(history)
    attach_verdicts(verdicts, history=hist, scenario=scenario, extra=extra)
    names += [VERDICTS_NAME, HISTORY_NAME]

    def attempt(what: str, fn: Callable[[], list[str]]) -> None:
        try:
            names.extend(fn())
        except Exception:
            log.exception("could not attach %s", what)
            errors.append(f"{what}:\n{traceback.format_exc()}")

    evs: list[Any] = []
    recov = [
        v for v in leaves(verdicts) if v.name == "recovery_time" and v.figures.get("per_agent") is not None
    ]

    def load() -> list[str]:
        evs.extend(History.load(hist))
        return []

    attempt("history", load)
    faults = plots.fault_windows(evs) if evs else []

    def pictures() -> list[str]:
        out = []
        for v in recov:
            key = v.figures.get("fault")
            fw = next((f for f in faults if f.key == key), faults[0] if faults else None)
            suffix = f" ({key})" if len(recov) > 1 else ""
            title = f"{scenario or 'recovery'}{suffix}"
            allure.attach(
                plots.timeline_png(v, window=fw, title=title),
                name=TIMELINE_NAME + suffix,
                attachment_type=allure.attachment_type.PNG,
            )
            allure.attach(
                plots.histogram_png(v, title=f"recovery times {title}"),
                name=HISTOGRAM_NAME + suffix,
                attachment_type=allure.attachment_type.PNG,
            )
            out += [TIMELINE_NAME + suffix, HISTOGRAM_NAME + suffix]
        return out

    def ladder() -> list[str]:
        wire = list(events) if events is not None else []
        topo = None
        if topology is not None:
            from harness import topology as topology_mod

            topo = topology_mod.load(topology)  # once per scenario: CTI ports and ladder lanes
        if events is None:
            from harness.decode import decode_pcap

            ports = _cti_ports(topo)
            for p in pcaps:
                wire.extend(decode_pcap(p, cti_ports=ports).events)
        if not wire:
            return []
        hosts = plots.hosts_from_topology(topo) if topo is not None else {}
        exts = _roster_extensions(evs)
        if recov:
            agents = plots.sample_agents(recov[0], sample)
        else:
            seen = dict.fromkeys(e.agent for e in wire if e.protocol == "cti" and e.agent)
            agents = list(seen)[:sample]
        t_zero = faults[0].wall0 if faults else None
        win = window
        if win is None and t_zero is not None:
            slowest = max((max(v.figures["per_agent"].values(), default=0.0) for v in recov), default=0.0)
            span = slowest or next((v.figures.get("bound") for v in recov), None) or 30.0
            win = (-2.0, float(span) + 2.0)
        svg = plots.ladder_svg(
            wire,
            hosts=hosts,
            agents=agents,
            extensions=exts,
            t_zero=t_zero,
            window=win,
            faults=faults[:1],
            title=f"SIP/CTI ladder: {scenario}" if scenario else "SIP/CTI ladder",
        )
        allure.attach(svg, name=LADDER_NAME, attachment_type=allure.attachment_type.SVG)
        return [LADDER_NAME]

    def files() -> list[str]:
        out = []
        for p in pcaps:
            pp = Path(p)
            ext = "pcapng" if pp.suffix == ".pcapng" else "pcap"
            allure.attach.file(str(pp), name=f"capture {pp.name}", attachment_type=PCAP_MIME, extension=ext)
            out.append(f"capture {pp.name}")
        for name, p in (logs or {}).items():
            allure.attach.file(str(p), name=f"log {name}", attachment_type="text/plain", extension="log")
            out.append(f"log {name}")
        if topology is not None:
            allure.attach.file(
                str(topology), name=TOPOLOGY_NAME, attachment_type="text/plain", extension="yaml"
            )
            out.append(TOPOLOGY_NAME)
        return out

    if evs:
        attempt("timeline and histogram", pictures)
        attempt("ladder diagram", ladder)
    attempt("files", files)
    if errors:
        allure.attach(
            "\n\n".join(errors), name="attach-errors.txt", attachment_type=allure.attachment_type.TEXT
        )
        names.append("attach-errors.txt")
    return names


# -- the HTML report --------------------------------------------------------------------------------------


class ReportError(Exception):
    """The report could not be built (Allure missing or failing); the message says why."""


class ReportInputError(ReportError):
    """The results directory is missing or holds no results: the user's input, not the tool, is wrong."""


def allure_cli() -> Path:
    """The Allure 3 command: `$HIL_ALLURE`, else the repository's `node_modules/.bin/allure`."""
    env = os.environ.get("HIL_ALLURE")
    p = Path(env) if env else REPO_ROOT / "node_modules" / ".bin" / "allure"
    if not p.exists():
        raise ReportError(
            f"Allure 3 is not installed ({p} is missing): `make setup` installs it (npm ci in {REPO_ROOT})"
        )
    if shutil.which("node") is None:
        raise ReportError("node is not on PATH: Allure 3 needs Node.js (make setup installs it)")
    return p


def _categories_for(results: Path) -> list[dict[str, Any]]:
    p = results / "categories.json"
    if p.exists():
        try:
            data = json.loads(p.read_text())
            if isinstance(data, list) and all(isinstance(c, dict) and c.get("name") for c in data):
                return data
        except (OSError, ValueError):
            pass
        log.warning("%s is not a list of categories; using the built-in ones", p)
    return CATEGORIES


def build_report(
    results: str | Path = "reports/allure-results",
    out: str | Path = "reports/allure-report",
    *,
    name: str = "hil failover lab",
    timeout: float = 300.0,
) -> Path:
    """Build the HTML report from Allure results with Allure 3's Awesome plugin; returns `out/index.html`.

    Allure 3 applies categories from its config, not from the results, so the results' `categories.json`
    (else `CATEGORIES`) goes into a generated `allurerc.mjs`. `out` is replaced, but only if it is empty or
    an earlier report (it has an `index.html`), never some other directory.
    """
    res, dest = Path(results).resolve(), Path(out).resolve()
    if not res.is_dir():
        raise ReportInputError(f"{results}: no such results directory (run the scenarios with --alluredir)")
    if not any(res.glob("*-result.json")):
        raise ReportInputError(f"{results}: no test results (*-result.json) in it")
    cli = allure_cli()
    if dest.exists():
        if not dest.is_dir() or (any(dest.iterdir()) and not (dest / "index.html").exists()):
            raise ReportInputError(f"{out}: exists and is not an Allure report; refusing to replace it")
        shutil.rmtree(dest)
    config = {
        "name": name,
        "output": str(dest),
        "categories": _categories_for(res),
        "plugins": {
            "awesome": {"options": {"reportName": name, "reportLanguage": "en", "singleFile": False}}
        },
    }
    with tempfile.TemporaryDirectory(prefix="hil-allure-") as tmp:
        cfg = Path(tmp) / "allurerc.mjs"
        cfg.write_text(f"export default {json.dumps(config, indent=1)};\n")
        cmd = [str(cli), "generate", "--config", str(cfg), "--output", str(dest), str(res)]
        try:
            proc = subprocess.run(
                cmd,
                cwd=tmp,
                capture_output=True,
                text=True,
                timeout=timeout,
                env={**os.environ, "NO_COLOR": "1"},
            )
        except subprocess.TimeoutExpired:
            raise ReportError(f"allure generate did not finish in {timeout:.0f} s") from None
    index = dest / "index.html"
    if proc.returncode != 0 or not index.exists():
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
        raise ReportError(f"allure generate failed (exit {proc.returncode}):\n{tail}")
    return index
