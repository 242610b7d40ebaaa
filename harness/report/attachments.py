"""A scenario's evidence on its Allure test: the verdict file and history (what the gate reads), a SIP/CTI
ladder diagram, a recovery timeline and histogram, the pcaps, the device logs and the topology.

The pcaps attached are redacted copies (harness/report/redact.py), written where the evidence lies
(``<root>/<scenario>/``); the raw ones stay under ``<root>/raw/`` (harness/observe/lab_capture.py), or, for a
physical lab, are deleted once redacted unless HIL_KEEP_RAW_PCAPS=1.
"""

from __future__ import annotations

import logging
import os
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import allure

from harness import plots
from harness import topology as topology_mod
from harness.checks import Verdict
from harness.decode import decode_pcap
from harness.history import History
from harness.observe.lab_capture import published_path, raw_root_of
from harness.report.findings import leaves
from harness.report.redact import redact_pcap
from harness.report.verdictfile import HISTORY_NAME, VERDICTS_NAME, attach_verdicts

__all__ = [
    "HISTOGRAM_NAME",
    "LADDER_NAME",
    "PCAP_MIME",
    "TIMELINE_NAME",
    "TOPOLOGY_NAME",
    "attach_run",
    "keep_raw_pcaps",
    "publish_pcap",
]

log = logging.getLogger("hil.report")

LADDER_NAME = "ladder.svg"
TIMELINE_NAME = "timeline.png"
HISTOGRAM_NAME = "recovery-histogram.png"
TOPOLOGY_NAME = "topology.yaml"
PCAP_MIME = "application/vnd.tcpdump.pcap"
KEEP_RAW_ENV = "HIL_KEEP_RAW_PCAPS"


def keep_raw_pcaps(kind: str | None) -> bool:
    """Whether a lab of this kind keeps its raw captures: a physical lab's hold real credentials' digests
    and live tokens, so not unless HIL_KEEP_RAW_PCAPS says so; a virtual lab's (its secrets are made for
    the run) are kept for whoever debugs it, unless HIL_KEEP_RAW_PCAPS=0."""
    env = os.environ.get(KEEP_RAW_ENV, "").strip().lower()
    if env in ("1", "yes", "true", "on"):
        return True
    if env in ("0", "no", "false", "off"):
        return False
    return kind != "physical"


def publish_pcap(pcap: str | Path, keep_raw: bool = True) -> Path:
    """Write the redacted copy of a capture where the evidence lies (see ``published_path``) and return
    it. The raw file is deleted after, when ``keep_raw`` is false and it lies in a raw directory the
    capture made (a file of the caller's elsewhere is never deleted). Raises if it cannot be redacted:
    the caller attaches nothing rather than the raw file."""
    raw = Path(pcap)
    out = published_path(raw)
    out.parent.mkdir(parents=True, exist_ok=True)
    stats = redact_pcap(raw, out)
    log.info(
        "redacted %s -> %s: %d secrets in %d of %d frames, %.3f s",
        raw, out, stats.secrets, stats.changed_frames, stats.frames, stats.seconds,
    )  # fmt: skip
    if not keep_raw and raw_root_of(raw) is not None:
        raw.unlink()
    return out


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
    topology. The pcaps attached are redacted copies (``publish_pcap``; a pcap that cannot be redacted is
    not attached). `extra` goes into the verdict file as is (e.g. timings). `window` is the ladder's time span
    in seconds around the first fault (default: 2 s before it to 2 s after the slowest recovery). A picture
    or file that cannot be made does not stop the others: the reason is attached as `attach-errors.txt`
    and logged. Returns the names attached.
    """
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

    topos: list[Any] = []

    def load_topology() -> list[str]:
        if topology is not None:
            topos.append(topology_mod.load(topology))  # once per scenario: kind, CTI ports, ladder lanes
        return []

    attempt("topology", load_topology)

    def ladder() -> list[str]:
        wire = list(events) if events is not None else []
        topo = topos[0] if topos else None
        if events is None:
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

    def captures() -> list[str]:
        out = []
        kind = topos[0].kind if topos else None
        for p in pcaps:
            try:
                pp = publish_pcap(p, keep_raw_pcaps(kind))
            except Exception:  # never the raw file instead: the reason goes to attach-errors.txt
                log.exception("could not redact %s", p)
                errors.append(f"capture {Path(p).name} (not attached: it could not be redacted):\n"
                              f"{traceback.format_exc()}")  # fmt: skip
                continue
            ext = "pcapng" if pp.suffix == ".pcapng" else "pcap"
            name = f"capture {Path(p).name}"  # the capture's own name, whichever copy is attached
            allure.attach.file(str(pp), name=name, attachment_type=PCAP_MIME, extension=ext)
            out.append(name)
        return out

    def files() -> list[str]:
        out = []
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
    attempt("captures", captures)
    attempt("files", files)
    if errors:
        allure.attach(
            "\n\n".join(errors), name="attach-errors.txt", attachment_type=allure.attachment_type.TEXT
        )
        names.append("attach-errors.txt")
    return names
