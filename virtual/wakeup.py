"""Wake a background thread out of its select()/poll() loop, and tell it to stop.

Why: the emulated consoles, SSH servers and service supervisors each serve from a daemon thread blocked in
select()/poll(). Closing them from another thread must end that wait at once, not at the next timeout,
and must run once however often close() is called. A self-pipe does the waking: its read end sits in the
loop's descriptor set, and a byte written to it makes the set ready.
"""

from __future__ import annotations

import contextlib
import os
import threading


class Waker:
    """A self-pipe plus a stop flag for one background loop. Thread-safe.

    The loop puts the waker itself (it has ``fileno()``) in its select()/poll() set and, if it keeps
    running after a wake, calls ``drain()``. Other threads call ``wake()``, or ``stop(thread)`` to set the
    stop flag, wake the loop and join its thread. ``close()`` releases the pipe; it is idempotent, and a
    wake after it does nothing (never a write to a reused descriptor number).
    """

    def __init__(self) -> None:
        self._r, self._w = os.pipe()
        os.set_blocking(self._r, False)  # drain() must not block once the pipe is empty
        os.set_blocking(self._w, False)  # a full pipe already wakes the loop: drop the byte, do not block
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._closed = False

    def fileno(self) -> int:
        """The read end, for select()/poll(); readable once woken."""
        return self._r

    @property
    def stopped(self) -> bool:
        """True once ``stop()`` was called: the loop should end."""
        return self._stopped.is_set()

    def wake(self) -> None:
        """Make the read end readable, so the loop's select()/poll() returns now."""
        with self._lock:
            if not self._closed:
                with contextlib.suppress(OSError):
                    os.write(self._w, b"x")

    def drain(self) -> None:
        """Consume pending wakes, so the next select()/poll() waits again."""
        with self._lock:
            if not self._closed:
                with contextlib.suppress(OSError):
                    os.read(self._r, 4096)

    def stop(self, thread: threading.Thread | None = None, timeout: float = 2.0) -> bool:
        """Set the stop flag, wake the loop and join ``thread`` (at most ``timeout`` seconds).

        Returns False, doing nothing, when the flag was already set: the caller's shutdown runs once.
        """
        with self._lock:
            if self._stopped.is_set():
                return False
            self._stopped.set()
        self.wake()
        if thread is not None:
            thread.join(timeout=timeout)
        return True

    def close(self) -> None:
        """Close both ends of the pipe. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for fd in (self._r, self._w):
                with contextlib.suppress(OSError):
                    os.close(fd)
