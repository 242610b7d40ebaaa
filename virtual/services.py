"""Supervisor for the processes of an emulated lab host (kamailio, CTI, UL), systemd-like.

Why: the product's host driver kills, pauses and restarts services with systemctl on real hosts.
In the virtual lab the keeper is the parent of those processes; this supervisor gives them systemd's
life cycle (active/inactive/failed, stop with timeout then SIGKILL) while acting only on the exact
process it started: by pidfd (or PID while the child is unreaped), never by name pattern. A watcher
thread reaps children as soon as they exit, so none lingers as a zombie.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import select
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from virtual.wakeup import Waker

# Deaths by these signals are a clean exit for systemd (SuccessExitStatus defaults).
_CLEAN_SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGPIPE}
_SIGNAL_SETTLE = 1.0  # seconds kill() waits for STOP/CONT/KILL to show, so a status right after is true


class ServiceError(RuntimeError):
    """A service operation failed (unknown unit, failed start, no process to signal)."""


@dataclass
class Service:
    """How to run one service. ``ready`` (if given) must turn True before start() returns."""

    name: str
    argv: list[str]
    log_path: str | os.PathLike[str]
    ready: Callable[[], bool] | None = None
    stop_signal: int = signal.SIGTERM
    stop_timeout: float = 5.0
    start_timeout: float = 10.0
    env: dict[str, str] | None = None
    cwd: str | None = None
    description: str = ""
    # Run before every start, restarts included (systemd's ExecStartPre): e.g. a PBX's config with a new
    # boot id, so its pushed events of one run are never taken for another's.
    before_start: Callable[[], object] | None = None


@dataclass(frozen=True)
class ServiceStatus:
    """A snapshot. state: active, activating, deactivating, paused, inactive or failed."""

    name: str
    state: str
    pid: int
    since: float
    result: str  # success | exit-code | signal | timeout | start-failed
    exit_code: int | None
    exit_signal: int | None

    @property
    def active_state(self) -> str:
        """systemd's ActiveState: a SIGSTOPped process is still 'active' there."""
        return "active" if self.state == "paused" else self.state

    @property
    def sub_state(self) -> str:
        return {
            "active": "running",
            "paused": "running",
            "activating": "start",
            "deactivating": "stop-sigterm",
            "inactive": "dead",
            "failed": "failed",
        }[self.state]


class _Unit:
    def __init__(self, service: Service) -> None:
        self.service = service
        self.proc: subprocess.Popen[bytes] | None = None
        self.pidfd = -1
        self.state = "inactive"
        self.result = "success"
        self.since = time.time()
        self.exit_code: int | None = None
        self.exit_signal: int | None = None
        self.last_pid = 0
        self.stopping = False
        self.stop_timed_out = False
        self.op_lock = threading.Lock()  # one start/stop/restart at a time per unit


def unit_name(name: str) -> str:
    """'kamailio.service' and 'kamailio' name the same service."""
    return name[: -len(".service")] if name.endswith(".service") else name


