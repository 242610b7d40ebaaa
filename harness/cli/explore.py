"""`hil explore`: random fault schedules on one lab, shrinking, replay (harness.scenario.exploration)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click

from harness.cli.common import EXIT_USAGE, _friendly, main, topology_option
from harness.lab.session import close_lab, open_lab
from harness.scenario import exploration


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
