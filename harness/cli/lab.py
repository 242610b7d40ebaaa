"""`hil lab up|down|restore|status`: the virtual lab's life, and healing what a dead run left."""

from __future__ import annotations

import json
import sys
import time

import click

from harness import credentials, faults
from harness import topology as topology_mod
from harness.cli.common import EXIT_FAIL, EXIT_USAGE, _friendly, main, topology_option
from harness.lab import asphysical
from harness.lab import virtual as virtual_backend
from harness.lab.base import LabStatus
from harness.lab.physical import PhysicalBackend
from harness.lab.session import open_lab


@main.group()
def lab() -> None:
    """Bring the virtual lab up and down, and show its state."""


@lab.command("up")
@topology_option
@click.option(
    "--as-physical",
    "as_physical",
    type=click.Path(dir_okay=False),
    default=None,
    help="also write FILE: the lab described as hardware (kind physical), to drive it as a physical lab",
)
@_friendly
def lab_up(topology_file: str | None, as_physical: str | None) -> None:
    """Build the virtual lab and wait until every PBX answers."""
    topo = topology_mod.load(topology_file)
    t0 = time.monotonic()
    b = virtual_backend.bring_up(topo)
    click.echo(f"lab {b.name} is up in {time.monotonic() - t0:.2f} s (keeper pid {b.keeper_pid})")
    if as_physical:
        w = asphysical.write(topo, b, as_physical)
        click.echo(f"physical description: {w.topology} (host keys: {w.known_hosts})")
        click.echo("its secrets, for the shell that runs the harness:")
        click.echo(w.source_line)


@lab.command("down")
@_friendly
def lab_down() -> None:
    """Take the lab down; nothing of it stays behind."""
    t0 = time.monotonic()
    if virtual_backend.take_down():
        click.echo(f"lab is down in {time.monotonic() - t0:.2f} s")
    else:
        click.echo("no lab is up")


@lab.command("restore")
@topology_option
@click.option("--journal", "journal", type=click.Path(dir_okay=False), default=None, help="fault journal")
@click.option("--all", "include_live", is_flag=True, help="also faults of a controller that still runs")
@_friendly
def lab_restore(topology_file: str | None, journal: str | None, include_live: bool) -> None:
    """Heal every change a controller left open in the journal (e.g. one killed with SIGKILL), read each
    heal back, and stop the captures it left running. Exit 1 if a heal failed or did not show (the change
    stays open), 2 if the journal is not one."""

    def unusable(why: str) -> SystemExit:
        click.echo(f"error: {why}", err=True)
        return SystemExit(EXIT_USAGE)

    if journal is not None:
        if not faults.Journal(journal).path.is_file():
            raise unusable(f"{journal}: no such fault journal")
        try:
            faults.Journal(journal).read()  # a file that is not a journal: exit 2 before the lab is read
        except faults.JournalError as e:
            raise unusable(str(e)) from None
    topo = topology_mod.load(topology_file)
    if topo.kind == "virtual" and virtual_backend.find(topo.name) is None:
        click.echo("no lab is up: nothing to restore")
        return
    the_lab = open_lab(topo, bring_up=False)
    try:
        results = faults.restore(the_lab, journal, include_live=include_live)
    except faults.JournalError as e:
        raise unusable(str(e)) from None
    if not [r for r in results if r["result"] != "unreadable"]:
        click.echo("no open faults")
    for r in results:
        if r["result"] == "unreadable":
            click.echo(f"skipped  journal line {r['line']}: {r['reason']}")
            continue
        extra = r.get("reason") or r.get("error") or (f"via {r['via']}" if r.get("via") else "")
        click.echo(f"{r['result']:<8} {r['id']} {r['kind']} {r['target']} {extra}".rstrip())
    if any(r["result"] == "failed" for r in results):
        sys.exit(EXIT_FAIL)


@lab.command("status")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@topology_option
@_friendly
def lab_status(as_json: bool, topology_file: str | None) -> None:
    """Sites, devices, links with their state, and every process with its PID and whether it answers.
    With a physical topology: every device read through its management interface; exit 2 when one
    cannot be read (one line each, naming the device, the interface and what failed)."""
    if topology_file is not None:
        topo = topology_mod.load(topology_file)
        if topo.kind == "physical":
            _physical_status(topo, as_json)
            return
    b = virtual_backend.find()
    if b is None:
        if as_json:
            click.echo(json.dumps({"up": False}))
        else:
            click.echo("no lab is up")
        sys.exit(EXIT_FAIL)
    st = b.raw_status()
    topo = topology_mod.load(st["topology"])
    st["up"] = True
    st["kind"] = "virtual"
    st["sites"] = _sites(topo)
    st["ssh"] = _probe_ssh(topo)
    if as_json:
        click.echo(json.dumps(st, indent=1, default=str))
        return
    _print_status(st)


def _sites(topo: topology_mod.Topology) -> dict[str, dict[str, object]]:
    return {
        code: {
            "city": site.city,
            "region": site.region,
            "devices": sorted(d.name for d in topo.devices.values() if d.site == code),
        }
        for code, site in topo.sites.items()
    }


