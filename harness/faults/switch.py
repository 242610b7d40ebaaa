"""Switch-port faults: a port (or both ends of a link) shut down over the switch's CLI, healed over SSH or,
when the management path does not answer, over the switch's serial console."""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

from harness.drivers import console_for
from harness.drivers.base import DeviceUnreachable
from harness.faults.base import Fault, FaultRefused

MGMT_PROBE = 1.5  # seconds to wait for a switch's SSH port before going to its console


def config_wrap(device_type: str, commands: list[str]) -> list[str]:
    """What the CLI sees: the config commands inside the vendor's config mode (netmiko adds this on SSH)."""
    if device_type == "huawei":
        return ["system-view", *commands, "return"]
    return ["configure terminal", *commands, "end"]


class _Ports(Fault):
    """Shared by port_down and link_cut: a set of switch ports set down, healed by SSH or else console."""

    def ports(self) -> list[tuple[str, str]]:
        raise NotImplementedError

    def _port_safety(self, sw: str, port: str) -> None:
        dev = self._device(sw)
        if dev.kind != "switch" or port not in dev.spec.ports:
            raise FaultRefused(f"{self.kind}: {sw}:{port} is not a switch port of this topology")
        spec = dev.spec.ports[port]
        if (sw, port) in self.lab.topology.management_path() or spec.connects == "controller":
            raise FaultRefused(f"{self.kind}: {sw}:{port} is on the controller's management path")
        if not spec.cuttable:
            raise FaultRefused(f"{self.kind}: {sw}:{port} is not marked cuttable in the topology")

    def check_safety(self) -> None:
        for sw, port in self.ports():
            self._port_safety(sw, port)

    def _commands(self, down: bool) -> list[tuple[str, str]]:
        out = []
        for sw, port in self.ports():
            drv = self._driver(sw)
            for cmd in config_wrap(drv.device_type, drv.shutdown_commands(port, down)):
                out.append((sw, cmd))
        return out

    def plan(self) -> list[tuple[str, str]]:
        return self._commands(True)

    def plan_heal(self) -> list[tuple[str, str]]:
        return self._commands(False)

    def _inject(self) -> None:
        for sw, port in self.ports():
            with self._driver(sw) as drv:
                drv.port_down(port)

    def _mgmt_up(self, sw: str) -> bool:
        """A quick look at the switch's SSH port, so a cut management path sends us to the console at once
        instead of after the SSH driver's full retries."""
        spec = self._device(sw).spec
        if not spec.console:
            return True  # no other way in: let the SSH driver try (and report the device unreachable)
        try:
            socket.create_connection((str(spec.mgmt), spec.ssh_port), timeout=MGMT_PROBE).close()
            return True
        except OSError:
            return False

    def _on_switch(self, sw: str, action: Callable[[Any], Any]) -> Any:
        """Run action(driver) over SSH; over the console when the management path does not answer."""
        self.last_via = "ssh"
        if self._mgmt_up(sw):
            try:
                with self._driver(sw) as drv:
                    return action(drv)
            except DeviceUnreachable:
                if not self._device(sw).spec.console:
                    raise
        with console_for(self.lab, self._device(sw).spec.console, self.steps) as con:
            self.last_via = "console"
            return action(con)

    def _heal(self) -> None:
        for sw, port in self.ports():
            self._on_switch(sw, lambda d, port=port: d.port_up(port))
            if self.last_via == "console":
                self.healed_via = "console"

    def _states(self) -> list[Any]:
        return [self._on_switch(sw, lambda d, port=port: d.port_state(port)) for sw, port in self.ports()]

    def took_effect(self) -> bool:
        return all(not st.admin_up and not st.link_up for st in self._states())

    def heal_took_effect(self) -> bool:
        return all(st.admin_up for st in self._states())


class PortDown(_Ports):
    kind = "port_down"

    def ports(self) -> list[tuple[str, str]]:
        if ":" in self.target:
            sw, port = self.target.split(":", 1)
            return [(sw, port)]
        # a device: the switch port it is cabled to
        found = [
            (sw.name, pname)
            for sw in self.lab.topology.of_kind("switch")
            for pname, p in sw.spec.ports.items()
            if p.connects == self.target
        ]
        if not found:
            raise FaultRefused(f"port_down: no switch port connects {self.target!r}")
        return found[:1]

    @property
    def site(self) -> str | None:
        name = self.target.split(":", 1)[0]
        d = self.lab.topology.devices.get(name)
        if d is None:
            return None
        if d.kind == "switch" and ":" in self.target:
            connects = d.spec.ports.get(self.target.split(":", 1)[1])
            peer = self.lab.topology.devices.get(connects.connects or "") if connects else None
            return peer.site if peer else d.site
        return d.site


class LinkCut(_Ports):
    kind = "link_cut"

    def _link(self) -> Any:
        link = self.lab.topology.model.links.get(self.target)
        if link is None:
            raise FaultRefused(f"link_cut: {self.target!r} is not a link of this topology")
        return link

    def ports(self) -> list[tuple[str, str]]:
        link = self._link()
        return [tuple(link.a.split(":", 1)), tuple(link.b.split(":", 1))]  # type: ignore[list-item]

    def check_safety(self) -> None:
        if not self._link().cuttable:
            raise FaultRefused(f"link_cut: link {self.target} is not marked cuttable in the topology")
        super().check_safety()

    @property
    def site(self) -> str | None:
        sw = self.lab.topology.devices.get(self._link().a.split(":", 1)[0])
        return sw.site if sw else None
