"""`hil run`, `hil validate`, `hil report`, `hil gate`, `hil compare`, `hil baseline`: the main job and its
parts.

A run directory named where one is expected (``--last-failed``, ``--failed-of``, ``--run``) that is missing,
partial or corrupt, and a retention value that is not a positive number, are input errors: exit 2, one line.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import click

from harness import gate, mainjob, report
from harness import topology as topology_mod
from harness.cli.common import EXIT_FAIL, EXIT_USAGE, _friendly, main, topology_option
from harness.gate import baseline as gate_baseline
from harness.report import compare as compare_mod
from harness.report import compareplot, runs
from harness.topology import REPO_ROOT

REPORTS = REPO_ROOT / "reports"  # where runs are kept (reports/runs/, reports/latest)


def _input_error(e: Exception) -> None:
    click.echo(f"error: {e}", err=True)
    sys.exit(EXIT_USAGE)


def _results_of(run_ref: str | None, results: str | None, default: str) -> str:
    """The Allure results to read: a kept run's (``--run``), or a directory (``--results``)."""
    if run_ref is None:
        return results or default
    if results is not None:
        _input_error(ValueError("--run and --results name two different results: give one"))
    try:
        return str(runs.open_run(run_ref, REPORTS).path / "allure-results")
    except runs.RunDirError as e:
        _input_error(e)
        raise  # not reached: _input_error exits


@main.command("run")
@topology_option
@click.option("--dry-run", is_flag=True, help="print every device action the suite would take; touch nothing")
@click.option("--policy", default=None, help="release gate policy (default: ./gate.yaml)")
@click.option("--no-scale", is_flag=True, help="skip the 1,000-agent scale session")
@click.option("-k", "keyword", default=None, metavar="EXPR", help="only scenarios matching EXPR (pytest -k)")
@click.option("-m", "markers", default=None, metavar="MARKERS", help="only scenarios marked so (pytest -m)")
@click.option("--last-failed", is_flag=True, help="re-run the scenarios that failed in reports/latest")
@click.option("--failed-of", default=None, metavar="RUN", help="re-run the scenarios that failed in RUN")
@click.option("--repeat", default="1", metavar="N", help="run each scenario N times (gate: repeat)")
@click.option(
    "--keep-runs", default=None, metavar="N",
    help=f"runs kept under reports/runs/ (default ${runs.KEEP_RUNS_ENV}, else {runs.DEFAULT_KEEP_RUNS})",
)  # fmt: skip
@click.option(
    "--keep-size", default=None, metavar="SIZE",
    help=f"bytes they may hold: 500M, 20G (default ${runs.KEEP_SIZE_ENV}, else {runs.DEFAULT_KEEP_SIZE})",
)  # fmt: skip
@click.option(
    "--keep-raw-pcaps/--no-keep-raw-pcaps", default=None,
    help="keep the unredacted captures in pcap/raw/ (default: a virtual lab yes, a physical lab no)",
)  # fmt: skip
@_friendly
def run(
    topology_file: str | None, dry_run: bool, policy: str | None, no_scale: bool, keyword: str | None,
    markers: str | None, last_failed: bool, failed_of: str | None, repeat: str, keep_runs: str | None,
    keep_size: str | None, keep_raw_pcaps: bool | None,
) -> None:  # fmt: skip
    """The main job: virtual lab up, the scenario suite, the Allure report, the gate verdict, lab down.

    Each run keeps its evidence in reports/runs/<UTC time>-<git describe>/ and, once complete, becomes
    reports/latest; the oldest runs beyond --keep-runs/--keep-size are removed (and named). --repeat N runs
    each session N times into the same results: the gate counts the passes and calls a scenario that both
    passed and failed flaky (it does not ship). Ctrl-C at any point heals the faults in place and takes the
    lab down. Exit code: the gate's (0 ship, 1 do not ship, 2 could not judge), 2 for bad input, 130 when
    interrupted.
    """

    if keep_raw_pcaps is not None:  # read by the scenarios' sessions (harness/report/attachments.py)
        os.environ[report.KEEP_RAW_ENV] = "1" if keep_raw_pcaps else "0"
    t0 = time.monotonic()
    try:
        keep = runs.retention(keep_runs, keep_size)
        earlier = None
        if last_failed and failed_of:
            raise runs.RunDirError("--last-failed and --failed-of name two runs: give one")
        times = runs.parse_count(repeat, "--repeat")
        if times > 1 and (last_failed or failed_of):
            raise runs.RunDirError(
                "--repeat with --last-failed/--failed-of: the second repetition would re-run only the first's"
                " failures; re-run them once, or select them with -k and repeat"
            )
        if last_failed or failed_of:
            earlier = runs.open_run(failed_of or runs.LATEST, REPORTS)
            runs.last_failed(earlier)  # a corrupt cache is a bad run: say so before the lab comes up
    except (runs.RetentionError, runs.RunDirError) as e:
        _input_error(e)
    select = mainjob.Selection(keyword, markers, earlier, times)
    try:
        res = mainjob.run(
            topology_file, dry_run=dry_run, policy=policy, scale=not no_scale, out=click.echo,
            reports=REPORTS, select=select, keep=keep,
        )  # fmt: skip
    except mainjob.NothingSelected as e:
        _input_error(e)
    if not dry_run and res.sessions:
        click.echo("")
        click.echo(mainjob.summary(res, REPORTS))
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
@click.option("--results", default=None, help="Allure results  [default: reports/allure-results]")
@click.option("--run", "run_ref", default=None, metavar="RUN", help="a kept run's (name, path, latest)")
@click.option("--out", default="reports/allure-report", show_default=True, help="where the HTML report goes")
@click.option("--name", default="hil failover lab", show_default=True, help="the report's title")
@_friendly
def report_cmd(results: str | None, run_ref: str | None, out: str, name: str) -> None:
    """Build the HTML report from the Allure results with Allure 3 (npm `allure`, installed by make setup).
    A kept run's own report is in it already; --run builds another from its results, here in --out."""

    t0 = time.monotonic()
    results = _results_of(run_ref, results, "reports/allure-results")
    try:
        index = report.build_report(results, out, name=name)
    except report.ReportError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(EXIT_USAGE if isinstance(e, report.ReportInputError) else EXIT_FAIL)
    click.echo(f"report built in {time.monotonic() - t0:.1f} s: {index}")
    click.echo(f"open it with: {report.allure_cli()} open {index.parent}  (it needs HTTP, not file://)")


