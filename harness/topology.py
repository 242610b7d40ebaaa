"""The lab description: one YAML file, validated on load, the single source every other part reads.

Validation happens in two passes. Pydantic checks shapes and types (and refuses unknown keys); a second pass
checks what only the whole file can tell: dangling references, duplicate addresses and extensions, pools
larger than their extension range, cuttable ports on the controller's management path. Every problem is
reported with the file, the dotted path inside it and what is wrong, all at once, so a user fixes a file in
one go.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_TOPOLOGY = REPO_ROOT / "topologies" / "virtual-two-site.yaml"
LAB_RANGE = ipaddress.ip_network("198.18.0.0/15")
NAME_RE = r"^[a-z][a-z0-9-]{1,30}$"
ENV_REF = re.compile(r"^\$\{([A-Z_][A-Z0-9_]*)\}$")


class TopologyError(Exception):
    """A topology file that cannot be used; carries every problem found, each with its path."""

    def __init__(self, file: str | Path, problems: list[tuple[str, str]]):
        self.file = str(file)
        self.problems = problems
        super().__init__("\n".join(self.lines()))

    def lines(self) -> list[str]:
        return [f"{self.file}: {path or '(top)'}: {msg}" for path, msg in self.problems]


class SecretMissing(Exception):
    """A credential refers to an environment variable that is not set."""


class Secret(str):
    """A reference to an environment variable (`${NAME}`); the value never lives in the topology."""

    @property
    def var(self) -> str:
        m = ENV_REF.match(self)
        assert m, self
        return m.group(1)

    def reveal(self) -> str:
        value = os.environ.get(self.var)
        if value is None:
            raise SecretMissing(f"environment variable {self.var} is not set (needed for credential {self})")
        return value


def _secret(value: Any) -> Secret:
    if not isinstance(value, str) or not ENV_REF.match(value):
        raise ValueError(
            "must be a reference to an environment variable such as ${LAB_SWITCH_PASSWORD}, "
            "never a literal secret"
        )
    return Secret(value)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


SecretRef = Annotated[str, AfterValidator(_secret)]


class Login(Strict):
    username: str
    password: SecretRef
    secret: SecretRef | None = None


class Credentials(Strict):
    switch: Login | None = None
    host: Login | None = None
    phone: Login | None = None
    console: Login | None = None
    sip_secret: SecretRef | None = Field(
        None, description="extension passwords are HMAC-SHA256(sip_secret, extension)[:16]"
    )
    agent_password: SecretRef | None = None


class SSHPolicy(Strict):
    known_hosts: str = "~/.ssh/known_hosts"
    trust_new_host_keys: bool = False


class Management(Strict):
    network: ipaddress.IPv4Network
    controller: ipaddress.IPv4Address
    path: list[str] = Field(
        default_factory=list, description="switch ports (switch:port) carrying management"
    )


class Node(Strict):
    """A Linux host of the lab; PBX, CTI and UL nodes are hosts that run one service."""

    address: ipaddress.IPv4Address
    mgmt: ipaddress.IPv4Address | None = None
    ssh_port: int = Field(22, ge=1, le=65535)
    fair_game: bool = False
    service: str | None = None
    log: str | None = None


class PbxNode(Node):
    service: str = "kamailio"
    sip_port: int = Field(5060, ge=1, le=65535)
    rpc_port: int = Field(5071, ge=1, le=65535)


class CtiNode(Node):
    service: str = "hil-cti"
    port: int = Field(7000, ge=1, le=65535)


class UlNode(Node):
    service: str = "hil-login"
    port: int = Field(8080, ge=1, le=65535)


class HostNode(Node):
    role: Literal["agents", "caller", "capture", "other"] = "other"
    extension: str | None = Field(None, description="a caller host's own extension (the test caller)")


class Port(Strict):
    connects: str | None = None
    cuttable: bool = False
    description: str | None = None


class Switch(Strict):
    device_type: Literal["cisco_ios", "huawei"]
    mgmt: ipaddress.IPv4Address
    ssh_port: int = Field(22, ge=1, le=65535)
    console: str | None = None
    span_port: str | None = Field(None, description="SPAN destination port, cabled to the controller")
    capture_interface: str | None = Field(
        None, description="the controller's network interface on span_port: where captures run"
    )
    ports: dict[str, Port]


class Phone(Strict):
    vendor: Literal["yealink", "poly"]
    address: ipaddress.IPv4Address
    mgmt: ipaddress.IPv4Address | None = None
    api_port: int = Field(80, ge=1, le=65535)
    extension: str | None = None
    fair_game: bool = False


class Console(Strict):
    device: str
    url: str = Field(description="device path, socket://host:port, or 'virtual' (a pty made by the lab)")
    baudrate: int = 9600


class Outlet(Strict):
    connects: str
    cuttable: bool = False


class Pdu(Strict):
    console: str
    model: str = "generic"
    outlets: dict[str, Outlet]


class Site(Strict):
    city: str
    region: str
    pbx: dict[str, PbxNode] = Field(default_factory=dict)
    cti: dict[str, CtiNode] = Field(default_factory=dict)
    ul: dict[str, UlNode] = Field(default_factory=dict)
    hosts: dict[str, HostNode] = Field(default_factory=dict)
    switches: dict[str, Switch] = Field(default_factory=dict)
    phones: dict[str, Phone] = Field(default_factory=dict)
    consoles: dict[str, Console] = Field(default_factory=dict)
    power: dict[str, Pdu] = Field(default_factory=dict)


class Link(Strict):
    a: str
    b: str
    cuttable: bool = False
    description: str | None = None


class Pool(Strict):
    home: str
    count: int = Field(ge=1)
    extensions: str = Field(description="first-last, inclusive, digits only")
    system: str
    region: str
    skill_groups: list[str] = Field(min_length=1)

    @field_validator("extensions")
    @classmethod
    def _range(cls, v: str) -> str:
        m = re.fullmatch(r"(\d+)-(\d+)", v)
        if not m or int(m.group(1)) > int(m.group(2)) or len(m.group(1)) != len(m.group(2)):
            raise ValueError("must be a range 'first-last' of equal-length digit strings, first <= last")
        return v

    def extension_range(self) -> range:
        lo, hi = self.extensions.split("-")
        return range(int(lo), int(hi) + 1)


class Agents(Strict):
    id_prefix: str = "a"
    pools: dict[str, Pool]


class Model(Strict):
    name: str
    kind: Literal["virtual", "physical"]
    description: str | None = None
    management: Management
    credentials: Credentials = Credentials()
    ssh: SSHPolicy = SSHPolicy()
    sites: dict[str, Site]
    links: dict[str, Link] = Field(default_factory=dict)
    agents: Agents


@dataclass(frozen=True)
class Agent:
    """One agent expanded from a pool: who it is, where it lives, what a planned switch can select it by."""

    id: str
    extension: str
    pool: str
    home: str
    system: str
    region: str
    skill_group: str


@dataclass(frozen=True)
class Device:
    """Any named thing in the lab, with where it sits in the file (for messages) and its model."""

    name: str
    kind: str
    site: str
    path: str
    spec: Any

    @property
    def control_address(self) -> str:
        """Where the controller reaches the device: its management address when it has one (out of band,
        so a cut data link does not cut the controller off), its data address otherwise."""
        return str(getattr(self.spec, "mgmt", None) or self.spec.address)


DEVICE_KINDS = ("pbx", "cti", "ul", "hosts", "switches", "phones", "consoles", "power")
KIND_NAMES = {"hosts": "host", "switches": "switch", "phones": "phone", "consoles": "console", "power": "pdu"}


class Topology:
    """A validated lab; read-only views that the controller and the virtual lab build on."""

    def __init__(self, model: Model, file: Path):
        self.model = model
        self.file = file
        self.devices: dict[str, Device] = {}
        for code, site in model.sites.items():
            for kind in DEVICE_KINDS:
                for name, spec in getattr(site, kind).items():
                    self.devices[name] = Device(
                        name, KIND_NAMES.get(kind, kind), code, f"sites.{code}.{kind}.{name}", spec
                    )
        self._agents: list[Agent] | None = None

    @property
    def name(self) -> str:
        return self.model.name

    @property
    def kind(self) -> str:
        return self.model.kind

    @property
    def sites(self) -> dict[str, Site]:
        return self.model.sites

    def of_kind(self, kind: str, site: str | None = None) -> list[Device]:
        return [d for d in self.devices.values() if d.kind == kind and (site is None or d.site == site)]

    def device(self, name: str) -> Device:
        try:
            return self.devices[name]
        except KeyError:
            raise KeyError(f"no device {name!r} in {self.file}") from None

    def agents(self) -> list[Agent]:
        if self._agents is None:
            out: list[Agent] = []
            n = 0
            prefix = self.model.agents.id_prefix
            for pname, pool in self.model.agents.pools.items():
                exts = pool.extension_range()
                width = len(pool.extensions.split("-")[0])
                for i in range(pool.count):
                    n += 1
                    out.append(
                        Agent(
                            id=f"{prefix}{n:05d}",
                            extension=str(exts[i]).zfill(width),
                            pool=pname,
                            home=pool.home,
                            system=pool.system,
                            region=pool.region,
                            skill_group=pool.skill_groups[i % len(pool.skill_groups)],
                        )
                    )
            self._agents = out
        return self._agents

    def extensions(self) -> list[str]:
        """Every extension a PBX must accept: all pools of all sites, and the lab's own phones."""
        exts = [a.extension for a in self.agents()]
        exts += [d.spec.extension for d in self.of_kind("phone") if d.spec.extension]
        exts += [d.spec.extension for d in self.of_kind("host") if d.spec.extension]
        return exts

    def management_path(self) -> set[tuple[str, str]]:
        """Switch ports that carry the controller's management traffic: declared, or facing the controller."""
        path = {tuple(ref.split(":", 1)) for ref in self.model.management.path}
        for d in self.of_kind("switch"):
            for pname, port in d.spec.ports.items():
                if port.connects == "controller":
                    path.add((d.name, pname))
        return path  # type: ignore[return-value]


