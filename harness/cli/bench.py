"""`hil bench ...`: thin wrappers that run the scripts in bench/ (unknown options pass through)."""

from __future__ import annotations

import subprocess
import sys

import click

from harness.cli.common import main
from harness.topology import REPO_ROOT

_PASS_THROUGH = {"ignore_unknown_options": True, "allow_extra_args": True}


def _bench(script: str, argv: list[str]) -> None:
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


@bench.command("fuzz", context_settings=_PASS_THROUGH)
@click.option("--seconds", type=click.FloatRange(min=0, min_open=True), default=60.0, show_default=True)
@click.option("--json", "json_file", default=None, help="write the figures here")
@click.pass_context
def bench_fuzz(ctx: click.Context, seconds: float, json_file: str | None) -> None:
    """Fuzz the parsers (SIP, CTI line and connection, capture decoder, UL requests) for N seconds in all:
    cases per second per parser; exit 1 if any case breaks one. Needs no lab."""
    _bench("bench_fuzz.py", ["--seconds", str(seconds), *_json_arg(json_file), *ctx.args])
