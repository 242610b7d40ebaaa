"""Figures for people: seconds with their unit and three significant figures in the gate's table, the
report's findings and the plots (issue 13: "2.14 s", not 2.140000001 or 1.799586), and plots scaled to the
data with the bound marked, not stretching the axis when it is far above them."""

from __future__ import annotations

import pytest

from harness import plots
from harness.checks import Verdict
from harness.checks.recovery import seconds
from harness.gate.judge import GateReport, ScenarioJudgement
from harness.gate.render import markdown, table
from harness.report.findings import findings

PNG = b"\x89PNG"


@pytest.mark.parametrize(
    ("x", "text"),
    [
        (2.140000001, "2.14 s"),
        (1.799586, "1.80 s"),
        (0.123456, "0.123 s"),
        (0.0, "0.00 s"),
        (30.0, "30.0 s"),
        (12.3456, "12.3 s"),
        (125.6, "126 s"),
        (1234.5, "1234 s"),
        (None, "-"),
    ],
)
def test_seconds_have_a_unit_and_three_significant_figures(x: float | None, text: str) -> None:
    assert seconds(x) == text


def judged(figures: dict) -> GateReport:
    s = ScenarioJudgement(
        "scenarios/test_unplanned.py::test_failover[sha-pbx_killed]",
        True,
        True,
        1,
        1,
        "pass",
        [],
        [0],
        {},
        figures,
        [],
    )
    return GateReport("SHIP", 0, "gate.yaml", "allure-results", "2026-12-03T06:00:00+00:00", [s])


def test_gate_table_prints_seconds_with_units() -> None:
    rep = judged({"p95": 2.140000001, "max": 2.3999999, "bound": {"p95": 6.0, "max": 8.0}})
    text = table(rep)
    head, row = text.splitlines()[:2]
    assert head.split()[3:6] == ["p95", "max", "bound"]
    assert "2.14 s" in row and "2.40 s" in row and "p95 6.00 s, max 8.00 s" in row
    assert "2.140000001" not in text and "2.3999999" not in text
    md = markdown(rep)
    assert "| 2.14 s | 2.40 s | p95 6.00 s, max 8.00 s | PASS |" in md


def test_gate_table_without_figures() -> None:
    row = table(judged({})).splitlines()[1]
    assert row.split()[3:6] == ["-", "-", "-"]


def test_over_bound_finding_in_seconds() -> None:
    ws = [{"agent": "a00001", "problem": "over_bound", "recovery": 31.234567, "bound": 30.0}]
    v = Verdict("recovery_time", "invalid", "1 agents over the 30.0 s bound", ws, {"bound": 30.0})
    (f,) = findings([v])
    assert f.detail == "1 agents over the 30.0 s bound (slowest 31.2 s): a00001"


def test_axis_hugs_the_data_and_marks_a_far_bound_at_the_edge() -> None:
    left, right, inside = plots.scale_to_data(1.54, 1.64, 30.0, from_zero=False)
    assert 1.4 < left < 1.54 and 1.64 < right < 1.8 and not inside  # 30 s would squash 0.1 s of data
    left, right, inside = plots.scale_to_data(0.0, 2.2, 30.0)
    assert left == 0.0 and right < 3.0 and not inside


def test_a_near_bound_is_drawn_inside_the_axis() -> None:
    left, right, inside = plots.scale_to_data(1.5, 5.5, 6.0, from_zero=False)
    assert inside and left < 1.5 and right > 6.0
    left, right, inside = plots.scale_to_data(0.0, 7.0, 6.0)  # data over the bound
    assert inside and left == 0.0 and right > 7.0
    left, right, inside = plots.scale_to_data(2.0, 2.0, None, from_zero=False)  # one value: a width
    assert left < 2.0 < right and not inside


def test_plots_render_with_a_far_and_a_near_bound() -> None:
    per = {f"a{i:05d}": 1.54 + i * 0.002 for i in range(50)}
    for bound in (30.0, 1.7, None):
        figures = {"bound": bound, "per_agent": per, "p50": 1.59, "p95": 1.63, "max": 1.638, "affected": 50}
        v = Verdict("recovery_time", "valid", "", [], figures)
        assert plots.histogram_png(v).startswith(PNG)
        assert plots.timeline_png(v).startswith(PNG)
