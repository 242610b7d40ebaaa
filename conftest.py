"""What this repository's suites (tests/, scenarios/) share: options and fixtures of the house, not the lab's.

The lab's options, markers and fixtures (``--topology``, ``scenario``, ``fault`` ...) belong to the hil
plugin, `fixtures/plugin.py`, which pytest loads once through its ``pytest11`` entry point (pyproject.toml)
in any project that installs this package. It is deliberately NOT named here (no ``pytest_plugins =
["fixtures.plugin"]``): that would register the same module a second time and pytest would refuse its
options. What lives here is what only this repository's own suites need:

- ``--busy-cores N``: a busy loop on N cores for the whole session, the load the suite must pass under
  (issue 10: no test may lean on a fixed short sleep);
- ``eventually``: wait for a condition by polling it with a generous deadline, instead of sleeping;
- ``pytester``, for the tests of the plugin itself.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable

import pytest

pytest_plugins = ["pytester"]

# A generous deadline: a condition that holds on an idle machine in milliseconds may take seconds beside
# a busy loop on every core; a test that waits longer than this has found a real problem.
EVENTUALLY_S = 30.0

_busy: list[subprocess.Popen[bytes]] = []


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("house", "this repository's suites")
    group.addoption(
        "--busy-cores",
        type=int,
        default=0,
        metavar="N",
        help="run a busy loop on N cores for the whole session (the suite must pass under it)",
    )


def pytest_configure(config: pytest.Config) -> None:
    n = config.getoption("--busy-cores", default=0) or 0
    if n > 0:
        loop = "while True: pass"
        _busy.extend(subprocess.Popen([sys.executable, "-c", loop]) for _ in range(n))


def pytest_unconfigure(config: pytest.Config) -> None:
    while _busy:  # only the loops this session started, by their own PIDs
        p = _busy.pop()
        p.kill()
        p.wait()


def pytest_report_header(config: pytest.Config) -> str | None:
    if _busy:
        return f"house: busy loops on {len(_busy)} cores (pids {', '.join(str(p.pid) for p in _busy)})"
    return None


def wait_until(condition: Callable[[], object], timeout: float = EVENTUALLY_S, every: float = 0.05) -> bool:
    """Poll ``condition`` until it is true (True) or ``timeout`` passes (False, after one last look)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            return bool(condition())
        time.sleep(every)
    return True


@pytest.fixture
def eventually() -> Callable[..., bool]:
    """``assert eventually(lambda: cond())``: wait for a condition by polling with a generous deadline."""
    return wait_until
