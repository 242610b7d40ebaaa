"""A scenario's own expectations: waits and holds on the observer's view, each written to the history.

Waits and holds never abort a scenario: each ends with one `expectation` observation (what was expected,
how it was judged, what the snapshots showed) and the scenario goes on to revert. The verdict on them is
`harness.checks.check_expectations`, read from the history like every other; the bool a wait returns is
the same judgement (`expectation_outcome`) of the same record, for a scenario that branches on it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from harness.checks import EXPECTATION, expectation_outcome
from harness.history import History
from harness.lab import Lab
from harness.observe import Observer, View
from harness.scenario.agents import agents_extensions, agents_homes
from harness.scenario.settings import FRESH_READ_S, Settings

__all__ = ["Waits"]

SAMPLE = 3  # out-of-place agents kept in a record: the count says how many, a few say who and where


def _sample(bad: Mapping[str, Any]) -> dict[str, Any]:
    return dict(list(bad.items())[:SAMPLE])


class Waits:
    """The waits and holds of :class:`harness.scenario.Scenario` (a mixin: the run supplies these)."""

    lab: Lab
    settings: Settings
    dry_run: bool
    history: History | None
    observer: Observer | None
    # hold(): how long past its duration to wait for a read of every endpoint taken after it began
    fresh_read_s: float = FRESH_READ_S

    def expect(
        self,
        moved: Mapping[str, str] | None = None,
        *,
        moved_from: str | None = None,
        to: str | None = None,
    ) -> dict[str, str]:
        """Where every agent of the roster should be: home, except those ``moved`` (agent -> site) and, with
        ``moved_from``, every agent homed there (to ``to``, default the other site)."""
        homes = agents_homes(self.lab)
        out = dict(homes)
        if moved_from is not None:
            dest = to or next(s for s in self.lab.topology.sites if s != moved_from)
            out.update({a: dest for a, h in homes.items() if h == moved_from})
        out.update(moved or {})
        return out

    def wait_placement(
        self,
        expected: Mapping[str, str],
        what: str,
        timeout: float | None = None,
        states: Sequence[str] | None = ("ready",),
    ) -> float | None:
        """Wait until the PBXs and CTIs show every agent registered and logged in at its expected site (in
        one of ``states``; a leftover elsewhere is the checkers' to judge, not a reason to keep waiting);
        the seconds it took, or None when it did not happen in ``timeout`` (default: the recovery bound).
        Either way the outcome is recorded as an expectation and the scenario goes on to revert."""
        if self.dry_run:
            return 0.0
        assert self.observer is not None
        timeout = self.settings.bound if timeout is None else timeout
        exts = agents_extensions(self.lab)
        t0, reads0 = time.monotonic(), self.observer.reads
        self.observer.wait_until(lambda v: not v.missing(expected, exts, states), timeout)
        took = time.monotonic() - t0
        bad = self.observer.view.missing(expected, exts, states)
        seen = self._seen(bad, judged=1 + self.observer.reads - reads0, view=self.observer.view)
        seen["seconds"] = round(took, 3)
        ok = self._expect(what, "placement", dict(expected), seen, states=states, timeout=timeout)
        return took if ok else None

    def wait_state(self, agent: str, site: str, state: str, timeout: float = 15.0) -> bool:
        """Wait until the CTI of ``site`` shows ``agent`` in ``state`` (e.g. on_call); recorded likewise."""
        if self.dry_run:
            return True
        assert self.observer is not None
        reads0 = self.observer.reads
        self.observer.wait_until(lambda v: v.sessions.get(site, {}).get(agent) == state, timeout)
        seen = {
            "judged": 1 + self.observer.reads - reads0,
            "state": self.observer.view.sessions.get(site, {}).get(agent),
        }
        expected = {"agent": agent, "site": site, "state": state}
        return self._expect(f"{agent} {state} at {site}", "state", expected, seen, timeout=timeout)

    def hold(
        self,
        expected: Mapping[str, str],
        what: str,
        duration: float,
        states: Sequence[str] | None = None,
    ) -> bool:
        """The placement holds for ``duration`` seconds: every read in that time shows it (anti-flap, an
        outage that must move nobody). Recorded as an expectation; False at the first read that breaks it,
        and when no read of every PBX and CTI could be judged at all."""
        if self.dry_run:
            return True
        assert self.observer is not None
        obs = self.observer
        exts = agents_extensions(self.lab)
        start = time.monotonic()
        deadline = start + duration
        seen_reads = obs.reads
        bad: dict[str, Any] = {}
        judged = 0

        # Only views whose every PBX and CTI snapshot was taken after the hold began are judged: each
        # endpoint is read by its own thread, so the view at the start can pair a PBX read from before a
        # move that just ended with one from after it (a planned switch takes ~30 ms; the reads are
        # 200 ms apart), which shows a leftover that was gone before the hold began.
        def judge(view: Any) -> dict[str, Any] | None:
            return view.misplaced(expected, exts, states) if obs.fresh(start) else None

        while not bad and (time.monotonic() < deadline or not judged):
            if time.monotonic() > deadline + self.fresh_read_s:
                break
            seen_reads, found = obs.after_read(seen_reads, judge)
            if found is not None:
                judged += 1
                bad = found
        seen = self._seen(bad, judged=judged)
        if not judged:
            seen["error"] = f"no read of every PBX and CTI within {duration + self.fresh_read_s:.0f} s"
        return self._expect(what, "hold", dict(expected), seen, states=states, duration=duration)

    def converge(
        self,
        expected: Mapping[str, str],
        what: str,
        timeout: float = 10.0,
        states: Sequence[str] | None = None,
    ) -> float | None:
        """Wait until a read shows the placement exactly as :meth:`hold` wants it (each agent registered and
        logged in once, at its expected site): the seconds it took, or None. Recorded as an expectation."""
        if self.dry_run:
            return 0.0
        assert self.observer is not None
        exts = agents_extensions(self.lab)
        t0 = time.monotonic()
        seen_reads = self.observer.reads
        bad: dict[str, Any] = {}
        judged = 0
        while time.monotonic() - t0 < timeout:
            seen_reads, found = self.observer.after_read(
                seen_reads, lambda v: v.misplaced(expected, exts, states)
            )
            if found is not None:
                judged += 1
                bad = found
                if not bad:
                    break
        took = time.monotonic() - t0 if judged and not bad else None
        seen = self._seen(bad, judged=judged)
        seen["seconds"] = None if took is None else round(took, 3)
        if not judged:
            seen["error"] = f"no read of every PBX and CTI within {timeout:.0f} s"
        ok = self._expect(what, "converge", dict(expected), seen, states=states, timeout=timeout)
        return took if ok else None

    @staticmethod
    def _seen(bad: Mapping[str, Any], *, judged: int, view: View | None = None) -> dict[str, Any]:
        seen: dict[str, Any] = {"judged": judged, "out_of_place": len(bad), "sample": _sample(bad)}
        if view is not None and view.errors:
            seen["errors"] = dict(view.errors)
        return seen

    def _expect(
        self, what: str, check: str, expected: Mapping[str, Any], seen: Mapping[str, Any], **detail: Any
    ) -> bool:
        """Write the expectation to the history and answer whether it was met, as the checker will."""
        value = {"what": what, "check": check, "expected": dict(expected), "seen": dict(seen)}
        value.update({k: list(v) if isinstance(v, tuple) else v for k, v in detail.items()})
        if self.history is not None:
            self.history.observe(EXPECTATION, "scenario", value)
        return expectation_outcome(value)[0] == "valid"
