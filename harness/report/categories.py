"""`categories.json`: how Allure files a failed test in its report, by the prefixes of `failure_message`.

Allure's categories can only match a test's status, message and trace, so the report's categories read the
message's prefix; the release gate does not (it reads the findings' categories and the `hil.outcome` label).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from harness.report.findings import (
    DEFECT,
    DEFECT_DOUBLE_REGISTRATION,
    DEFECT_LOST_AGENT,
    DEFECT_LOST_CALL,
    DEFECT_OTHER,
    DEFECT_OVER_BOUND,
    DEFECT_SPLIT_BRAIN,
    DEFECT_WRONG_SITE,
    EVIDENCE_INCOMPLETE,
    LAB_CAPTURE_DROPS,
    LAB_DEVICE_UNREACHABLE,
    LAB_FAULT,
    LAB_FAULT_NOT_HEALED,
)

__all__ = ["CATEGORIES", "write_categories"]


def _contains(text: str) -> str:
    """A regex that Allure 2 (Java `matches`, whole string) and Allure 3 (JS `test`, search) both accept as
    "the text contains this", across lines: no inline flags, which JavaScript lacks."""
    special = set("\\^$.|?*+()[]{}")
    return "[\\s\\S]*" + "".join("\\" + c if c in special else c for c in text) + "[\\s\\S]*"


_FAILED = ["failed"]
_ANY = ["failed", "broken"]

# First match wins in Allure 3: product defects before lab faults before incomplete evidence, so a run with
# a proven defect is filed as a defect whatever else went wrong.
CATEGORIES: list[dict[str, Any]] = [
    *(
        {
            "name": p.replace(DEFECT, "Product defect"),
            "matchedStatuses": _FAILED,
            "messageRegex": _contains(p),
        }
        for p in (
            DEFECT_LOST_AGENT,
            DEFECT_SPLIT_BRAIN,
            DEFECT_DOUBLE_REGISTRATION,
            DEFECT_WRONG_SITE,
            DEFECT_OVER_BOUND,
            DEFECT_LOST_CALL,
            DEFECT_OTHER,
        )
    ),
    {
        "name": "Lab fault: device unreachable",
        "matchedStatuses": _ANY,
        "messageRegex": _contains("DeviceUnreachable"),
    },
    {
        "name": "Lab fault: device unreachable",
        "matchedStatuses": _ANY,
        "messageRegex": _contains(LAB_DEVICE_UNREACHABLE),
    },
    {
        "name": "Lab fault: device unreachable",
        "matchedStatuses": ["broken"],
        "traceRegex": _contains("DeviceUnreachable"),
    },
    {
        "name": "Lab fault: capture drops",
        "matchedStatuses": _ANY,
        "messageRegex": _contains(LAB_CAPTURE_DROPS),
    },
    {
        "name": "Lab fault: fault not healed",
        "matchedStatuses": _ANY,
        "messageRegex": _contains(LAB_FAULT_NOT_HEALED),
    },
    {"name": "Lab fault: other", "matchedStatuses": _ANY, "messageRegex": _contains(LAB_FAULT + ": ")},
    {"name": "Evidence incomplete", "matchedStatuses": _ANY, "messageRegex": _contains(EVIDENCE_INCOMPLETE)},
    {"name": "Product defect: unclassified assertion", "matchedStatuses": _FAILED},
    {"name": "Harness error (test broken)", "matchedStatuses": ["broken"]},
]


def write_categories(results_dir: str | Path) -> Path:
    """Write `categories.json` (Allure 2 format, which Allure 3 reads too) into the results directory."""
    d = Path(results_dir)
    d.mkdir(parents=True, exist_ok=True)
    p = d / "categories.json"
    p.write_text(json.dumps(CATEGORIES, indent=1) + "\n")
    return p
