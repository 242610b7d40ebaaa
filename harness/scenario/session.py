"""What the pytest plugin calls around the scenarios (kept here so a plain script can do the same): the
dry-run lab, skips for labs that lack a device kind, Allure labels and session reports, the capture of a
test, read-only driver views, and the heal of what a crashed block left."""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from harness import credentials, faults, observe, report
from harness.drivers import driver_for
from harness.drivers.views import ReadOnlyDriver, read_only
from harness.lab import Lab
from harness.lab.dryrun import DryRunBackend
from harness.scenario.run import Scenario
from harness.scenario.settings import Settings, slug
from harness.topology import REPO_ROOT, Topology

__all__ = [
    "device_facts",
    "driver",
    "dry_run_lab",
    "heal_leftovers",
    "label_test",
    "missing_kinds",
    "scale_unfit",
    "session_injector",
    "start_capture",
    "write_session_reports",
]

log = logging.getLogger("hil.scenario")


def dry_run_lab(topo: Topology) -> Lab:
    """The lab as a dry run sees it: the topology only. Nothing is brought up or contacted; secrets the
    environment lacks get a placeholder, since no command is ever sent with them."""
    credentials.register(topo)
    for var in credentials.referenced(topo):
        os.environ.setdefault(var, "dry-run-placeholder")
    os.environ.setdefault(credentials.STACK_SECRET_VAR, "dry-run-placeholder")
    return Lab(topo, DryRunBackend(topo))


def missing_kinds(topo: Topology, kinds: Sequence[str]) -> list[str]:
    """The device kinds (``switch``, ``pdu``, ``phone``; ``host:caller`` for a host role) a lab lacks."""
    out = []
    for k in kinds:
        kind, _, role = k.partition(":")
        found = [d for d in topo.of_kind(kind) if not role or getattr(d.spec, "role", None) == role]
        if not found:
            out.append(k)
    return out


def scale_unfit(topo: Topology, need: int = 1000) -> str | None:
    """Why a lab cannot run a scale scenario (None when it can)."""
    n = len(topo.agents())
    if n < need:
        return f"scale scenarios need {need}+ agents; {topo.name} has {n} (use topologies/virtual-1k.yaml)"
    return None


def label_test(
    module: str,
    feature: str | None,
    story: str,
    severity: str | None,
    site: str | Sequence[str] | None = None,
) -> None:
    """Allure labels of a scenario (epic, feature, story, severity, and the sites it involves: the one it
    fails and the one it expects agents at); nothing without an Allure session."""
    feat = feature or module.rsplit(".", 1)[-1].removeprefix("test_").replace("_", " ")
    report.apply_labels(epic="failover", feature=feat, story=story, severity=severity, site=site)


def device_facts(lab: Lab) -> dict[str, Any]:
    """What the devices say they are, for the report's environment: kamailio's version (JSON-RPC
    `core.version`), each switch's `show version` / `display version`, each phone's firmware. A device that
    does not answer is noted, not fatal: the report must not fail on a fact. The devices are asked at once
    (each its own connection): one after the other they cost a second of every session's start."""
    asks: list[tuple[str, str, Callable[[], Any]]] = [
        ("kamailio", ep.device, functools.partial(_kamailio_version, ep.rpc_url))
        for ep in observe.endpoints(lab)
        if ep.kind == "pbx"
    ]
    asks += [
        (kind, d.name, functools.partial(_driver_facts, lab, d.name))
        for kind in ("switch", "phone")
        for d in lab.topology.of_kind(kind)
    ]
    facts: dict[str, Any] = {"kamailio": {}, "switch": {}, "phone": {}}
    with ThreadPoolExecutor(max_workers=max(1, len(asks))) as pool:
        answers = [pool.submit(ask) for _, _, ask in asks]
        for (kind, name, _), answer in zip(asks, answers, strict=True):
            facts[kind][name] = answer.result()
    return facts


def _kamailio_version(rpc_url: str) -> str:
    try:
        return str(observe.jsonrpc(rpc_url, "core.version", timeout=3) or "").strip()
    except observe.ObserveError as e:
        return f"unreachable: {e}"[:200]


def _driver_facts(lab: Lab, name: str) -> Any:
    try:
        with read_only(driver_for(lab, name)) as drv:
            return drv.facts()
    except Exception as e:  # noqa: BLE001 - a fact the device does not give is noted, never fatal
        return {"error": f"{type(e).__name__}: {e}"[:200]}


def write_session_reports(results_dir: str | Path, topology_file: str | None, lab: Lab | None = None) -> None:
    """environment.properties (with the devices' facts when a lab is at hand) and categories.json, once
    per session."""
    topo = topology_file or str(REPO_ROOT / "topologies" / "virtual-two-site.yaml")
    facts = device_facts(lab) if lab is not None else None
    report.write_environment(results_dir, facts, topology=topo)
    report.write_categories(results_dir)


def start_capture(
    lab: Lab, settings: Settings, name: str, injector: faults.Injector | None = None
) -> observe.LabCapture | None:
    """Start the capture of a scenario (None in a dry run or with capture off). Its SPAN sessions and
    tcpdumps go through ``injector`` (a session's, which keeps the SPAN sessions for the session), else
    through one of the capture's own."""
    if settings.dry_run or not settings.capture:
        return None
    return observe.LabCapture(lab, Path(settings.out_dir) / "pcap" / slug(name), injector=injector).start()


def session_injector(lab: Lab, settings: Settings) -> faults.Injector:
    """The injector of a pytest session (or a script's run of many scenarios): it heals what a dead run
    left first, and holds the lab-wide changes of the session (SPAN sessions) until it is closed."""
    return faults.Injector(lab, dry_run=settings.dry_run, out=log.info)


def driver(sc: Scenario, name: str) -> ReadOnlyDriver:
    """A read-only view of a device's driver, whose steps go to the scenario (history, or the plan in a
    dry run). Changes go through the injector: ``sc.fault(...)``."""
    return read_only(driver_for(sc.lab, name, sc.steps))


def heal_leftovers(sc: Scenario) -> None:
    """Heal whatever a crashed fault block left in the journal (harness.faults.restore)."""
    if sc.dry_run:
        return
    sc.heal_active()
    faults.restore(sc.lab, history=None, steps=sc.steps)
