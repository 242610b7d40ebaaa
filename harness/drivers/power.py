"""Power driver: switch a PDU outlet on or off and read its state, over the PDU's serial console.

Why the console and not the PDU's web or SNMP interface: it is the one path that works when the lab's
network is what is broken, and every switched PDU has one. One interface, vendor CLIs behind it; the APC
AOS command set (``olOn``/``olOff``/``olStatus``, replies ``E000: Success``) is the first; the virtual lab
emulates it (virtual/pdu.py), so this code runs unmodified in every test.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod

from harness.drivers.base import DeviceError, Driver, Steps
from harness.drivers.console import ConsoleDriver


class PowerDriver(Driver, ABC):
    """outlet_on / outlet_off / outlet_state for one PDU."""

    def __init__(self, name: str, console: ConsoleDriver, steps: Steps | None = None):
        super().__init__(name, steps or console.steps)
        self.console = console

    @abstractmethod
    def on_command(self, outlet: str) -> str: ...

    @abstractmethod
    def off_command(self, outlet: str) -> str: ...

    @abstractmethod
    def state_command(self, outlet: str) -> str: ...

    @abstractmethod
    def check(self, command: str, output: str) -> None: ...

    @abstractmethod
    def parse_state(self, outlet: str, output: str) -> bool: ...

    def _do(self, action: str, command: str) -> str:
        with self.step(action, [command]):
            if self.dry_run:
                return ""
            _ = self.console.port  # open (retried; DeviceUnreachable when the console is dead)
            out = self.console.send(command)
            self.check(command, out)
            return out

    def outlet_on(self, outlet: str) -> None:
        self._do("outlet_on", self.on_command(outlet))

    def outlet_off(self, outlet: str) -> None:
        self._do("outlet_off", self.off_command(outlet))

    def outlet_state(self, outlet: str) -> bool:
        """True when the outlet is on (in a dry run: assumed on)."""
        out = self._do("outlet_state", self.state_command(outlet))
        return True if self.dry_run else self.parse_state(outlet, out)

    def close(self) -> None:
        self.console.close()


class ApcPdu(PowerDriver):
    """APC Rack PDU (AP79xx, AOS 6.x CLI)."""

    def on_command(self, outlet: str) -> str:
        return f"olOn {outlet}"

    def off_command(self, outlet: str) -> str:
        return f"olOff {outlet}"

    def state_command(self, outlet: str) -> str:
        return f"olStatus {outlet}"

    def check(self, command: str, output: str) -> None:
        if "E000" not in output:
            raise DeviceError(f"{self.name}: {command!r} refused: {output.strip()[:200]}")

    def parse_state(self, outlet: str, output: str) -> bool:
        m = re.search(rf"^\s*{re.escape(outlet)}:.*:\s*(On|Off)\s*$", output, re.M)
        if not m:
            raise DeviceError(f"{self.name}: no state for outlet {outlet} in: {output.strip()[:200]}")
        return m.group(1) == "On"


MODELS: dict[str, type[PowerDriver]] = {"apc": ApcPdu, "generic": ApcPdu}


def power_driver(name: str, model: str, console: ConsoleDriver, steps: Steps | None = None) -> PowerDriver:
    family = model.split("-", 1)[0].lower()
    try:
        cls = MODELS[family]
    except KeyError:
        raise DeviceError(f"{name}: no power driver for PDU model {model!r}") from None
    return cls(name, console, steps)
