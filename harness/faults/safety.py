"""The rails a fault must pass before anything is sent: it must not cut the controller's own way back.

A heal travels the same path as every read-back: SSH to the device's management address, from the
controller. So a fault is refused when it would stop SSH or anything SSH stands on (its units and sockets,
logging, networking), when it would filter a management address, and when it would shape the host's
interface that faces the controller. Services are an allowlist (the unit the topology names on the host,
the swarm on an agents host), not a blocklist: a list of what is dangerous always misses one
(`ssh.socket`, `sshd@.service`).

A host's interfaces are facts of the lab, read without sending anything to the device: from the backend
when it offers `interfaces(device)`, else from the host's network namespace when the lab gives one (the
virtual lab), else unknown, and then `dev=` is refused because it cannot be shown to be safe.
"""

from __future__ import annotations

import ctypes
import fcntl
import ipaddress
import os
import re
import socket
import struct
import threading
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from harness.faults.base import FaultRefused
from harness.lab import Lab

HOST_KINDS = ("pbx", "cti", "ul", "host")
SWARM_UNIT = "hil-swarm"
IFNAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:@-]{0,14}$")

# Units whose loss cuts SSH or what it stands on; named in a refusal so the reason is plain. Anything not
# on the allowlist is refused anyway.
_MGMT_UNITS = {
    "ssh", "sshd", "openssh-server", "dropbear", "networking", "network", "NetworkManager", "dbus",
    "wpa_supplicant", "ifup", "getty", "serial-getty", "polkit", "rsyslog", "syslog",
}  # fmt: skip
_MGMT_PREFIXES = ("ssh", "sshd", "openssh", "systemd-", "network")
_UNIT_SUFFIXES = (".service", ".socket", ".target", ".path", ".timer", ".mount", ".slice", ".scope")


# -- services ----------------------------------------------------------------------------------------


def unit_base(unit: str) -> str:
    """`sshd@0-1.2.3.4:22.service` -> `sshd`; `ssh.socket` -> `ssh`; `kamailio` -> `kamailio`."""
    name = unit.strip()
    for suffix in _UNIT_SUFFIXES:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return name.split("@", 1)[0]


def carries_management(unit: str) -> bool:
    base = unit_base(unit)
    return base in _MGMT_UNITS or base.startswith(_MGMT_PREFIXES)


def allowed_services(lab: Lab, device: str) -> set[str]:
    """The units a fault may stop, kill or pause on `device`: the ones the topology names for it."""
    d = lab.topology.device(device)
    allowed = {str(d.spec.service)} if getattr(d.spec, "service", None) else set()
    if d.kind == "host" and getattr(d.spec, "role", None) == "agents":
        allowed.add(SWARM_UNIT)
    return allowed


def check_service(kind: str, lab: Lab, device: str, unit: str) -> None:
    """Refuse a unit outside the allowlist, and say so plainly when it is part of the management path."""
    if carries_management(unit):
        raise FaultRefused(
            f"{kind}: {unit} carries the controller's management path (SSH, its sockets, logging or "
            "networking); the heal would have no way in"
        )
    allowed = allowed_services(lab, device)
    name = unit[: -len(".service")] if unit.endswith(".service") else unit
    if name not in allowed:
        names = ", ".join(sorted(allowed)) or "none"
        raise FaultRefused(
            f"{kind}: {unit} is not a service the topology names on {device} (allowed: {names})"
        )


# -- addresses -----------------------------------------------------------------------------------------


def management_addresses(lab: Lab) -> tuple[ipaddress.IPv4Network, set[ipaddress.IPv4Address]]:
    """The management network and every management address the topology names (the controller's too)."""
    m = lab.topology.model.management
    addrs = {ipaddress.IPv4Address(str(m.controller))}
    for d in lab.topology.devices.values():
        mgmt = getattr(d.spec, "mgmt", None)
        if mgmt is not None:
            addrs.add(ipaddress.IPv4Address(str(mgmt)))
    return ipaddress.IPv4Network(str(m.network)), addrs


def check_not_management(kind: str, lab: Lab, what: str, address: str) -> None:
    """Refuse filtering an address the controller manages the lab through."""
    net, addrs = management_addresses(lab)
    a = ipaddress.IPv4Address(address)
    if a in addrs or a in net:
        raise FaultRefused(
            f"{kind}: {what} ({a}) is a management address; the fault would cut the controller's "
            "management path"
        )


