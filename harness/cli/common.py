"""What every `hil` command shares: the group, exit codes, the topology option, and the guard that turns
a user's mistake into one line and an exit code.

Exit codes: 0 done, 1 the operation failed (lab would not start, device unreachable), 2 the input is wrong
(bad topology, bad option). A user's mistake gets one line per problem, never a traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import wraps
from typing import Any

import click

from harness.lab.session import LabError, LabUnusable
from harness.topology import SecretMissing, TopologyError

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
        except LabUnusable as e:  # a physical lab's device that cannot be reached or read: one line each
            for line in e.lines():
                click.echo(f"error: {line}", err=True)
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
