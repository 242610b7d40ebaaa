"""The twin's capture hosts: a lab host whose NIC sees a switch's SPAN traffic, driven over SSH and SFTP.

Why: a physical lab often cables a far site's SPAN port to a capture host there, and the harness starts
tcpdump on it over SSH and fetches the pcap over SFTP (harness/observe/remote_capture.py). The twin must
offer the same so that `--as-physical` proves that path. The twin's topology has no such host (its SPAN
ports go to the controller's veths), so the keeper adds one per SPAN switch after the first site's: its own
namespace with a management address (the highest free one of the management network) and a NIC ``span0``
that receives a copy of everything the switch's SPAN port sends while a tcpdump runs there (a second ``tc
mirred`` on that port's egress: the SPAN session itself stays the switch CLI's). The keeper records them in
its state, where `hil lab up --as-physical` reads them to describe the host, and nowhere else.

One twin-only workaround: the lab's user namespace denies setgroups(2), which tcpdump calls for ``-Z``
(initgroups, even to stay root), so its tcpdump runs with a no-op ``initgroups`` preloaded (compiled at
lab start; without a C compiler tcpdump fails there and the physical preflight says so in one line).

The host's SSH session (``CaptureHost``) runs what the harness sends, as a Linux host would, inside the
host's namespace: ``echo $$; exec tcpdump ...`` streamed (its PID first, then its stderr as it comes),
``tcpdump -i IFACE -d`` (the preflight), ``kill -SIG PID`` of the tcpdumps it started (never another
process), and the host's own CLI for the rest. File arguments are paths of the host's filesystem, a
directory under the run directory that its SFTP server serves.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import shlex
import subprocess
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from harness.topology import Topology
from virtual.toolhost import OwnProcesses

__all__ = ["CaptureHost", "CaptureHostPlan", "capture_host_factory", "capture_host_plans"]

log = logging.getLogger("hil.keeper")
SPAN_NIC = "span0"
_CABLE_LOCK = threading.Lock()
STREAM_PREFIX = "echo $$; exec "


@dataclass(frozen=True)
class CaptureHostPlan:
    """One capture host of the twin, as the keeper builds it and the as-physical writer describes it."""

    name: str  # also its namespace
    site: str
    switch: str
    span_port: str
    mgmt: str
    address: str  # its data address, as a topology needs one (no data NIC in the twin)
    iface: str = SPAN_NIC
    mgmt_veth: str = ""  # core side, on the management bridge
    span_veth: str = ""  # core side of the SPAN NIC

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def capture_host_plans(topo: Topology) -> list[CaptureHostPlan]:
    """A capture host for every switch with a SPAN port except the first site's (which keeps the
    controller's NIC, so the twin proves both paths), named ``<site>-capture1``."""
    used = {str(topo.model.management.controller)}
    for d in topo.devices.values():
        used |= {str(a) for a in (getattr(d.spec, "address", None), getattr(d.spec, "mgmt", None)) if a}
    sites = list(topo.model.sites)
    out: list[CaptureHostPlan] = []
    for i, sw in enumerate(topo.of_kind("switch")):
        if not (sw.spec.span_port and sw.spec.capture_interface) or sw.site == sites[0]:
            continue
        name = f"{sw.site}-capture1"
        if name in topo.devices:
            continue
        mgmt = _free(topo.model.management.network, used)
        data_net = ipaddress.ip_network(f"{_site_address(topo, sw.site)}/24", strict=False)
        address = _free(data_net, used)
        out.append(
            CaptureHostPlan(name, sw.site, sw.name, sw.spec.span_port, mgmt, address,
                            mgmt_veth=f"m-cap{i}", span_veth=f"c-cap{i}")
        )  # fmt: skip
    return out


def _site_address(topo: Topology, site: str) -> str:
    devs = [d for d in topo.devices.values() if d.site == site and getattr(d.spec, "address", None)]
    return str(devs[0].spec.address) if devs else "198.18.250.1"


