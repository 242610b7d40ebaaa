"""Every secret of a run, and the run's artifacts that hold one (issue 16: secrets out of the evidence).

Why one module: `hil run` checks its kept run before it reports a verdict, and tests/test_secrets_leak.py
checks a scenario's evidence the same way; both must look for the same secrets. A run's secrets are the
lab's own (the virtual lab's secrets.env, or the environment variables a physical topology refers to), the
agent and extension passwords derived from them, and every CTI token, admin signature and SIP digest
value its raw captures hold (found by the redactor, by pattern, and in the decoded CTI stream, so a token
split over TCP segments counts too). The raw captures hold them by design and are the one place not read.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

from harness.credentials import referenced, sip_password
from harness.decode import decode_pcap
from harness.gate.inputs import problem_line, secret_leaks
from harness.report.redact import secrets_in
from harness.topology import Topology

DIGEST = re.compile(rb'(?i)\b(?:response|nonce|cnonce)="([^"\r\n]{8,})"')
JSON_SECRET = re.compile(rb'"(?:token|sig|password|secret)"\s*:\s*"([^"\\]{8,})"')
SHORTEST = 8  # shorter values (a port, a "1") would match everywhere and prove nothing


def lab_secrets(topology: Topology, env: Mapping[str, str] | None) -> set[bytes]:
    """The lab's own secrets and the per-agent and per-extension passwords derived from them. ``env`` is
    what the lab generated (a virtual lab); None reads the variables the topology refers to (physical)."""
    if env is None:
        env = {var: os.environ[var] for var in referenced(topology) if var in os.environ}
    out = {v.encode() for v in env.values() if len(v) >= SHORTEST}
    if "LAB_AGENT_PASSWORD" in env:
        out |= {sip_password(env["LAB_AGENT_PASSWORD"], a.id).encode() for a in topology.agents()}
    if "LAB_SIP_SECRET" in env:
        out |= {sip_password(env["LAB_SIP_SECRET"], e).encode() for e in topology.extensions()}
    return out


def capture_secrets(raw_pcaps: Iterable[Path], cti_ports: Iterable[int] = ()) -> set[bytes]:
    """Every secret the raw captures carry on the wire."""
    ports = sorted(set(cti_ports))
    out: set[bytes] = set()
    for p in raw_pcaps:
        data = p.read_bytes()
        out |= secrets_in(data)
        out |= {m.group(1) for m in DIGEST.finditer(data)}
        out |= {m.group(1) for m in JSON_SECRET.finditer(data)}
        for ev in decode_pcap(p, cti_ports=ports).events:
            body = ev.body if isinstance(ev.body, dict) else {}
            values = (str(body.get(k) or "") for k in ("token", "sig"))
            out |= {v.encode() for v in values if len(v) >= SHORTEST}
    return out


def run_secrets(topology: Topology, env: Mapping[str, str] | None, raw_pcaps: Iterable[Path]) -> set[bytes]:
    """Every secret the run had or put on the wire, as bytes."""
    cti_ports = [d.spec.port for d in topology.of_kind("cti")]
    return lab_secrets(topology, env) | capture_secrets(raw_pcaps, cti_ports)


def leaks(root: Path, secrets: Iterable[bytes], raw_dir: Path, newer_than: float | None = None) -> list[str]:
    """One line per file under ``root`` (the raw captures excepted; with ``newer_than``, only files written
    since) that holds a secret of the run."""
    return [problem_line(p) for p in secret_leaks(root, secrets, skip=[raw_dir], newer_than=newer_than)]


__all__ = ["capture_secrets", "lab_secrets", "leaks", "run_secrets"]
