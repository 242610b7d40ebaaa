"""The daemons' shared entry points (stack/common/daemon.py: secrets, signals, the options the site services
share) and the lab's loop waker (virtual/wakeup.py)."""

from __future__ import annotations

import asyncio
import os
import select
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest

from stack.common.daemon import secret_from_env, until_signalled
from stack.cti.__main__ import parse as cti_args
from stack.login.__main__ import parse as ul_args
from virtual.wakeup import Waker

REPO = Path(__file__).resolve().parents[1]
VAR = "HIL_TEST_DAEMON_SECRET"


def until(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "condition not met in time"
        time.sleep(0.01)


def thread_state(tid: int) -> str:
    """The scheduler state of a thread of this process (R running, S sleeping ...)."""
    stat = Path(f"/proc/self/task/{tid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0]


# -- secret_from_env ---------------------------------------------------------------------------------------


def test_secret_from_env_returns_the_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(VAR, "s3cret")
    assert secret_from_env(VAR) == "s3cret"


@pytest.mark.parametrize("value", [None, ""])
def test_secret_from_env_unset_or_empty_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], value: str | None
) -> None:
    if value is None:
        monkeypatch.delenv(VAR, raising=False)
    else:
        monkeypatch.setenv(VAR, value)
    with pytest.raises(SystemExit) as exc:
        secret_from_env(VAR)
    assert exc.value.code == 2
    out, err = capsys.readouterr()
    assert (out, err) == ("", f"error: environment variable {VAR} is not set\n")


def test_secret_from_env_own_status_and_message(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv(VAR, raising=False)
    with pytest.raises(SystemExit) as exc:
        secret_from_env(VAR, status=1, message="SIP password: environment variable {var} is not set or empty")
    assert exc.value.code == 1
    assert capsys.readouterr().err == f"SIP password: environment variable {VAR} is not set or empty\n"


def test_daemon_without_its_secret_exits_2_before_serving() -> None:
    env = {k: v for k, v in os.environ.items() if k != VAR}
    argv = [sys.executable, "-m", "stack.cti", "--site", "sha", "--bind", "127.0.0.1:0", "--secret-env", VAR]
    proc = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr == f"error: environment variable {VAR} is not set\n"


# -- the options the site services share -------------------------------------------------------------

SHARED = ["--site", "sha", "--bind", "198.18.1.20:7000", "--also-listen", "198.19.0.5", "--secret-env", VAR]
UL_OWN = [
    "--db",
    "x.sqlite",
    "--topology",
    "t.yaml",
    "--cti",
    "198.18.1.20:7000",
    "--pbx",
    "198.18.1.10:5060",
]


@pytest.mark.parametrize(("parse", "own"), [(cti_args, []), (ul_args, UL_OWN)], ids=["cti", "ul"])
def test_site_services_share_their_first_options(parse: Callable[..., Any], own: list[str]) -> None:
    args = parse(SHARED + own)
    assert (args.site, args.bind, args.also_listen) == ("sha", ("198.18.1.20", 7000), ["198.19.0.5"])
    assert (args.secret_env, args.log_level) == (VAR, "INFO")
    assert parse([*SHARED, *own, "--log-level", "WARNING"]).log_level == "WARNING"


@pytest.mark.parametrize(("parse", "own"), [(cti_args, []), (ul_args, UL_OWN)], ids=["cti", "ul"])
def test_a_bad_bind_is_a_usage_error_naming_the_option(
    parse: Callable[..., Any], own: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        parse(["--site", "sha", "--bind", "198.18.1.20:99999", "--secret-env", VAR, *own])
    assert exc.value.code == 2
    assert "argument --bind: bad port in '198.18.1.20:99999'" in capsys.readouterr().err


# -- until_signalled ---------------------------------------------------------------------------------------

_SERVE = textwrap.dedent(
    """
    import sys
    from stack.common.daemon import until_signalled
    from stack.common.loop import run_main

    async def main() -> int:
        await until_signalled("READY test")
        print("cleanup", flush=True)
        return 0

    sys.exit(run_main(main()))
    """
)


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_until_signalled_returns_on_signal(loop: str, sig: signal.Signals) -> None:
    if loop == "uvloop":
        pytest.importorskip("uvloop")
    env = {**os.environ, "HIL_EVENT_LOOP": loop, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-c", _SERVE],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "READY test\n"
        waiting = psutil.Process(proc.pid)
        until(lambda: waiting.status() == psutil.STATUS_SLEEPING)  # blocked in its event loop
        assert proc.poll() is None  # serving until signalled
        proc.send_signal(sig)  # right after READY: the handler is already in place
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert out == "cleanup\n"


def test_until_signalled_without_ready_prints_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    # Within this process: raise the signal at ourselves once the handlers are in.
    async def main() -> None:
        loop = asyncio.get_running_loop()
        loop.call_later(0.05, os.kill, os.getpid(), signal.SIGTERM)
        try:
            await asyncio.wait_for(until_signalled(), timeout=5)
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)

    asyncio.run(main())
    assert capsys.readouterr().out == ""


# -- Waker ------------------------------------------------------------------------------------------------


def test_waker_wakes_a_blocked_select_at_once() -> None:
    waker = Waker()
    result: dict[str, object] = {}

    tid: list[int] = []

    def loop() -> None:
        tid.append(threading.get_native_id())
        t0 = time.monotonic()
        ready, _, _ = select.select([waker], [], [], 10.0)
        result["ready"], result["waited"] = ready, time.monotonic() - t0

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    until(lambda: bool(tid) and thread_state(tid[0]) == "S")  # blocked (in the select: nothing else blocks)
    t0 = time.monotonic()
    waker.wake()
    thread.join(timeout=5)
    assert not thread.is_alive()
    assert result["ready"] == [waker]
    assert time.monotonic() - t0 < 1.0
    waker.close()


def test_waker_drain_rearms() -> None:
    waker = Waker()
    try:
        for _ in range(3):
            waker.wake()
        assert select.select([waker], [], [], 0)[0] == [waker]
        waker.drain()
        assert select.select([waker], [], [], 0)[0] == []
        waker.drain()  # nothing pending: does not block
    finally:
        waker.close()


def test_waker_stop_runs_once_and_joins() -> None:
    waker = Waker()
    rounds: list[int] = []

    def loop() -> None:
        while not waker.stopped:
            select.select([waker], [], [])
            rounds.append(1)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    assert not waker.stopped
    assert waker.stop(thread) is True
    assert not thread.is_alive()
    assert waker.stopped
    assert waker.stop(thread) is False
    assert rounds == [1]
    waker.close()


def test_waker_close_is_idempotent() -> None:
    waker = Waker()
    fd = waker.fileno()
    waker.close()
    with pytest.raises(OSError):
        os.fstat(fd)
    waker.close()
    waker.wake()  # after close: nothing happens, nothing raised
    waker.drain()


def test_waker_wake_never_blocks_on_a_full_pipe() -> None:
    waker = Waker()
    try:
        done = threading.Event()

        def flood() -> None:
            for _ in range(200_000):  # far more than a pipe holds
                waker.wake()
            done.set()

        threading.Thread(target=flood, daemon=True).start()
        assert done.wait(30)
    finally:
        waker.close()
