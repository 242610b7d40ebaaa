"""The poller: every PBX and CTI read at a steady rate into the history, and the latest view kept."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TypeVar

from harness.history import History
from harness.lab import Lab
from harness.observe.endpoints import Endpoint, endpoints
from harness.observe.readers import ObserveError
from harness.observe.view import View

__all__ = ["Observer"]

T = TypeVar("T")


class Observer:
    """Polls every PBX and CTI of a lab at ``hz`` into the history, one thread per endpoint.

    One thread per endpoint so a dead PBX (its reads time out) never delays the snapshots of the others.
    A failed read is not a snapshot: it is recorded once as an ``observe_error`` observation when the
    endpoint stops answering (and ``observe_ok`` when it answers again), so the checkers see a gap, not an
    empty table. The latest snapshots are kept as a :class:`View` for :meth:`wait_until`.
    """

    def __init__(
        self,
        lab: Lab,
        history: History,
        hz: float = 5.0,
        timeout: float = 0.5,
        eps: list[Endpoint] | None = None,
    ) -> None:
        self.lab = lab
        self.history = history
        self.interval = 1.0 / hz
        self.timeout = timeout
        self.eps = eps if eps is not None else endpoints(lab)
        self.view = View()
        self.reads = 0
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> Observer:
        for ep in self.eps:
            t = threading.Thread(target=self._loop, args=(ep,), name=f"observe-{ep.device}", daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def _loop(self, ep: Endpoint) -> None:
        failing = False
        while not self._stop.is_set():
            t0 = time.monotonic()
            try:
                value, t_sent, t_recv = ep.read_timed(self.timeout)
            except ObserveError as e:
                if not failing:
                    self.history.observe("observe_error", ep.device, {"site": ep.site, "error": str(e)})
                    failing = True
                with self._cond:
                    self.view.forget(ep, str(e))
                    self._cond.notify_all()
            else:
                wall = time.time() - (time.monotonic() - t_recv)
                self.history.observe(ep.obs_kind, ep.device, value, t=t_recv, wall=wall)
                if failing:
                    self.history.observe("observe_ok", ep.device, {"site": ep.site})
                    failing = False
                with self._cond:
                    # freshness counts from the request: the table is from no earlier than that
                    self.view.apply(ep, value, t_sent)
                    self.reads += 1
                    self._cond.notify_all()
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - t0)))

    def fresh(self, since: float) -> bool:
        """Every endpoint has a snapshot whose read was sent after ``since`` (so its table is newer)."""
        return all(self.view.at.get(f"{e.kind}:{e.site}", -1.0) > since for e in self.eps)

    def after_read(self, seen: int, judge: Callable[[View], T], timeout: float = 0.1) -> tuple[int, T | None]:
        """Wait up to ``timeout`` for a read newer than the ``seen``-th, then ``judge`` the view under the
        lock: (reads so far, the judgement), or (``seen``, None) when no read came."""
        with self._cond:
            if self.reads == seen:
                self._cond.wait(timeout)
            if self.reads == seen:
                return seen, None
            return self.reads, judge(self.view)

    def wait_until(self, predicate: Callable[[View], bool], timeout: float) -> bool:
        """Block until ``predicate`` holds on the latest snapshots (True) or ``timeout`` passes (False)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(self.view):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.5))
            return True

    def wait_fresh(self, timeout: float = 5.0) -> bool:
        """Wait for one new snapshot of every endpoint (a read of the state as it is now)."""
        since = time.monotonic()
        return self.wait_until(lambda _v: self.fresh(since), timeout)

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(self.timeout + 2.0)
        self._threads.clear()

    def __enter__(self) -> Observer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
