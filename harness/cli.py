"""`hil`: the lab controller's command line.

Exit codes: 0 done, 1 the operation failed (lab would not start, device unreachable), 2 the input is wrong
(bad topology, bad option). A user's mistake gets one line per problem, never a traceback.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any

import click

from harness import faults, gate, mainjob, report
from harness import topology as topology_mod
from harness.lab import virtual as virtual_backend
from harness.lab.session import LabError, close_lab, open_lab
from harness.scenario import exploration
from harness.topology import REPO_ROOT, SecretMissing, TopologyError
from harness.ulapi import UlError, client_for

EXIT_FAIL = 1
EXIT_USAGE = 2


def _friendly(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn the errors a user can cause into messages and exit codes."""

    @wraps(fn)
    def wrapper(*a: Any, **kw: Any) -> Any:
        try:
            return fn(*a, **kw)
        except TopologyError as e:
            for line in e.lines():
                click.echo(f"error: {line}", err=True)
            sys.exit(EXIT_USAGE)
        except SecretMissing as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(EXIT_USAGE)
        except LabError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(EXIT_FAIL)

    return wrapper


topology_option = click.option(
    "--topology",
    "topology_file",
    type=str,  # not click.Path: the topology loader names every kind of bad file in one line
    default=None,
    help="lab description (default: topologies/virtual-two-site.yaml)",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Lab controller for active-active contact-center failover tests."""


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


@main.group()
def switch() -> None:
    """Planned switches: move online agents by system, region, skill group or agent id."""


def _ul(topology_file: str | None, prefer: str | None = None):  # type: ignore[no-untyped-def]

    lab = open_lab(topology_mod.load(topology_file), bring_up=False)
    return client_for(lab, prefer)


def _ul_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    @wraps(fn)
    def wrapper(*a: Any, **kw: Any) -> Any:

        try:
            return fn(*a, **kw)
        except UlError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(EXIT_FAIL)

    return wrapper


@switch.command("add")
@topology_option
@click.option("--system", "system", default=None, help="agents of this business system")
@click.option("--region", default=None, help="agents of this city region")
@click.option("--skill-group", "skill_group", default=None, help="agents of this skill group")
@click.option("--agent", default=None, help="one agent id")
@click.option("--to", "target", required=True, help="target site code")
@click.option("--disabled", is_flag=True, help="add the rule disabled")
@_friendly
@_ul_errors
def switch_add(
    topology_file: str | None,
    system: str | None,
    region: str | None,
    skill_group: str | None,
    agent: str | None,
    target: str,
    disabled: bool,
) -> None:
    """Add a planned-switch rule; the ULs order the matching online agents to move."""
    given = {
        k: v
        for k, v in (("system", system), ("region", region), ("skill_group", skill_group), ("agent", agent))
        if v
    }
    if len(given) != 1:
        click.echo("error: give exactly one of --system, --region, --skill-group, --agent", err=True)
        sys.exit(EXIT_USAGE)
    topo = topology_mod.load(topology_file)
    if target not in topo.sites:
        click.echo(f"error: --to {target!r} is not a site of {topo.file} ({', '.join(topo.sites)})", err=True)
        sys.exit(EXIT_USAGE)
    ((scope, value),) = given.items()
    res = _ul(topology_file).add_rule(scope, value, target, enabled=not disabled)
    rule = res.get("rule", res)
    click.echo(
        f"rule {rule.get('id')}: {scope}={value} -> {target} ({'enabled' if not disabled else 'disabled'})"
    )


@switch.command("list")
@topology_option
@click.option("--json", "as_json", is_flag=True)
@_friendly
@_ul_errors
def switch_list(topology_file: str | None, as_json: bool) -> None:
    """List the planned-switch rules."""
    rules = _ul(topology_file).rules()
    if as_json:
        click.echo(json.dumps(rules, indent=1))
        return
    if not rules:
        click.echo("no rules")
    for r in rules:
        state = "enabled" if r.get("enabled") else "disabled"
        click.echo(f"{r.get('id')}: {r.get('scope')}={r.get('value')} -> {r.get('target')} ({state})")


@switch.command("remove")
@topology_option
@click.argument("rule_id")
@_friendly
@_ul_errors
def switch_remove(topology_file: str | None, rule_id: str) -> None:
    """Remove a rule (agents stay where they are: there is no automatic failback)."""
    _ul(topology_file).remove_rule(rule_id)
    click.echo(f"rule {rule_id} removed")


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


@main.command("explore")
@click.option("--schedules", "count", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--seed", type=int, default=1, show_default=True, help="the first seed (seeds S..S+N-1)")
@click.option("--profile", "profile_file", default=None, help="nemesis profile (default: the shipped one)")
@topology_option
@click.option("--json", "json_file", default=None, help="write every schedule's verdict here")
@click.option("--replay", "replay_file", default=None, help="run this schedule file as it is, once")
@click.option(
    "--shrink/--no-shrink",
    default=None,
    help="shrink an invalid schedule on the lab (default: yes for drawn schedules, no for a replay)",
)
@click.option(
    "--shrink-budget",
    type=click.IntRange(min=1),
    default=exploration.SHRINK_BUDGET,
    show_default=True,
    help="lab runs a shrink may take",
)
@_friendly
def explore(
    count: int,
    seed: int,
    profile_file: str | None,
    topology_file: str | None,
    json_file: str | None,
    replay_file: str | None,
    shrink: bool | None,
    shrink_budget: int,
) -> None:
    """Random fault schedules on one lab (seeds S..S+N-1), each judged; an invalid one is shrunk on the lab
    and kept in reports/explore/ with the command that replays it. --replay FILE runs one schedule file
    at the same offsets. Exit 0 all valid, 1 any invalid (or not judged), 2 bad input (nothing touched)."""
    try:
        inputs = exploration.load_inputs(topology_file, profile_file, replay_file)
        schedules = [] if inputs.replay else exploration.draw(inputs, range(seed, seed + count))
    except exploration.InputError as e:
        for line in e.lines():
            click.echo(f"error: {line}", err=True)
        sys.exit(EXIT_USAGE)
    t0 = time.monotonic()
    lab = open_lab(inputs.topology)
    results: list[exploration.ScheduleResult] = []
    try:
        with exploration.Explorer(lab, inputs, say=click.echo, shrink_budget=shrink_budget) as ex:
            if inputs.replay is not None:
                name = Path(str(replay_file)).name.removesuffix(".json")
                results.append(ex.replay(inputs.replay, name, shrink_invalid=bool(shrink)))
                results[-1].replay = results[-1].replay or f"hil explore --replay {replay_file}"
                click.echo(results[-1].line())
            else:
                with click.progressbar(length=len(schedules), label="exploring") as bar:

                    def done(res: exploration.ScheduleResult) -> None:
                        click.echo(f"\r{res.line()}")
                        bar.update(1)

                    results = ex.explore(schedules, shrink_invalid=shrink is not False, on_result=done)
    except KeyboardInterrupt:
        click.echo("interrupted: every fault healed", err=True)
        sys.exit(130)
    finally:
        close_lab(lab)
    bad = [r for r in results if r.result != "valid"]
    click.echo(
        f"{len(results) - len(bad)} of {len(results)} schedules valid in {time.monotonic() - t0:.0f} s"
    )
    for r in bad:
        if r.replay:
            click.echo(f"{r.name}: {r.result}: replay with: {r.replay}")
    if json_file:
        payload = exploration.summary(results, seed=seed, profile=profile_file, replay=replay_file)
        Path(json_file).parent.mkdir(parents=True, exist_ok=True)
        Path(json_file).write_text(json.dumps(payload, indent=1, default=str))
        click.echo(f"written: {json_file}")
    sys.exit(1 if bad else 0)


# ---- benchmarks: thin wrappers that run the scripts in bench/ (options after the known ones pass through)

_PASS_THROUGH = {"ignore_unknown_options": True, "allow_extra_args": True}


def _bench(script: str, argv: list[str]) -> None:
    import subprocess

    r = subprocess.run([sys.executable, str(REPO_ROOT / "bench" / script), *argv], cwd=REPO_ROOT)
    sys.exit(r.returncode)


def _json_arg(json_file: str | None) -> list[str]:
    return ["--json", json_file] if json_file else []


@main.group()
def bench() -> None:
    """Benchmarks of the product, each against a peer in the same run; figures to a JSON file.

    Run them in a network namespace of your own (one virtual lab per namespace):
    unshare --net sh -c 'ip link set lo up; HIL_RUN_DIR=/tmp/hil-bench hil bench failover ...'
    """


@bench.command("failover", context_settings=_PASS_THROUGH)
@click.option("--agents", type=click.Choice(["100", "1000", "10000"]), default="100", show_default=True)
@click.option(
    "--fault",
    type=click.Choice([f"{d}-{k}" for d in ("pbx", "cti") for k in ("kill", "port", "pause", "blackhole")]),
    default="pbx-kill",
    show_default=True,
)
@click.option("--json", "json_file", default=None, help="write the figures here")
@click.pass_context
def bench_failover(ctx: click.Context, agents: str, fault: str, json_file: str | None) -> None:
    """Failover of N agents (half at the faulted site): detection, recovery p50/p95/max, CPU, memory, PNG."""
    _bench("bench_failover.py", ["--agents", agents, "--fault", fault, *_json_arg(json_file), *ctx.args])


@bench.command("register", context_settings=_PASS_THROUGH)
@click.option("--json", "json_file", default=None, help="write the figures here")
@click.pass_context
def bench_register(ctx: click.Context, json_file: str | None) -> None:
    """The swarm's REGISTER rate (digest auth) against SIPp's, same kamailio, same run."""
    _bench("bench_register.py", [*_json_arg(json_file), *ctx.args])


@bench.command("capture", context_settings=_PASS_THROUGH)
@click.option("--json", "json_file", default=None, help="write the figures here")
@click.pass_context
def bench_capture(ctx: click.Context, json_file: str | None) -> None:
    """Capture drops at 20,000 and 50,000 packets/s, and decoding rate against tshark -T fields."""
    _bench("bench_capture.py", [*_json_arg(json_file), *ctx.args])


@bench.command("lab", context_settings=_PASS_THROUGH)
@click.option("--json", "json_file", default=None, help="write the figures here")
@click.pass_context
def bench_lab(ctx: click.Context, json_file: str | None) -> None:
    """Lab up and down times, the default and the 10,000-agent topology."""
    _bench("bench_lab.py", [*_json_arg(json_file), *ctx.args])


@bench.command("explore", context_settings=_PASS_THROUGH)
@click.option("--schedules", "count", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--seed", type=int, default=1, show_default=True)
@click.option("--json", "json_file", default=None, help="write the figures here")
@click.pass_context
def bench_explore(ctx: click.Context, count: int, seed: int, json_file: str | None) -> None:
    """Random schedules on the default lab: schedules per hour, invalid ones, lost agents, split brain,
    false failovers, and the time a shrink takes."""
    _bench(
        "bench_explore.py",
        ["--schedules", str(count), "--seed", str(seed), *_json_arg(json_file), *ctx.args],
    )


if __name__ == "__main__":
    main()
