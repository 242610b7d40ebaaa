"""The rails of harness.faults.safety without a lab: which units carry management, which services a host
may lose, and which interface `rate_limit dev=` may shape (never the management NIC, never the one the
controller is reached through, only the one carrying the data address)."""

from __future__ import annotations

import ipaddress

import pytest

from harness import topology
from harness.faults import FaultRefused, allowed_services, make_fault
from harness.faults.safety import HostInterfaces, carries_management, check_dev, check_service, unit_base
from harness.lab import Lab
from harness.lab.dryrun import DryRunBackend


class KnowsInterfaces(DryRunBackend):
    """A backend that knows its hosts' interfaces from its own records (as a lab backend may)."""

    def __init__(self, topo: topology.Topology, facts: HostInterfaces | None) -> None:
        super().__init__(topo)
        self.facts = facts

    def interfaces(self, device: str) -> HostInterfaces | None:
        return self.facts


def iface(text: str) -> list[ipaddress.IPv4Interface]:
    return [ipaddress.IPv4Interface(text)] if text else []


CTI = HostInterfaces(  # sha-cti1: data 198.18.1.20, management 198.19.0.12, the controller 198.19.0.1
    {
        "eth0": iface("198.18.1.20/16"),
        "mgmt0": iface("198.19.0.12/24"),
        "eth1": iface(""),
        "lo": iface("127.0.0.1/8"),
    }
)
ROUTED = HostInterfaces(  # management reached through a router on eth2: no address of the mgmt network here
    {"eth0": iface("198.18.1.20/16"), "eth2": iface("10.9.0.5/24")},
    [("eth2", ipaddress.IPv4Network("0.0.0.0/0")), ("eth0", ipaddress.IPv4Network("198.18.0.0/16"))],
)


def lab_with(facts: HostInterfaces | None) -> Lab:
    topo = topology.load()
    return Lab(topo, KnowsInterfaces(topo, facts))


@pytest.mark.parametrize(
    "unit",
    ["ssh", "ssh.socket", "sshd.service", "sshd@0-198.19.0.12:22-198.19.0.1:4000.service", "systemd-journald",
     "systemd-networkd.service", "NetworkManager", "networking.service", "dbus.socket", "openssh-server"],
)  # fmt: skip
def test_units_that_carry_management(unit: str) -> None:
    assert carries_management(unit)


@pytest.mark.parametrize("unit", ["kamailio", "hil-cti.service", "hil-swarm", "nginx", "cron"])
def test_units_that_do_not(unit: str) -> None:
    assert not carries_management(unit)


def test_unit_base() -> None:
    assert unit_base("sshd@0-1.2.3.4:22.service") == "sshd" and unit_base("ssh.socket") == "ssh"


def test_services_are_an_allowlist_of_what_the_topology_names() -> None:
    lab = lab_with(None)
    assert allowed_services(lab, "sha-pbx1") == {"kamailio"}
    assert allowed_services(lab, "sha-agents1") == {"hil-swarm"}
    check_service("service_stop", lab, "sha-cti1", "hil-cti.service")
    with pytest.raises(FaultRefused, match="not a service the topology names on sha-cti1"):
        check_service("service_stop", lab, "sha-cti1", "kamailio")
    with pytest.raises(FaultRefused, match="management path"):
        check_service("service_stop", lab, "sha-cti1", "ssh.socket")


def test_dev_must_be_the_data_nic() -> None:
    lab = lab_with(CTI)
    check_dev("rate_limit", lab, "sha-cti1", "eth0")
    for dev, why in [
        ("mgmt0", "management NIC"),
        ("eth1", "does not carry its data address"),
        ("eth9", "has no interface eth9"),
        ("lo", "not a data interface"),
        ("eth0; reboot", "not a data interface"),
    ]:
        with pytest.raises(FaultRefused, match=why):
            check_dev("rate_limit", lab, "sha-cti1", dev)


def test_dev_facing_the_controller_through_a_router_is_refused() -> None:
    lab = lab_with(ROUTED)
    assert ROUTED.toward("198.19.0.1") == "eth2" and ROUTED.toward("198.18.2.20") == "eth0"
    with pytest.raises(FaultRefused, match="faces the controller"):
        check_dev("rate_limit", lab, "sha-cti1", "eth2")


def test_dev_is_refused_when_the_interfaces_cannot_be_read() -> None:
    lab = lab_with(None)
    with pytest.raises(FaultRefused, match="cannot be read without asking it"):
        check_dev("rate_limit", lab, "sha-cti1", "eth0")
    f = make_fault(lab, "rate_limit", "sha-cti1", kbit=100)  # without dev=: nft only, nothing to prove
    f.check_safety()
