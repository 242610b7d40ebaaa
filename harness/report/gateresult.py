"""The release gate inside the HTML report: one extra Allure test result, "release gate", in a results
directory of its own, from the gate's `gate.json` and `gate.md`, with the trend attached.

Why a test result and not Allure 3's quality gate: the gate's verdict comes from hil's policy (rules,
repeats, baseline), which Allure's rules cannot express; a result shows the same table, verdict and reasons
where an engineer reads the evidence, and its history (same `historyId` every run) shows the gate's past
verdicts. It lives outside the run's `allure-results/`, so the gate never judges its own verdict.
"""

from __future__ import annotations

import json
import shutil
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["GATE_HISTORY_ID", "write_gate_result"]

GATE_HISTORY_ID = "hil-release-gate"
_STATUS = {0: "passed", 1: "failed", 2: "broken"}
_TYPES = {".md": "text/markdown", ".json": "application/json", ".png": "image/png", ".html": "text/html"}


def _attach(src: Path, dest: Path, name: str) -> dict[str, str]:
    source = f"{uuid.uuid4()}-attachment{src.suffix}"
    shutil.copyfile(src, dest / source)
    return {"name": name, "source": source, "type": _TYPES.get(src.suffix, "text/plain")}


def write_gate_result(gate_dir: Path, dest: Path, attachments: Sequence[Path] = ()) -> Path | None:
    """Write the "release gate" result into `dest` from `gate_dir`'s gate.json and gate.md; None (nothing
    written) when the gate did not judge. Its status: passed (SHIP), failed (DO NOT SHIP), broken (could
    not judge); its message the verdict and the blocking reasons; its description the gate.md page."""
    try:
        gate: dict[str, Any] = json.loads((gate_dir / "gate.json").read_text())
    except (OSError, ValueError):
        return None
    md = gate_dir / "gate.md"
    dest.mkdir(parents=True, exist_ok=True)
    code = gate.get("exit_code")
    blocking = [
        f"{s.get('scenario')}: {s.get('verdict')} ({'; '.join(map(str, s.get('reasons') or [])) or '-'})"
        for s in gate.get("scenarios") or []
        if isinstance(s, dict) and s.get("verdict") in ("fail", "flaky", "unjudged")
    ]
    missing = [str(m) for m in gate.get("missing") or []]
    message = f"release gate: {str(gate.get('verdict', '?')).upper()} (exit {code})"
    details = blocking[:20] + [f"missing: {m}" for m in missing[:10]]
    files = [(md, "gate.md"), (gate_dir / "gate.json", "gate.json")] + [(p, p.name) for p in attachments]
    now = int(time.time() * 1000)
    result = {
        "uuid": str(uuid.uuid4()),
        "historyId": GATE_HISTORY_ID,
        "testCaseId": GATE_HISTORY_ID,
        "name": "release gate",
        "fullName": "hil#release gate",
        "status": _STATUS.get(code, "unknown"),
        "statusDetails": {"message": message, "trace": "\n".join(details)},
        "description": md.read_text() if md.is_file() else message,
        "labels": [
            {"name": "epic", "value": "release gate"},
            {"name": "suite", "value": "release gate"},
            {"name": "severity", "value": "blocker"},
        ],
        "attachments": [_attach(p, dest, name) for p, name in files if p.is_file()],
        "start": now,
        "stop": now,
    }
    out = dest / f"{result['uuid']}-result.json"
    out.write_text(json.dumps(result, indent=1))
    return out