def process_state(pid: int) -> str:
    """The kernel's one-letter state of a process (R, S, T, Z...), or '' if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[0]


class ServiceSupervisor:
    """Start, stop, signal and observe the services of one lab host. Thread-safe."""

    def __init__(self, services: Iterable[Service] = ()) -> None:
        self._units: dict[str, _Unit] = {}
        self._cv = threading.Condition()
        self._closed = False
        self._waker = Waker()
        for service in services:
            self.add(service)
        self._watcher = threading.Thread(target=self._watch, name="service-reaper", daemon=True)
        self._watcher.start()

    # -- registry ------------------------------------------------------------------------------

    def add(self, service: Service) -> None:
        with self._cv:
            if service.name in self._units:
                raise ValueError(f"service {service.name} already declared")
            self._units[service.name] = _Unit(service)

    def names(self) -> list[str]:
        with self._cv:
            return list(self._units)

    def has(self, name: str) -> bool:
        with self._cv:
            return unit_name(name) in self._units

    def service(self, name: str) -> Service:
        return self._unit(name).service

    def log_paths(self) -> list[Path]:
        with self._cv:
            return [Path(u.service.log_path) for u in self._units.values()]

    # -- operations ----------------------------------------------------------------------------

    def start(self, name: str) -> int:
        """Start the service unless it runs; wait for ``ready``. Returns the main PID."""
        unit = self._unit(name)
        with unit.op_lock:
            with self._cv:
                if self._closed:
                    raise ServiceError("supervisor is closed")
                if unit.proc is not None:
                    return unit.proc.pid
                proc = self._spawn(unit)
            if unit.service.ready is not None:
                self._await_ready(unit, proc)
            return proc.pid

    def stop(self, name: str) -> None:
        """stop_signal (plus SIGCONT, as systemd does), wait stop_timeout, then SIGKILL."""
        unit = self._unit(name)
        with unit.op_lock, self._cv:
            self._stop_locked(unit)

    def restart(self, name: str) -> int:
        self.stop(name)
        return self.start(name)

    def kill(self, name: str, sig: int) -> None:
        """Send a signal to every process of the unit, as ``systemctl kill -s SIG`` does by default
        (--kill-whom=all): a paused kamailio must have its workers paused too, or it still answers."""
        unit = self._unit(name)
        with self._cv:
            if unit.proc is None:
                raise ServiceError(f"Failed to kill unit {name}.service: No main process to kill")
            proc = unit.proc
            self._signal(unit, sig)
            # the unit's process group is led by our unreaped child, so its id cannot have been reused
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, sig)
            # Let the effect show before returning, so a status read right after reflects it.
            if sig == signal.SIGKILL:
                self._cv.wait_for(lambda: unit.proc is not proc, _SIGNAL_SETTLE)
            elif sig in (signal.SIGSTOP, signal.SIGCONT):
                want_stopped = sig == signal.SIGSTOP
                self._cv.wait_for(
                    lambda: unit.proc is not proc or (process_state(proc.pid) in "Tt") == want_stopped,
                    _SIGNAL_SETTLE,
                )

    def pause(self, name: str) -> None:
        self.kill(name, signal.SIGSTOP)

    def resume(self, name: str) -> None:
        self.kill(name, signal.SIGCONT)

    def reset_failed(self, name: str) -> None:
        unit = self._unit(name)
        with self._cv:
            if unit.state == "failed":
                unit.state, unit.result = "inactive", "success"

    def status(self, name: str) -> ServiceStatus:
        unit = self._unit(name)
        with self._cv:
            if unit.proc is not None:
                self._reap_if_exited(unit)
            pid = unit.proc.pid if unit.proc is not None else 0
            state = unit.state
            if pid:
                if unit.stopping:
                    state = "deactivating"
                elif state == "active" and process_state(pid) in ("T", "t"):
                    state = "paused"
            return ServiceStatus(
                name=unit.service.name,
                state=state,
                pid=pid,
                since=unit.since,
                result=unit.result,
                exit_code=unit.exit_code,
                exit_signal=unit.exit_signal,
            )

    def main_pid(self, name: str) -> int:
        return self.status(name).pid

    def last_pid(self, name: str) -> int:
        """The PID of the latest run, also after it ended (for 'Main PID: ... (code=killed)')."""
        with self._cv:
            return self._unit(name).last_pid

    def status_all(self) -> list[dict[str, object]]:
        """Every service's status as a plain dict (for the keeper's JSON status)."""
        return [dataclasses.asdict(self.status(name)) for name in self.names()]

    def pids(self) -> set[int]:
        """Main PIDs of the running services (their reaping is ours, not an orphan reaper's)."""
        with self._cv:
            return {u.proc.pid for u in self._units.values() if u.proc is not None}

    def stop_all(self) -> None:
        """Stop every running service; the supervisor stays usable."""
        for name in self.names():
            self.stop(name)

    def close(self) -> None:
        """Stop every running service and the reaper. The supervisor is unusable afterwards."""
        with self._cv:
            if self._closed:
                return
            self._closed = True
            units = list(self._units.values())
        for unit in units:
            with unit.op_lock, self._cv:
                self._stop_locked(unit)
        self._waker.wake()
        self._watcher.join(timeout=2)
        self._waker.close()

    # -- machinery (called with self._cv held unless noted) -------------------------------------

    def _unit(self, name: str) -> _Unit:
        with self._cv:
            unit = self._units.get(unit_name(name))
        if unit is None:
            raise ServiceError(f"Unit {unit_name(name)}.service not found.")
        return unit

    def _spawn(self, unit: _Unit) -> subprocess.Popen[bytes]:
        svc = unit.service
        log_path = Path(svc.log_path)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        env = None if svc.env is None else {**os.environ, **svc.env}
        if svc.before_start is not None:
            svc.before_start()
        with open(log_path, "ab") as log:
            try:
                proc = subprocess.Popen(
                    svc.argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # its own process group: leftovers are cleaned by group
                    close_fds=True,
                    env=env,
                    cwd=svc.cwd,
                )
            except OSError as exc:
                log.write(f"{svc.name}: failed to execute {svc.argv[0]}: {exc}\n".encode())
                self._set_state(unit, "failed", "exit-code")
                unit.exit_code, unit.exit_signal = 203, None  # systemd's EXIT_EXEC
                raise ServiceError(self._job_failed(svc.name)) from exc
        unit.proc, unit.last_pid = proc, proc.pid
        try:
            unit.pidfd = os.pidfd_open(proc.pid)
        except OSError:
            unit.pidfd = -1  # old kernel: the watcher polls instead
        unit.exit_code = unit.exit_signal = None
        unit.stopping = unit.stop_timed_out = False
        self._set_state(unit, "activating" if svc.ready else "active", "success")
        self._waker.wake()
        return proc

    def _await_ready(self, unit: _Unit, proc: subprocess.Popen[bytes]) -> None:
        """Wait for ready() outside the lock (it may do network I/O); fail like a start timeout."""
        svc = unit.service
        deadline = time.monotonic() + svc.start_timeout
        while True:
            with self._cv:
                if unit.proc is not proc:
                    self._set_state(unit, "failed", unit.result if unit.result != "success" else "exit-code")
                    raise ServiceError(self._job_failed(svc.name))
            try:
                ok = bool(svc.ready and svc.ready())
            except Exception:
                ok = False
            with self._cv:
                if ok and unit.proc is proc:
                    self._set_state(unit, "active", "success")
                    return
                if time.monotonic() > deadline:
                    self._stop_locked(unit)
                    self._set_state(unit, "failed", "timeout")
                    raise ServiceError(self._job_failed(svc.name))
                self._cv.wait(0.05)

    def _stop_locked(self, unit: _Unit) -> None:
        if unit.proc is None:
            return
        proc = unit.proc
        unit.stopping, unit.stop_timed_out = True, False
        try:
            self._signal(unit, unit.service.stop_signal)
            self._signal(unit, signal.SIGCONT)  # a paused process must run to handle the signal
            if not self._cv.wait_for(lambda: unit.proc is not proc, unit.service.stop_timeout):
                unit.stop_timed_out = True
                self._signal(unit, signal.SIGKILL)
                if not self._cv.wait_for(lambda: unit.proc is not proc, 5.0):
                    raise ServiceError(f"{unit.service.name}: PID {proc.pid} survived SIGKILL")
        finally:
            unit.stopping = False

    def _signal(self, unit: _Unit, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            if unit.pidfd >= 0:
                signal.pidfd_send_signal(unit.pidfd, sig)
            elif unit.proc is not None:
                os.kill(unit.proc.pid, sig)  # safe: our unreaped child, its PID cannot be reused

    def _reap_if_exited(self, unit: _Unit) -> bool:
        proc = unit.proc
        if proc is None:
            return False
        try:
            exited = os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
        except ChildProcessError:
            exited = True  # somebody else reaped it; Popen.wait() copes
        if not exited:
            return False
        # The zombie still holds its process group id: clear what it left behind, like systemd's
        # cgroup kill, with no chance of hitting an unrelated group.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        rc = proc.wait()
        if unit.pidfd >= 0:
            os.close(unit.pidfd)
            unit.pidfd = -1
        unit.proc = None
        unit.exit_code, unit.exit_signal = (rc, None) if rc >= 0 else (None, -rc)
        if unit.stopping:
            state, result = ("failed", "timeout") if unit.stop_timed_out else ("inactive", "success")
        elif rc == 0 or (rc < 0 and -rc in _CLEAN_SIGNALS):
            state, result = "inactive", "success"
        else:
            state, result = "failed", "signal" if rc < 0 else "exit-code"
        self._set_state(unit, state, result)
        self._cv.notify_all()
        return True

    def _set_state(self, unit: _Unit, state: str, result: str) -> None:
        unit.state, unit.result, unit.since = state, result, time.time()

    def _watch(self) -> None:
        """Reap children the moment they exit (pidfds become readable), so none stays a zombie."""
        while True:
            with self._cv:
                if self._closed and all(u.proc is None for u in self._units.values()):
                    return
                fds = [u.pidfd for u in self._units.values() if u.pidfd >= 0]
                must_poll = any(u.proc is not None and u.pidfd < 0 for u in self._units.values())
            poller = select.poll()
            poller.register(self._waker, select.POLLIN)
            for fd in fds:
                poller.register(fd, select.POLLIN)
            try:
                poller.poll(200 if must_poll or self._closed else None)
            except OSError:
                pass  # a pidfd closed under us; rebuild the set
            self._waker.drain()
            with self._cv:
                for unit in self._units.values():
                    self._reap_if_exited(unit)

    @staticmethod
    def _job_failed(name: str) -> str:
        return (
            f"Job for {name}.service failed because the control process exited with error code.\n"
            f'See "systemctl status {name}.service" and "journalctl -xeu {name}.service" for details.'
        )
