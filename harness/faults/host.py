"""Faults sent to a Linux host as shell commands over SSH: its service killed, stopped or paused.

Which service may be touched is an allowlist (harness.faults.safety): the unit the topology names on the
host, or the swarm on an agents host; never SSH or anything it stands on.
"""

from __future__ import annotations

import shlex
from abc import abstractmethod
from typing import Any

from harness.faults.base import Fault, FaultRefused
from harness.faults.safety import HOST_KINDS, check_not_management, check_service


class HostFault(Fault):
    """A fault sent to one Linux host as shell commands over SSH."""

    network = False  # True: acts on the host's traffic (refused if management shares the data address)

    @property
    def host(self) -> str:
        return self.target

    def check_safety(self) -> None:
        self._host_safety(self.host)

    def _host_safety(self, name: str) -> None:
        d = self._device(name)
        if d.kind not in HOST_KINDS:
            raise FaultRefused(f"{self.kind}: {name} is a {d.kind}, not a host this fault can act on")
        if not d.spec.fair_game:
            raise FaultRefused(f"{self.kind}: {name} is not marked fair_game in the topology")
        if self.network:
            if d.spec.mgmt is None or d.spec.mgmt == d.spec.address:
                raise FaultRefused(
                    f"{self.kind}: {name} is managed over its data address; the fault would cut the "
                    "controller's management path"
                )
            check_not_management(self.kind, self.lab, f"{name}'s data address", str(d.spec.address))

    def address(self, name: str) -> str:
        if name == "controller":
            return str(self.lab.topology.model.management.controller)
        return str(self._device(name).spec.address)

    @abstractmethod
    def inject_commands(self) -> list[str]: ...

    @abstractmethod
    def heal_commands(self) -> list[str]: ...

    def plan(self) -> list[tuple[str, str]]:
        return [(self.host, c) for c in self.inject_commands()]

    def plan_heal(self) -> list[tuple[str, str]]:
        return [(self.host, c) for c in self.heal_commands()]

    def _inject(self) -> None:
        with self._driver(self.host) as h:
            for cmd in self.inject_commands():
                h.run(cmd, action=f"{self.kind}.inject", check=True)

    def _heal(self) -> None:
        with self._driver(self.host) as h:
            for cmd in self.heal_commands():
                h.run(cmd, action=f"{self.kind}.heal", check=True)

    def _run(self, cmd: str, action: str) -> Any:
        with self._driver(self.host) as h:
            return h.run(cmd, action=action)


class ServiceFault(HostFault):
    @property
    def service(self) -> str:
        svc = self.params.get("service") or self._device(self.host).spec.service
        if not svc:
            raise FaultRefused(f"{self.kind}: {self.host} names no service; pass service=...")
        return str(svc)

    @property
    def ends_sessions(self) -> bool:
        d = self.lab.topology.devices.get(self.host)
        return d is not None and d.kind == "cti" and self.kind in ("service_kill", "service_stop")

    def check_safety(self) -> None:
        super().check_safety()
        check_service(self.kind, self.lab, self.host, self.service)

    def active(self) -> bool:
        q = shlex.quote(self.service)
        return self._run(f"systemctl is-active {q}", f"{self.kind}.check").exit_code == 0

    def heal_commands(self) -> list[str]:
        return [f"systemctl start {shlex.quote(self.service)}"]

    def took_effect(self) -> bool:
        return not self.active()

    def heal_took_effect(self) -> bool:
        return self.active()


class ServiceKill(ServiceFault):
    kind = "service_kill"

    def inject_commands(self) -> list[str]:
        return [f"systemctl kill -s SIGKILL {shlex.quote(self.service)}"]


class ServiceStop(ServiceFault):
    kind = "service_stop"

    def inject_commands(self) -> list[str]:
        return [f"systemctl stop {shlex.quote(self.service)}"]


class ServicePause(ServiceFault):
    """SIGSTOP, healed by SIGCONT. With ``hold=S`` the host resumes the service itself S seconds after
    stopping it, in the same command line: a pause shorter than the controller's round trip to the host
    (an SSH command takes up to a second on a loaded machine) then lasts what was asked, not what the heal's
    latency makes of it (the anti-flap scenario's 300 ms PBX hang measured 1.42 s on the wire under load)."""

    kind = "service_pause"

    @property
    def hold(self) -> float | None:
        v = self.params.get("hold")
        return None if v is None else float(v)

    def inject_commands(self) -> list[str]:
        q = shlex.quote(self.service)
        if self.hold is not None:
            return [f"systemctl kill -s SIGSTOP {q} && sleep {self.hold:g} && systemctl kill -s SIGCONT {q}"]
        return [f"systemctl kill -s SIGSTOP {q}"]

    def heal_commands(self) -> list[str]:
        return [f"systemctl kill -s SIGCONT {shlex.quote(self.service)}"]

    def _heal(self) -> None:
        # SIGCONT to a service that is gone is not an error for a heal: nothing is paused any more.
        with self._driver(self.host) as h:
            for cmd in self.heal_commands():
                h.run(cmd, action=f"{self.kind}.heal")

    def _stopped(self) -> bool | None:
        q = shlex.quote(self.service)
        pid = self._run(f"systemctl show -p MainPID --value {q}", f"{self.kind}.check").stdout.strip()
        if not pid.isdigit() or pid == "0":
            return None
        stat = self._run(f"ps -o stat= -p {pid}", f"{self.kind}.check").stdout.strip()
        return stat[:1] in ("T", "t")  # stopped by a signal, or held by a tracer: not running either way

    def took_effect(self) -> bool:
        if self.hold is not None:
            return True  # stopped, held, resumed by the command itself (else it failed): the wire shows it
        return self._stopped() is True

    def heal_took_effect(self) -> bool:
        return self._stopped() is not True
