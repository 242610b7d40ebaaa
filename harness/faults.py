"""Faults: what the harness breaks, how it knows it broke, and how it always puts it back.

A fault is an object (DESIGN.md): `inject()`, `heal()`, `took_effect()`, a maximum duration after which it
heals itself, and a description that goes to the journal, the history and the report. Every fault acts
through a device's own management interface (switch CLI over SSH or console, `systemctl`/`nft`/`tc` over
SSH, PDU CLI over its console), so the same fault runs against the virtual lab and a physical one.

Safety comes before anything is sent: a target the topology does not mark `cuttable`/`fair_game` is refused,
and so is a fault that would cut the controller's own management path. The `Injector` writes each fault to
a journal and fsyncs it before injecting, heals on success, on any exception, on SIGINT and SIGTERM, and when
the fault's time is up; `restore()` heals whatever a killed controller left open (`hil lab restore`).
`Injector(dry_run=True)` prints every command each fault would send, and sends none.

Kinds (`make_fault(lab, kind, target, **params)`):

| kind | target | params | how |
| --- | --- | --- | --- |
| port_down | `switch:port`, or a device (its switch port) | | switch CLI `shutdown` / `no shutdown` |
| link_cut | a topology link | | both ends' ports down |
| service_kill, _stop, _pause | a host | service= | `systemctl kill -s SIGKILL`, `stop`, `kill -s SIGSTOP` |
| power_off | a device on a PDU outlet | | PDU `olOff` / `olOn` |
| blackhole | a host | | nft: drop all traffic of its data address, link up |
| partition | host a | b=, one_way=False | nft on a (or b): drop a->b (and b->a) |
| loss | a host | percent= | nft `numgen random` drop, both directions |
| rate_limit | a host | kbit=, dev= (optional) | nft policer both directions, plus tc tbf on dev |
"""

from __future__ import annotations

import atexit
import json
import os
import secrets
import shlex
import signal
import socket
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

from harness.drivers.base import DeviceUnreachable, RefusedBySafety, Steps
from harness.lab import Lab

NEMESIS = "nemesis"
HOST_KINDS = ("pbx", "cti", "ul", "host")
MGMT_SERVICES = {"ssh", "sshd", "openssh-server", "systemd-networkd", "networking", "NetworkManager"}
SETTLE = 5.0  # seconds an inject or heal may take to show
MGMT_PROBE = 1.5  # seconds to wait for a switch's SSH port before going to its console


class FaultRefused(RefusedBySafety):
    """Not fair game, or on the controller's management path: nothing was sent."""


class FaultNotEffective(Exception):
    """The fault was injected but never showed; it has been healed."""


class FaultHealFailed(Exception):
    """A heal did not complete; the fault stays open in the journal for `hil lab restore`."""


def _fid() -> str:
    return "f" + secrets.token_hex(4)


