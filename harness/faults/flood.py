"""The `flood` fault: an attacker on a lab host floods services with slow clients and garbage.

Why a fault: a flood is a change to the lab's conditions like a lossy link, so it goes through the injector
(journaled before it starts, healed at the end of its block, on Ctrl-C, by `hil lab restore` after a crash)
and its start and end are in the history. The flood is a process (harness/tools/flood.py) started inside
the attacker host's network namespace, so it speaks from that host's address; it is known by PID and start
time (noted in the journal the moment it runs), stopped by SIGTERM (then SIGKILL) only while both still
match, and ends by itself after its max duration even if nobody is left to stop it.

    with sc.fault("flood", "sha-agents1", at=["ntg-ul1", "ntg-cti1", "ntg-pbx1"], slow=100, rate=200): ...

On the virtual lab the harness runs the flood as the host itself (`nsenter` into its namespace). On a
physical lab (and the twin driven as one) it starts it over SSH on the host, where this project must be
installed (`python3 -m harness.tools.flood`, docs/physical-lab.md "Security scenarios"): its JSON lines
come back on the SSH channel as it runs, its PID with its first line, and the heal is `kill PID` over
SSH, only while that PID still runs the flood (`ps -o args= -p PID`). A host the harness cannot reach
over SSH (no management address, no host credentials) is refused before anything starts.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import threading
from typing import Any, ClassVar

from harness.drivers import driver_for
from harness.faults.base import Fault, FaultRefused, wait_for
from harness.faults.journal import proc_start, proc_state
from harness.faults.safety import check_not_management
from harness.lab import Lab
from harness.topology import REPO_ROOT

__all__ = [
    "FLOOD_PORTS", "TOOL_COMMAND", "Flood", "as_host", "check_ssh_host", "flood_targets", "run_as_host",
    "run_over_ssh", "ssh_host",
]  # fmt: skip

FLOOD_PORTS = (20000, 29999)  # the flood's source ports (harness/tools/flood.py): how its streams are told
VICTIM_KINDS = {"ul": "http", "cti": "cti", "pbx": "sip"}
MAX_SLOW = 500  # slow connections per target: more would be a test of the controller's file limits
MAX_RATE = 2000.0  # garbage messages per second: more than this machine's two cores should be asked for
STOP_WAIT = 5.0
TOOL_COMMAND = ["python3", "-m"]  # how a physical lab's host runs a harness program (this project installed)


def check_ssh_host(lab: Lab, host: str) -> None:
    """FaultRefused unless the topology gives a way in to a physical lab's ``host`` over SSH (its
    management address, credentials.host). Sends nothing, reads no secret."""
    d = lab.topology.device(host)
    if getattr(d.spec, "mgmt", None) is None or lab.topology.model.credentials.host is None:
        raise FaultRefused(
            f"{host}: a physical lab runs the attacker over SSH on the host itself, which needs its "
            "management address and credentials.host"
        )


def ssh_host(lab: Lab, host: str, steps: Any = None) -> Any:
    """The HostDriver (SSH) of a physical lab's ``host``, where its host programs run."""
    check_ssh_host(lab, host)
    return driver_for(lab, host, steps)


def as_host(lab: Lab, host: str) -> list[str]:
    """The argv prefix that runs a program as ``host`` on the network (its namespace, its address)."""
    ns = lab.ns_path(host)
    if ns is None:
        raise FaultRefused(
            f"{host}: this lab cannot run a process as one of its hosts (only the virtual lab can); "
            "run the attacker on the host itself"
        )
    return ["nsenter", f"--net={ns}", "--"]


def run_as_host(lab: Lab, host: str, module: str, stdin: Any, timeout: float = 30.0) -> Any:
    """Run ``python -m module`` as ``host`` with ``stdin`` (JSON) and return its JSON answer: a probe that
    changes nothing (harness/tools/probe.py), so it needs no journal. Over SSH on a physical lab."""
    if not lab.virtual:
        return run_over_ssh(ssh_host(lab, host), module, json.dumps(stdin), timeout)
    argv = [*as_host(lab, host), sys.executable, "-m", module]
    r = subprocess.run(
        argv, input=json.dumps(stdin), capture_output=True, text=True, timeout=timeout, cwd=REPO_ROOT
    )
    if r.returncode != 0:
        raise RuntimeError(f"{module} as {host}: exit {r.returncode}: {r.stderr.strip()[-300:]}")
    return json.loads(r.stdout)


