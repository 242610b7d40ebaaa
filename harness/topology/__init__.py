"""The lab description: one YAML file, validated on load, the single source every other part reads.

Validation happens in two passes: the pydantic schema (``schema``) checks shapes and types and refuses
unknown keys; the cross-checks (``checks``) find what only the whole file can tell. The loader (``loader``)
reports every problem with the file, the dotted path inside it and what is wrong, all at once; the model
(``model``) is the read-only view the controller and the virtual lab build on.
"""

from harness.topology.loader import DEFAULT_TOPOLOGY, REPO_ROOT, TopologyError, load, validate
from harness.topology.model import DEVICE_KINDS, KIND_NAMES, Agent, Device, Topology
from harness.topology.schema import (
    ENV_REF,
    LAB_RANGE,
    NAME_RE,
    Agents,
    Console,
    Credentials,
    CtiNode,
    HostNode,
    Link,
    Login,
    Management,
    Model,
    Node,
    Outlet,
    PbxNode,
    Pdu,
    Phone,
    Pool,
    Port,
    Secret,
    SecretMissing,
    SecretRef,
    Site,
    SSHPolicy,
    Switch,
    UlNode,
)

__all__ = [
    "DEFAULT_TOPOLOGY",
    "DEVICE_KINDS",
    "ENV_REF",
    "KIND_NAMES",
    "LAB_RANGE",
    "NAME_RE",
    "REPO_ROOT",
    "Agent",
    "Agents",
    "Console",
    "Credentials",
    "CtiNode",
    "Device",
    "HostNode",
    "Link",
    "Login",
    "Management",
    "Model",
    "Node",
    "Outlet",
    "PbxNode",
    "Pdu",
    "Phone",
    "Pool",
    "Port",
    "SSHPolicy",
    "Secret",
    "SecretMissing",
    "SecretRef",
    "Site",
    "Switch",
    "Topology",
    "TopologyError",
    "UlNode",
    "load",
    "validate",
]