def _loc(loc: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in loc if not str(p).startswith("function-"))


def load(file: str | Path | None = None) -> Topology:
    """Load and validate a topology; raise TopologyError naming every problem."""
    path = Path(file) if file else DEFAULT_TOPOLOGY
    try:
        text = path.read_text()
    except OSError as e:
        raise TopologyError(path, [("", f"cannot read the file: {e.strerror or e}")]) from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise TopologyError(path, [(where, f"not valid YAML: {getattr(e, 'problem', e)}")]) from None
    if not isinstance(raw, dict):
        raise TopologyError(path, [("", "the file must hold a mapping with name, kind, sites, agents")])
    try:
        model = Model.model_validate(raw)
    except ValidationError as e:
        problems = []
        for err in e.errors():
            msg = err["msg"]
            if err["type"] == "extra_forbidden":
                msg = "unknown key"
            elif err["type"] == "missing":
                msg = "required field is missing"
            msg = msg.removeprefix("Value error, ")
            problems.append((_loc(err["loc"]), msg))
        raise TopologyError(path, problems) from None
    topo = Topology(model, path)
    problems = list(_cross_checks(topo))
    if problems:
        raise TopologyError(path, problems)
    return topo


def _cross_checks(t: Topology) -> Iterator[tuple[str, str]]:
    m = t.model
    yield from _check_names(t)
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
    for ph in t.of_kind("phone") + t.of_kind("host"):
        ext = ph.spec.extension
        if ext and ext in owner:
            yield f"{ph.path}.extension", f"extension {ext} is also in {owner[ext]}"
        elif ext:
            owner[ext] = ph.path
    for code, site in m.sites.items():
        if not site.pbx:
            yield f"sites.{code}.pbx", "a site needs at least one PBX node"


def _check_names(t: Topology) -> Iterator[tuple[str, str]]:
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
