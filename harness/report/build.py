"""The HTML report: Allure results turned into a report people open, with Allure 3 (the npm package
`allure`, installed in the repository's `node_modules` by `make setup`)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness.report.categories import CATEGORIES

__all__ = ["REPO_ROOT", "ReportError", "ReportInputError", "allure_cli", "build_report"]

log = logging.getLogger("hil.report")

REPO_ROOT = Path(__file__).resolve().parents[2]


class ReportError(Exception):
    """The report could not be built (Allure missing or failing); the message says why."""


class ReportInputError(ReportError):
    """The results directory is missing or holds no results: the user's input, not the tool, is wrong."""


def allure_cli() -> Path:
    """The Allure 3 command: `$HIL_ALLURE`, else the repository's `node_modules/.bin/allure`."""
    env = os.environ.get("HIL_ALLURE")
    p = Path(env) if env else REPO_ROOT / "node_modules" / ".bin" / "allure"
    if not p.exists():
        raise ReportError(
            f"Allure 3 is not installed ({p} is missing): `make setup` installs it (npm ci in {REPO_ROOT})"
        )
    if shutil.which("node") is None:
        raise ReportError("node is not on PATH: Allure 3 needs Node.js (make setup installs it)")
    return p


def _categories_for(results: Path) -> list[dict[str, Any]]:
    p = results / "categories.json"
    if p.exists():
        try:
            data = json.loads(p.read_text())
            if isinstance(data, list) and all(isinstance(c, dict) and c.get("name") for c in data):
                return data
        except (OSError, ValueError):
            pass
        log.warning("%s is not a list of categories; using the built-in ones", p)
    return CATEGORIES


def build_report(
    results: str | Path = "reports/allure-results",
    out: str | Path = "reports/allure-report",
    *,
    name: str = "hil failover lab",
    timeout: float = 300.0,
    history: str | Path | None = None,
    extra_results: Sequence[str | Path] = (),
    attached: Sequence[str | Path] = (),
) -> Path:
    """Build the HTML report from Allure results with Allure 3's Awesome plugin; returns `out/index.html`.

    Allure 3 applies categories from its config, not from the results, so the results' `categories.json`
    (else `CATEGORIES`) goes into a generated `allurerc.mjs`. `out` is replaced, but only if it is empty or
    an earlier report (it has an `index.html`), never some other directory.

    `history`: Allure 3's history file (JSONL, `historyPath`): read for each test's past results and
    durations, and this report's results appended to it; kept outside any one run (`reports/history.jsonl`)
    so pruning a run does not lose it. `extra_results`: more results directories (the release gate's
    result, `harness.report.gateresult`); `attached`: files attached to the whole report (the
    trend page and picture).
    """
    res, dest = Path(results).resolve(), Path(out).resolve()
    if not res.is_dir():
        raise ReportInputError(f"{results}: no such results directory (run the scenarios with --alluredir)")
    if not any(res.glob("*-result.json")):
        raise ReportInputError(f"{results}: no test results (*-result.json) in it")
    cli = allure_cli()
    if dest.exists():
        if not dest.is_dir() or (any(dest.iterdir()) and not (dest / "index.html").exists()):
            raise ReportInputError(f"{out}: exists and is not an Allure report; refusing to replace it")
        shutil.rmtree(dest)
    config = {
        "name": name,
        "output": str(dest),
        "categories": _categories_for(res),
        **({"historyPath": str(Path(history).resolve())} if history is not None else {}),
        **({"globalAttachments": [str(Path(p).resolve()) for p in attached]} if attached else {}),
        "plugins": {
            "awesome": {"options": {"reportName": name, "reportLanguage": "en", "singleFile": False}}
        },
    }
    with tempfile.TemporaryDirectory(prefix="hil-allure-") as tmp:
        cfg = Path(tmp) / "allurerc.mjs"
        cfg.write_text(f"export default {json.dumps(config, indent=1)};\n")
        cmd = [str(cli), "generate", "--config", str(cfg), "--output", str(dest), str(res)]
        cmd += [str(Path(p).resolve()) for p in extra_results if Path(p).is_dir()]
        try:
            proc = subprocess.run(
                cmd,
                cwd=tmp,
                capture_output=True,
                text=True,
                timeout=timeout,
                env={**os.environ, "NO_COLOR": "1"},
            )
        except subprocess.TimeoutExpired:
            raise ReportError(f"allure generate did not finish in {timeout:.0f} s") from None
    index = dest / "index.html"
    if proc.returncode != 0 or not index.exists():
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
        raise ReportError(f"allure generate failed (exit {proc.returncode}):\n{tail}")
    return index
