"""The controller's side of the virtual lab: bring it up, find it, ask it, take it down.

The lab itself is the keeper process (see keeper.py) in namespaces of its own. Here we only start it, wire
the controller's management veth to it (one interface in the controller's namespace, gone with the lab), and
talk to it over its control socket. We stop exactly the processes we started, by PID, checking the PID still
names the same process (start time) so that a recycled PID is never signalled.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import credentials
from harness.topology import REPO_ROOT, Topology, load
from virtual import netns
from virtual.netplan import CORE_MGMT_IF, HOST_MGMT_IF, plan

REQUIRED_TOOLS = ("ip", "unshare", "nsenter", "kamailio")


class LabError(Exception):
    """Something the user can act on; the CLI prints it without a traceback."""


def run_base() -> Path:
    return Path(os.environ.get("HIL_RUN_DIR", "/run/hil"))


def _starttime(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except OSError:
        return None


@dataclass
class LabHandle:
    name: str
    run_dir: Path
    unshare_pid: int
    unshare_start: str
    keeper_pid: int
    keeper_start: str

    @classmethod
    def load(cls, run_dir: Path) -> LabHandle | None:
        try:
            d = json.loads((run_dir / "lab.json").read_text())
            return cls(
                name=d["name"],
                run_dir=run_dir,
                unshare_pid=d["unshare_pid"],
                unshare_start=d["unshare_start"],
                keeper_pid=d["keeper_pid"],
                keeper_start=d["keeper_start"],
            )
        except (OSError, ValueError, KeyError):
            return None

    def save(self) -> None:
        d = {k: v for k, v in self.__dict__.items() if k != "run_dir"}
        (self.run_dir / "lab.json").write_text(json.dumps(d))

    def alive(self) -> bool:
        return _starttime(self.keeper_pid) == self.keeper_start

    def ns_path(self, name: str) -> str:
        """A lab namespace, as the controller opens it (through the keeper's mount namespace)."""
        return f"/proc/{self.keeper_pid}/root/run/netns/{name}"

    def state(self) -> dict[str, Any]:
        try:
            return json.loads((self.run_dir / "state.json").read_text())
        except (OSError, ValueError):
            return {}

    def secrets(self) -> dict[str, str]:
        return credentials.read_env(self.run_dir / "secrets.env")

    def known_hosts(self) -> Path:
        return self.run_dir / "known_hosts"

    def request(self, op: str, timeout: float = 10.0, **kw: Any) -> dict[str, Any]:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(timeout)
        try:
            s.connect(str(self.run_dir / "control.sock"))
            s.sendall(json.dumps({"op": op, **kw}).encode() + b"\n")
            buf = b""
            while not buf.endswith(b"\n"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                buf += chunk
        except OSError as e:
            raise LabError(f"the lab {self.name} does not answer on its control socket: {e}") from None
        finally:
            s.close()
        reply = json.loads(buf or b"{}")
        if not reply.get("ok"):
            raise LabError(f"lab {self.name}: {reply.get('error', 'no reply')}")
        return reply

    def set_link(self, veth: str, up: bool) -> None:
        self.request("set_link", link=veth, up=up)

    def status(self) -> dict[str, Any]:
        st = self.request("status")["status"]
        hostpids = _host_pids(self.keeper_pid)
        for p in st.get("processes", []):
            if p.get("pid") is not None:
                p["host_pid"] = hostpids.get(int(p["pid"]))
        st["keeper_pid"] = self.keeper_pid
        return st

    def signal(self, sig: int) -> None:
        for pid, start in ((self.keeper_pid, self.keeper_start), (self.unshare_pid, self.unshare_start)):
            if _starttime(pid) == start:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass


def _host_pids(keeper_pid: int) -> dict[int, int]:
    """Map PIDs inside the lab's PID namespace to the controller's view of them."""
    try:
        target = os.readlink(f"/proc/{keeper_pid}/ns/pid")
    except OSError:
        return {}
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.readlink(f"/proc/{entry}/ns/pid") != target:
                continue
            with open(f"/proc/{entry}/status") as f:
                for line in f:
                    if line.startswith("NSpid:"):
                        ids = line.split()[1:]
                        out[int(ids[-1])] = int(ids[0])
                        break
        except OSError:
            continue
    return out


def find(name: str | None = None) -> LabHandle | None:
    """The lab that is up (optionally by name); stale state of a killed lab is removed on the way."""
    base = run_base()
    if not base.is_dir():
        return None
    found = None
    for d in sorted(base.iterdir()):
        h = LabHandle.load(d)
        if h is None:
            continue
        if not h.alive():
            _archive_logs(d)
            shutil.rmtree(d, ignore_errors=True)
            continue
        if name is None or h.name == name:
            found = h
    return found


def _archive_logs(run_dir: Path) -> None:
    logs = run_dir / "logs"
    if logs.is_dir():
        dest = REPO_ROOT / "reports" / "lab-logs" / run_dir.name
        shutil.rmtree(dest, ignore_errors=True)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(logs, dest, dirs_exist_ok=True)
        keeper_log = run_dir / "keeper.log"
        if keeper_log.exists():
            shutil.copy(keeper_log, dest / "keeper.log")


def preflight(topo: Topology) -> None:
    if topo.kind != "virtual":
        raise LabError(f"{topo.file}: kind is {topo.kind!r}; `hil lab up` builds only virtual labs")
    if os.geteuid() != 0:
        raise LabError("the virtual lab needs root (namespaces, bridges); run as root")
    missing = [t for t in REQUIRED_TOOLS if shutil.which(t) is None and not Path(f"/usr/sbin/{t}").exists()]
    if missing:
        raise LabError(f"missing tools: {', '.join(missing)}; run `make setup` first")


def up(topo: Topology, timeout: float = 30.0) -> LabHandle:
    preflight(topo)
    running = find()
    if running is not None:
        if running.name == topo.name:
            return running
        raise LabError(f"lab {running.name} is already up; run `hil lab down` first")
    for name in [HOST_MGMT_IF, *(str(pp.span_to) for pp in plan(topo).span_ports())]:
        if netns.link_exists(name):
            raise LabError(f"interface {name} already exists in this namespace: is another lab up here?")

    run_dir = run_base() / topo.name
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True, mode=0o700)
    credentials.write_env(run_dir / "secrets.env", credentials.generate(topo))
    argv = [
        "unshare", "--user", "--map-root-user", "--pid", "--fork", "--mount", "--net", "--mount-proc",
        "--propagation", "private", "--kill-child",
        sys.executable, "-m", "virtual.keeper", "--topology", str(topo.file), "--run-dir", str(run_dir),
    ]  # fmt: skip
    logf = open(run_dir / "keeper.log", "ab")
    proc = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT, cwd=REPO_ROOT,
        start_new_session=True,
    )  # fmt: skip
    logf.close()
    keeper_pid = _wait_child(proc, 5.0)
    handle = LabHandle(
        topo.name, run_dir, proc.pid, _starttime(proc.pid) or "", keeper_pid, _starttime(keeper_pid) or ""
    )
    handle.save()
    try:
        _wait_phase(handle, proc, {"network", "ready"}, timeout)
        mgmt = topo.model.management
        cidr = f"{mgmt.controller}/{mgmt.network.prefixlen}"
        _ip(
            "link",
            "add",
            HOST_MGMT_IF,
            "type",
            "veth",
            "peer",
            "name",
            CORE_MGMT_IF,
            "netns",
            str(keeper_pid),
        )
        _ip("addr", "add", cidr, "dev", HOST_MGMT_IF)
        _ip("link", "set", HOST_MGMT_IF, "up")
        for pp in plan(topo).span_ports():  # the controller's capture NICs on the switches' SPAN ports
            _ip(
                "link",
                "add",
                str(pp.span_to),
                "type",
                "veth",
                "peer",
                "name",
                pp.veth,
                "netns",
                str(keeper_pid),
            )
            _ip("link", "set", str(pp.span_to), "up")
        _wait_phase(handle, proc, {"ready"}, timeout)
    except BaseException:
        handle.signal(signal.SIGKILL)
        proc.wait()
        raise
    return handle


