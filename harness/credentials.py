"""Secrets of a lab, taken from the environment and never written to a report or a log.

Extension passwords are derived, not listed: HMAC-SHA256(sip_secret, extension), first 16 hex digits. A
physical lab provisions its PBX with the same derivation (`hil lab secrets --extension N` prints one), so a
10,000-extension lab still has one secret to keep.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

from harness.topology import Secret, SecretMissing, Topology

STACK_SECRET_VAR = "LAB_STACK_SECRET"  # signs UL tokens and UL/CTI admin requests; not a device credential
# The management console's (docs/console.md): the lab's two users' passwords and its session cookie key.
CONSOLE_VARS = ("HIL_CONSOLE_PASSWORD_OPERATOR", "HIL_CONSOLE_PASSWORD_VIEWER", "HIL_CONSOLE_KEY")


def sip_password(sip_secret: str, extension: str) -> str:
    return hmac.new(sip_secret.encode(), extension.encode(), hashlib.sha256).hexdigest()[:16]


def referenced(topo: Topology) -> dict[str, Secret]:
    """Every environment variable the topology's credentials refer to, by variable name."""
    out: dict[str, Secret] = {}
    creds = topo.model.credentials
    for value in creds.model_dump().values():
        items = value.values() if isinstance(value, dict) else [value]
        for v in items:
            if isinstance(v, str) and v.startswith("${"):
                s = Secret(v)
                out[s.var] = s
    return out


def generate(topo: Topology) -> dict[str, str]:
    """Fresh values for a virtual lab: every referenced variable gets a random token, and the stack's own."""
    return {var: secrets.token_urlsafe(12) for var in [*referenced(topo), STACK_SECRET_VAR, *CONSOLE_VARS]}


def write_env(path: Path, values: dict[str, str]) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        for k, v in sorted(values.items()):
            f.write(f"{k}={v}\n")


def read_env(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        k, sep, v = line.partition("=")
        if sep:
            out[k] = v
    return out


def reveal(secret: Secret | None, what: str) -> str:
    if secret is None:
        raise SecretMissing(f"the topology has no credential for {what}")
    return secret.reveal()


def redact(text: str, values: list[str] | None = None) -> str:
    """Remove every known secret value from text bound for a log or a report."""
    if values is None:
        values = [os.environ[s] for s in _KNOWN if s in os.environ]
    for v in sorted(values, key=len, reverse=True):
        if len(v) >= 4:
            text = text.replace(v, "******")
    return text


_KNOWN: set[str] = {STACK_SECRET_VAR, *CONSOLE_VARS}  # variables whose values redact() removes


def register(topo: Topology) -> None:
    """Redact this topology's secrets from every log line and report from now on."""
    _KNOWN.update(referenced(topo))