def run_over_ssh(ssh: Any, module: str, stdin: str, timeout: float) -> Any:
    command = shlex.join([*TOOL_COMMAND, module])
    with ssh.step("run_tool", [command]):
        chan = ssh.client.get_transport().open_session()
        try:
            chan.settimeout(timeout)
            chan.exec_command(command)
            chan.sendall(stdin.encode())
            chan.shutdown_write()
            out = chan.makefile("rb").read().decode(errors="replace")
            code = chan.recv_exit_status()
            err = chan.makefile_stderr("rb").read().decode(errors="replace")
        finally:
            chan.close()
    if code != 0:
        raise RuntimeError(f"{module} on {ssh.name}: exit {code}: {err.strip()[-300:]}")
    return json.loads(out)


def flood_targets(lab: Lab, names: list[str]) -> list[str]:
    """``KIND=ADDRESS:PORT`` of each victim's service on its data address (UL: HTTP, CTI, PBX: SIP)."""
    out = []
    for name in names:
        d = lab.topology.device(name)
        if d.kind not in VICTIM_KINDS:
            raise FaultRefused(f"flood: {name} is a {d.kind}; a flood hits a {', '.join(VICTIM_KINDS)}")
        port = d.spec.sip_port if d.kind == "pbx" else d.spec.port
        out.append(f"{VICTIM_KINDS[d.kind]}={d.spec.address}:{port}")
    return out


