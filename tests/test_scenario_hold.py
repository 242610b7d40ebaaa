"""Scenario.hold judges only views whose every snapshot was taken after the hold began (a fake observer)."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from harness import scenario as sc


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


def _scenario(obs: FakeObserver, monkeypatch: pytest.MonkeyPatch) -> sc.Scenario:
    s = sc.Scenario.__new__(sc.Scenario)
    s.dry_run, s.observer, s.lab, s.history, s.expectations = False, obs, None, None, []
    monkeypatch.setattr(sc, "agents_extensions", lambda lab: {"a1": "1001"})
    return s


def test_a_stale_view_before_the_hold_is_not_judged(monkeypatch: pytest.MonkeyPatch) -> None:
    leftover = {"a1": {"sha": "registered"}}
    obs = FakeObserver([(False, leftover), (False, leftover)] + [(True, {})] * 20)
    s = _scenario(obs, monkeypatch)
    obs.t.start()
    assert s.hold({"a1": "ntg"}, "nobody else moves", 0.2) is True
    assert s.expectations[-1]["ok"] and s.expectations[-1]["reads_judged"] >= 1


def test_a_fresh_view_that_breaks_it_fails_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    obs = FakeObserver([(True, {})] * 2 + [(True, {"a1": {"sha": "registered"}})] + [(True, {})] * 50)
    s = _scenario(obs, monkeypatch)
    obs.t.start()
    t0 = time.monotonic()
    assert s.hold({"a1": "ntg"}, "nobody else moves", 1.0) is False
    assert time.monotonic() - t0 < 0.5 and s.expectations[-1]["count"] == 1


def test_no_fresh_view_at_all_is_not_a_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sc, "FRESH_READ_S", 0.2)
    obs = FakeObserver([(False, {})] * 40)
    s = _scenario(obs, monkeypatch)
    obs.t.start()
    assert s.hold({"a1": "ntg"}, "nobody else moves", 0.1) is False
    assert "no read of every PBX and CTI" in s.expectations[-1]["error"]
    assert "no read of every PBX and CTI" in s.expectations_verdict().reason
