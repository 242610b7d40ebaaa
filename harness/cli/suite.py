"""`hil run`, `hil validate`, `hil report`, `hil gate`: the main job and its parts."""

from __future__ import annotations

import sys
import time

import click

from harness import gate, mainjob, report
from harness import topology as topology_mod
from harness.cli.common import EXIT_FAIL, EXIT_USAGE, _friendly, main, topology_option


@main.command("run")
@topology_option
@click.option("--dry-run", is_flag=True, help="print every device action the suite would take; touch nothing")
@click.option("--policy", default=None, help="release gate policy (default: ./gate.yaml)")
@click.option("--no-scale", is_flag=True, help="skip the 1,000-agent scale session")
@_friendly
def run(topology_file: str | None, dry_run: bool, policy: str | None, no_scale: bool) -> None:
    """The main job: virtual lab up, the scenario suite, the Allure report, the gate verdict, lab down.

    Ctrl-C at any point heals the faults in place and takes the lab down. Exit code: the gate's (0 ship,
    1 do not ship, 2 could not judge), 130 when interrupted.
    """

    t0 = time.monotonic()
    res = mainjob.run(topology_file, dry_run=dry_run, policy=policy, scale=not no_scale, out=click.echo)
    if not dry_run:
        click.echo("")
        click.echo(mainjob.summary(res))
    click.echo(f"done in {time.monotonic() - t0:.0f} s")
    sys.exit(res.exit_code)


@main.command("validate")
@topology_option
@_friendly
def validate(topology_file: str | None) -> None:
    """Check a topology file and say what it holds."""
    topo = topology_mod.load(topology_file)
    kinds: dict[str, int] = {}
    for d in topo.devices.values():
        kinds[d.kind] = kinds.get(d.kind, 0) + 1
    summary = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
    click.echo(
        f"{topo.file}: ok: {topo.kind} lab {topo.name}, {len(topo.sites)} sites, {summary}, "
        f"{len(topo.agents())} agents"
    )


@main.command("report")
@click.option("--results", default="reports/allure-results", show_default=True, help="Allure results")
@click.option("--out", default="reports/allure-report", show_default=True, help="where the HTML report goes")
@click.option("--name", default="hil failover lab", show_default=True, help="the report's title")
@_friendly
def report_cmd(results: str, out: str, name: str) -> None:
    """Build the HTML report from the Allure results with Allure 3 (npm `allure`, installed by make setup)."""

    t0 = time.monotonic()
    try:
        index = report.build_report(results, out, name=name)
    except report.ReportError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(EXIT_USAGE if isinstance(e, report.ReportInputError) else EXIT_FAIL)
    click.echo(f"report built in {time.monotonic() - t0:.1f} s: {index}")
    click.echo(f"open it with: {report.allure_cli()} open {index.parent}  (it needs HTTP, not file://)")


@main.command("gate")
@click.option("--policy", default=None, help="release policy (default: ./gate.yaml, else the repository's)")
@click.option("--results", default="reports/allure-results", show_default=True, help="Allure results")
@click.option("--out", default="reports", show_default=True, help="for gate.json, gate.md, gate-junit.xml")
@_friendly
def gate_cmd(policy: str | None, results: str, out: str) -> None:
    """Judge a run for release: exit 0 ship, 1 do not ship, 2 could not judge (evidence missing)."""

    rep = gate.run_gate(policy, results)
    click.echo(gate.table(rep))
    for line in rep.problems:
        click.echo(f"error: {line}", err=True)
    paths = gate.write_outputs(rep, out)
    click.echo(f"written: {', '.join(str(p) for p in paths.values())}")
    sys.exit(rep.exit_code)
