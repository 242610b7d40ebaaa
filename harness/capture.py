"""Packet capture at a lab capture point with tcpdump, so that verdicts rest on what crossed the wire.

Why tcpdump and not scapy's sniffer: scapy loses packets above a few thousand per second, and a failover of
1,000+ agents sends far more. tcpdump writes a pcap at kernel speed and tells on exit how many packets it
wrote and how many the kernel dropped; ``Capture.stop()`` reads those counters, so a capture that lost
anything says so (``complete`` False) and a checker can answer ``unknown`` rather than ``valid``.

A capture point is an interface (or ``any``) either on the controller itself (a physical lab: the port a
switch mirrors to with SPAN; tcpdump's default promiscuous mode is what makes mirrored frames visible) or
inside a network namespace of the virtual lab, given as a netns path (entered with ``nsenter``) or as a
ready argv prefix::

    cap = Capture("sha-pbx1", "eth0", "reports/pcap", netns_path="/run/netns/sha-pbx1", cti_ports=[7010],
                  tracker=injector)  # optional: journaled, so `hil lab restore` stops it after a crash
    cap.start()                      # returns once tcpdump is capturing
    ...                              # the scenario
    result = cap.stop()              # result.complete, result.packets_dropped_by_kernel, ...
    events = harness.decode.decode_pcap(result.pcap_path, cti_ports=[7010]).events

Choices, each for a measured reason (``bench/bench_capture.py``, tests/test_capture.py):
- libpcap's default TPACKET_V3 ring with ``-B`` 64 MiB, not ``--immediate-mode``. Immediate mode switches
  libpcap to TPACKET_V2, whose ring has one slot per packet sized for the snap length: with ``-i any`` and
  the default 256 KiB snap length that is 256 slots, and a burst of 600 SIP packets from one Python loop
  lost 344 of them (20,000: 6,782). TPACKET_V3 packs packets into blocks and took the same bursts with no
  drop. Its cost: a block reaches tcpdump when it is full or when its timeout (1,000 ms, fixed by tcpdump)
  expires, so the last packets can sit in the kernel when ``stop()`` is called; SIGINT then would count
  them as received but never write them (300 of 300 in a test). So ``stop()`` first drains: it asks
  tcpdump for its counters (SIGUSR1, tcpdump's info request on Linux) until it has captured as many packets
  as the kernel had received at the first ask, for at most ``drain`` seconds (1.2: one block timeout and
  margin). On a quiet interface that is at once. Measured with tcpreplay across a veth: 50,000 and 200,000
  packets per second for 3-4 s, every packet captured, none dropped.
- no ``-U``: packet-buffered output would cost one write() per packet; the file is flushed when tcpdump
  exits, which ``stop()`` waits for. ``packet_buffered=True`` turns it on for a live reader.
- ``-Z root`` by default: tcpdump otherwise drops to the ``tcpdump`` user, which does not exist inside the
  lab's user namespace (and would own the pcap); tcpdump ignores ``-Z`` when not started as root.

``complete`` is False when tcpdump reports any kernel or interface drop, did not stop cleanly, or gave no
counters. ``packets_received_by_filter`` may exceed ``packets_captured`` by packets that arrived after
``stop()`` was called (they were still in the ring when tcpdump exited): that is not evidence lost.
"""

from __future__ import annotations

import atexit
import os
import re
import signal
import subprocess
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

__all__ = [
    "Capture",
    "CaptureError",
    "CaptureResult",
    "TcpdumpOutput",
    "capture_result",
    "netns_prefix",
    "sip_cti_filter",
]

DEFAULT_SNAPLEN = 262144
DEFAULT_BUFFER_KIB = 65536
SIP_PORT = 5060

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,100}$")
_IFACE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:@-]{0,14}$")  # Linux IFNAMSIZ, no option look-alikes
_COUNTER = re.compile(
    r"^(\d+) packets? (captured|received by filter|dropped by kernel|dropped by interface)$"
)

_INFO = re.compile(r"(\d+) packets? captured, (\d+) packets? received by filter")

_running: weakref.WeakSet[Capture] = weakref.WeakSet()


class ProcessTracker(Protocol):
    """Who keeps a record of the processes the controller starts (harness.faults.Injector), so that a
    controller killed with SIGKILL does not leave a tcpdump running: `hil lab restore` stops it."""

    def track_process(self, kind: str, pid: int, what: str) -> str: ...

    def release(self, id: str) -> None: ...


