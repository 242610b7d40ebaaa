"""A capture on a capture host: tcpdump on the host a switch's SPAN port is cabled to, over SSH.

Why: in a physical lab a site's switch is often far from the controller, and its SPAN port goes to a
capture host there (`capture_host` in the topology). The capture must still say what it missed, as a local
one does: this runs the same tcpdump command line there, reads the same stderr (harness.capture's
TcpdumpOutput: "listening on", the info answers of the drain, the exit counters with "packets dropped by
kernel") and judges it by the same rule (capture_result), after the pcap has come back over SFTP into the
run's raw capture directory, where the redaction and publishing of pcaps find it.

How, over one SSH connection (paramiko, host keys strictly checked, as HostDriver does everything):
- start: one exec channel runs ``echo $$; exec tcpdump ... -w WORKDIR/hil-capture-NAME-TAG.pcap FILTER``
  through the login shell: the first stdout line is tcpdump's own PID, its stderr streams back; it returns
  once tcpdump says it is capturing, else raises naming the host, the interface and what failed;
- stop: ``kill -USR1 PID`` until the ring has drained, then ``kill -INT PID`` (``-TERM``, ``-KILL`` if it
  does not end), always by that PID, never by name; the exit status and counters come on the channel;
- fetch: SFTP get into ``<raw>/<name>.pcap`` (mode 0600), compared in size with the remote file, which is
  then removed. A capture whose pcap did not come back whole is not ``complete``.
- bound: ``-G SECONDS -W 1`` ends a tcpdump that a dead controller never stopped (it exits at the first
  packet after ``max_seconds``), so a crash cannot fill the host's disk.
"""

from __future__ import annotations

import logging
import os
import secrets
import shlex
import threading
import time
from pathlib import Path
from typing import Any

from harness.capture import (
    DEFAULT_BUFFER_KIB,
    DEFAULT_SNAPLEN,
    CaptureError,
    CaptureResult,
    TcpdumpOutput,
    capture_result,
)

__all__ = ["RemoteCapture"]

log = logging.getLogger("hil.capture")

MAX_SECONDS = 6 * 3600  # a run's captures last minutes; this only bounds an orphan


