"""A switch's ports as the emulated CLI sees them: bridge-side veths in the lab's core namespace.

Why a module of its own: this is the one place a switch CLI command touches the kernel (link state with
``ip``, SPAN with ``tc mirred``); the CLI itself (virtual.switch_cli) only knows the PortBackend protocol.
"""

from __future__ import annotations

import logging
import subprocess
import threading

from harness.topology import Topology
from virtual import netns
from virtual.netplan import NetPlan

log = logging.getLogger("hil.keeper")


class VethPorts:
    """A switch's ports as the emulated CLI sees them: bridge-side veths in the core namespace."""

    def __init__(self, switch: str, net: NetPlan, topo: Topology):
        self.switch = switch
        self.net = net
        self.spec = topo.device(switch).spec
        self._mirror_lock = threading.Lock()
        self.mirrors: dict[int, tuple[dict[str, str], str | None]] = {}
        self._mirrored: set[str] = set()

    def _veth(self, port: str) -> str:
        return self.net.port_veth(self.switch, port)

    def set_admin(self, port: str, up: bool) -> None:
        log.info("switch %s port %s %s", self.switch, port, "up" if up else "down")
        netns.set_link(self._veth(port), up)

    def state(self, port: str) -> tuple[bool, bool]:
        return netns.link_state(self._veth(port))

    def set_mirror(self, session: int, sources: dict[str, str], destination: str | None) -> None:
        """SPAN with tc: copies of each source port's traffic leave through the destination port's veth.

        The bridge-side veth's ingress is what the device sends (rx at the switch), its egress what the
        device receives (tx). Ports that leave the session lose their mirror filters."""
        with self._mirror_lock:
            self.mirrors[session] = (dict(sources), destination) if destination else ({}, None)
            wanted: dict[str, tuple[set[str], str]] = {}
            for srcs, dst in self.mirrors.values():
                if dst is None:
                    continue
                for port, direction in srcs.items():
                    dirs = {"rx": {"ingress"}, "tx": {"egress"}}.get(direction, {"ingress", "egress"})
                    wanted[port] = (dirs, self._veth(dst))
            for port in set(self._mirrored) - set(wanted):
                subprocess.run(["tc", "qdisc", "del", "dev", self._veth(port), "clsact"], capture_output=True)
            for port, (dirs, dst) in wanted.items():
                veth = self._veth(port)
                subprocess.run(["tc", "qdisc", "del", "dev", veth, "clsact"], capture_output=True)
                _tc(["qdisc", "add", "dev", veth, "clsact"])
                for d in sorted(dirs):  # u32 matching everything: this kernel has no cls_matchall
                    match_all = ["protocol", "all", "u32", "match", "u32", "0", "0"]
                    mirror = ["action", "mirred", "egress", "mirror", "dev", dst]
                    _tc(["filter", "add", "dev", veth, d, *match_all, *mirror])
            self._mirrored = set(wanted)
            log.info("switch %s SPAN session %d: %s -> %s", self.switch, session, sources, destination)

    def description(self, port: str) -> str:
        p = self.spec.ports[port]
        return p.description or (p.connects or "")


def _tc(args: list[str]) -> None:
    r = subprocess.run(["tc", *args], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"tc {' '.join(args)}: {r.stderr.strip()}")