class CaptureError(RuntimeError):
    """tcpdump could not be started or did not start capturing; carries its own message."""


@dataclass(frozen=True)
class CaptureResult:
    """What one capture wrote and what tcpdump says it missed. Counters are None if tcpdump never said."""

    name: str
    pcap_path: Path
    packets_captured: int | None
    packets_received_by_filter: int | None
    packets_dropped_by_kernel: int | None
    packets_dropped_by_interface: int | None
    complete: bool  # tcpdump ended cleanly, reported its counters, and dropped nothing
    returncode: int | None
    stderr: str  # tcpdump's own messages, for the report

    def to_dict(self) -> dict[str, object]:
        """Plain dict for the history and reports."""
        return {
            "name": self.name,
            "pcap_path": str(self.pcap_path),
            "packets_captured": self.packets_captured,
            "packets_received_by_filter": self.packets_received_by_filter,
            "packets_dropped_by_kernel": self.packets_dropped_by_kernel,
            "packets_dropped_by_interface": self.packets_dropped_by_interface,
            "complete": self.complete,
            "returncode": self.returncode,
        }


def sip_cti_filter(cti_ports: Iterable[int] = (), sip_ports: Iterable[int] = (SIP_PORT,)) -> str:
    """BPF filter for SIP (UDP and TCP) and CTI (TCP) traffic: ``udp port 5060 or tcp port 5060 or ...``."""
    parts: list[str] = []
    for port in sip_ports:
        parts += [f"udp port {_port(port)}", f"tcp port {_port(port)}"]
    parts += [f"tcp port {_port(port)}" for port in cti_ports]
    if not parts:
        raise ValueError("a SIP/CTI filter needs at least one port")
    return " or ".join(dict.fromkeys(parts))


def _port(port: int) -> int:
    if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
        raise ValueError(f"not a TCP/UDP port: {port!r}")
    return port


class TcpdumpOutput:
    """tcpdump's stderr, line by line, wherever tcpdump runs (here, or on a capture host over SSH): whether
    it is capturing yet, its answers to info requests (SIGUSR1), and at the end its exit counters."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.listening = threading.Event()
        self._info = threading.Condition()
        self._infos: list[tuple[int, int]] = []  # (captured, received) of each answer to SIGUSR1

    def feed(self, line: str) -> None:
        self.lines.append(line)
        if "listening on" in line:
            self.listening.set()
        m = _INFO.search(line)
        if m:
            with self._info:
                self._infos.append((int(m.group(1)), int(m.group(2))))
                self._info.notify_all()

    def text(self) -> str:
        return "\n".join(self.lines)

    def ask(self, request: Callable[[], bool], timeout: float) -> tuple[int, int] | None:
        """Send an info request (``request()`` False: tcpdump is gone) and wait up to ``timeout`` for
        tcpdump's (captured, received by filter)."""
        with self._info:
            seen = len(self._infos)
            if not request():
                return None
            if not self._info.wait_for(lambda: len(self._infos) > seen, timeout):
                return None
            return self._infos[-1]

    def drain(self, request: Callable[[], bool], alive: Callable[[], bool], seconds: float) -> None:
        """Wait until tcpdump has taken every packet the kernel had received for it at the first answer
        (the last ring block is handed over when full or after its timeout), for at most ``seconds``."""
        deadline = time.monotonic() + seconds
        target: int | None = None
        while alive() and (left := deadline - time.monotonic()) > 0:
            info = self.ask(request, min(left, 0.5))
            if info is None:
                continue
            captured, received = info
            target = received if target is None else target
            if captured >= target:
                return
            time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))  # poll: the block timeout is 1 s


def capture_result(
    name: str, pcap_path: Path, lines: Sequence[str], returncode: int | None, clean: bool
) -> CaptureResult:
    """What tcpdump's exit counters say: ``complete`` only if it ended cleanly, reported its counters,
    dropped nothing (kernel or interface) and the pcap is where the controller reads it."""
    counters: dict[str, int] = {}
    for line in lines:
        m = _COUNTER.match(line.strip())
        if m:
            counters[m.group(2)] = int(m.group(1))
    captured = counters.get("captured")
    received = counters.get("received by filter")
    kernel = counters.get("dropped by kernel")
    iface = counters.get("dropped by interface")
    if iface is None and kernel is not None:
        iface = 0  # tcpdump prints this line only when the count is not zero
    complete = (
        clean
        and returncode == 0
        and None not in (captured, received, kernel)
        and kernel == 0
        and iface == 0
        and pcap_path.exists()
    )
    return CaptureResult(
        name=name,
        pcap_path=pcap_path,
        packets_captured=captured,
        packets_received_by_filter=received,
        packets_dropped_by_kernel=kernel,
        packets_dropped_by_interface=iface,
        complete=complete,
        returncode=returncode,
        stderr="\n".join(lines),
    )


