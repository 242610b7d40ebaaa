"""The agents on phones the stack did not write: who they are and how their client drives their phone.

Why apart from the swarm: the swarm emulates every agent's phone in its own process. An agent whose pool
names a desk phone (``phone: sha-phone1``) or a third-party softphone (``softphone: baresip``) has a real
device on the other end, which its client drives only through that device's own interface: the desk
phone's vendor HTTP API (Yealink-style or Poly-style) or baresip's ctrl_tcp. Ids come from the same
expansion as every other agent (stack/common/directory.py), so the ULs, the CTIs and the harness know them.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from stack.common import auth, directory
from stack.phone.baresip import BaresipPhoneControl
from stack.phone.control import HttpPhoneControl, PhoneControl
from stack.phone.polycontrol import PolyPhoneControl

__all__ = ["DeskPhone", "LinkedAgent", "linked_agents", "linked_pools", "phone_control"]

_VAR = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$")


@dataclass(frozen=True)
class DeskPhone:
    """A desk phone's management API: where it answers, which vendor's, with which login."""

    name: str
    vendor: str
    url: str
    username: str
    password: str


@dataclass(frozen=True)
class LinkedAgent:
    """One agent and the phone it uses: a desk phone, or a softphone kind (``baresip``)."""

    agent: directory.Agent
    desk: DeskPhone | None = None
    softphone: str | None = None


def linked_pools(raw: dict[str, Any]) -> set[str]:
    """Names of the pools whose agents use a phone the swarm does not emulate."""
    pools = (raw.get("agents") or {}).get("pools") or {}
    return {name for name, p in pools.items() if p.get("phone") or p.get("softphone")}


def _secret(value: Any) -> str:
    """A credential from the topology: ``${VAR}`` is read from the environment (never from the file)."""
    m = _VAR.match(str(value or ""))
    return os.environ.get(m.group(1), "") if m else str(value or "")


def _desk(raw: dict[str, Any], site: str, name: str) -> DeskPhone:
    spec = ((raw["sites"][site].get("phones")) or {}).get(name)
    if spec is None:
        raise ValueError(f"phone {name!r} is not a phone of site {site}")
    cred = (raw.get("credentials") or {}).get("phone") or {}
    addr = spec.get("mgmt") or spec["address"]
    url = f"http://{addr}:{int(spec.get('api_port', 80))}"
    return DeskPhone(
        name, str(spec["vendor"]), url, str(cred.get("username", "admin")), _secret(cred.get("password"))
    )


def linked_agents(path: str | Path, site: str) -> list[LinkedAgent]:
    """The agents of ``site`` on desk phones or softphones, in the topology's order."""
    raw = yaml.safe_load(Path(path).read_text())
    pools = (raw.get("agents") or {}).get("pools") or {}
    out = []
    for a in directory.expand_agents(raw):
        pool = pools[a.pool]
        if a.home != site or not (pool.get("phone") or pool.get("softphone")):
            continue
        desk = _desk(raw, site, pool["phone"]) if pool.get("phone") else None
        out.append(LinkedAgent(a, desk, pool.get("softphone")))
    return out


def phone_control(la: LinkedAgent, sip_secret: str, baresip_ctrl: tuple[str, int]) -> PhoneControl:
    """The client's control of the agent's phone: the vendor's HTTP API, or baresip's ctrl_tcp."""
    if la.desk is not None:
        d = la.desk
        if d.vendor == "poly":
            return PolyPhoneControl(d.url, d.username, d.password)
        if d.vendor == "yealink":
            return HttpPhoneControl(d.url, d.username, d.password)
        raise ValueError(f"{d.name}: no control for vendor {d.vendor!r}")
    if la.softphone == "baresip":
        ext = la.agent.extension
        return BaresipPhoneControl(
            baresip_ctrl[0], baresip_ctrl[1], ext, auth.derive_password(sip_secret, ext)
        )
    raise ValueError(f"{la.agent.id}: neither a desk phone nor a known softphone")