def _physical_status(topo: topology_mod.Topology, as_json: bool) -> None:
    """The same table and JSON as the virtual lab's, read from the devices alone."""
    credentials.register(topo)
    for secret in credentials.referenced(topo).values():
        secret.reveal()  # a missing variable: one line and exit 2 before any device is asked
    t0 = time.monotonic()
    lab_st = PhysicalBackend(topo).status() or LabStatus(problems=[f"{topo.file}: no device to read"])
    st = _physical_dict(topo, lab_st, time.monotonic() - t0)
    if as_json:
        click.echo(json.dumps(st, indent=1, default=str))
    else:
        _print_status(st)
    for line in lab_st.problems:
        click.echo(f"error: {line}", err=True)
    if lab_st.problems:
        sys.exit(EXIT_USAGE)


def _physical_dict(topo: topology_mod.Topology, st: LabStatus, took: float) -> dict[str, object]:
    mgmt = {m.device: m.state for m in st.management}
    return {
        "lab": topo.name,
        "topology": str(topo.file),
        "kind": "physical",
        "up": bool(st.management) and all(v == "up" for v in mgmt.values()),
        "read_in_s": round(took, 2),
        "sites": _sites(topo),
        "links": [
            {"switch": x.switch, "port": x.port, "state": x.state, "connects": x.connects} for x in st.links
        ],
        "processes": [
            {"device": p.device, "name": p.name, "state": p.state, "answers": p.answers, "host_pid": p.pid}
            for p in st.processes
        ],
        "management": [{"device": d, "state": v} for d, v in mgmt.items()],
        "outlets": [
            {"pdu": o.pdu, "outlet": o.outlet, "state": o.state, "connects": o.connects} for o in st.outlets
        ],
        "phones": st.extra.get("phones", []),
        "consoles": {c["device"]: c["url"] for c in st.extra.get("consoles", [])},
        "ssh": {d: v == "up" for d, v in mgmt.items() if topo.device(d).kind in _SSH_KINDS},
        "problems": st.problems,
    }


_SSH_KINDS = ("pbx", "cti", "ul", "host", "switch")


def _print_status(st: dict[str, object]) -> None:
    if st.get("kind") == "physical":
        click.echo(f"lab {st['lab']} ({st['topology']}), physical, read in {st.get('read_in_s')} s")
    else:
        click.echo(f"lab {st['lab']} ({st['topology']}), ready after {st.get('ready_after_s')} s")
    for code, s in st["sites"].items():  # type: ignore[attr-defined]
        click.echo(f"  site {code} ({s['city']}, {s['region']}): {', '.join(s['devices'])}")
    click.echo("links:")
    for link in st["links"]:  # type: ignore[attr-defined]
        click.echo(
            f"  {link['switch']:<8} {link['port']:<22} {link['state']:<5} -> {link['connects'] or '-'}"
        )
    click.echo("processes:")
    for p in st["processes"]:  # type: ignore[attr-defined]
        ans = {True: "answers", False: "NOT answering", None: ""}[p.get("answers")]
        pid = p.get("host_pid")
        click.echo(f"  {p['device']:<12} {p['name']:<10} {p['state']:<9} pid {pid or '-'} {ans}".rstrip())
    if st.get("outlets"):
        click.echo("outlets:")
        for o in st["outlets"]:  # type: ignore[attr-defined]
            click.echo(f"  {o['pdu']:<8} {o['outlet']:<4} {o['state']:<7} -> {o['connects']}")
    if st.get("phones"):
        click.echo("phones:")
        for ph in st["phones"]:  # type: ignore[attr-defined]
            click.echo(f"  {ph['device']:<12} {ph['state']:<12} {ph.get('server', '')}".rstrip())
    click.echo("management:" if st.get("kind") == "physical" else "management (ssh):")
    for dev, ok in st["ssh"].items():  # type: ignore[attr-defined]
        click.echo(f"  {dev:<12} {'answers' if ok else 'NOT answering'}")
    if st.get("kind") == "physical":
        others = [m for m in st["management"] if m["device"] not in st["ssh"]]  # type: ignore[attr-defined]
        for m in others:
            click.echo(f"  {m['device']:<12} {'answers' if m['state'] == 'up' else 'NOT answering'}")
    for name, path in st.get("consoles", {}).items():  # type: ignore[attr-defined]
        click.echo(f"console {name}: {path}")


def _probe_ssh(topo: topology_mod.Topology) -> dict[str, bool]:
    import socket

    out = {}
    for d in topo.devices.values():
        mg = getattr(d.spec, "mgmt", None)
        if mg is None or d.kind == "phone":
            continue
        try:
            with socket.create_connection((str(mg), d.spec.ssh_port), timeout=1.0) as s:
                s.settimeout(1.0)
                out[d.name] = s.recv(64).startswith(b"SSH-2.0")
        except OSError:
            out[d.name] = False
    return out
