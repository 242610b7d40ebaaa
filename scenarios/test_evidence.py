"""No secret of the session in its evidence (issue 16): after every other scenario of the session, the
evidence they left (Allure results with their attachments, histories, verdicts, the redacted pcaps, the
lab's device logs) is grepped, as bytes, for every secret the session had or put on the wire: the lab's
own, the passwords derived from them, and every CTI token, admin signature and SIP digest value its raw
captures hold. The raw captures (pcap/raw/, private) hold them by design and are the one place not read;
that they hold some is checked, so the check cannot pass by finding no secret at all. `hil run` makes the
same check on its kept run (harness/gate/secretscan.py, one implementation)."""

from __future__ import annotations

import time
from pathlib import Path

import allure
import pytest

from harness.gate.secretscan import leaks, run_secrets
from harness.lab import Lab
from harness.observe.lab_capture import RAW_DIR, SECRETS_README

pytestmark = [pytest.mark.after_suite, pytest.mark.security]

SESSION_START = time.time()  # this module is imported at collection, before any scenario runs


@allure.feature("security")
@allure.story("secrets out of the evidence")
def test_no_secret_of_the_session_in_its_evidence(lab: Lab, pytestconfig: pytest.Config) -> None:
    reports = Path(pytestconfig.getoption("--hil-reports") or "reports").resolve()
    raw = reports / "pcap" / RAW_DIR
    fresh = [p for p in raw.rglob("*.pcap") if p.stat().st_mtime >= SESSION_START]
    if not fresh:
        pytest.skip("no scenario of this session captured anything (a selection without scenarios)")
    assert (raw / SECRETS_README).exists() and all((p.stat().st_mode & 0o077) == 0 for p in fresh)
    secrets = run_secrets(lab.topology, lab.backend.environment() or None, fresh)
    assert len(secrets) > 10, f"only {len(secrets)} secrets found: the check would prove nothing"
    roots = [reports]
    alluredir = pytestconfig.getoption("--alluredir", None)
    if alluredir:
        roots.append(Path(alluredir).resolve())
    logs = lab.backend.logs_dir()
    found = [line for root in dict.fromkeys(roots) for line in leaks(root, secrets, raw, SESSION_START)]
    found += leaks(logs, secrets, raw) if logs is not None else []
    assert not found, "\n".join(found[:40])