def _ip(*args: str) -> None:
    r = subprocess.run(["ip", *args], capture_output=True, text=True)
    if r.returncode != 0:
        raise LabError(f"ip {' '.join(args)}: {r.stderr.strip()}")


def _wait_child(proc: subprocess.Popen[bytes], timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{proc.pid}/task/{proc.pid}/children") as f:
                kids = f.read().split()
            if kids:
                return int(kids[0])
        except OSError:
            pass
        if proc.poll() is not None:
            break
        time.sleep(0.005)
    raise LabError(
        f"the lab keeper did not start (unshare exited {proc.poll()}); "
        "does this kernel allow user namespaces?"
    )


def _wait_phase(h: LabHandle, proc: subprocess.Popen[bytes], phases: set[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = h.state()
        if st.get("phase") in phases:
            return
        if st.get("phase") == "failed" or proc.poll() is not None:
            tail = _tail(h.run_dir / "keeper.log")
            raise LabError(f"the lab failed to start: {st.get('error', 'keeper exited')}\n{tail}")
        time.sleep(0.01)
    raise LabError(f"the lab was not ready within {timeout:.0f} s\n{_tail(h.run_dir / 'keeper.log')}")


def _tail(path: Path, n: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


def down(handle: LabHandle | None = None, timeout: float = 5.0) -> bool:
    """Take the lab down; True if one was up. Orderly first, then SIGKILL of our own two PIDs."""
    h = handle or find()
    if h is None:
        return False
    try:
        h.request("down", timeout=1.0)
    except LabError:
        pass
    deadline = time.monotonic() + timeout
    while h.alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    if h.alive():
        h.signal(signal.SIGKILL)
        while h.alive():
            time.sleep(0.01)
    try:
        os.waitpid(h.unshare_pid, os.WNOHANG)
    except ChildProcessError:
        pass
    # The kernel destroys the lab's namespaces asynchronously; our end of the management veth is the one
    # object in the controller's namespace, made by up(): delete it now rather than wait for the kernel.
    topo_file = h.state().get("topology")
    ours = [HOST_MGMT_IF]
    if topo_file:
        try:
            ours += [str(pp.span_to) for pp in plan(load(topo_file)).span_ports()]
        except Exception:  # a topology edited since: the kernel still removes these with the lab
            pass
    for name in ours:
        if netns.link_exists(name):
            subprocess.run(["ip", "link", "del", name], capture_output=True)
    _archive_logs(h.run_dir)
    shutil.rmtree(h.run_dir, ignore_errors=True)
    return True