def _wait(pred: Callable[[], bool], timeout: float, every: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if pred():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(every)


# ------------------------------------------------------------------------------------------------ faults


class Fault(ABC):
    """One fault: what, where, how to undo; `max_duration` after which it heals itself."""

    kind: ClassVar[str] = ""
    default_max_duration: ClassVar[float] = 300.0

    def __init__(
        self,
        lab: Lab,
        target: str,
        params: dict[str, Any] | None = None,
        *,
        id: str | None = None,
        max_duration: float | None = None,
        steps: Steps | None = None,
    ):
        self.lab = lab
        self.target = target
        self.params = dict(params or {})
        self.id = id or _fid()
        self.max_duration = float(max_duration or self.default_max_duration)
        self.steps = steps or Steps()
        self.healed_via: str | None = None
        self._heal_lock = threading.Lock()

    # -- description ----------------------------------------------------------------------------------
    @property
    def site(self) -> str | None:
        name = self.target.split(":", 1)[0]
        d = self.lab.topology.devices.get(name)
        return d.site if d else None

    @property
    def ends_sessions(self) -> bool:
        """True when the fault removes a CTI process (its sessions die with it)."""
        return False

    def describe(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "id": self.id,
            "kind": self.kind,
            "target": self.target,
            "params": self.params,
            "max_duration": self.max_duration,
            "site": self.site,
        }
        if self.ends_sessions:
            d["ends_sessions"] = True
        return d

    def history_value(self) -> dict[str, Any]:
        """The `fault.inject` value of docs/history.md."""
        v: dict[str, Any] = {"id": self.id, "fault": self.kind, "target": self.target, **self.params}
        if self.site:
            v["site"] = self.site
        if self.ends_sessions:
            v["ends_sessions"] = True
        return v

    # -- what subclasses provide ----------------------------------------------------------------------
    @abstractmethod
    def check_safety(self) -> None:
        """Raise FaultRefused unless the topology makes the target fair game and management stays up."""

    @abstractmethod
    def plan(self) -> list[tuple[str, str]]:
        """(device, command) pairs inject would send, in order."""

    @abstractmethod
    def plan_heal(self) -> list[tuple[str, str]]:
        """(device, command) pairs heal would send, in order."""

    @abstractmethod
    def _inject(self) -> None: ...

    @abstractmethod
    def _heal(self) -> None: ...

    @abstractmethod
    def took_effect(self) -> bool:
        """Read back from the device that the fault is in place."""

    def heal_took_effect(self) -> bool:
        """Read back that the heal is in place (default: the fault no longer shows)."""
        return not self.took_effect()

    # -- the interface --------------------------------------------------------------------------------
    def inject(self) -> None:
        self.check_safety()
        self._inject()

    def heal(self) -> None:
        """Undo the fault. Idempotent: healing a healed (or never injected) fault is harmless."""
        with self._heal_lock:
            self._heal()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.id} {self.kind} {self.target} {self.params}>"

    # -- helpers --------------------------------------------------------------------------------------
    def _device(self, name: str) -> Any:
        try:
            return self.lab.topology.device(name)
        except KeyError:
            raise FaultRefused(f"{self.kind}: {name!r} is not a device of {self.lab.topology.file}") from None

    def _driver(self, name: str) -> Any:
        from harness.drivers import driver_for

        return driver_for(self.lab, name, self.steps)


# -- switch ports -------------------------------------------------------------------------------------


def _config_wrap(device_type: str, commands: list[str]) -> list[str]:
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
            for cmd in _config_wrap(drv.device_type, drv.shutdown_commands(port, down)):
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
        from harness.drivers import console_for

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


# -- hosts over SSH ------------------------------------------------------------------------------------


class _HostFault(Fault):
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
        if self.network and (d.spec.mgmt is None or d.spec.mgmt == d.spec.address):
            raise FaultRefused(
                f"{self.kind}: {name} is managed over its data address; the fault would cut the "
                "controller's management path"
            )

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


class _ServiceFault(_HostFault):
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
        if self.service.removesuffix(".service") in MGMT_SERVICES:
            raise FaultRefused(f"{self.kind}: {self.service} carries the controller's management path")

    def active(self) -> bool:
        q = shlex.quote(self.service)
        return self._run(f"systemctl is-active {q}", f"{self.kind}.check").exit_code == 0

    def heal_commands(self) -> list[str]:
        return [f"systemctl start {shlex.quote(self.service)}"]

    def took_effect(self) -> bool:
        return not self.active()

    def heal_took_effect(self) -> bool:
        return self.active()


class ServiceKill(_ServiceFault):
    kind = "service_kill"

    def inject_commands(self) -> list[str]:
        return [f"systemctl kill -s SIGKILL {shlex.quote(self.service)}"]


class ServiceStop(_ServiceFault):
    kind = "service_stop"

    def inject_commands(self) -> list[str]:
        return [f"systemctl stop {shlex.quote(self.service)}"]


class ServicePause(_ServiceFault):
    kind = "service_pause"

    def inject_commands(self) -> list[str]:
        return [f"systemctl kill -s SIGSTOP {shlex.quote(self.service)}"]

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
        return stat.startswith("T")

    def took_effect(self) -> bool:
        return self._stopped() is True

    def heal_took_effect(self) -> bool:
        return self._stopped() is not True


