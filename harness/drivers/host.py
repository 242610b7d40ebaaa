"""Linux host driver (paramiko): run a command, control a systemd service, fetch a log.

It speaks to hosts as an operator would: `systemctl stop|start|kill -s SIGKILL|SIGSTOP|SIGCONT`. The virtual
lab's emulated hosts understand the same commands, so this code is what runs in every test. Host keys are
checked against the lab's known_hosts file; trusting a new key is an explicit topology setting.
"""

from __future__ import annotations

import shlex
import socket
from dataclasses import dataclass
from pathlib import Path

import paramiko

from harness.drivers.base import DeviceError, Driver, Steps

TRANSIENT = (socket.timeout, ConnectionError, EOFError, OSError, paramiko.SSHException)


@dataclass
class HostAccess:
    host: str
    username: str
    password: str
    port: int = 22
    known_hosts: Path | None = None
    trust_new_host_keys: bool = False
    timeout: float = 5.0


@dataclass(frozen=True)
class Result:
    command: str
    exit_code: int
    stdout: str
    stderr: str


class HostDriver(Driver):
    def __init__(self, name: str, access: HostAccess, steps: Steps | None = None):
        super().__init__(name, steps)
        self.access = access
        self._client: paramiko.SSHClient | None = None

    def _connect(self) -> paramiko.SSHClient:
        a = self.access
        c = paramiko.SSHClient()
        if a.known_hosts is not None and Path(a.known_hosts).exists():
            c.load_host_keys(str(a.known_hosts))
        policy = paramiko.AutoAddPolicy() if a.trust_new_host_keys else paramiko.RejectPolicy()
        c.set_missing_host_key_policy(policy)
        try:
            c.connect(
                a.host,
                port=a.port,
                username=a.username,
                password=a.password,
                timeout=a.timeout,
                auth_timeout=a.timeout,
                banner_timeout=a.timeout,
                allow_agent=False,
                look_for_keys=False,
            )
        except paramiko.AuthenticationException as e:
            raise DeviceError(f"{self.name}: authentication failed for {a.username}@{a.host}") from e
        except paramiko.BadHostKeyException as e:
            raise DeviceError(f"{self.name}: host key of {a.host} does not match known_hosts") from e
        except paramiko.SSHException as e:
            if "not found in known_hosts" in str(e):
                raise DeviceError(f"{self.name}: host key of {a.host} is not in {a.known_hosts}") from e
            raise
        return c

    @property
    def client(self) -> paramiko.SSHClient:
        t = self._client.get_transport() if self._client else None
        if t is None or not t.is_active():
            self._client = self.retrying("connect", self._connect, TRANSIENT)
        return self._client  # type: ignore[return-value]

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def run(self, command: str, timeout: float = 30.0, action: str = "run", check: bool = False) -> Result:
        with self.step(action, [command]):
            if self.dry_run:
                return Result(command, 0, "", "")
            _, out, err = self.client.exec_command(command, timeout=timeout)
            stdout = out.read().decode(errors="replace")
            stderr = err.read().decode(errors="replace")
            code = out.channel.recv_exit_status()
            res = Result(command, code, stdout, stderr)
            if check and code != 0:
                raise DeviceError(
                    f"{self.name}: {command!r} exited {code}: {stderr.strip() or stdout.strip()}"
                )
            return res

    # -- services -------------------------------------------------------------------------------------
    def service_stop(self, unit: str) -> None:
        self.run(f"systemctl stop {shlex.quote(unit)}", action="service_stop", check=True)

    def service_start(self, unit: str) -> None:
        self.run(f"systemctl start {shlex.quote(unit)}", action="service_start", check=True)

    def service_kill(self, unit: str, signal: str = "SIGKILL") -> None:
        self.run(f"systemctl kill -s {signal} {shlex.quote(unit)}", action="service_kill", check=True)

    def service_pause(self, unit: str) -> None:
        self.service_kill(unit, "SIGSTOP")

    def service_resume(self, unit: str) -> None:
        self.service_kill(unit, "SIGCONT")

    def service_active(self, unit: str) -> bool:
        if self.dry_run:
            self.run(f"systemctl is-active {shlex.quote(unit)}", action="service_state")
            return True
        return self.run(f"systemctl is-active {shlex.quote(unit)}", action="service_state").exit_code == 0

    def service_pid(self, unit: str) -> int | None:
        out = self.run(f"systemctl show -p MainPID --value {shlex.quote(unit)}", action="service_pid").stdout
        pid = int(out.strip() or 0) if out.strip().isdigit() else 0
        return pid or None

    def fetch_log(self, unit: str, lines: int = 500) -> str:
        cmd = f"journalctl -u {shlex.quote(unit)} -n {int(lines)} --no-pager"
        return self.run(cmd, action="fetch_log").stdout
