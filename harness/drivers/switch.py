"""Switch drivers: one interface, vendor classes behind it, netmiko underneath.

The same code drives a Catalyst or an S5735 in a physical lab and the emulated CLIs of the virtual lab;
there is no virtual-lab driver. Host keys are checked against the lab's known_hosts file.
"""

from __future__ import annotations

import re
import socket
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paramiko
from netmiko import ConnectHandler
from netmiko.exceptions import NetmikoAuthenticationException, NetmikoTimeoutException

from harness.drivers.base import DeviceError, Driver, Steps

TRANSIENT = (NetmikoTimeoutException, socket.timeout, ConnectionError, EOFError, OSError)


@dataclass(frozen=True)
class PortState:
    port: str
    admin_up: bool
    link_up: bool


@dataclass(frozen=True)
class SpanState:
    """One SPAN (mirror) session as the switch shows it: source ports (port -> both/rx/tx), destination."""

    session: int
    sources: dict[str, str]
    destination: str | None

    @property
    def empty(self) -> bool:
        return not self.sources and self.destination is None


@dataclass
class SwitchAccess:
    host: str
    username: str
    password: str
    secret: str | None = None
    port: int = 22
    known_hosts: Path | None = None
    trust_new_host_keys: bool = False
    timeout: float = 5.0


class SwitchDriver(Driver, ABC):
    """Port down/up/state, facts for the report, SPAN toward the capture port."""

    device_type: str = ""

    def __init__(self, name: str, access: SwitchAccess, steps: Steps | None = None):
        super().__init__(name, steps)
        self.access = access
        self._conn: Any = None

    # -- connection -----------------------------------------------------------------------------------
    def _connect(self) -> Any:
        a = self.access
        params: dict[str, Any] = {
            "device_type": self.device_type,
            "host": a.host,
            "port": a.port,
            "username": a.username,
            "password": a.password,
            "secret": a.secret or "",
            "conn_timeout": a.timeout,
            "auth_timeout": a.timeout,
            "banner_timeout": a.timeout,
            "fast_cli": True,
            "ssh_strict": not a.trust_new_host_keys,
            "system_host_keys": False,
            "alt_host_keys": a.known_hosts is not None,
            "alt_key_file": str(a.known_hosts) if a.known_hosts else "",
        }
        try:
            conn = ConnectHandler(**params)
            if a.secret:
                conn.enable()
            return conn
        except NetmikoAuthenticationException as e:
            raise DeviceError(f"{self.name}: authentication failed for {a.username}@{a.host}") from e
        except paramiko.SSHException as e:
            if "known_hosts" in str(e) or "host key" in str(e).lower():
                raise DeviceError(f"{self.name}: host key of {a.host} not trusted: {e}") from e
            raise

    @property
    def conn(self) -> Any:
        if self._conn is None or not self._conn.is_alive():
            self._conn = self.retrying("connect", self._connect, TRANSIENT)
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.disconnect()
            except Exception:
                pass
            self._conn = None

    def _config(self, action: str, commands: list[str]) -> str:
        with self.step(action, commands):
            if self.dry_run:
                return ""
            return self.send_config(commands)

    def _show(self, action: str, command: str) -> str:
        with self.step(action, [command]):
            if self.dry_run:
                return ""
            out = str(self.conn.send_command(command))
            if re.search(self.error_pattern, out):
                raise DeviceError(f"{self.name}: {command!r} refused: {out.strip()}")
            return out

    # -- vendor specifics -----------------------------------------------------------------------------
    error_pattern = r"% Invalid|Error:"

    def send_config(self, commands: list[str]) -> str:
        return str(self.conn.send_config_set(commands, error_pattern=self.error_pattern))

    @abstractmethod
    def shutdown_commands(self, port: str, down: bool) -> list[str]: ...

    @abstractmethod
    def parse_state(self, port: str, output: str) -> PortState: ...

    @abstractmethod
    def state_command(self, port: str) -> str: ...

    @abstractmethod
    def version_command(self) -> str: ...

    @abstractmethod
    def parse_version(self, output: str) -> dict[str, str]: ...

    @abstractmethod
    def span_commands(self, source: str, destination: str, session: int) -> list[str]: ...

    @abstractmethod
    def span_state_commands(self, session: int) -> list[str]: ...

    @abstractmethod
    def parse_span(self, session: int, outputs: list[str]) -> SpanState: ...

    @abstractmethod
    def span_remove_commands(self, state: SpanState) -> list[str]:
        """Config commands that remove what `state` shows of the session (nothing when it is empty)."""

    # -- the interface --------------------------------------------------------------------------------
    def port_down(self, port: str) -> None:
        self._config("port_down", self.shutdown_commands(port, True))

    def port_up(self, port: str) -> None:
        self._config("port_up", self.shutdown_commands(port, False))

    def port_state(self, port: str) -> PortState:
        out = self._show("port_state", self.state_command(port))
        if self.dry_run:
            return PortState(port, True, True)
        return self.parse_state(port, out)

    def facts(self) -> dict[str, str]:
        out = self._show("facts", self.version_command())
        facts = self.parse_version(out) if out else {}
        facts["device_type"] = self.device_type
        return facts

    def span(self, source: str, destination: str, session: int = 1) -> None:
        self._config("span", self.span_commands(source, destination, session))

    def span_state(self, session: int = 1) -> SpanState:
        outs = [self._show("span_state", cmd) for cmd in self.span_state_commands(session)]
        if self.dry_run:
            return SpanState(session, {}, None)
        return self.parse_span(session, outs)

    def span_remove(self, session: int = 1) -> None:
        """Remove the session, whatever of it is configured (idempotent: an absent session sends nothing)."""
        if self.dry_run:
            self._config(
                "span_remove", self.span_remove_commands(SpanState(session, {"<source>": "both"}, "-"))
            )
            return
        commands = self.span_remove_commands(self.span_state(session))
        if commands:
            self._config("span_remove", commands)


