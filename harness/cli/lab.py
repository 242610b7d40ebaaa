"""`hil lab up|down|restore|status`: the virtual lab's life, and healing what a dead run left."""

from __future__ import annotations

import json
import sys
import time

import click

from harness import faults
from harness import topology as topology_mod
from harness.cli.common import EXIT_FAIL, EXIT_USAGE, _friendly, main, topology_option
from harness.lab import virtual as virtual_backend
from harness.lab.session import open_lab


@main.group()
def lab() -> None:
    """Bring the virtual lab up and down, and show its state."""


@lab.command("up")
@topology_option
@_friendly
def lab_up(topology_file: str | None) -> None:
    """Build the virtual lab and wait until every PBX answers."""
    topo = topology_mod.load(topology_file)
    t0 = time.monotonic()
    b = virtual_backend.bring_up(topo)
    click.echo(f"lab {b.name} is up in {time.monotonic() - t0:.2f} s (keeper pid {b.keeper_pid})")


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
@_friendly
def lab_status(as_json: bool) -> None:
    """Sites, devices, links with their state, and every process with its PID and whether it answers."""
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
    st["sites"] = {
        code: {
            "city": site.city,
            "region": site.region,
            "devices": sorted(d.name for d in topo.devices.values() if d.site == code),
        }
        for code, site in topo.sites.items()
    }
    st["ssh"] = _probe_ssh(topo)
    if as_json:
        click.echo(json.dumps(st, indent=1, default=str))
        return
    click.echo(f"lab {st['lab']} ({st['topology']}), ready after {st.get('ready_after_s')} s")
    for code, s in st["sites"].items():
        click.echo(f"  site {code} ({s['city']}, {s['region']}): {', '.join(s['devices'])}")
    click.echo("links:")
    for link in st["links"]:
        click.echo(
            f"  {link['switch']:<8} {link['port']:<22} {link['state']:<5} -> {link['connects'] or '-'}"
        )
    click.echo("processes:")
    for p in st["processes"]:
        ans = {True: "answers", False: "NOT answering", None: ""}[p.get("answers")]
        click.echo(f"  {p['device']:<12} {p['name']:<10} {p['state']:<9} pid {p.get('host_pid')} {ans}")
    click.echo("management (ssh):")
    for dev, ok in st["ssh"].items():
        click.echo(f"  {dev:<12} {'answers' if ok else 'NOT answering'}")
    for name, path in st.get("consoles", {}).items():
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
