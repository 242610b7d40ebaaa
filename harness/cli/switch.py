"""`hil switch add|list|remove`: planned switches of online agents, through the UL's admin API."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from functools import wraps
from typing import Any

import click

from harness import topology as topology_mod
from harness.cli.common import EXIT_FAIL, EXIT_USAGE, _friendly, main, topology_option
from harness.lab.session import open_lab
from harness.ulapi import UlError, client_for


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