@main.command("gate")
@click.option("--policy", default=None, help="release policy (default: ./gate.yaml, else the repository's)")
@click.option("--results", default=None, help="Allure results  [default: reports/allure-results]")
@click.option("--run", "run_ref", default=None, metavar="RUN", help="a kept run's (name, path, latest)")
@click.option("--out", default="reports", show_default=True, help="for gate.json, gate.md, gate-junit.xml")
@_friendly
def gate_cmd(policy: str | None, results: str | None, run_ref: str | None, out: str) -> None:
    """Judge a run for release: exit 0 ship, 1 do not ship, 2 could not judge (evidence missing).
    --run judges a kept run again (another policy, say); its verdict goes to --out, the run keeps its own."""

    results = _results_of(run_ref, results, "reports/allure-results")
    rep = gate.run_gate(policy, results)
    click.echo(gate.table(rep))
    for line in rep.problems:
        click.echo(f"error: {line}", err=True)
    paths = gate.write_outputs(rep, out)
    click.echo(f"written: {', '.join(str(p) for p in paths.values())}")
    sys.exit(rep.exit_code)


def _read_run(ref: str) -> tuple[compare_mod.RunSummary, list[str]]:
    try:
        return gate_baseline.read_run(ref, REPORTS)
    except gate.GateInputError as e:
        _input_error(ValueError(e.lines()[0]))
        raise  # not reached: _input_error exits


@main.command("compare")
@click.argument("run_a")
@click.argument("run_b")
@click.option("--json", "json_out", default=None, metavar="FILE", help="the comparison as JSON")
@click.option("--markdown", "md_out", default=None, metavar="FILE", help="the comparison as Markdown")
@click.option("--plot", "plot_out", default=None, metavar="PNG", help="per-agent recovery times, A vs B")
@click.option("--ratio", default=compare_mod.RATIO, show_default=True, help="p95/max growth that regresses")
@click.option("--alpha", default=compare_mod.ALPHA, show_default=True, help="significance level")
@_friendly
def compare_cmd(
    run_a: str, run_b: str, json_out: str | None, md_out: str | None, plot_out: str | None, ratio: float,
    alpha: float,
) -> None:  # fmt: skip
    """Compare two kept runs (names under reports/runs/, paths, latest), A the reference: verdict changes,
    per-agent detection and recovery times side by side, new and vanished scenarios, changed versions.
    Exit 0 no regression, 1 regression, 2 could not compare."""
    a, pa = _read_run(run_a)
    b, pb = _read_run(run_b)
    cmp = compare_mod.compare(a, b, alpha=alpha, ratio=ratio)
    cmp.problems += pa + pb
    if pa or pb:
        cmp.exit_code = compare_mod.EXIT_CANNOT
    click.echo(compare_mod.table(cmp))
    if json_out:
        Path(json_out).write_text(json.dumps(cmp.to_dict(), indent=1) + "\n")
    if md_out:
        Path(md_out).write_text(compare_mod.markdown(cmp))
    if plot_out:
        compareplot.comparison_png(cmp, plot_out)
    for p in cmp.problems:
        click.echo(f"error: {p}", err=True)
    sys.exit(cmp.exit_code)


@main.command("baseline")
@click.argument("run_ref", metavar="RUN")
@click.option("--out", required=True, metavar="FILE", help="the pinned baseline file to write")
@_friendly
def baseline_cmd(run_ref: str, out: str) -> None:
    """Pin a kept run as a baseline file (its scenarios' verdicts and per-agent times) that gate.yaml's
    `baseline: {run: FILE}` can name, so the baseline outlives the run's retention."""
    summary, problems = _read_run(run_ref)
    if problems:
        _input_error(ValueError(f"{summary.path}: cannot be a baseline: {problems[0]}"))
    Path(out).write_text(json.dumps(summary.to_dict(), indent=1) + "\n")
    click.echo(f"baseline of {summary.name} ({len(summary.scenarios)} scenarios): {out}")