class CiscoIosSwitch(SwitchDriver):
    device_type = "cisco_ios"
    error_pattern = r"% Invalid|% Incomplete|% Ambiguous"

    def shutdown_commands(self, port: str, down: bool) -> list[str]:
        return [f"interface {port}", "shutdown" if down else "no shutdown"]

    def state_command(self, port: str) -> str:
        return f"show interfaces {port}"

    def parse_state(self, port: str, output: str) -> PortState:
        m = re.search(r"is (administratively down|up|down), line protocol is (up|down)", output)
        if not m:
            raise DeviceError(f"{self.name}: cannot read the state of {port} from: {output.strip()[:200]}")
        return PortState(port, m.group(1) != "administratively down", m.group(2) == "up")

    def version_command(self) -> str:
        return "show version"

    def parse_version(self, output: str) -> dict[str, str]:
        facts: dict[str, str] = {}
        if m := re.search(r"Version ([^,\s]+)", output):
            facts["os_version"] = m.group(1)
        if m := re.search(r"^cisco (\S+) .*processor", output, re.M):
            facts["model"] = m.group(1)
        if m := re.search(r"uptime is (.+)", output):
            facts["uptime"] = m.group(1).strip()
        if m := re.search(r"[Ss]ystem [Ss]erial [Nn]umber\s*:\s*(\S+)|Processor board ID (\S+)", output):
            facts["serial"] = m.group(1) or m.group(2)
        return facts

    def span_commands(self, source: str, destination: str, session: int) -> list[str]:
        return [
            f"monitor session {session} source interface {source} both",
            f"monitor session {session} destination interface {destination}",
        ]

    def span_state_commands(self, session: int) -> list[str]:
        return [f"show monitor session {session}"]

    def parse_span(self, session: int, outputs: list[str]) -> SpanState:
        sources: dict[str, str] = {}
        destination = None
        directions = {"both": "both", "rx only": "rx", "tx only": "tx"}
        for line in outputs[0].splitlines():
            key, _, value = (part.strip() for part in line.partition(":"))
            if key.lower() in directions and value:
                for port in value.split(","):
                    sources[port.strip()] = directions[key.lower()]
            elif key.lower().startswith("destination ports") and value:
                destination = value.split(",")[0].strip()
        return SpanState(session, sources, destination)

    def span_remove_commands(self, state: SpanState) -> list[str]:
        return [] if state.empty else [f"no monitor session {state.session}"]


