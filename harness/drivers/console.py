"""Console driver (pyserial): a device's CLI out of band, through a serial port or a console server.

Why: when a fault (or a mistake) has cut a device's management network, its console still works, so heal
goes through here. The port is a device path (``/dev/ttyUSB0``), a console-server ``socket://host:port``
URL, or, in the virtual lab, the pty the lab made (topology ``url: virtual``). The line is shared and
stateful like a real console: a previous client may have left it in config mode or logged out, so every
open starts by finding out where the line is (login, password, user or config prompt) and getting back to
the top-level prompt.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any

import serial

from harness.drivers.base import DeviceError, Driver, Steps

TRANSIENT = (serial.SerialException, OSError, TimeoutError)

LOGIN_RE = re.compile(rb"(?i)(user ?name\s*:|login:)\s*$")
PASSWORD_RE = re.compile(rb"(?i)password\s*:\s*$")
PROMPT_RE = re.compile(rb"(?:^|[\r\n])([^\r\n]{0,80}?[>#\]$]) ?$")
PRESS_RETURN_RE = re.compile(rb"(?i)press return")


@dataclass
class ConsoleAccess:
    url: str
    baudrate: int = 9600
    username: str | None = None
    password: str | None = None
    timeout: float = 5.0


class ConsoleDriver(Driver):
    """Open a console line, log in if asked, run CLI commands and return their output."""

    def __init__(self, name: str, access: ConsoleAccess, steps: Steps | None = None):
        super().__init__(name, steps)
        self.access = access
        self._port: Any = None
        self.prompt = b""

    # -- the line ---------------------------------------------------------------------------------------
    def _open(self) -> Any:
        a = self.access
        port = serial.serial_for_url(a.url, baudrate=a.baudrate, timeout=0.05, write_timeout=a.timeout)
        try:
            port.reset_input_buffer()
        except (serial.SerialException, OSError, AttributeError):
            pass
        self._port = port
        try:
            self._wake()
        except BaseException:
            self.close()
            raise
        return port

    @property
    def port(self) -> Any:
        if self._port is None:
            self.retrying("open", self._open, TRANSIENT)
        return self._port

    def close(self) -> None:
        if self._port is not None:
            try:
                self._port.close()
            except (serial.SerialException, OSError):
                pass
            self._port = None

    def _write(self, text: str) -> None:
        self._port.write(text.encode())
        self._port.flush()

    def _read_until(self, patterns: list[re.Pattern[bytes]], timeout: float) -> tuple[int, bytes]:
        """Read until one pattern matches the end of what was received; (index, bytes)."""
        buf = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            chunk = self._port.read(self._port.in_waiting or 1)
            if chunk:
                buf += chunk
                tail = buf[-200:]
                for i, pat in enumerate(patterns):
                    if pat.search(tail):
                        return i, buf
        raise TimeoutError(f"{self.name}: no prompt on the console within {timeout:.0f} s: {buf[-120:]!r}")

    def _wake(self) -> None:
        """Press Enter until a top-level prompt answers, logging in on the way if the line asks."""
        a = self.access
        self._write("\r")
        for _ in range(6):
            i, buf = self._read_until([LOGIN_RE, PASSWORD_RE, PROMPT_RE, PRESS_RETURN_RE], a.timeout)
            if i == 0:
                if a.username is None:
                    raise DeviceError(f"{self.name}: the console asks for a login and none is configured")
                self._write(a.username + "\r")
            elif i == 1:
                if a.password is None:
                    raise DeviceError(f"{self.name}: the console asks for a password and none is configured")
                self._write(a.password + "\r")
            elif i == 3:
                self._write("\r")
            else:
                m = PROMPT_RE.search(buf[-200:])
                self.prompt = m.group(1).strip() if m else b""
                if self.leave_config():
                    continue
                return
        raise DeviceError(f"{self.name}: could not reach a prompt on the console (login refused?)")

    def leave_config(self) -> bool:
        """Vendor hook: if the prompt shows a nested mode, send the command that leaves it; True if sent."""
        return False

    # -- commands -------------------------------------------------------------------------------------
    def send(self, line: str, timeout: float | None = None, expect_password: bool = False) -> str:
        """One line; the output up to the next prompt (echo and prompt stripped)."""
        self._write(line + "\r")
        pats = [PROMPT_RE, PASSWORD_RE] if expect_password else [PROMPT_RE]
        i, buf = self._read_until(pats, timeout or self.access.timeout)
        text = buf.decode(errors="replace").replace("\r\n", "\n").replace("\r", "\n")
        lines = text.split("\n")
        if lines and lines[0].strip().endswith(line.strip()):
            lines = lines[1:]
        if i == 0:
            m = PROMPT_RE.search(buf[-200:])
            self.prompt = m.group(1).strip() if m else self.prompt
            lines = lines[:-1]
        return "\n".join(lines).strip("\n")

    def run(self, commands: list[str], action: str = "cli") -> list[str]:
        """Run commands at the prompt as one logged step; their outputs in order."""
        with self.step(action, commands):
            if self.dry_run:
                return ["" for _ in commands]
            port_ready = self.port  # opens (with retries) before anything is typed
            del port_ready
            return [self.send(c) for c in commands]


class SwitchConsole(ConsoleDriver):
    """A switch's vendor CLI on its console: port down / up / state, as the SSH driver does them.

    The commands come from the same vendor class the SSH driver uses, so a heal sent through the console
    is exactly the command the SSH path would have sent.
    """

    def __init__(
        self,
        name: str,
        access: ConsoleAccess,
        device_type: str,
        enable_secret: str | None = None,
        steps: Steps | None = None,
    ):
        from harness.drivers.switch import VENDORS, SwitchAccess

        super().__init__(name, access, steps)
        if device_type not in VENDORS:
            raise DeviceError(f"{name}: no console support for device_type {device_type!r}")
        self.device_type = device_type
        self.enable_secret = enable_secret
        # The vendor class only builds and parses commands here; it never opens its SSH connection.
        self.vendor = VENDORS[device_type](name, SwitchAccess(host="console", username="", password=""))

    def leave_config(self) -> bool:
        p = self.prompt
        if self.device_type == "cisco_ios" and b"(config" in p:
            self._write("end\r")
            return True
        if self.device_type == "huawei" and p.startswith(b"["):
            self._write("return\r")
            return True
        return False

    def _privileged(self) -> None:
        if self.device_type == "cisco_ios" and self.prompt.endswith(b">"):
            out = self.send("enable", expect_password=True)
            if not self.prompt.endswith(b"#"):
                if self.enable_secret is None:
                    raise DeviceError(f"{self.name}: enable needs a secret and none is configured ({out})")
                self.send(self.enable_secret)
            if not self.prompt.endswith(b"#"):
                raise DeviceError(f"{self.name}: enable refused on the console")

    def configure(self, action: str, commands: list[str]) -> str:
        if self.device_type == "cisco_ios":
            full = ["configure terminal", *commands, "end"]
        else:
            full = ["system-view", *commands, "return"]
        with self.step(action, full):
            if self.dry_run:
                return ""
            _ = self.port
            self._privileged()
            outs = []
            for cmd in full:
                out = self.send(cmd)
                outs.append(out)
                if re.search(self.vendor.error_pattern, out):
                    self.send("end" if self.device_type == "cisco_ios" else "return")
                    raise DeviceError(f"{self.name}: {cmd!r} refused on the console: {out.strip()}")
            return "\n".join(outs)

    def port_down(self, port: str) -> None:
        self.configure("port_down", self.vendor.shutdown_commands(port, True))

    def port_up(self, port: str) -> None:
        self.configure("port_up", self.vendor.shutdown_commands(port, False))

    def port_state(self, port: str) -> Any:
        cmd = self.vendor.state_command(port)
        with self.step("port_state", [cmd]):
            if self.dry_run:
                from harness.drivers.switch import PortState

                return PortState(port, True, True)
            _ = self.port
            self._privileged()
            return self.vendor.parse_state(port, self.send(cmd))
