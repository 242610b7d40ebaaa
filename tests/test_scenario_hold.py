"""Scenario.hold judges only views whose every snapshot was taken after the hold began (a fake observer),
and writes what it saw to the history, where check_expectations judges it."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from harness import scenario as sc
from harness.checks import EXPECTATION, check_expectations
from harness.history import History
from harness.scenario import waits


class FakeObserver:
    """Reads arrive every 20 ms; each says whether every endpoint is fresh and what is misplaced."""

    def __init__(self, script: list[tuple[bool, dict[str, Any]]]) -> None:
        self.reads = 0
        self._cond = threading.Condition()
        self.script = script
        self.current: tuple[bool, dict[str, Any]] = (False, {})
        self.view = self
        self._stop = False
        self.t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        for step in self.script:
            time.sleep(0.02)
            with self._cond:
                self.current = step
                self.reads += 1
                self._cond.notify_all()

    def after_read(self, seen: int, judge: Any, timeout: float = 0.1) -> tuple[int, Any]:
        with self._cond:
            if self.reads == seen:
                self._cond.wait(timeout)
            if self.reads == seen:
                return seen, None
            return self.reads, judge(self.view)

    def fresh(self, since: float) -> bool:
        return self.current[0]

    def misplaced(self, expected: Any, exts: Any, states: Any) -> dict[str, Any]:
        return self.current[1]


def _scenario(obs: FakeObserver, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> sc.Scenario:
    s = sc.Scenario.__new__(sc.Scenario)
    s.dry_run, s.observer, s.lab = False, obs, None
    s.history = History(tmp_path / "h.jsonl")
    monkeypatch.setattr(waits, "agents_extensions", lambda lab: {"a1": "1001"})
    return s


def _last(s: sc.Scenario) -> dict[str, Any]:
    """The expectation the hold wrote to the history: what was expected and what was seen."""
    assert s.history is not None
    return [e.value for e in s.history if e.type == "obs" and e.kind == EXPECTATION][-1]


def test_a_stale_view_before_the_hold_is_not_judged(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    leftover = {"a1": {"sha": "registered"}}
    obs = FakeObserver([(False, leftover), (False, leftover)] + [(True, {})] * 20)
    s = _scenario(obs, monkeypatch, tmp_path)
    obs.t.start()
    assert s.hold({"a1": "ntg"}, "nobody else moves", 0.2) is True
    rec = _last(s)
    assert rec["check"] == "hold" and rec["expected"] == {"a1": "ntg"} and rec["duration"] == 0.2
    assert rec["seen"]["out_of_place"] == 0 and rec["seen"]["judged"] >= 1
    assert check_expectations(s.history).result == "valid"


def test_a_fresh_view_that_breaks_it_fails_at_once(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    obs = FakeObserver([(True, {})] * 2 + [(True, {"a1": {"sha": "registered"}})] + [(True, {})] * 50)
    s = _scenario(obs, monkeypatch, tmp_path)
    obs.t.start()
    t0 = time.monotonic()
    assert s.hold({"a1": "ntg"}, "nobody else moves", 30.0) is False
    # it ended at the read that broke it, not at the end of the 30 s hold (a generous margin for a busy box)
    assert time.monotonic() - t0 < 15.0 and _last(s)["seen"]["out_of_place"] == 1
    assert _last(s)["seen"]["sample"] == {"a1": {"sha": "registered"}}
    v = check_expectations(s.history)
    assert v.result == "invalid" and "nobody else moves: 1 agents out of place" in v.reason


def test_no_fresh_view_at_all_is_not_a_pass(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    obs = FakeObserver([(False, {})] * 40)
    s = _scenario(obs, monkeypatch, tmp_path)
    s.fresh_read_s = 0.2
    obs.t.start()
    assert s.hold({"a1": "ntg"}, "nobody else moves", 0.1) is False
    assert "no read of every PBX and CTI" in _last(s)["seen"]["error"]
    v = check_expectations(s.history)
    assert "no read of every PBX and CTI" in v.reason
    assert v.result == "unknown"  # no evidence is never valid, and not a product defect either