class RemoteCapture:
    """One tcpdump on a capture host, writing there and fetched to ``<out_dir>/<name>.pcap`` on stop."""

    def __init__(
        self,
        name: str,
        iface: str,
        out_dir: str | os.PathLike[str],
        filter: str,  # shadows the builtin: the name Capture uses
        *,
        host: str,
        ssh: Any,  # harness.drivers.host.HostDriver of `host` (or anything with .client and .run)
        workdir: str = "/tmp",
        where: str = "",  # the management interface, as errors name it ("ssh 10.40.0.36:22")
        snaplen: int = DEFAULT_SNAPLEN,
        buffer_kib: int = DEFAULT_BUFFER_KIB,
        drain: float = 1.2,
        tcpdump: str = "tcpdump",
        start_timeout: float = 10.0,
        max_seconds: int = MAX_SECONDS,
    ) -> None:
        self.name, self.iface, self.filter, self.host, self.ssh = name, iface, filter, host, ssh
        self.out_dir = Path(out_dir)
        self.pcap_path = self.out_dir / f"{name}.pcap"
        self.remote_path = f"{workdir.rstrip('/') or ''}/hil-capture-{name}-{secrets.token_hex(4)}.pcap"
        self.where = where or f"ssh {host}"
        self.snaplen, self.buffer_kib, self.drain = snaplen, buffer_kib, drain
        self.tcpdump, self.start_timeout, self.max_seconds = tcpdump, start_timeout, max_seconds
        self._chan: Any = None
        self._pid: int | None = None
        self._pid_seen = threading.Event()
        self._out = TcpdumpOutput()
        self._readers: list[threading.Thread] = []
        self._result: CaptureResult | None = None

    def argv(self) -> list[str]:
        """tcpdump's command line on the capture host (the same choices as a local Capture)."""
        cmd = [self.tcpdump, "-n", "-i", self.iface, "-s", str(self.snaplen), "-B", str(self.buffer_kib)]
        cmd += ["-Z", "root", "-G", str(self.max_seconds), "-W", "1", "-w", self.remote_path]
        return [*cmd, self.filter] if self.filter else cmd

    def command(self) -> str:
        """What the login shell runs: its PID first (tcpdump's, after exec), then tcpdump."""
        return f"echo $$; exec {shlex.join(self.argv())}"

    def _fail(self, what: str) -> CaptureError:
        return CaptureError(f"{self.host}: {self.where}: capture on {self.iface}: {what}")

    @property
    def running(self) -> bool:
        return self._chan is not None and self._result is None

    @property
    def pid(self) -> int | None:
        """tcpdump's PID on the capture host."""
        return self._pid

    def start(self) -> RemoteCapture:
        """Start tcpdump on the capture host; return once it is capturing."""
        if self._chan is not None:
            raise CaptureError(f"capture {self.name} was already started")
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.pcap_path.unlink(missing_ok=True)  # a stale file from an earlier run must not pass for this one
        try:
            self._chan = self.ssh.client.get_transport().open_session()
            self._chan.exec_command(self.command())
        except Exception as e:  # noqa: BLE001 - paramiko and socket errors alike: one line, then give up
            raise self._fail(f"cannot start tcpdump: {_why(e).removeprefix(f'{self.host}: ')}") from None
        for target in (self._read_stdout, self._read_stderr):
            t = threading.Thread(target=target, name=f"capture-{self.name}", daemon=True)
            t.start()
            self._readers.append(t)
        deadline = time.monotonic() + self.start_timeout
        while not (self._out.listening.is_set() and self._pid_seen.is_set()):
            if self._chan.exit_status_ready() or time.monotonic() > deadline:
                for t in self._readers:
                    t.join(1.0)
                ended = self._chan.exit_status_ready()
                why = f"exited with {self._chan.recv_exit_status()}" if ended else "not capturing in time"
                self._abort()
                raise self._fail(f"tcpdump {why}: {self._out.text().strip()[-300:]}")
            self._out.listening.wait(0.05)
        return self

    def _read_stdout(self) -> None:
        buf = b""
        try:
            while b"\n" not in buf and (chunk := self._chan.recv(1024)):
                buf += chunk
            first = buf.split(b"\n", 1)[0].strip()
            if first.isdigit():
                self._pid = int(first)
        finally:
            self._pid_seen.set()
        while self._chan.recv(4096):  # whatever else tcpdump prints: nothing with -w
            pass

    def _read_stderr(self) -> None:
        pending = b""
        while chunk := self._chan.recv_stderr(4096):
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                self._out.feed(line.decode("utf-8", "replace").rstrip("\r"))
        if pending:
            self._out.feed(pending.decode("utf-8", "replace"))

    def _kill(self, sig: str) -> bool:
        """Signal tcpdump by its own PID on the capture host; False if it was not there to signal."""
        if self._pid is None:
            return False
        try:
            res = self.ssh.run(f"kill -{sig} {self._pid}", timeout=10.0, action="capture_signal")
            return bool(res.exit_code == 0)
        except Exception as e:  # noqa: BLE001 - a lost connection: the caller decides from the channel
            log.warning("%s: kill -%s %s: %s", self.host, sig, self._pid, _why(e))
            return False

    def _abort(self) -> None:
        self._kill("KILL")
        self._chan.close()
        self._remove_remote()

    def stop(self, timeout: float = 10.0) -> CaptureResult:
        """Drain, stop tcpdump by its PID, fetch its pcap over SFTP and judge its counters."""
        if self._result is not None:
            return self._result
        if self._chan is None:
            raise CaptureError(f"capture {self.name} was never started")
        chan, clean = self._chan, True
        if self.drain > 0 and not chan.exit_status_ready():
            self._out.drain(lambda: self._kill("USR1"), lambda: not chan.exit_status_ready(), self.drain)
        for sig in ("INT", "TERM"):  # tcpdump prints its counters on either
            if chan.exit_status_ready():
                break
            self._kill(sig)
            if chan.status_event.wait(timeout):
                break
            clean = False
        if not chan.exit_status_ready():
            clean = False
            self._kill("KILL")
            chan.status_event.wait(timeout)
        returncode = chan.recv_exit_status() if chan.exit_status_ready() else None
        for t in self._readers:
            t.join(5.0)
        chan.close()
        fetched = self._fetch()
        if fetched:
            self._out.feed(fetched)  # why the pcap is missing, for the report
        self._result = capture_result(self.name, self.pcap_path, self._out.lines, returncode, clean)
        return self._result

    def _fetch(self) -> str:
        """The remote pcap into ``pcap_path`` (0600), whole, then removed there; '' or what failed."""
        tmp = self.pcap_path.with_name(f".{self.pcap_path.name}.part")
        try:
            sftp = self.ssh.client.open_sftp()
        except Exception as e:  # noqa: BLE001
            return f"sftp {self.host}: {_why(e)}"
        try:
            size = sftp.stat(self.remote_path).st_size
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as f:
                sftp.getfo(self.remote_path, f)
            if tmp.stat().st_size != size:
                return f"sftp {self.host}: {self.remote_path}: {tmp.stat().st_size} of {size} bytes fetched"
            os.replace(tmp, self.pcap_path)
            return ""
        except Exception as e:  # noqa: BLE001
            return f"sftp {self.host}: get {self.remote_path}: {_why(e)}"
        finally:
            tmp.unlink(missing_ok=True)
            try:
                sftp.remove(self.remote_path)
            except OSError:
                pass
            sftp.close()

    def _remove_remote(self) -> None:
        try:
            sftp = self.ssh.client.open_sftp()
            try:
                sftp.remove(self.remote_path)
            finally:
                sftp.close()
        except Exception:  # noqa: BLE001 - nothing written there yet, or the host is gone
            pass

    def __enter__(self) -> RemoteCapture:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self._chan is not None:
            self.stop()

    def __repr__(self) -> str:
        return f"RemoteCapture({self.name!r}, {self.host}:{self.iface}, {self.filter!r})"


def _why(e: BaseException) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
