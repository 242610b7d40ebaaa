"""A scenario's evidence on its Allure test: the verdict file and history (what the gate reads), a SIP/CTI
ladder diagram, a recovery timeline and histogram, the pcaps, the device logs and the topology."""

from __future__ import annotations

import logging
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
from harness.report.findings import leaves
from harness.report.verdictfile import HISTORY_NAME, VERDICTS_NAME, attach_verdicts

__all__ = [
    "HISTOGRAM_NAME",
    "LADDER_NAME",
    "PCAP_MIME",
    "TIMELINE_NAME",
    "TOPOLOGY_NAME",
    "attach_run",
]

log = logging.getLogger("hil.report")

LADDER_NAME = "ladder.svg"
TIMELINE_NAME = "timeline.png"
HISTOGRAM_NAME = "recovery-histogram.png"
TOPOLOGY_NAME = "topology.yaml"
PCAP_MIME = "application/vnd.tcpdump.pcap"


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
            topo = topology_mod.load(topology)  # once per scenario: CTI ports and ladder lanes
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