def netns_prefix(netns: str | os.PathLike[str] | Sequence[str] | None) -> list[str]:
    """Argv prefix that runs a command in a network namespace.

    A path (``/run/netns/x``, ``/proc/PID/ns/net``, ``/proc/PID/root/run/netns/x``) is entered with
    nsenter; a sequence is taken as a ready prefix (``["nsenter", "--net=...", "--"]`` or
    ``["ip", "netns", "exec", NAME]``).
    The prefix must exec the command, not fork it, so that signals reach tcpdump.
    """
    if netns is None:
        return []
    if isinstance(netns, (str, os.PathLike)):
        return ["nsenter", f"--net={os.fspath(netns)}", "--"]
    prefix = [str(a) for a in netns]
    if not prefix:
        raise ValueError("empty netns argv prefix")
    return prefix


class Capture:
    """One tcpdump writing ``<out_dir>/<name>.pcap`` at one capture point; ``stop()`` tells what it missed."""

    def __init__(
        self,
        name: str,
        iface: str,
        out_dir: str | os.PathLike[str],
        filter: str | None = None,  # shadows the builtin: the name for it
        netns_path: str | os.PathLike[str] | Sequence[str] | None = None,
        snaplen: int = DEFAULT_SNAPLEN,
        *,
        cti_ports: Iterable[int] = (),
        sip_ports: Iterable[int] = (SIP_PORT,),
        buffer_kib: int = DEFAULT_BUFFER_KIB,
        immediate: bool = False,
        drain: float = 1.2,
        packet_buffered: bool = False,
        user: str | None = "root",
        tcpdump: str = "tcpdump",
        start_timeout: float = 10.0,
        tracker: ProcessTracker | None = None,
    ) -> None:
        if not _NAME.match(name):
            raise ValueError(f"capture name must be a simple file name: {name!r}")
        if not _IFACE.match(iface):
            raise ValueError(f"not an interface name: {iface!r}")
        if snaplen <= 0 or buffer_kib <= 0:
            raise ValueError("snaplen and buffer_kib must be positive")
        self.name = name
        self.iface = iface
        self.out_dir = Path(out_dir)
        self.pcap_path = self.out_dir / f"{name}.pcap"
        self.filter = sip_cti_filter(cti_ports, sip_ports) if filter is None else filter
        self.prefix = netns_prefix(netns_path)
        self.snaplen = snaplen
        self.buffer_kib = buffer_kib
        self.immediate = immediate
        self.drain = 0.0 if immediate else drain
        self.packet_buffered = packet_buffered
        self.user = user
        self.tcpdump = tcpdump
        self.start_timeout = start_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None
        self._out = TcpdumpOutput()
        self._lines = self._out.lines  # tcpdump's stderr so far (tests read it)
        self._result: CaptureResult | None = None
        self.tracker = tracker
        self._track_id: str | None = None

    def argv(self) -> list[str]:
        """The full command line, for logs and for running it by hand."""
        cmd = [self.tcpdump, "-n", "-i", self.iface, "-s", str(self.snaplen), "-B", str(self.buffer_kib)]
        if self.immediate:
            cmd.append("--immediate-mode")
        if self.packet_buffered:
            cmd.append("-U")
        if self.user:
            cmd += ["-Z", self.user]
        cmd += ["-w", str(self.pcap_path)]
        if self.filter:
            cmd.append(self.filter)
        return self.prefix + cmd

    @property
    def running(self) -> bool:
        """True between a successful ``start()`` and ``stop()``."""
        return self._proc is not None and self._result is None

    @property
    def pid(self) -> int | None:
        """PID of tcpdump (or of the netns prefix, which execs it)."""
        return self._proc.pid if self._proc else None

    def start(self) -> Capture:
        """Start tcpdump and return once it is capturing (it printed "listening on"), so nothing is missed."""
        if self._proc is not None:
            raise CaptureError(f"capture {self.name} was already started")
        self.out_dir.mkdir(parents=True, exist_ok=True)
        try:
            self.pcap_path.unlink()  # a stale file from an earlier run must not pass for this one
        except FileNotFoundError:
            pass
        try:
            self._proc = subprocess.Popen(
                self.argv(),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                start_new_session=True,  # our signals only, not the terminal's Ctrl-C
            )
        except OSError as e:
            raise CaptureError(f"capture {self.name}: cannot run {self.argv()[0]}: {e}") from e
        self._reader = threading.Thread(target=self._read_stderr, name=f"capture-{self.name}", daemon=True)
        self._reader.start()
        _running.add(self)
        try:
            if self.tracker is not None:
                what = f"tcpdump {self.name} on {self.iface}"
                self._track_id = self.tracker.track_process("capture", self._proc.pid, what)
        except Exception as e:
            self._abort()
            raise CaptureError(f"capture {self.name}: could not be journaled, so not started: {e}") from e
        deadline = time.monotonic() + self.start_timeout
        while not self._out.listening.wait(0.05):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self._reader.join(1.0)
                rc = self._proc.poll()
                self._abort()
                why = f"exited with {rc}" if rc is not None else f"not capturing after {self.start_timeout}s"
                raise CaptureError(f"capture {self.name}: tcpdump {why}: {self._stderr().strip()}")
        return self

    def _abort(self) -> None:
        """tcpdump did not start capturing: make sure it is gone and forget it."""
        assert self._proc is not None
        if self._proc.poll() is None:
            self._signal(signal.SIGKILL)
            self._proc.wait()
            if self._reader is not None:
                self._reader.join(1.0)
        _running.discard(self)
        self._release()

    def _release(self) -> None:
        if self.tracker is not None and self._track_id is not None:
            self.tracker.release(self._track_id)
            self._track_id = None

    def _read_stderr(self) -> None:
        assert self._proc is not None and self._proc.stderr is not None
        for raw in self._proc.stderr:
            self._out.feed(raw.decode("utf-8", "replace").rstrip("\n"))

    def _stderr(self) -> str:
        return self._out.text()

    def _signal(self, sig: int) -> None:
        """Signal the process group we created for tcpdump (it may sit under a netns prefix)."""
        assert self._proc is not None
        try:
            os.killpg(self._proc.pid, sig)
        except ProcessLookupError:
            pass

    def stop(self, timeout: float = 10.0) -> CaptureResult:
        """Stop tcpdump with SIGINT once the ring has drained, wait for it to flush the pcap, and read its
        exit counters. Everything that reached the interface before this call is in the pcap or counted
        as dropped."""
        if self._result is not None:
            return self._result
        if self._proc is None:
            raise CaptureError(f"capture {self.name} was never started")
        proc = self._proc
        clean = True
        if self.drain > 0 and proc.poll() is None:
            self._drain(proc)
        for sig in (signal.SIGINT, signal.SIGTERM):  # tcpdump prints its counters on either
            if proc.poll() is not None:
                break
            self._signal(sig)
            try:
                proc.wait(timeout)
                break
            except subprocess.TimeoutExpired:
                clean = False
        if proc.poll() is None:
            clean = False
            self._signal(signal.SIGKILL)
            proc.wait()
        if self._reader is not None:
            self._reader.join(5.0)
        _running.discard(self)
        self._release()
        self._result = self._parse_result(proc.returncode, clean)
        return self._result

    def _info_request(self) -> bool:
        """SIGUSR1 to the process itself (a netns prefix execs tcpdump); False if it is gone."""
        assert self._proc is not None
        try:
            os.kill(self._proc.pid, signal.SIGUSR1)
        except ProcessLookupError:
            return False
        return True

    def _drain(self, proc: subprocess.Popen[bytes]) -> None:
        self._out.drain(self._info_request, lambda: proc.poll() is None, self.drain)

    def _parse_result(self, returncode: int | None, clean: bool) -> CaptureResult:
        return capture_result(self.name, self.pcap_path, self._lines, returncode, clean)

    def __enter__(self) -> Capture:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self._proc is not None:
            self.stop()

    def __repr__(self) -> str:
        where = f" in {' '.join(self.prefix)}" if self.prefix else ""
        return f"Capture({self.name!r}, {self.iface!r}{where}, {self.filter!r})"


@atexit.register
def _stop_all() -> None:
    """A controller that exits without stop() must not leave tcpdump running."""
    for cap in list(_running):
        try:
            cap.stop(timeout=5.0)
        except Exception:  # noqa: BLE001 - best effort at interpreter exit
            pass
