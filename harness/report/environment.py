"""`environment.properties`: what the run ran on (versions of hil and the libraries that talk to devices,
the topology, and what the devices said they are), as Allure shows it on the report's front page."""

from __future__ import annotations

import platform
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

from harness import topology as topology_mod

__all__ = ["environment_facts", "properties_text", "write_environment"]


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def _flatten(prefix: str, v: Any, out: dict[str, str]) -> None:
    if isinstance(v, Mapping):
        for k, sub in v.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), sub, out)
    elif isinstance(v, list | tuple):
        out[prefix] = ", ".join(str(x) for x in v)
    elif v is not None:
        out[prefix] = str(v)


def environment_facts(
    facts: Mapping[str, Any] | None = None, *, topology: str | Path | None = None
) -> dict[str, str]:
    """The run's environment as flat `key -> text`: versions of hil, Python and the libraries that talk to
    devices, the topology, then `facts` (nested dicts become dotted keys), e.g.
    `{"kamailio": {"sha-pbx1": "5.6.3"}, "switch": {"sha-sw1": {"version": "15.2(7)E"}},
    "phone": {"sha-phone1": {"firmware": "66.86.0.15"}}}`."""
    out: dict[str, str] = {
        "hil": _version("hil-failover-lab"),
        "python": platform.python_version(),
        "netmiko": _version("netmiko"),
        "paramiko": _version("paramiko"),
        "allure-pytest": _version("allure-pytest"),
        "os": f"{platform.system()} {platform.release()}",
    }
    if topology is not None:
        out["topology"] = str(topology)
        try:
            topo = topology_mod.load(topology)
            out["topology.name"] = topo.name
            out["topology.kind"] = topo.kind
            out["topology.sites"] = ", ".join(topo.sites)
            out["topology.agents"] = str(len(topo.agents()))
        except Exception as e:  # a report must not fail on the file the lab already validated or refused
            out["topology.error"] = str(e).splitlines()[0] if str(e) else type(e).__name__
    _flatten("", dict(facts or {}), out)
    return out


def _prop_escape(s: str, key: bool) -> str:
    out = []
    for i, c in enumerate(s):
        if c == "\\":
            out.append("\\\\")
        elif c == "\n":
            out.append("\\n")
        elif c == "\r":
            out.append("\\r")
        elif c == "\t":
            out.append("\\t")
        elif c in "=:#!" or (c == " " and (key or i == 0)):
            out.append("\\" + c)
        elif ord(c) > 0x7E or ord(c) < 0x20:
            out.append(f"\\u{ord(c):04x}" if ord(c) <= 0xFFFF else c)
        else:
            out.append(c)
    return "".join(out)


def properties_text(values: Mapping[str, str]) -> str:
    """Java .properties text (what Allure reads), keys and values escaped."""
    return "".join(f"{_prop_escape(k, True)}={_prop_escape(v, False)}\n" for k, v in values.items())


def write_environment(
    results_dir: str | Path, facts: Mapping[str, Any] | None = None, *, topology: str | Path | None = None
) -> Path:
    """Write `environment.properties` into the results directory (see `environment_facts`)."""
    d = Path(results_dir)
    d.mkdir(parents=True, exist_ok=True)
    p = d / "environment.properties"
    p.write_text(properties_text(environment_facts(facts, topology=topology)), encoding="latin-1")
    return p
