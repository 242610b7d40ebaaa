"""Allure labels of a scenario: epic, feature, story, severity and the sites it involves."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import allure

__all__ = ["SEVERITIES", "apply_labels", "labels"]

SEVERITIES = ("blocker", "critical", "normal", "minor", "trivial")


def labels(
    *,
    epic: str | None = None,
    feature: str | None = None,
    story: str | None = None,
    severity: str | None = None,
    site: str | Sequence[str] | None = None,
) -> list[tuple[str, str]]:
    """The (name, value) Allure labels of a scenario; `site` may name several sites."""
    if severity is not None and severity not in SEVERITIES:
        raise ValueError(f"severity must be one of {', '.join(SEVERITIES)}, got {severity!r}")
    out = [
        (n, v)
        for n, v in (("epic", epic), ("feature", feature), ("story", story), ("severity", severity))
        if v
    ]
    sites = [site] if isinstance(site, str) else list(site or [])
    out += [("site", s) for s in sites]
    return out


def apply_labels(**kw: Any) -> list[tuple[str, str]]:
    """Put `labels(**kw)` on the running test (allure.dynamic); returns them."""
    pairs = labels(**kw)
    for name, value in pairs:
        allure.dynamic.label(name, value)
    return pairs
