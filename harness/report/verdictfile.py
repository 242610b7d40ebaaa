"""The verdict file (`hil-verdicts.json`, docs/gate.md): what a scenario concluded and from what, for the
release gate. Every checker's verdict, the findings with their machine-readable category and kind, the run's
outcome (the worst category, else `pass`), the failure message for people, and the sha256 of the history
the verdicts were computed from, so a verdict can be checked again."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import allure

from harness.checks import Verdict, compose
from harness.report.findings import as_verdict, failure_message, findings, leaves, worst

__all__ = ["HISTORY_NAME", "VERDICTS_NAME", "VERDICTS_SCHEMA", "attach_verdicts", "verdicts_payload"]

# `findings` and `outcome` came within /1 (extra keys were always allowed): readers derive them if absent
VERDICTS_SCHEMA = "hil-verdicts/1"
VERDICTS_NAME = "hil-verdicts.json"
HISTORY_NAME = "history.jsonl"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verdicts_payload(
    verdicts: Sequence[Verdict],
    *,
    history: str | Path | None = None,
    scenario: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The verdict file the gate reads (docs/gate.md): every checker's verdict, the overall result, the
    failure message, and the sha256 of the history they were computed from (attached as `history.jsonl`).
    `extra` (timings, settings...) is kept under its own keys; it cannot replace the fields above."""
    vs = [as_verdict(v) for v in verdicts]
    overall = compose(*leaves(vs)) if vs else compose()
    fs = findings(vs)
    payload: dict[str, Any] = {
        "schema": VERDICTS_SCHEMA,
        "scenario": scenario,
        "result": overall.result,
        "outcome": worst(fs) or "pass",
        "findings": [f.to_dict() for f in fs],
        "message": "" if overall.valid else failure_message(vs),
        "verdicts": [v.to_dict() for v in vs],
    }
    if history is not None:
        hp = Path(history)
        payload["history"] = {"name": HISTORY_NAME, "sha256": _sha256(hp), "bytes": hp.stat().st_size}
    return {**dict(extra or {}), **payload}


def attach_verdicts(
    verdicts: Sequence[Verdict],
    *,
    history: str | Path | None = None,
    scenario: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Attach the verdict file (and the history it names) to the running test; returns the payload."""
    payload = verdicts_payload(verdicts, history=history, scenario=scenario, extra=extra)
    allure.attach(
        json.dumps(payload, indent=1, default=str),
        name=VERDICTS_NAME,
        attachment_type=allure.attachment_type.JSON,
    )
    if history is not None:
        allure.attach.file(str(history), name=HISTORY_NAME, attachment_type="text/plain", extension="jsonl")
    return payload
