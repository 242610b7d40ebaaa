"""Power faults: a device's PDU outlet switched off and on, over the PDU's serial console."""

from __future__ import annotations

from typing import Any

from harness.faults.base import Fault, FaultRefused


class PowerOff(Fault):
    """The device's PDU outlet switched off (its services die at once, its links go dark), then on."""

    kind = "power_off"

    def outlet(self) -> tuple[str, str, Any]:
        for pdu in self.lab.topology.of_kind("pdu"):
            for name, outlet in pdu.spec.outlets.items():
                if outlet.connects == self.target:
                    return pdu.name, name, outlet
        raise FaultRefused(f"power_off: no PDU outlet feeds {self.target!r}")

    @property
    def ends_sessions(self) -> bool:
        d = self.lab.topology.devices.get(self.target)
        return d is not None and d.kind == "cti"

    def check_safety(self) -> None:
        dev = self._device(self.target)
        pdu, name, outlet = self.outlet()
        if not outlet.cuttable:
            raise FaultRefused(f"power_off: outlet {pdu}:{name} ({self.target}) is not marked cuttable")
        topo = self.lab.topology
        if dev.kind == "switch" and any(sw == dev.name for sw, _ in topo.management_path()):
            raise FaultRefused(f"power_off: {self.target} carries the controller's management path")
        pdu_console = topo.device(pdu).spec.console
        if self.target in (pdu, pdu_console) or (
            dev.kind == "console" and topo.device(pdu_console).spec.device == pdu
        ):
            raise FaultRefused(f"power_off: {self.target} is the way to the PDU itself")

    def plan(self) -> list[tuple[str, str]]:
        pdu, name, _ = self.outlet()
        return [(pdu, self._driver(pdu).off_command(name))]

    def plan_heal(self) -> list[tuple[str, str]]:
        pdu, name, _ = self.outlet()
        return [(pdu, self._driver(pdu).on_command(name))]

    def _inject(self) -> None:
        pdu, name, _ = self.outlet()
        with self._driver(pdu) as p:
            p.outlet_off(name)

    def _heal(self) -> None:
        pdu, name, _ = self.outlet()
        with self._driver(pdu) as p:
            p.outlet_on(name)

    def _on(self) -> bool:
        pdu, name, _ = self.outlet()
        with self._driver(pdu) as p:
            return bool(p.outlet_state(name))

    def took_effect(self) -> bool:
        return not self._on()

    def heal_took_effect(self) -> bool:
        return self._on()
