"""The pydantic schema of a lab description: shapes, types and defaults, unknown keys refused.

Why a schema of its own: what one field may hold is checked here, field by field; what only the whole file
can tell (dangling references, duplicates) is in harness.topology.checks, so each stays readable.
"""

from __future__ import annotations

import ipaddress
import os
import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

LAB_RANGE = ipaddress.ip_network("198.18.0.0/15")
NAME_RE = r"^[a-z][a-z0-9-]{1,30}$"
ENV_REF = re.compile(r"^\$\{([A-Z_][A-Z0-9_]*)\}$")


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
    admin_port: int = Field(8081, ge=1, le=65535, description="an agents host's swarm admin API (signed)")
    caller_command: str = Field(
        "python3 -m harness.drivers.caller",
        description="a caller host's test caller program, started over SSH (this project installed there)",
    )
    capture_interface: str | None = Field(
        None, description="a capture host's NIC cabled to a switch's SPAN port: tcpdump runs there"
    )
    workdir: str = Field(
        "/tmp", description="where a caller or capture host writes results and pcaps (fetched over SFTP)"
    )


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
        None,
        description="the NIC on span_port: the controller's, or capture_host's when that is given",
    )
    capture_host: str | None = Field(
        None, description="a host of role capture cabled to span_port (else the controller is)"
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
    # Phones we did not write: the pool's one agent links this desk phone (a `phones` device of its home
    # site, driven through its vendor HTTP API), or runs this third-party softphone on the site's agents
    # host. Such pools are run by a standalone agent process beside the swarm (stack/agent/__main__.py).
    phone: str | None = Field(None, description="a desk phone of the home site that the pool's agent links")
    softphone: Literal["baresip"] | None = Field(None, description="a third-party softphone the agent uses")

    @property
    def linked(self) -> bool:
        """Whether the pool's agents use a phone the swarm does not emulate in-process."""
        return self.phone is not None or self.softphone is not None

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
