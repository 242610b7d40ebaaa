"""Structured state-change log: one JSON line per event with a monotonic and a wall-clock timestamp.

Why both clocks: durations (detection, confirmation, failover) are measured on the monotonic clock, which
never jumps; the wall clock lines the events up with captures and the harness history.
"""

from __future__ import annotations

import json
import time
from collections import deque
from typing import IO, Any


class EventLog:
    """An in-memory ring of recent events, optionally mirrored to a file (line-buffered JSON)."""

    def __init__(self, size: int = 10000, path: str | None = None) -> None:
        self.ring: deque[dict[str, Any]] = deque(maxlen=size)
        self._fh: IO[str] | None = open(path, "a", buffering=1) if path else None  # noqa: SIM115

    def emit(self, event: str, **fields: Any) -> dict[str, Any]:
        rec = {"mono": round(time.monotonic(), 6), "wall": round(time.time(), 6), "event": event, **fields}
        self.ring.append(rec)
        if self._fh is not None:
            self._fh.write(json.dumps(rec, separators=(",", ":"), default=str) + "\n")
        return rec

    def recent(self, n: int = 200, **match: Any) -> list[dict[str, Any]]:
        """The last ``n`` events whose fields equal ``match``."""
        out = [r for r in self.ring if all(r.get(k) == v for k, v in match.items())]
        return out[-n:]

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
