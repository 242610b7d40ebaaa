"""No secret of a run in its evidence: a real scenario on the virtual lab, then every artifact it left
(Allure results with their attachments, verdicts, histories, the redacted pcaps, the pytest output and the
lab's device logs) grepped, as bytes, for every secret of that run: the lab's own (secrets.env), the agent
and extension passwords derived from them, and every CTI token, admin signature and SIP digest response,
nonce and cnonce that the RAW captures hold. The raw captures themselves (``pcap/raw/``) hold them by
design and are the one place not grepped; that they hold some is checked, so the test cannot pass by
finding no secret at all.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

import pytest

from harness.decode import decode_pcap
from harness.gate.inputs import problem_line, secret_leaks
from harness.lab import Lab
from harness.observe.lab_capture import RAW_DIR, SECRETS_README
from harness.report.redact import secrets_in
from harness.topology import REPO_ROOT

pytestmark = pytest.mark.lab

SCENARIO = "scenarios/test_login.py::test_login_local"
DIGEST = re.compile(rb'(?i)\b(?:response|nonce|cnonce)="([^"\r\n]{8,})"')
JSON_SECRET = re.compile(rb'"(?:token|sig|password|secret)"\s*:\s*"([^"\\]{8,})"')


def derived(secret: str, names: Iterable[str]) -> set[bytes]:
    """The lab's per-name passwords: HMAC-SHA256(secret, name), first 16 hex digits (harness.credentials)."""
    return {hmac.new(secret.encode(), n.encode(), hashlib.sha256).hexdigest()[:16].encode() for n in names}


def secrets_of_run(lab: Lab, raw_pcaps: list[Path]) -> set[bytes]:
    """Every secret the run had or put on the wire, as bytes."""
    env = lab.backend.environment()  # the virtual lab's secrets.env: what its daemons were started with
    out = {v.encode() for v in env.values() if len(v) >= 8}
    if "LAB_AGENT_PASSWORD" in env:
        out |= derived(env["LAB_AGENT_PASSWORD"], [a.id for a in lab.topology.agents()])
    if "LAB_SIP_SECRET" in env:
        out |= derived(env["LAB_SIP_SECRET"], lab.topology.extensions())
    cti_ports = sorted({d.spec.port for d in lab.topology.of_kind("cti")})
    for p in raw_pcaps:
        data = p.read_bytes()
        out |= secrets_in(data)  # what the redactor knows as secrets, and, found apart from it:
        out |= {m.group(1) for m in DIGEST.finditer(data)}
        out |= {m.group(1) for m in JSON_SECRET.finditer(data)}
        for ev in decode_pcap(p, cti_ports=cti_ports).events:  # tokens split over segments too
            body = ev.body if isinstance(ev.body, dict) else {}
            out |= {str(body[k]).encode() for k in ("token", "sig") if len(str(body.get(k) or "")) >= 8}
    return out


def test_no_secret_of_a_run_in_its_evidence(lab: Lab, tmp_path: Path) -> None:
    out = tmp_path / "reports"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    r = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", SCENARIO, "--hil-reports", str(out),
         "--alluredir", str(out / "allure-results")],
        cwd=REPO_ROOT, env=env, capture_output=True, timeout=600,
    )  # fmt: skip
    console = tmp_path / "pytest-output.txt"
    console.write_bytes(r.stdout + r.stderr)
    assert r.returncode == 0, (r.stdout + r.stderr).decode(errors="replace")[-3000:]
    raw_pcaps = sorted((out / "pcap" / RAW_DIR).rglob("*.pcap"))
    assert raw_pcaps and (out / "pcap" / RAW_DIR / SECRETS_README).exists()
    assert all((p.stat().st_mode & 0o077) == 0 for p in raw_pcaps)
    shown = sorted(p for p in (out / "pcap").rglob("*.pcap") if RAW_DIR not in p.relative_to(out).parts)
    assert [p.name for p in shown] == [p.name for p in raw_pcaps]  # a redacted copy of each
    secrets = secrets_of_run(lab, raw_pcaps)
    tokens = [s for s in secrets if s.startswith(b"eyJ")]
    assert len(tokens) >= 10 and len(secrets) > len(tokens) + 50, len(secrets)  # the run had them
    assert list(out.glob("allure-results/*-attachment.pcap"))  # the report's pcaps are among what is grepped
    logs = lab.backend.logs_dir()
    found = secret_leaks(out, secrets, skip=[out / "pcap" / RAW_DIR])
    found += secret_leaks(tmp_path, secrets, skip=[out])  # pytest's output
    found += secret_leaks(logs, secrets) if logs is not None else []
    assert not found, "\n".join(problem_line(p) for p in found[:40])