class Flood(Fault):
    """Slow clients and garbage from host `target` against the services of the devices in `at`."""

    kind = "flood"
    default_max_duration: ClassVar[float | None] = 120.0

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self._proc: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None
        self._chan: Any = None  # the SSH channel the flood runs on (physical lab)
        self._ssh: Any = None
        self.lines: list[dict[str, Any]] = []  # what the flood printed: its ready line, its summary

    # -- what it is -----------------------------------------------------------------------------------
    @property
    def victims(self) -> list[str]:
        at = self.params.get("at") or []
        return [str(a) for a in ([at] if isinstance(at, str) else at)]

    @property
    def summary(self) -> dict[str, Any] | None:
        """The flood's own counters per target (sent, closed by the server, ...), once it has ended."""
        return next((ln for ln in self.lines if "summary" in ln), None) or self.notes.get("summary")

    def counters(self) -> dict[str, dict[str, int]]:
        """The flood's latest counters per target (its last progress line, or its summary): what a scenario
        polls while the flood runs."""
        for ln in reversed(self.lines):
            per = ln.get("summary") or ln.get("progress")
            if isinstance(per, dict):
                return per
        return {}

    def argv(self) -> list[str]:
        p = self.params
        argv = [sys.executable, "-m", "harness.tools.flood"]
        for t in flood_targets(self.lab, self.victims):
            argv += ["--target", t]
        argv += ["--slow", str(int(p.get("slow", 100))), "--every", str(float(p.get("every", 3.0)))]
        argv += ["--idle", str(int(p.get("idle", 0)))]
        argv += ["--rate", str(float(p.get("rate", 200.0))), "--ports", "-".join(map(str, FLOOD_PORTS))]
        argv += ["--seed", str(int(p.get("seed", 0))), "--max-seconds", str((self.max_duration or 120) + 5)]
        return argv

    def check_safety(self) -> None:
        d = self._device(self.target)
        if d.kind != "host":
            raise FaultRefused(f"flood: {self.target} is a {d.kind}; the attacker is a lab host")
        if not self.lab.virtual:  # physical: over SSH (a dry run of the virtual lab plans it as is)
            check_ssh_host(self.lab, self.target)
        if not self.victims:
            raise FaultRefused("flood: at=[devices] names no victim")
        for name in self.victims:
            v = self._device(name)
            if not v.spec.fair_game:
                raise FaultRefused(f"flood: {name} is not marked fair_game in the topology")
            check_not_management(self.kind, self.lab, f"{name}'s data address", str(v.spec.address))
        flood_targets(self.lab, self.victims)
        if not 0 <= int(self.params.get("slow", 100)) <= MAX_SLOW:
            raise FaultRefused(f"flood: slow must be 0-{MAX_SLOW} connections per target")
        if not 0 <= int(self.params.get("idle", 0)) <= MAX_SLOW:
            raise FaultRefused(f"flood: idle must be 0-{MAX_SLOW} connections per target")
        if not 0 <= float(self.params.get("rate", 200.0)) <= MAX_RATE:
            raise FaultRefused(f"flood: rate must be 0-{MAX_RATE:g} messages per second")

    def remote_command(self) -> str:
        """The flood as a physical lab's host runs it (over SSH)."""
        return shlex.join([*TOOL_COMMAND, *self.argv()[2:]])

    def plan(self) -> list[tuple[str, str]]:
        if not self.lab.virtual:
            return [(self.target, f"ssh {self.target}: {self.remote_command()}")]
        return [(self.target, shlex.join(["nsenter", f"--net=<{self.target}>", "--", *self.argv()]))]

    def plan_heal(self) -> list[tuple[str, str]]:
        if not self.lab.virtual:
            return [(self.target, f"ssh {self.target}: kill -TERM <the flood's pid>")]
        return [(self.target, "kill -TERM <the flood's pid>")]

    # -- apply, heal ----------------------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        pid = self.notes.get("pid")
        return int(pid) if pid else None

    def _same(self) -> bool:
        """The flood we started still runs (same PID, same start time; not a zombie). Over SSH: its
        channel is open, or (a flood restored from the journal) that PID on the host runs the flood."""
        pid = self.pid
        if self.notes.get("remote"):
            if self._chan is not None:
                return not self._chan.exit_status_ready()
            if pid is None:
                return False
            ps = self._remote().run(f"ps -o args= -p {pid}", action="flood_check")
            return ps.exit_code == 0 and "harness.tools.flood" in ps.stdout
        if pid is None:
            return False
        return proc_start(pid) == str(self.notes.get("start")) and proc_state(pid) not in (None, "Z", "X")

    def _read(self) -> None:
        stream = self._chan.makefile("r") if self._chan is not None else self._proc.stdout  # type: ignore[union-attr]
        assert stream is not None
        for line in stream:
            try:
                got = json.loads(line)
            except ValueError:
                continue
            if isinstance(got, dict):
                self.lines.append(got)

    def _note_remote_pid(self) -> None:
        """The host's PID of a flood started over SSH (its ready line says it): what the heal stops."""
        if self._chan is not None and self.pid is None:
            ready = next((ln for ln in self.lines if ln.get("ready") and ln.get("pid")), None)
            if ready is not None:
                self.note(pid=int(ready["pid"]))

    def _remote(self) -> Any:
        if self._ssh is None:
            self._ssh = ssh_host(self.lab, self.target, self.steps)
        return self._ssh

    def _inject_remote(self) -> None:
        command = self.remote_command()
        self.note(remote=True)
        with self._remote().step("flood_start", [command]):
            self._chan = self._remote().client.get_transport().open_session()
            self._chan.exec_command(command)
            self._chan.shutdown_write()
        self._reader = threading.Thread(target=self._read, name=f"flood-{self.id}", daemon=True)
        self._reader.start()

    def _inject(self) -> None:
        if not self.lab.virtual:
            self._inject_remote()
            return
        log = open(self.lab.state_dir() / f"flood-{self.id}.log", "ab")  # noqa: SIM115 - the child owns it
        try:
            self._proc = subprocess.Popen(
                [*as_host(self.lab, self.target), *self.argv()],
                stdout=subprocess.PIPE,
                stderr=log,
                stdin=subprocess.DEVNULL,
                text=True,
                cwd=REPO_ROOT,
                start_new_session=True,  # the heal stops it, not a terminal's Ctrl-C half-way
            )
        finally:
            log.close()
        self.note(pid=self._proc.pid, start=proc_start(self._proc.pid))
        self._reader = threading.Thread(target=self._read, name=f"flood-{self.id}", daemon=True)
        self._reader.start()

    def took_effect(self) -> bool:
        """It runs, and (when this controller started it) every slow client has tried to connect."""
        self._note_remote_pid()
        if not self._same():
            return False
        started_here = self._proc is not None or self._chan is not None
        return not started_here or any(ln.get("ready") for ln in self.lines)

    def _heal(self) -> None:
        if self.notes.get("remote"):
            self._heal_remote()
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if not self._same():
                break
            try:
                os.kill(self.pid or 0, sig)
            except ProcessLookupError:
                break
            if wait_for(lambda: not self._same(), STOP_WAIT, every=0.05):
                break
        if self._proc is not None:
            try:
                self._proc.wait(timeout=STOP_WAIT)
            except subprocess.TimeoutExpired:
                pass
        if self._reader is not None:
            self._reader.join(timeout=STOP_WAIT)
        if self.summary is not None and "summary" not in self.notes:
            self.note(summary=self.summary)

    def _heal_remote(self) -> None:
        """``kill PID`` over SSH while that PID is still the flood (then KILL), and its last lines read."""
        self._note_remote_pid()
        for sig in ("TERM", "KILL"):
            if self.pid is None or not self._same():
                break
            self._remote().run(f"kill -{sig} {self.pid}", action="flood_stop")
            if wait_for(lambda: not self._same(), STOP_WAIT, every=0.1):
                break
        if self._reader is not None:
            self._reader.join(timeout=STOP_WAIT)
        if self._chan is not None:
            self._chan.close()
        if self.summary is not None and "summary" not in self.notes:
            self.note(summary=self.summary)

    def heal_took_effect(self) -> bool:
        return not self._same()