def _free(net: ipaddress.IPv4Network, used: set[str]) -> str:
    """The highest address of `net` nobody uses (and mark it used)."""
    for host in reversed(list(net.hosts())):
        if str(host) not in used:
            used.add(str(host))
            return str(host)
    raise ValueError(f"no free address left in {net} for a capture host")


def build_commands(p: CaptureHostPlan, mgmt_bridge: str, prefix: int) -> list[list[str]]:
    """The ip commands that make one capture host in the keeper's (core) namespace."""
    ns = ["ip", "-n", p.name]
    return [
        ["ip", "netns", "add", p.name],
        ["ip", "link", "add", p.mgmt_veth, "type", "veth", "peer", "name", "mgmt0", "netns", p.name],
        ["ip", "link", "set", p.mgmt_veth, "master", mgmt_bridge, "up"],
        ["ip", "link", "add", p.span_veth, "type", "veth", "peer", "name", p.iface, "netns", p.name],
        ["ip", "link", "set", p.span_veth, "up"],
        [*ns, "link", "set", "lo", "up"],
        [*ns, "addr", "add", f"{p.mgmt}/{prefix}", "dev", "mgmt0"],
        [*ns, "link", "set", "mgmt0", "up"],
        [*ns, "link", "set", p.iface, "up"],
        [*ns, "route", "add", "unreachable", "default"],
    ]


def cable(span_port_veth: str, span_veth: str, on: bool) -> None:
    """Copy (or stop copying) what the SPAN port sends to the capture host's NIC: a tc mirred on the port's
    egress. Only while a tcpdump runs there, so the twin's other captures pay nothing for it."""
    subprocess.run(["tc", "qdisc", "del", "dev", span_port_veth, "clsact"], capture_output=True)
    if not on:
        return
    mirror = ["action", "mirred", "egress", "mirror", "dev", span_veth]
    for argv in (["tc", "qdisc", "add", "dev", span_port_veth, "clsact"],
                 ["tc", "filter", "add", "dev", span_port_veth, "egress", "protocol", "all", "u32", "match",
                  "u32", "0", "0", *mirror]):  # fmt: skip
        r = subprocess.run(argv, capture_output=True, text=True)
        if r.returncode != 0:
            raise OSError(f"{' '.join(argv)}: {r.stderr.strip()}")


_SHIM = "int initgroups(const char *u, unsigned int g) { (void)u; (void)g; return 0; }\n"  # no header needed


def tcpdump_env(work: Path) -> dict[str, str]:
    """The environment for tcpdump in the lab's user namespace: the initgroups shim preloaded."""
    lib = work / "initgroups-noop.so"
    if not lib.exists():
        src = work / "initgroups-noop.c"
        src.write_text(_SHIM)
        try:
            cc = ["cc", "-shared", "-fPIC", "-nostdlib", "-O2", "-o", str(lib), str(src)]
            subprocess.run(cc, check=True, capture_output=True, timeout=60)
        except (OSError, subprocess.SubprocessError) as e:
            log.warning("no initgroups shim for the capture hosts' tcpdump: %s", e)
            return {}
    return {"LD_PRELOAD": str(lib)}


