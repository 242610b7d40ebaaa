"""`hil lab up --as-physical FILE`: describe the running twin as a lab engineer describes hardware.

Why: the physical backend is the product for most users, and the twin is the only lab every test run has.
Written out as a topology of kind `physical` (management addresses, switch ports, console lines, PDUs,
phones, caller hosts, a capture host for every SPAN port the twin cables to one, credentials as `${VAR}`
references, the twin's host keys in a known_hosts file of its own), the twin is driven exactly as a
physical lab is: nothing the harness does in that mode may reach the run directory, the keeper or a
namespace. This module is the one place that reads the twin to write that
description; afterwards the description is all the harness has.
"""

from __future__ import annotations

import os
import shlex
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from harness import credentials
from harness.lab.virtual import VirtualBackend
from harness.topology import Topology, validate

__all__ = ["ENV_FILE", "Written", "physical_model", "write"]

ENV_FILE = "physical.env"  # under the lab's run directory: gone with the lab, never in the repository
# Services the twin runs on hosts that name none in the topology (systemd units, as on a real host).
HOST_SERVICES = {"agents": "hil-swarm"}


@dataclass(frozen=True)
class Written:
    """What the writer produced: the topology, its known_hosts, and the file to `source` for the secrets."""

    topology: Path
    known_hosts: Path
    env_file: Path

    @property
    def source_line(self) -> str:
        return f"source {shlex.quote(str(self.env_file))}"


def physical_model(
    topo: Topology, consoles: dict[str, str], known_hosts: Path, capture_hosts: Sequence[dict[str, str]] = ()
) -> dict[str, Any]:
    """The twin's topology re-described as hardware: kind physical, every console a serial line the
    controller opens (the twin's pty, as a USB console adapter would be), host keys strictly checked, and
    each capture host the twin serves (`capture_hosts`, from its keeper) where its site's SPAN goes."""
    if topo.kind != "virtual":
        raise ValueError(f"{topo.file}: only a virtual lab can be described as physical")
    d = topo.model.model_dump(mode="json", exclude_none=True)
    d["name"] = f"{topo.name}-physical"
    d["kind"] = "physical"
    d["description"] = (
        f"The twin of {topo.name}, described as hardware by `hil lab up --as-physical` "
        f"on {time.strftime('%Y-%m-%d %H:%M:%S')}: driven through management interfaces only."
    )
    d["ssh"] = {"known_hosts": str(known_hosts), "trust_new_host_keys": False}
    for code, site in d["sites"].items():
        for name, con in site.get("consoles", {}).items():
            if con.get("url") == "virtual":
                if name not in consoles:
                    raise ValueError(f"the twin serves no console {name} (sites.{code}.consoles.{name})")
                con["url"] = consoles[name]
        for host in site.get("hosts", {}).values():
            service = HOST_SERVICES.get(host.get("role", "other"))
            if service and not host.get("service"):
                host["service"] = service
            if host.get("role") == "caller":
                host.setdefault("workdir", "/tmp")
    for cap in capture_hosts:
        _add_capture_host(d, cap)
    return d


def _add_capture_host(d: dict[str, Any], cap: dict[str, str]) -> None:
    """A capture host cabled to its switch's SPAN port: the switch names it, tcpdump runs on its NIC."""
    site = d["sites"][cap["site"]]
    site.setdefault("hosts", {})[cap["name"]] = {
        "address": cap["address"], "mgmt": cap["mgmt"], "role": "capture",
        "capture_interface": cap["iface"], "workdir": "/tmp",
    }  # fmt: skip
    sw = site["switches"][cap["switch"]]
    sw["capture_host"], sw["capture_interface"] = cap["name"], cap["iface"]
    sw["ports"].setdefault(cap["span_port"], {})["description"] = f"SPAN to {cap['name']} ({cap['iface']})"


def _capture_hosts(backend: Any) -> list[dict[str, str]]:
    """The capture hosts the twin's keeper serves (virtual/capturehost.py), as its state lists them."""
    handle = getattr(backend, "handle", None)
    return list(handle.state().get("capture_hosts") or []) if handle is not None else []


def _dump(model: dict[str, Any], source: Path) -> str:
    head = (
        f"# Written by `hil lab up --as-physical` from {source}: the running twin, described as hardware.\n"
        "# Secrets are ${VAR} references: `source` the env file that command printed (under the lab's run\n"
        "# directory, mode 0600) before using this file. Host keys: the known_hosts file named below.\n"
    )
    return head + yaml.safe_dump(model, sort_keys=False, default_flow_style=False, width=110)


def write(topo: Topology, backend: VirtualBackend, out: str | os.PathLike[str]) -> Written:
    """Write the physical description of the running twin `backend` to `out`, its known_hosts beside it,
    and the secrets to an env file under the lab's run directory (0600). Validated before it is kept."""
    target = Path(out).resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    known = target.with_suffix(".known_hosts")
    consoles = {name: str(backend.console_url(name) or "") for name in _console_names(topo)}
    consoles = {k: v for k, v in consoles.items() if v}
    model = physical_model(topo, consoles, known, _capture_hosts(backend))
    validate(target, model)  # a description that would not load is never written
    tmp = known.with_name(f".{known.name}.tmp")
    shutil.copyfile(backend.known_hosts(), tmp)
    os.chmod(tmp, 0o644)
    os.replace(tmp, known)
    env_file = backend.state_dir() / ENV_FILE
    values = backend.environment()
    wanted = [*credentials.referenced(topo), credentials.STACK_SECRET_VAR]
    missing = [v for v in wanted if v not in values]
    if missing:
        raise ValueError(f"the twin has no value for {', '.join(missing)}")
    fd = os.open(env_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.writelines(f"export {var}={shlex.quote(values[var])}\n" for var in sorted(wanted))
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_text(_dump(model, topo.file))
    os.replace(tmp, target)
    return Written(target, known, env_file)


def _console_names(topo: Topology) -> list[str]:
    return [c.name for c in topo.of_kind("console") if c.spec.url == "virtual"]
