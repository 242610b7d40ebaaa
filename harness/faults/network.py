"""Packet-filter faults on a host: blackhole, loss, rate limit, partition; one nft table per fault.

They filter the host's data address only; a host managed over its data address, an address of the
management network, and (for `rate_limit dev=`) the interface facing the controller are refused before
anything is sent (harness.faults.safety).
"""

from __future__ import annotations

import shlex
from abc import abstractmethod

from harness.faults.base import FaultRefused
from harness.faults.host import HostFault
from harness.faults.safety import check_dev, check_not_management


class NftFault(HostFault):
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


class Blackhole(NftFault):
    """Every packet to or from the host's data address dropped, link up: the host is silent, not gone."""

    kind = "blackhole"

    def rules(self) -> list[tuple[str, str]]:
        a = self.address(self.host)
        return [("in", f"ip daddr {a} drop"), ("out", f"ip saddr {a} drop")]


class Loss(NftFault):
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


class RateLimit(NftFault):
    """Traffic of the host's data address policed to kbit each way; with dev=, egress shaped by tc tbf."""

    kind = "rate_limit"

    def check_safety(self) -> None:
        super().check_safety()
        if float(self.params.get("kbit", 0)) <= 0:
            raise FaultRefused("rate_limit: kbit must be positive")
        dev = self.params.get("dev")
        if dev:
            check_dev(self.kind, self.lab, self.host, str(dev))

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

    def _shaped(self) -> bool:
        dev = self.params.get("dev")
        if not dev:
            return False
        out = self._run(f"tc qdisc show dev {shlex.quote(str(dev))}", f"{self.kind}.check").stdout
        return any(line.startswith("qdisc tbf") and " root " in line for line in out.splitlines())

    def took_effect(self) -> bool:
        return super().took_effect() and (self._shaped() or not self.params.get("dev"))

    def heal_took_effect(self) -> bool:
        return super().heal_took_effect() and not self._shaped()


class Partition(NftFault):
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
            check_not_management(self.kind, self.lab, end, self.address(end))
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