class CaptureHost(OwnProcesses):
    """A capture host's exec endpoint (see the module docstring); ``fallback`` is the host's own CLI."""

    def __init__(
        self, fallback: Any, root: Path, netns_argv: list[str], started: dict[int, subprocess.Popen[bytes]],
        tcpdump: str = "tcpdump", env: dict[str, str] | None = None,
        cabled: Callable[[bool], None] | None = None, cabling: list[int] | None = None,
    ) -> None:  # fmt: skip
        self.fallback, self.root, self.netns_argv = fallback, Path(root), list(netns_argv)
        self.tcpdump, self.env = tcpdump, {**os.environ, **(env or {})}
        self._started = started  # shared by the host's sessions: a stop comes on another connection
        self._cabled = cabled  # the SPAN copy to this host's NIC, on while any of its tcpdumps runs
        self._cabling = cabling if cabling is not None else [0]  # how many run: shared like `started`

    def host_path(self, path: str) -> Path:
        """A path of the emulated host, under ``root`` (never outside it)."""
        target = (self.root / path.lstrip("/")).resolve()
        if not target.is_relative_to(self.root.resolve()):
            raise ValueError(f"{path}: outside the host's filesystem")
        return target

    def _tcpdump_argv(self, words: list[str]) -> list[str]:
        """tcpdump's arguments with its output file mapped into the host's filesystem."""
        args = list(words[1:])
        for i, word in enumerate(args[:-1]):
            if word == "-w":
                args[i + 1] = str(self.host_path(args[i + 1]))
        return [*self.netns_argv, self.tcpdump, *args]

    def streams(self, command: str) -> bool:
        return command.startswith(STREAM_PREFIX) and _words(command[len(STREAM_PREFIX) :])[:1] == ["tcpdump"]

    def stream(self, command: str, chan: Any) -> int:
        """Run tcpdump to its end: its PID on stdout first, its stderr as it comes; its exit status."""
        try:
            argv = self._tcpdump_argv(_words(command[len(STREAM_PREFIX) :]))
        except ValueError as e:
            chan.sendall_stderr(f"{e}\n".encode())
            return 2
        try:
            self._cable(True)
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE, env=self.env)  # fmt: skip
        except OSError as e:
            self._cable(False)
            chan.sendall_stderr(f"sh: 1: exec: tcpdump: {e.strerror or e}\n".encode())
            return 127
        self._started[proc.pid] = proc
        try:
            chan.sendall(f"{proc.pid}\n".encode())
            assert proc.stderr is not None
            for line in proc.stderr:
                chan.sendall_stderr(line)
            return proc.wait()
        except (OSError, EOFError):  # the client went away: nobody will stop it or fetch its file
            proc.kill()
            return proc.wait()
        finally:
            self._started.pop(proc.pid, None)
            self._cable(False)

    def _cable(self, on: bool) -> None:
        """Count this host's running tcpdumps (shared by its sessions); the first cables, the last unplugs."""
        if self._cabled is None:
            return
        with _CABLE_LOCK:
            was = self._cabling[0]
            now = self._cabling[0] = max(0, was + (1 if on else -1))
            if (on and was == 0) or (not on and was > 0 and now == 0):
                self._cabled(on)

    def run(self, command: str) -> tuple[int, str, str]:
        words = _words(command)
        if len(words) == 3 and words[0] == "kill" and words[1].startswith("-") and words[2].isdigit():
            return self._kill(words[1][1:], int(words[2]))
        if words[:1] == ["tcpdump"] and "-w" not in words:  # a short one: the preflight's -d, -D, --version
            try:
                argv = self._tcpdump_argv(words)
                r = subprocess.run(argv, capture_output=True, text=True, timeout=20, env=self.env)
            except (OSError, subprocess.TimeoutExpired, ValueError) as e:
                return 127, "", f"tcpdump: {e}\n"
            return r.returncode, r.stdout, r.stderr
        return self.fallback.run(command)  # type: ignore[no-any-return]


def _words(command: str) -> list[str]:
    try:
        return shlex.split(command)
    except ValueError:
        return []


def capture_host_factory(
    fallback: Any, root: Path, netns_argv: list[str], tcpdump: str = "tcpdump",
    env: dict[str, str] | Callable[[], dict[str, str]] | None = None,
    cabled: Callable[[bool], None] | None = None,
) -> Any:  # fmt: skip
    """A session_factory for a capture host's SSHServer (give it ``sftp_root=root`` as well). ``env`` may be
    a function: called at the first session, not at lab start (the shim's compile stays off `hil lab up`)."""
    started: dict[int, subprocess.Popen[bytes]] = {}
    made: dict[str, dict[str, str]] = {}
    cabling = [0]
    lock = threading.Lock()  # sessions come on threads of their own: one compile

    def factory(username: str = "root") -> CaptureHost:
        with lock:
            if "env" not in made:
                made["env"] = (env() if callable(env) else env) or {}
        return CaptureHost(
            fallback(username), root, netns_argv, started, tcpdump, made["env"], cabled, cabling
        )

    return factory
