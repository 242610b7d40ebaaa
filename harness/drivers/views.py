"""Read-only views of device drivers: what a scenario or a fixture may do to a device on its own.

Nothing changes the lab except through the Injector (DESIGN.md): a change made there is checked against
the topology's allowlist, journaled before it is made, recorded in the history and healed, also by
`hil lab restore` after a crash. A scenario that shut a port through a bare driver would do none of that.
So scenarios and fixtures get a view that passes reads through (a port's state, a service's state, a
phone's registration, logs, facts) and refuses everything else with an error that says where the change
belongs. Commands run on a host through the view must be reads (`systemctl is-active`, `journalctl` ...),
with no shell syntax that could chain a write behind them.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["READS", "NotReadOnly", "ReadOnlyDriver", "is_read_only_command", "read_only"]

# Methods of the driver interfaces (switch, host, phone, console, power) that only read the device.
READS: frozenset[str] = frozenset(
    {
        "port_state",
        "facts",
        "registration",
        "service_active",
        "service_pid",
        "fetch_log",
        "outlet_state",
    }
)
# Plain attributes a caller may look at.
_ATTRIBUTES = frozenset({"name", "dry_run", "steps"})

# Host commands that read and never write, matched against the whole command line.
_READ_COMMANDS = (
    r"systemctl (is-active|is-enabled|is-failed|status|show|list-units)( [-\w@.:=/]+)*",
    r"journalctl( [-\w@.:=/]+)*",
    r"(cat|head|tail|ls|stat) (-[-\w]+ )*/(proc|sys|etc|var/log)/[-\w@./]*",
    r"ip( -\w+)* (link|addr|address|route|neigh|rule)( (show|list)( [-\w@.:/]+)*)?",
    r"(ss|uname|hostname|uptime|id|date|pgrep|ps|free|df)( [-\w@.:=/,]+)*",
    r"nft (-[\w]+ )*list( [-\w@.]+)*",
)
_READ_RE = re.compile("|".join(f"(?:{p})" for p in _READ_COMMANDS))
_SHELL_SYNTAX = re.compile(r"[;&|$`<>(){}\\\n\r!*?\[\]~'\"]")


class NotReadOnly(AttributeError):
    """A scenario asked a read-only driver view for something that changes the device."""


def is_read_only_command(command: str) -> bool:
    """True for a host command that only reads (a known read command, and no shell syntax at all)."""
    line = " ".join(command.split())
    return not _SHELL_SYNTAX.search(command) and _READ_RE.fullmatch(line) is not None


def _refusal(device: str, what: str) -> str:
    return (
        f"{device}: {what} is not available on a read-only driver view. A scenario changes the lab only "
        "through the injector, so the change is checked, journaled and healed: use "
        "scenario.fault(kind, target, ...) or the Injector (scenario.injector()). "
        f"Reads allowed here: {', '.join(sorted(READS))}, and run() of read-only commands."
    )


class ReadOnlyDriver:
    """A driver behind a view that only reads. ``with`` closes the driver underneath, as a driver would."""

    __slots__ = ("_driver",)

    def __init__(self, driver: Any) -> None:
        object.__setattr__(self, "_driver", driver)

    def __getattr__(self, name: str) -> Any:
        drv = object.__getattribute__(self, "_driver")
        if (name in READS or name in _ATTRIBUTES) and hasattr(drv, name):
            return getattr(drv, name)
        raise NotReadOnly(_refusal(getattr(drv, "name", type(drv).__name__), repr(name)))

    def __setattr__(self, name: str, value: Any) -> None:
        raise NotReadOnly(_refusal(self._driver.name, f"setting {name!r}"))

    def run(self, command: str, timeout: float = 30.0, action: str = "run") -> Any:
        """Run a read-only command on a host (never with ``check``: reading an exit status is the point)."""
        if not hasattr(self._driver, "run") or not hasattr(self._driver, "service_active"):
            raise NotReadOnly(_refusal(self._driver.name, "run()"))
        if not is_read_only_command(command):
            raise NotReadOnly(
                _refusal(self._driver.name, f"run({command!r}), not a known read-only command,")
            )
        return self._driver.run(command, timeout=timeout, action=action)

    def close(self) -> None:
        self._driver.close()

    def __enter__(self) -> ReadOnlyDriver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ReadOnlyDriver({self._driver!r})"


def read_only(driver: Any) -> ReadOnlyDriver:
    """A read-only view of ``driver`` (a view of a view is the same view)."""
    return driver if isinstance(driver, ReadOnlyDriver) else ReadOnlyDriver(driver)
