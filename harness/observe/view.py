"""The view of where agents are: the latest table of every endpoint, and waits on it for set-up."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from harness.observe.endpoints import Endpoint
from harness.observe.readers import ObserveError

__all__ = ["ENDED", "View", "read_view", "wait_view"]

ENDED = frozenset({"logged_out", "fenced"})


@dataclass
class View:
    """The latest snapshot of every endpoint: who is registered and logged in where."""

    regs: dict[str, Counter[str]] = field(default_factory=dict)  # site -> extension -> contacts
    sessions: dict[str, dict[str, str]] = field(default_factory=dict)  # site -> agent -> state
    at: dict[str, float] = field(default_factory=dict)  # "pbx:sha" -> monotonic time of the snapshot
    errors: dict[str, str] = field(default_factory=dict)  # "pbx:sha" -> why the last read failed

    def apply(self, ep: Endpoint, value: dict[str, Any], t: float) -> None:
        if ep.kind == "pbx":
            self.regs[ep.site] = Counter(r["extension"] for r in value["registrations"])
        else:
            self.sessions[ep.site] = {
                s["agent"]: s.get("state", "") for s in value["sessions"] if s.get("state") not in ENDED
            }
        self.at[f"{ep.kind}:{ep.site}"] = t
        self.errors.pop(f"{ep.kind}:{ep.site}", None)

    def forget(self, ep: Endpoint, error: str) -> None:
        """An endpoint stopped answering: drop its last table, so a wait never passes on stale data."""
        (self.regs if ep.kind == "pbx" else self.sessions).pop(ep.site, None)
        self.at.pop(f"{ep.kind}:{ep.site}", None)
        self.errors[f"{ep.kind}:{ep.site}"] = error

    def placement(self, agent: str, extension: str) -> tuple[list[str], list[str], str | None]:
        """(sites registering the extension, once per contact; sites with a session; a session's state)."""
        reg_at = sorted(s for s, c in self.regs.items() for _ in range(c.get(extension, 0)))
        sess_at = sorted(s for s, t in self.sessions.items() if agent in t)
        state = next((self.sessions[s][agent] for s in sess_at), None)
        return reg_at, sess_at, state

    def misplaced(
        self,
        expected: Mapping[str, str],
        extensions: Mapping[str, str],
        states: Iterable[str] | None = ("ready",),
    ) -> dict[str, dict[str, Any]]:
        """Agents not (exactly once registered and logged in at their expected site, in one of ``states``)."""
        return self._judge(expected, extensions, states, exactly_there=True)

    def missing(
        self,
        expected: Mapping[str, str],
        extensions: Mapping[str, str],
        states: Iterable[str] | None = ("ready",),
    ) -> dict[str, dict[str, Any]]:
        """Agents not yet registered and logged in at their expected site (in one of ``states``). Looser
        than :meth:`misplaced`: a leftover elsewhere does not count here (the checkers judge it)."""
        return self._judge(expected, extensions, states, exactly_there=False)

    def _judge(
        self,
        expected: Mapping[str, str],
        extensions: Mapping[str, str],
        states: Iterable[str] | None,
        exactly_there: bool,
    ) -> dict[str, dict[str, Any]]:
        want_states = None if states is None else set(states)
        bad = {}
        for agent, site in expected.items():
            reg_at, sess_at, state = self.placement(agent, extensions[agent])
            if exactly_there:
                placed = reg_at == [site] and sess_at == [site]
            else:
                placed = site in reg_at and site in sess_at
                state = self.sessions.get(site, {}).get(agent)
            if not placed or (want_states is not None and state not in want_states):
                where = {"registered_at": reg_at, "sessions_at": sess_at}
                bad[agent] = {"expected": site, **where, "state": state}
        return bad

    def complete(self, eps: Iterable[Endpoint]) -> bool:
        return all(f"{e.kind}:{e.site}" in self.at for e in eps)


def read_view(eps: list[Endpoint], timeout: float = 1.0) -> View:
    """One snapshot of every endpoint at once (in parallel), not recorded: for set-up waits."""
    view = View()
    with ThreadPoolExecutor(max_workers=max(1, len(eps))) as pool:
        futs = {pool.submit(ep.read, timeout): ep for ep in eps}
        for fut, ep in futs.items():
            try:
                view.apply(ep, fut.result(), time.monotonic())
            except ObserveError as e:
                view.forget(ep, str(e))
    return view


def wait_view(
    eps: list[Endpoint],
    predicate: Callable[[View], bool],
    timeout: float,
    interval: float = 0.2,
) -> tuple[bool, View]:
    """Poll until ``predicate(view)`` holds (True) or ``timeout`` passes (False, with the last view)."""
    deadline = time.monotonic() + timeout
    while True:
        view = read_view(eps)
        if predicate(view):
            return True, view
        if time.monotonic() >= deadline:
            return False, view
        time.sleep(interval)
