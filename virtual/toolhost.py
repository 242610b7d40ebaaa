"""The twin's lab hosts run the harness's host programs over SSH, as a physical lab's hosts would.

Why: a security scenario's attacker runs AS an agents host (harness/tools: the flood, the probes). On the
virtual lab the harness enters the host's namespace itself; on a physical lab (and the twin driven as one,
`--as-physical`) it starts the program over SSH on the host, where this project is installed, and stops it
by PID (harness/faults/flood.py). The twin's hosts share the controller's filesystem, so the program is
there already; this endpoint runs it inside the host's namespace.

What a host's SSH session (``ToolHost``) does, as a Linux host would: ``python3 -m harness.tools.X ARGS``
(X one of ``TOOLS``) streamed (stdin from the client up to its EOF, stdout as it comes, stderr at the end);
``kill [-SIG] PID`` and ``ps -o args= -p PID`` of the programs it started (never another process); the
host's own CLI (``fallback``) for everything else.
"""

from __future__ import annotations

import contextlib
import shlex
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from typing import Any

from harness.topology import REPO_ROOT

__all__ = ["TOOLS", "OwnProcesses", "ToolHost", "tool_host_factory"]

TOOLS = ("flood", "probe")
PROGRAM = ["python3", "-m"]  # what the harness sends: harness/faults/flood.py TOOL_COMMAND


class OwnProcesses:
    """A host session that signals only the programs it started (by PID, in ``_started``, shared by the
    host's sessions: a stop comes on another connection) and leaves the rest to the host's own CLI
    (``fallback``). The tool host and the capture host (virtual/capturehost.py) are both one."""

    fallback: Any
    _started: dict[int, subprocess.Popen[bytes]]

    def _kill(self, sig: str, pid: int) -> tuple[int, str, str]:
        try:
            signum = signal.Signals[f"SIG{sig.upper().removeprefix('SIG')}"]
        except KeyError:
            return 1, "", f"kill: invalid signal specification: {sig}\n"
        proc = self._started.get(pid)
        if proc is None or proc.poll() is not None:  # not one it started: never another process
            return 1, "", f"kill: ({pid}) - No such process\n"
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signum)
        return 0, "", ""

    def __getattr__(self, name: str) -> Any:  # the interactive shell and the rest: the host's own CLI
        return getattr(self.fallback, name)


class ToolHost(OwnProcesses):
    """A lab host's exec endpoint for the harness's host programs (see the module docstring)."""

    def __init__(
        self, fallback: Any, netns_argv: list[str], started: dict[int, subprocess.Popen[bytes]]
    ) -> None:
        self.fallback, self.netns_argv, self._started = fallback, list(netns_argv), started

    def _tool(self, command: str) -> list[str] | None:
        """The module and arguments of a host-program command, None for anything else."""
        try:
            words = shlex.split(command)
        except ValueError:
            return None
        n = len(PROGRAM)
        if words[:n] != PROGRAM or len(words) <= n or words[n] not in {f"harness.tools.{t}" for t in TOOLS}:
            return None
        return words[n:]

    def streams(self, command: str) -> bool:
        return self._tool(command) is not None

    def stream(self, command: str, chan: Any) -> int:
        """Run the program to its end inside the host's namespace; its exit status."""
        args = self._tool(command) or []
        argv = [*self.netns_argv, sys.executable, "-m", *args]
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, cwd=REPO_ROOT)  # fmt: skip
        except OSError as e:
            chan.sendall_stderr(f"sh: 1: python3: {e.strerror}\n".encode())
            return 127
        self._started[proc.pid] = proc
        feeder = threading.Thread(target=_feed, args=(chan, proc), daemon=True)
        feeder.start()
        try:
            assert proc.stdout is not None and proc.stderr is not None
            for line in proc.stdout:
                chan.sendall(line)
            err = proc.stderr.read()
            if err:
                chan.sendall_stderr(err[-4096:])
            return proc.wait()
        except (OSError, EOFError):  # the client went away: nobody will read or stop it
            proc.kill()
            return proc.wait()
        finally:
            self._started.pop(proc.pid, None)

    def run(self, command: str) -> tuple[int, str, str]:
        words = command.split()
        if words[:1] == ["kill"] and 2 <= len(words) <= 3 and words[-1].isdigit():
            return self._kill(words[1][1:] if len(words) == 3 else "TERM", int(words[-1]))
        if words[:4] == ["ps", "-o", "args=", "-p"] and len(words) == 5 and words[4].isdigit():
            proc = self._started.get(int(words[4]))
            if proc is None or proc.poll() is not None:
                return 1, "", ""
            words = list(proc.args)[len(self.netns_argv) + 1 :]  # type: ignore[arg-type]
            return 0, shlex.join(["python3", *map(str, words)]) + "\n", ""
        return self.fallback.run(command)  # type: ignore[no-any-return]


def _feed(chan: Any, proc: subprocess.Popen[bytes]) -> None:
    """The client's stdin into the program's, up to the client's EOF (a probe's JSON; a flood's nothing)."""
    assert proc.stdin is not None
    with contextlib.suppress(OSError, EOFError):
        while data := chan.recv(65536):
            proc.stdin.write(data)
            proc.stdin.flush()
    with contextlib.suppress(OSError):
        proc.stdin.close()


def tool_host_factory(fallback: Callable[[str], Any], netns_argv: list[str]) -> Callable[[str], ToolHost]:
    """A session_factory for a lab host's SSHServer: its host programs, then its own CLI."""
    started: dict[int, subprocess.Popen[bytes]] = {}  # shared by the host's sessions: a stop comes on another

    def factory(username: str = "root") -> ToolHost:
        return ToolHost(fallback(username), netns_argv, started)

    return factory
