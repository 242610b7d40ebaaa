"""Cross-checks: what only the whole file can tell, after the schema has checked each field.

Dangling references, duplicate names, addresses and extensions, pools larger than their extension range,
cuttable ports on the controller's management path. Each problem is yielded as (dotted path, message), so
the loader reports them all at once and a user fixes a file in one go.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator

from harness.topology.model import DEVICE_KINDS, Topology
from harness.topology.schema import LAB_RANGE, NAME_RE, Pool


def cross_checks(t: Topology) -> Iterator[tuple[str, str]]:
    m = t.model
    yield from check_names(t)
    links = m.links
    referable = set(t.devices) | set(links) | {"controller"}

    # addresses: unique, and inside the lab range for a virtual lab
    seen: dict[str, str] = {}

    def addr(path: str, ip: ipaddress.IPv4Address | None) -> Iterator[tuple[str, str]]:
        if ip is None:
            return
        key = str(ip)
        if key in seen:
            yield path, f"address {key} is already used by {seen[key]}"
        else:
            seen[key] = path
        if m.kind == "virtual" and ip not in LAB_RANGE:
            yield path, f"address {key} is outside the lab range {LAB_RANGE}"

    yield from addr("management.controller", m.management.controller)
    if m.management.controller not in m.management.network:
        yield "management.controller", f"not inside management.network {m.management.network}"
    for d in t.devices.values():
        for field in ("address", "mgmt"):
            ip = getattr(d.spec, field, None)
            yield from addr(f"{d.path}.{field}", ip)
        mg = getattr(d.spec, "mgmt", None)
        if mg is not None and mg not in m.management.network:
            yield f"{d.path}.mgmt", f"{mg} is not inside management.network {m.management.network}"

    # switch ports and what they connect
    for sw in t.of_kind("switch"):
        for pname, port in sw.spec.ports.items():
            if port.connects and port.connects not in referable:
                yield (
                    f"{sw.path}.ports.{pname}.connects",
                    f"{port.connects!r} is not a device or link of this topology",
                )
        if sw.spec.console and (
            sw.spec.console not in t.devices or t.devices[sw.spec.console].kind != "console"
        ):
            yield f"{sw.path}.console", f"{sw.spec.console!r} is not a console port of this topology"
        if sw.spec.span_port and sw.spec.span_port not in sw.spec.ports:
            yield f"{sw.path}.span_port", f"{sw.spec.span_port!r} is not a port of {sw.name}"
        elif sw.spec.span_port:
            span = sw.spec.ports[sw.spec.span_port]
            if span.cuttable:
                yield (
                    f"{sw.path}.ports.{sw.spec.span_port}",
                    "the SPAN port carries the capture: not cuttable",
                )
            if span.connects and span.connects in t.devices:
                yield (
                    f"{sw.path}.ports.{sw.spec.span_port}.connects",
                    "the SPAN destination port must not connect a lab device (it forwards no traffic)",
                )
            if not sw.spec.capture_interface:
                yield f"{sw.path}.capture_interface", "required with span_port: the controller's NIC on it"
        if sw.spec.capture_interface and len(sw.spec.capture_interface) > 15:
            yield f"{sw.path}.capture_interface", "an interface name has at most 15 characters"
        if sw.spec.capture_host is not None:
            cap = t.devices.get(sw.spec.capture_host)
            if cap is None or cap.kind != "host" or cap.spec.role != "capture":
                yield f"{sw.path}.capture_host", f"{sw.spec.capture_host!r} is not a host of role capture"
            if not sw.spec.span_port:
                yield f"{sw.path}.capture_host", "needs span_port: the port cabled to the capture host"
            if m.kind == "virtual":
                yield f"{sw.path}.capture_host", "the virtual lab captures on the controller's NICs only"
    for h in t.of_kind("host"):
        if h.spec.role in ("caller", "capture") and m.kind == "physical" and h.spec.mgmt is None:
            yield f"{h.path}.mgmt", f"a {h.spec.role} host is driven over SSH: it needs a management address"
        if h.spec.role == "caller" and not h.spec.extension:
            yield f"{h.path}.extension", "a caller host needs the extension its test caller registers"

    for lname, link in links.items():
        for end in ("a", "b"):
            ref = getattr(link, end)
            sw, sep, port = ref.partition(":")
            if not sep or sw not in t.devices or t.devices[sw].kind != "switch":
                yield f"links.{lname}.{end}", f"{ref!r} must be switch:port of a switch in this topology"
                continue
            ports = t.devices[sw].spec.ports
            if port not in ports:
                yield f"links.{lname}.{end}", f"switch {sw} has no port {port!r}"
            elif ports[port].connects not in (None, lname):
                yield (
                    f"links.{lname}.{end}",
                    f"{sw}:{port} connects {ports[port].connects!r}, not this link",
                )

    for ref in m.management.path:
        sw, sep, port = ref.partition(":")
        if not sep or sw not in t.devices or t.devices[sw].kind != "switch":
            yield "management.path", f"{ref!r} must be switch:port of a switch in this topology"
        elif port not in t.devices[sw].spec.ports:
            yield "management.path", f"switch {sw} has no port {port!r}"
    for sw, port in sorted(t.management_path()):
        if sw in t.devices and port in t.devices[sw].spec.ports and t.devices[sw].spec.ports[port].cuttable:
            yield (
                f"{t.devices[sw].path}.ports.{port}",
                "port is on the controller's management path and must not be cuttable",
            )

    for con in t.of_kind("console"):
        if con.spec.device not in t.devices:
            yield f"{con.path}.device", f"{con.spec.device!r} is not a device of this topology"
        if m.kind == "physical" and con.spec.url == "virtual":
            yield f"{con.path}.url", "a physical lab needs a device path or socket:// URL, not 'virtual'"
    for pdu in t.of_kind("pdu"):
        if pdu.spec.console not in t.devices or t.devices[pdu.spec.console].kind != "console":
            yield f"{pdu.path}.console", f"{pdu.spec.console!r} is not a console port of this topology"
        for oname, outlet in pdu.spec.outlets.items():
            if outlet.connects not in t.devices:
                yield f"{pdu.path}.outlets.{oname}.connects", f"{outlet.connects!r} is not a device"

    # agent pools: home site, region, range size, overlapping ranges and extensions
    ranges: list[tuple[range, str]] = []
    for pname, pool in m.agents.pools.items():
        rng, here = pool.extension_range(), f"agents.pools.{pname}.extensions"
        for other, where in ranges:
            if rng.start < other.stop and other.start < rng.stop:
                yield here, f"range {pool.extensions} overlaps {where}"
        ranges.append((rng, here))
    owner: dict[str, str] = {}
    for pname, pool in m.agents.pools.items():
        base = f"agents.pools.{pname}"
        if pool.home not in m.sites:
            yield f"{base}.home", f"{pool.home!r} is not a site of this topology"
        rng = pool.extension_range()
        if len(rng) < pool.count:
            yield (
                f"{base}.extensions",
                f"range {pool.extensions} holds {len(rng)} extensions, pool needs {pool.count}",
            )
        width = len(pool.extensions.split("-")[0])
        for n in rng[: pool.count]:
            owner.setdefault(str(n).zfill(width), base)
    linked: dict[str, str] = {}  # a desk phone's extension -> the pool whose agent links that phone
    for pname, pool in m.agents.pools.items():
        yield from _linked_pool(t, pname, pool)
        desk = t.devices.get(pool.phone or "")
        if desk is not None and desk.kind == "phone" and desk.spec.extension:
            linked[desk.spec.extension] = f"agents.pools.{pname}"
    for ph in t.of_kind("phone") + t.of_kind("host"):
        ext = ph.spec.extension
        if ext and ext in owner and linked.get(ext) == owner[ext] and ph.kind == "phone":
            continue  # the pool's agent uses this very phone's account
        if ext and ext in owner:
            yield f"{ph.path}.extension", f"extension {ext} is also in {owner[ext]}"
        elif ext:
            owner[ext] = ph.path
    for code, site in m.sites.items():
        if not site.pbx:
            yield f"sites.{code}.pbx", "a site needs at least one PBX node"


def _linked_pool(t: Topology, pname: str, pool: Pool) -> Iterator[tuple[str, str]]:
    """A pool of agents on phones we did not write: its desk phone must be a phone of its home site with
    the pool's one extension; its softphone runs on an agents host of that site."""
    base = f"agents.pools.{pname}"
    if pool.phone is not None and pool.softphone is not None:
        yield base, "a pool links a desk phone or uses a softphone, not both"
    if pool.phone is not None:
        d = t.devices.get(pool.phone)
        if d is None or d.kind != "phone":
            yield f"{base}.phone", f"{pool.phone!r} is not a phone of this topology"
        elif d.site != pool.home:
            yield f"{base}.phone", f"{pool.phone} is at site {d.site}, the pool's home is {pool.home}"
        elif pool.count != 1 or pool.extensions != f"{d.spec.extension}-{d.spec.extension}":
            yield (
                f"{base}.extensions",
                f"a desk-phone pool is one agent on its phone's extension: count 1, "
                f"extensions {d.spec.extension}-{d.spec.extension}",
            )
    if pool.softphone is not None:
        hosts = [h for h in t.of_kind("host", pool.home) if h.spec.role == "agents"]
        if not hosts:
            yield f"{base}.softphone", f"site {pool.home} has no agents host to run {pool.softphone}"


def check_names(t: Topology) -> Iterator[tuple[str, str]]:
    m = t.model
    for code in m.sites:
        if not re.fullmatch(r"[a-z]{2,8}", code):
            yield f"sites.{code}", "a site code is 2-8 lowercase letters (e.g. sha, ntg)"
    seen: dict[str, str] = {}
    for code, site in m.sites.items():
        for kind in DEVICE_KINDS:
            for name in getattr(site, kind):
                path = f"sites.{code}.{kind}.{name}"
                if not re.fullmatch(NAME_RE, name):
                    yield path, "a device name is lowercase letters, digits and dashes, e.g. sha-pbx1"
                if name in seen:
                    yield path, f"device name {name!r} is already used at {seen[name]}"
                seen[name] = path
    for lname in m.links:
        if lname in seen:
            yield f"links.{lname}", f"link name {lname!r} is already a device at {seen[lname]}"