# -- interfaces ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HostInterfaces:
    """A host's IPv4 interfaces and routes, as its kernel has them."""

    addresses: dict[str, list[ipaddress.IPv4Interface]]
    routes: list[tuple[str, ipaddress.IPv4Network]] = field(default_factory=list)

    def toward(self, address: str) -> str | None:
        """The interface the host sends to `address` through (longest prefix; connected networks too)."""
        a = ipaddress.IPv4Address(address)
        best: tuple[int, str] | None = None
        candidates = [(i, iface.network) for i, ifs in self.addresses.items() for iface in ifs]
        for dev, net in [*candidates, *self.routes]:
            if a in net and (best is None or net.prefixlen > best[0]):
                best = (net.prefixlen, dev)
        return best[1] if best else None


@runtime_checkable
class InterfaceReader(Protocol):
    """A lab backend that knows its hosts' interfaces (from its own records, never by asking the host)."""

    def interfaces(self, device: str) -> HostInterfaces | None: ...


def host_interfaces(lab: Lab, host: str) -> HostInterfaces | None:
    """What the lab knows of `host`'s interfaces without sending anything to it; None when it cannot say."""
    if isinstance(lab.backend, InterfaceReader):
        return lab.backend.interfaces(host)
    ns = lab.ns_path(host)
    return read_netns(ns) if ns else None


def check_dev(kind: str, lab: Lab, host: str, dev: str) -> None:
    """`dev` may be shaped only if it carries the host's data address, no management address, and is not
    the interface facing the controller."""
    if not IFNAME.match(dev) or dev in ("lo", "any", "all"):
        raise FaultRefused(f"{kind}: dev={dev!r} is not a data interface name")
    facts = host_interfaces(lab, host)
    if facts is None:
        raise FaultRefused(
            f"{kind}: the interfaces of {host} cannot be read without asking it, so dev={dev} cannot be "
            "shown not to be its management NIC"
        )
    if dev not in facts.addresses:
        raise FaultRefused(f"{kind}: {host} has no interface {dev}")
    net, addrs = management_addresses(lab)
    for iface in facts.addresses[dev]:
        if iface.ip in addrs or iface.ip in net:
            raise FaultRefused(
                f"{kind}: {host} {dev} carries management address {iface.ip}: it is the management NIC"
            )
    controller = str(lab.topology.model.management.controller)
    if facts.toward(controller) == dev:
        raise FaultRefused(f"{kind}: {host} {dev} faces the controller ({controller}): the management path")
    data = ipaddress.IPv4Address(str(lab.topology.device(host).spec.address))
    if not any(i.ip == data for i in facts.addresses[dev]):
        raise FaultRefused(f"{kind}: {host} {dev} does not carry its data address {data}")


# -- reading a network namespace -------------------------------------------------------------------------

_CLONE_NEWNET = 0x40000000
_SIOCGIFADDR = 0x8915
_SIOCGIFNETMASK = 0x891B


def read_netns(ns_path: str, timeout: float = 5.0) -> HostInterfaces | None:
    """Interfaces and routes of a network namespace, read by a short-lived thread that enters it (setns
    moves only the calling thread; Python 3.11 has no os.setns). None if it cannot be read."""
    box: list[HostInterfaces] = []

    def read() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        fd = os.open(ns_path, os.O_RDONLY)
        try:
            if libc.setns(fd, _CLONE_NEWNET) != 0:
                return
        finally:
            os.close(fd)
        box.append(_read_here())

    def guarded() -> None:
        try:
            read()
        except OSError:
            pass  # unreadable: the caller gets None and refuses

    th = threading.Thread(target=guarded, name="faults-netns-read", daemon=True)
    th.start()
    th.join(timeout)
    return box[0] if box else None


def _read_here() -> HostInterfaces:
    addresses: dict[str, list[ipaddress.IPv4Interface]] = {}
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for _, name in socket.if_nameindex():
            req = struct.pack("256s", name.encode()[:15])
            try:
                addr = socket.inet_ntoa(fcntl.ioctl(s.fileno(), _SIOCGIFADDR, req)[20:24])
                mask = socket.inet_ntoa(fcntl.ioctl(s.fileno(), _SIOCGIFNETMASK, req)[20:24])
            except OSError:
                addresses[name] = []  # no IPv4 address
                continue
            addresses[name] = [ipaddress.IPv4Interface(f"{addr}/{mask}")]
    routes = []
    with open("/proc/thread-self/net/route") as f:
        for line in f.read().splitlines()[1:]:
            cols = line.split()
            if len(cols) < 8:
                continue
            dest = socket.inet_ntoa(struct.pack("<I", int(cols[1], 16)))
            mask = socket.inet_ntoa(struct.pack("<I", int(cols[7], 16)))
            routes.append((cols[0], ipaddress.IPv4Network(f"{dest}/{mask}", strict=False)))
    return HostInterfaces(addresses, routes)
