"""Reads every site over and over while someone watches, and tells the live streams when a read is done.

Why only while someone watches: the console lives inside a UL whose first job is logins; reading both
sites' sessions every second (10,000 rows each at scale) costs nothing when no page is open, because then
nothing is read. A page load or an open event stream keeps it reading for ``linger`` seconds more.
Why one reader for all: every page and every stream shows the same read (one read per interval whatever
the number of viewers); each stream waits on :meth:`wait_newer` for the next one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import aiohttp

from stack.console.config import ConsoleConfig
from stack.console.model import page_view
from stack.console.reader import Part, SiteReader

log = logging.getLogger("stack.console")


class Collector:
    """The latest read of every site (:attr:`view`, numbered by :attr:`version`)."""

    def __init__(self, config: ConsoleConfig, linger: float = 30.0) -> None:
        self.config = config
        self.linger = linger
        self.version = 0
        self.view: dict[str, Any] = {}
        self.read_at = 0.0
        codes = [s.code for s in config.sites]
        self.parts: dict[str, dict[str, Part]] = {c: {} for c in codes}
        self.trouble: dict[str, dict[str, tuple[float, str]]] = {c: {} for c in codes}
        self.seen: dict[str, dict[str, float]] = {c: {} for c in codes}
        self.streams = 0  # open event streams: reading goes on while there is one
        self.closing = False  # the UL is shutting down: every stream ends now, not at its next read
        self._watched_until = 0.0
        self._wanted = asyncio.Event()
        self._done = asyncio.Condition()
        self._lock = asyncio.Lock()
        self._http: aiohttp.ClientSession | None = None
        self._readers: list[SiteReader] = []
        self._task: asyncio.Task[None] | None = None

    async def start(self, app: Any = None) -> None:
        self._http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=16))
        self._readers = [SiteReader(s, self._http, self.config.timeout) for s in self.config.sites]
        self._task = asyncio.create_task(self._loop())

    async def stop(self, app: Any = None) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._http is not None:
            await self._http.close()

    async def shutdown(self, app: Any = None) -> None:
        """End every stream (the server waits for open handlers before it stops)."""
        self.closing = True
        async with self._done:
            self._done.notify_all()

    def watch(self) -> None:
        """Someone looks: read for ``linger`` seconds more."""
        self._watched_until = time.monotonic() + self.linger
        self._wanted.set()

    def _watched(self) -> bool:
        return self.streams > 0 or time.monotonic() < self._watched_until

    async def fresh(self) -> dict[str, Any]:
        """The view, read now if the last read is older than two intervals (a first page load)."""
        self.watch()
        if time.time() - self.read_at > 2 * self.config.interval:
            await self.refresh()
        return self.view

    async def refresh(self) -> None:
        """One read of every site; concurrent callers share it."""
        version = self.version
        async with self._lock:
            if self.version != version:  # someone else read while we waited
                return
            assert self._readers, "Collector.start() has not run"
            reads = await asyncio.gather(*(r.read() for r in self._readers))
            now = time.time()
            for reader, parts in zip(self._readers, reads, strict=True):
                self._note(reader.site.code, parts, now)
            self.view = page_view(self.config, self.parts, self.trouble, self.seen, now)
            self.read_at = now
            async with self._done:
                self.version += 1
                self._done.notify_all()

    def _note(self, code: str, parts: dict[str, Part], now: float) -> None:
        """Keep the parts, when each was last seen, and since when each has not been (first failure)."""
        self.parts[code] = parts
        for name, part in parts.items():
            if part.ok:
                self.seen[code][name] = part.at
                if self.trouble[code].pop(name, None) is not None:
                    log.info("console: %s %s seen again", code, name)
            elif part.configured:
                since = self.trouble[code].get(name, (part.at, ""))[0]
                if name not in self.trouble[code]:
                    log.warning("console: cannot see %s %s: %s", code, name, part.error)
                self.trouble[code][name] = (since, part.error)

    async def wait_newer(self, version: int, timeout: float) -> int:
        """The version after ``version`` once a read has finished (or the current one after ``timeout``, or
        at once when closing)."""
        async with self._done:
            with contextlib.suppress(TimeoutError):
                ready = lambda: self.closing or self.version > version  # noqa: E731
                await asyncio.wait_for(self._done.wait_for(ready), timeout)
        return self.version

    async def _loop(self) -> None:
        while True:
            if not self._watched():
                self._wanted.clear()
                await self._wanted.wait()
            started = time.monotonic()
            try:
                await self.refresh()
            except Exception:  # a bug in one read must not end the live view for good
                log.exception("console: reading the sites failed")
            await asyncio.sleep(max(0.0, self.config.interval - (time.monotonic() - started)))
