"""The event loop the stack's daemons run on: uvloop when it is installed, asyncio's own otherwise.

Why: at 10,000 agents the CTIs and the swarms spend most of their CPU in the event loop's socket and
callback machinery (10,000 heartbeats a second); uvloop (libuv, Cython) does the same work for a fraction
of it (bench/bench_failover.py, docs/performance.md). ``HIL_EVENT_LOOP=asyncio`` picks the standard loop,
for comparison or where uvloop misbehaves.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def name() -> str:
    """``uvloop`` or ``asyncio``: the loop :func:`run_main` will use."""
    if os.environ.get("HIL_EVENT_LOOP", "").lower() == "asyncio":
        return "asyncio"
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio"
    return "uvloop"


def run_main(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(main)`` on the chosen loop."""
    if name() == "uvloop":
        import uvloop

        return uvloop.run(main)
    return asyncio.run(main)
