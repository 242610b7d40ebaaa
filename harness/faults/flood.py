"""The `flood` fault: an attacker on a lab host floods services with slow clients and garbage.

Why a fault: a flood is a change to the lab's conditions like a lossy link, so it goes through the injector
(journaled before it starts, healed at the end of its block, on Ctrl-C, by `hil lab restore` after a crash)
and its start and end are in the history. The flood is a process (harness/tools/flood.py) started inside
the attacker host's network namespace, so it speaks from that host's address; it is known by PID and start
time (noted in the journal the moment it runs), stopped by SIGTERM (then SIGKILL) only while both still
match, and ends by itself after its max duration even if nobody is left to stop it.

    with sc.fault("flood", "sha-agents1", at=["ntg-ul1", "ntg-cti1", "ntg-pbx1"], slow=100, rate=200): ...

Only a lab that can run a process as one of its hosts (the virtual lab: `lab.ns_path`) can flood; on a
physical lab the fault is refused before anything starts (an attacker's laptop is not the controller).
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

from harness.faults.base import Fault, FaultRefused, wait_for
from harness.faults.journal import proc_start, proc_state
from harness.faults.safety import check_not_management
from harness.lab import Lab
from harness.topology import REPO_ROOT

__all__ = ["FLOOD_PORTS", "Flood", "as_host", "flood_targets", "run_as_host"]

FLOOD_PORTS = (20000, 29999)  # the flood's source ports (harness/tools/flood.py): how its streams are told
VICTIM_KINDS = {"ul": "http", "cti": "cti", "pbx": "sip"}
MAX_SLOW = 500  # slow connections per target: more would be a test of the controller's file limits
MAX_RATE = 2000.0  # garbage messages per second: more than this machine's two cores should be asked for
STOP_WAIT = 5.0


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
    changes nothing (harness/tools/probe.py), so it needs no journal."""
    argv = [*as_host(lab, host), sys.executable, "-m", module]
    r = subprocess.run(
        argv, input=json.dumps(stdin), capture_output=True, text=True, timeout=timeout, cwd=REPO_ROOT
    )
    if r.returncode != 0:
        raise RuntimeError(f"{module} as {host}: exit {r.returncode}: {r.stderr.strip()[-300:]}")
    return json.loads(r.stdout)


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
        if not self.lab.virtual:  # a dry run of the virtual lab plans it: the namespace exists when run
            as_host(self.lab, self.target)
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

    def plan(self) -> list[tuple[str, str]]:
        return [(self.target, shlex.join(["nsenter", f"--net=<{self.target}>", "--", *self.argv()]))]

    def plan_heal(self) -> list[tuple[str, str]]:
        return [(self.target, "kill -TERM <the flood's pid>")]

    # -- apply, heal ----------------------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        pid = self.notes.get("pid")
        return int(pid) if pid else None

    def _same(self) -> bool:
        """The flood we started still runs (same PID, same start time; not a zombie)."""
        pid = self.pid
        if pid is None:
            return False
        return proc_start(pid) == str(self.notes.get("start")) and proc_state(pid) not in (None, "Z", "X")

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            try:
                self.lines.append(json.loads(line))
            except ValueError:
                continue

    def _inject(self) -> None:
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
        if not self._same():
            return False
        return self._proc is None or any(ln.get("ready") for ln in self.lines)

    def _heal(self) -> None:
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

    def heal_took_effect(self) -> bool:
        return not self._same()