class _NftFault(_HostFault):
    """Packet filter faults: one nft table per fault, added and removed atomically."""

    network = True

    @property
    def table(self) -> str:
        return f"hil_{self.id}"

    @abstractmethod
    def rules(self) -> list[tuple[str, str]]:
        """(chain, rule) pairs; chain 'in' (input hook) or 'out' (output hook)."""

    def inject_commands(self) -> list[str]:
        t = f"inet {self.table}"
        parts = [f"add table {t}"]
        for chain, hook in (("in", "input"), ("out", "output")):
            parts.append(
                f"add chain {t} {chain} {{ type filter hook {hook} priority -300 ; policy accept ; }}"
            )
        parts += [f"add rule {t} {chain} {rule}" for chain, rule in self.rules()]
        return ["nft " + shlex.quote(" ; ".join(parts))]

    def heal_commands(self) -> list[str]:
        t = f"inet {self.table}"
        return ["nft " + shlex.quote(f"add table {t} ; delete table {t}")]

    def took_effect(self) -> bool:
        r = self._run(f"nft list table inet {self.table}", f"{self.kind}.check")
        return r.exit_code == 0 and all(rule.split()[-1] in r.stdout for _, rule in self.rules())

    def heal_took_effect(self) -> bool:
        return self._run(f"nft list table inet {self.table}", f"{self.kind}.check").exit_code != 0


class Blackhole(_NftFault):
    """Every packet to or from the host's data address dropped, link up: the host is silent, not gone."""

    kind = "blackhole"

    def rules(self) -> list[tuple[str, str]]:
        a = self.address(self.host)
        return [("in", f"ip daddr {a} drop"), ("out", f"ip saddr {a} drop")]


class Loss(_NftFault):
    kind = "loss"

    def check_safety(self) -> None:
        super().check_safety()
        p = float(self.params.get("percent", 0))
        if not 0 < p <= 100:
            raise FaultRefused(f"loss: percent must be in (0, 100], not {p}")

    def rules(self) -> list[tuple[str, str]]:
        a, p = self.address(self.host), int(round(float(self.params["percent"])))
        return [
            ("in", f"ip daddr {a} numgen random mod 100 < {p} drop"),
            ("out", f"ip saddr {a} numgen random mod 100 < {p} drop"),
        ]


