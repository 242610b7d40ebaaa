"""No secret of a run in its evidence: a real scenario on the virtual lab, then every artifact it left
(Allure results with their attachments, verdicts, histories, the redacted pcaps, the pytest output and the
lab's device logs) grepped, as bytes, for every secret of that run: the lab's own (secrets.env), the agent
and extension passwords derived from them, and every CTI token, admin signature and SIP digest response,
nonce and cnonce that the RAW captures hold. The raw captures themselves (``pcap/raw/``) hold them by
design and are the one place not grepped; that they hold some is checked, so the test cannot pass by
finding no secret at all.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.gate.inputs import problem_line, secret_leaks
from harness.gate.secretscan import run_secrets
from harness.lab import Lab
from harness.observe.lab_capture import RAW_DIR, SECRETS_README
from harness.topology import REPO_ROOT

pytestmark = pytest.mark.lab

SCENARIO = "scenarios/test_login.py::test_login_local"


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
    secrets = run_secrets(lab.topology, lab.backend.environment(), raw_pcaps)
    tokens = [s for s in secrets if s.startswith(b"eyJ")]
    assert len(tokens) >= 10 and len(secrets) > len(tokens) + 50, len(secrets)  # the run had them
    assert list(out.glob("allure-results/*-attachment.pcap"))  # the report's pcaps are among what is grepped
    logs = lab.backend.logs_dir()
    found = secret_leaks(out, secrets, skip=[out / "pcap" / RAW_DIR])
    found += secret_leaks(tmp_path, secrets, skip=[out])  # pytest's output
    found += secret_leaks(logs, secrets) if logs is not None else []
    assert not found, "\n".join(problem_line(p) for p in found[:40])