class HuaweiVrpSwitch(SwitchDriver):
    device_type = "huawei"
    error_pattern = r"Error:"
    view_prompt = r"\[[^\]\r\n]+\]"

    def send_config(self, commands: list[str]) -> str:
        """system-view, the commands, return: each waiting for the view prompt it must produce.

        netmiko's own send_config_set checks the Huawei config mode by waiting for 2 s of silence, four
        times per call; waiting for the prompt instead is as safe and 30 times faster, on a real S5735 too.
        """
        out = []
        for cmd in ["system-view", *commands]:
            text = str(self.conn.send_command(cmd, expect_string=self.view_prompt, strip_prompt=False))
            out.append(text)
            if re.search(self.error_pattern, text):
                self.conn.send_command("return", expect_string=r">")
                raise DeviceError(f"{self.name}: {cmd!r} refused: {text.strip()}")
        out.append(str(self.conn.send_command("return", expect_string=r"<[^>\r\n]+>")))
        return "\n".join(out)

    def close(self) -> None:
        # netmiko's Huawei disconnect re-checks config mode (2 s of silence); we are always back in user
        # view after send_config, so close the session directly.
        if self._conn is not None:
            try:
                self._conn.write_channel("quit" + self._conn.RETURN)
                self._conn.paramiko_cleanup()
            except Exception:
                pass
            self._conn = None

    def shutdown_commands(self, port: str, down: bool) -> list[str]:
        return [f"interface {port}", "shutdown" if down else "undo shutdown"]

    def state_command(self, port: str) -> str:
        return "display interface brief"

    def parse_state(self, port: str, output: str) -> PortState:
        short = _huawei_brief_name(port)
        for line in output.splitlines():
            cols = line.split()
            if len(cols) >= 3 and cols[0] in (port, short):
                phy = cols[1]
                return PortState(
                    port, not phy.startswith("*"), phy.lstrip("*^#") == "up" and cols[2] != "down"
                )
        raise DeviceError(f"{self.name}: no line for {port} in `display interface brief`")

    def version_command(self) -> str:
        return "display version"

    def parse_version(self, output: str) -> dict[str, str]:
        facts: dict[str, str] = {}
        if m := re.search(r"VRP \(R\) software, Version ([^\s]+) \(([^)]+)\)", output):
            facts["os_version"] = m.group(1)
            facts["release"] = m.group(2)
        if m := re.search(r"^(?:HUAWEI|Quidway) (\S+).* uptime is (.+)$", output, re.M):
            facts["model"] = m.group(1)
            facts["uptime"] = m.group(2).strip()
        return facts

    def span_commands(self, source: str, destination: str, session: int) -> list[str]:
        return [
            f"observe-port {session} interface {destination}",
            f"interface {source}",
            f"port-mirroring to observe-port {session} both",
        ]

    def span_state_commands(self, session: int) -> list[str]:
        return ["display observe-port", "display port-mirroring"]

    def parse_span(self, session: int, outputs: list[str]) -> SpanState:
        destination = None
        index = None
        for line in outputs[0].splitlines():
            key, _, value = (part.strip() for part in line.partition(":"))
            if key == "Index":
                index = value
            elif key == "Interface" and index == str(session):
                destination = value
        sources: dict[str, str] = {}
        words = {"inbound": "rx", "outbound": "tx", "both": "both"}
        for line in outputs[1].splitlines():
            cols = line.split()
            # "  1    GigabitEthernet0/0/1      Both       Observe-port 1"
            if (
                len(cols) >= 5
                and cols[0].isdigit()
                and cols[-2] == "Observe-port"
                and cols[-1] == str(session)
            ):
                sources[cols[1]] = words.get(cols[2].lower(), "both")
        return SpanState(session, sources, destination)

    def span_remove_commands(self, state: SpanState) -> list[str]:
        words = {"rx": "inbound", "tx": "outbound", "both": "both"}
        out: list[str] = []
        for port, direction in state.sources.items():
            out += [
                f"interface {port}",
                f"undo port-mirroring to observe-port {state.session} {words.get(direction, 'both')}",
                "quit",
            ]
        if state.destination is not None:
            out.append(f"undo observe-port {state.session}")
        return out


def _huawei_brief_name(port: str) -> str:
    """`display interface brief` abbreviates GigabitEthernet0/0/1 to GE0/0/1."""
    for long, short in (("GigabitEthernet", "GE"), ("XGigabitEthernet", "XGE"), ("Ethernet", "Eth")):
        if port.startswith(long):
            return short + port[len(long) :]
    return port


VENDORS: dict[str, type[SwitchDriver]] = {"cisco_ios": CiscoIosSwitch, "huawei": HuaweiVrpSwitch}


def switch_driver(
    device_type: str, name: str, access: SwitchAccess, steps: Steps | None = None
) -> SwitchDriver:
    try:
        cls = VENDORS[device_type]
    except KeyError:
        raise DeviceError(f"{name}: no switch driver for device_type {device_type!r}") from None
    return cls(name, access, steps)