class RateLimit(_NftFault):
    """Traffic of the host's data address policed to kbit each way; with dev=, egress shaped by tc tbf."""

    kind = "rate_limit"

    def check_safety(self) -> None:
        super().check_safety()
        if float(self.params.get("kbit", 0)) <= 0:
            raise FaultRefused("rate_limit: kbit must be positive")

    def _bytes(self) -> tuple[int, int]:
        rate = int(float(self.params["kbit"]) * 125)
        return rate, max(1514 * 2, rate // 10)

    def rules(self) -> list[tuple[str, str]]:
        a = self.address(self.host)
        rate, burst = self._bytes()
        lim = f"limit rate over {rate} bytes/second burst {burst} bytes drop"
        return [("in", f"ip daddr {a} {lim}"), ("out", f"ip saddr {a} {lim}")]

    def inject_commands(self) -> list[str]:
        cmds = super().inject_commands()
        dev = self.params.get("dev")
        if dev:
            kbit = int(float(self.params["kbit"]))
            _, burst = self._bytes()
            d = shlex.quote(str(dev))
            cmds.append(f"tc qdisc replace dev {d} root tbf rate {kbit}kbit burst {burst} latency 200ms")
        return cmds

    def heal_commands(self) -> list[str]:
        cmds = super().heal_commands()
        dev = self.params.get("dev")
        if dev:
            d = shlex.quote(str(dev))
            # replace-then-delete: idempotent, and the interface gets its default qdisc back
            cmds.append(f"tc qdisc replace dev {d} root pfifo && tc qdisc del dev {d} root")
        return cmds


class Partition(_NftFault):
    """a cannot reach b (one_way) or neither reaches the other; put on a, or on b if only b is drivable."""

    kind = "partition"

    @property
    def a(self) -> str:
        return str(self.params.get("a") or self.target)

    @property
    def b(self) -> str:
        b = self.params.get("b")
        if not b:
            raise FaultRefused("partition: needs b=<device>")
        return str(b)

    @property
    def one_way(self) -> bool:
        return bool(self.params.get("one_way", False))

    @property
    def host(self) -> str:
        try:
            self._host_safety(self.a)
            return self.a
        except FaultRefused:
            return self.b

    @property
    def site(self) -> str | None:
        d = self.lab.topology.devices.get(self.a)
        return d.site if d else None

    def check_safety(self) -> None:
        for end in (self.a, self.b):
            if end == "controller" or self.address(end) == self.address("controller"):
                raise FaultRefused("partition: the controller's own traffic is the management path")
        try:
            self._host_safety(self.a)
        except FaultRefused as first:
            try:
                self._host_safety(self.b)
            except FaultRefused:
                raise first from None

    def rules(self) -> list[tuple[str, str]]:
        a, b = self.address(self.a), self.address(self.b)
        a_to_b, b_to_a = f"ip saddr {a} ip daddr {b} drop", f"ip saddr {b} ip daddr {a} drop"
        if self.host == self.a:
            rules = [("out", a_to_b)] + ([] if self.one_way else [("in", b_to_a)])
        else:
            rules = [("in", a_to_b)] + ([] if self.one_way else [("out", b_to_a)])
        return rules


# -- power ---------------------------------------------------------------------------------------------


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


KINDS: dict[str, type[Fault]] = {
    cls.kind: cls
    for cls in (
        PortDown,
        LinkCut,
        ServiceKill,
        ServiceStop,
        ServicePause,
        PowerOff,
        Blackhole,
        Partition,
        Loss,
        RateLimit,
    )
}


def make_fault(
    lab: Lab,
    kind: str,
    target: str | None = None,
    *,
    steps: Steps | None = None,
    id: str | None = None,
    max_duration: float | None = None,
    **params: Any,
) -> Fault:
    """A fault of `kind` on `target`; nothing is checked or sent until it is injected."""
    try:
        cls = KINDS[kind]
    except KeyError:
        raise ValueError(f"unknown fault kind {kind!r}; known: {', '.join(sorted(KINDS))}") from None
    if target is None:
        target = params.get("a")
        if target is None:
            raise ValueError(f"{kind}: a target is needed")
    return cls(lab, str(target), params, id=id, max_duration=max_duration, steps=steps)


# ------------------------------------------------------------------------------------------------ journal


def _proc_start(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except OSError:
        return None


def default_journal(lab: Lab) -> Path:
    """Where open faults are recorded: with the virtual lab's run state (gone with the lab), or per lab."""
    env = os.environ.get("HIL_FAULT_JOURNAL")
    if env:
        return Path(env)
    return lab.state_dir() / "faults.journal.jsonl"


class Journal:
    """Append-only JSONL of injects and heals; each line fsynced before the call returns."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._lock = threading.Lock()

    def append(self, record: dict[str, Any]) -> None:
        line = json.dumps({**record, "wall": time.time()}, separators=(",", ":"), default=str) + "\n"
        with self._lock:
            new = not self.path.exists()
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, line.encode())
                os.fsync(fd)
            finally:
                os.close(fd)
            if new:
                dfd = os.open(self.path.parent, os.O_RDONLY)
                try:
                    os.fsync(dfd)
                finally:
                    os.close(dfd)

    def records(self) -> list[dict[str, Any]]:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return []
        out = []
        for line in text.splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue  # a line torn by a crash mid-write: the inject it began was never sent
        return out

    def open_faults(self) -> list[dict[str, Any]]:
        """Inject records with no successful heal after them, in inject order."""
        open_: dict[str, dict[str, Any]] = {}
        for r in self.records():
            if r.get("op") == "inject":
                open_[r["id"]] = r
            elif r.get("op") == "heal" and r.get("result") == "ok":
                open_.pop(r.get("id", ""), None)
        return list(open_.values())


def _owner() -> dict[str, Any]:
    return {"pid": os.getpid(), "start": _proc_start(os.getpid())}


def _owner_alive(owner: dict[str, Any] | None) -> bool:
    if not owner:
        return False
    return _proc_start(int(owner.get("pid", 0))) == owner.get("start")


def restore(
    lab: Lab,
    journal_path: Path | str | None = None,
    *,
    history: Any = None,
    steps: Steps | None = None,
    include_live: bool = False,
) -> list[dict[str, Any]]:
    """Heal every fault still open in the journal whose controller is gone (or all, with include_live).

    A fault whose controller still runs is its controller's to heal; healing it under its feet would
    confuse that run, so it is reported as skipped.
    """
    journal = Journal(Path(journal_path) if journal_path else default_journal(lab))
    results = []
    for rec in journal.open_faults():
        desc = rec["fault"]
        entry: dict[str, Any] = {"id": rec["id"], "kind": desc["kind"], "target": desc["target"]}
        if _owner_alive(rec.get("owner")) and not include_live:
            entry["result"] = "skipped"
            entry["reason"] = f"its controller (pid {rec['owner']['pid']}) is still running"
            results.append(entry)
            continue
        fault = make_fault(
            lab,
            desc["kind"],
            desc["target"],
            steps=steps,
            id=rec["id"],
            max_duration=desc.get("max_duration"),
            **desc.get("params", {}),
        )
        if history is not None:
            history.invoke(NEMESIS, "fault.heal", {"id": fault.id, "restore": True}, sync=True)
        try:
            fault.heal()
            _wait(fault.heal_took_effect, SETTLE)
        except Exception as e:
            journal.append(
                {"op": "heal", "id": fault.id, "result": "failed", "error": str(e), "by": "restore"}
            )
            if history is not None:
                history.fail(NEMESIS, "fault.heal", {"id": fault.id}, error=str(e))
            entry.update(result="failed", error=f"{type(e).__name__}: {e}")
            results.append(entry)
            continue
        journal.append(
            {"op": "heal", "id": fault.id, "result": "ok", "by": "restore", "via": fault.healed_via}
        )
        if history is not None:
            history.ok(NEMESIS, "fault.heal", {"id": fault.id, "restore": True})
        entry["result"] = "healed"
        if fault.healed_via:
            entry["via"] = fault.healed_via
        results.append(entry)
    return results


# ------------------------------------------------------------------------------------------------ injector


class Injector:
    """Injects faults safely: refuse, journal (fsync), record, inject, verify; always heal."""

    def __init__(
        self,
        lab: Lab,
        journal_path: Path | str | None = None,
        history: Any = None,
        dry_run: bool = False,
        steps: Steps | None = None,
        *,
        restore_first: bool = True,
        out: Callable[[str], None] = print,
        settle: float = SETTLE,
    ):
        self.lab = lab
        self.history = history
        self.steps = steps or Steps(dry_run=dry_run)
        self.dry_run = dry_run or self.steps.dry_run
        self.steps.dry_run = self.dry_run
        self.journal = Journal(Path(journal_path) if journal_path else default_journal(lab))
        self.out = out
        self.settle = settle
        self.active: dict[str, Fault] = {}
        self.planned: list[tuple[str, str, str]] = []  # (fault id, device, command) in a dry run
        self._timers: dict[str, threading.Timer] = {}
        self._lock = threading.RLock()
        self.restored: list[dict[str, Any]] = []
        if restore_first and not self.dry_run:
            self.restored = restore(lab, self.journal.path, history=history, steps=self.steps)
        atexit.register(self.heal_all)

    def make(self, kind: str, target: str | None = None, **params: Any) -> Fault:
        return make_fault(self.lab, kind, target, steps=self.steps, **params)

    # -- inject / heal --------------------------------------------------------------------------------
    def inject(self, fault: Fault, duration: float | None = None) -> Fault:
        """Inject and verify; the fault then heals itself after `duration` (or its max_duration)."""
        fault.steps = self.steps
        hv = fault.history_value()
        try:
            fault.check_safety()
        except FaultRefused as e:
            if self.history is not None and not self.dry_run:
                self.history.invoke(NEMESIS, "fault.inject", hv)
                self.history.fail(NEMESIS, "fault.inject", {"id": fault.id}, error=f"refused: {e}")
            raise
        if self.dry_run:
            for dev, cmd in fault.plan():
                self.planned.append((fault.id, dev, cmd))
                self.out(f"[dry-run] {fault.kind} {fault.id} inject: {dev}: {cmd}")
            for dev, cmd in fault.plan_heal():
                self.planned.append((fault.id, dev, cmd))
                self.out(f"[dry-run] {fault.kind} {fault.id} heal:   {dev}: {cmd}")
            return fault
        with self._lock:
            self.journal.append(
                {"op": "inject", "id": fault.id, "fault": fault.describe(), "owner": _owner()}
            )
            self.active[fault.id] = fault
            if self.history is not None:
                self.history.invoke(NEMESIS, "fault.inject", hv, sync=True)
        try:
            fault.inject()
            injected_at = time.monotonic()  # the fault's time counts from here, not from its verification
        except BaseException as e:
            if self.history is not None:
                self.history.info(NEMESIS, "fault.inject", {"id": fault.id}, error=f"{type(e).__name__}: {e}")
            self._heal_quietly(fault)
            raise
        if not _wait(fault.took_effect, self.settle):
            if self.history is not None:
                self.history.fail(NEMESIS, "fault.inject", {"id": fault.id}, error="did not take effect")
            self._heal_quietly(fault)
            raise FaultNotEffective(f"{fault!r} was sent but never showed on the device; healed")
        if self.history is not None:
            self.history.ok(NEMESIS, "fault.inject", {"id": fault.id})
        limit = min(duration, fault.max_duration) if duration else fault.max_duration
        left = max(0.0, limit - (time.monotonic() - injected_at))  # a 300 ms blip stays near 300 ms
        timer = threading.Timer(left, self._expire, args=(fault,))
        timer.daemon = True
        timer.name = f"fault-{fault.id}-max-duration"
        self._timers[fault.id] = timer
        timer.start()
        return fault

    def _expire(self, fault: Fault) -> None:
        try:
            self.heal(fault, reason="max_duration")
        except Exception as e:  # the journal keeps it open; restore will try again
            self.out(f"fault {fault.id}: self-heal after max_duration failed: {e}")

    def heal(self, fault: Fault, reason: str = "done") -> None:
        """Heal (once) and verify; the journal marks it healed only when the heal showed."""
        if self.dry_run:
            return
        with self._lock:
            if fault.id not in self.active:
                return
            timer = self._timers.pop(fault.id, None)
            if timer is not None and timer is not threading.current_thread():
                timer.cancel()
            if self.history is not None:
                self.history.invoke(NEMESIS, "fault.heal", {"id": fault.id, "reason": reason}, sync=True)
            try:
                fault.heal()
                if not _wait(fault.heal_took_effect, self.settle):
                    raise FaultHealFailed(f"{fault!r}: heal sent but the fault still shows")
            except BaseException as e:
                err = f"{type(e).__name__}: {e}"
                self.journal.append({"op": "heal", "id": fault.id, "result": "failed", "error": err})
                if self.history is not None:
                    self.history.fail(NEMESIS, "fault.heal", {"id": fault.id}, error=err)
                raise
            self.active.pop(fault.id, None)
            self.journal.append({"op": "heal", "id": fault.id, "result": "ok", "via": fault.healed_via})
            if self.history is not None:
                v: dict[str, Any] = {"id": fault.id}
                if fault.healed_via:
                    v["via"] = fault.healed_via
                self.history.ok(NEMESIS, "fault.heal", v)

    def _heal_quietly(self, fault: Fault) -> None:
        try:
            self.heal(fault, reason="inject failed")
        except Exception as e:
            self.out(f"fault {fault.id}: heal after a failed inject failed too: {e}")

    def heal_all(self) -> None:
        """Heal every fault this injector has open (latest first); errors are reported, not raised."""
        for fault in reversed(list(self.active.values())):
            try:
                self.heal(fault, reason="heal_all")
            except Exception as e:
                self.out(f"fault {fault.id}: heal failed: {e}")

    @contextmanager
    def fault(self, fault: Fault, duration: float | None = None) -> Iterator[Fault]:
        """Inject for the block; heal when it ends however it ends (exception, SIGINT, SIGTERM)."""
        with _signals_raise():
            self.inject(fault, duration)
            try:
                yield fault
            finally:
                self.heal(fault)


@contextmanager
def _signals_raise() -> Iterator[None]:
    """SIGTERM (and SIGINT, and SIGHUP) raise in the main thread, so `finally` heals before exit."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def raiser(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")

    previous = {}
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        previous[sig] = signal.getsignal(sig)
        if sig == signal.SIGINT and previous[sig] not in (signal.SIG_DFL, signal.default_int_handler):
            continue  # someone (pytest, a runner) handles SIGINT already; it raises KeyboardInterrupt too
        signal.signal(sig, raiser)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
