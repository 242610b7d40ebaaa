"""A capture on a capture host, as a physical lab has it: tcpdump started over SSH, stopped by its PID, its
pcap fetched over SFTP into the raw capture directory and removed there, its drop counters judged by the
same rule as a local capture, and every failure one line naming the host, the interface and what failed.

A real SSH server (virtual/sshserver.py with the twin's capture-host session, virtual/capturehost.py) on
loopback. The real tcpdump captures on `lo` with a filter on a port of this test's own; a stand-in that
speaks tcpdump's stderr shows the drop counters.
"""

from __future__ import annotations

import os
import shutil
import socket
import stat
import struct
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.capture import CaptureError
from harness.drivers.host import HostAccess, HostDriver
from harness.observe.remote_capture import RemoteCapture
from virtual.capturehost import capture_host_factory
from virtual.sshserver import SSHServer, load_or_create_host_key

# tcpdump's stderr as it is, with drops: "listening on", answers to SIGUSR1, the counters on SIGINT.
DROPPING = r"""
import signal, sys, time
args = sys.argv[1:]
header = bytes.fromhex("d4c3b2a1020004000000000000000000ffff000001000000")
open(args[args.index("-w") + 1], "wb").write(header)
def info(*_):
    line = "12 packets captured, 17 packets received by filter, 5 packets dropped by kernel"
    print(line, file=sys.stderr, flush=True)
def stop(*_):
    counters = "\n12 packets captured\n17 packets received by filter\n5 packets dropped by kernel"
    print(counters, file=sys.stderr, flush=True)
    sys.exit(0)
signal.signal(signal.SIGUSR1, info)
signal.signal(signal.SIGINT, stop)
print(f"tcpdump: listening on {args[args.index('-i') + 1]}", file=sys.stderr, flush=True)
while True:
    time.sleep(0.2)
"""


class _Shell:
    def run(self, command: str) -> tuple[int, str, str]:
        return (0, "", "") if command == "true" else (127, "", f"{command}: command not found\n")


def _server(tmp: Path, tcpdump: str) -> tuple[SSHServer, int, Path, Path]:
    root = tmp / f"root-{Path(tcpdump).name}"
    (root / "tmp").mkdir(parents=True, exist_ok=True)
    key = load_or_create_host_key(tmp / "host_key")
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(8)
    port = lsock.getsockname()[1]
    known = tmp / f"known_hosts-{port}"
    known.write_text(f"[127.0.0.1]:{port} {key.get_name()} {key.get_base64()}\n")
    factory = capture_host_factory(lambda user: _Shell(), root, [], tcpdump=tcpdump)
    srv = SSHServer(lsock, key, {"labops": "host-pw"}, factory, name="ntg-capture1", sftp_root=root)
    srv.start()
    return srv, port, root, known


@pytest.fixture
def host(tmp_path: Path) -> Iterator[dict[str, Any]]:
    fake = tmp_path / "dropping_tcpdump"
    fake.write_text(f"#!{sys.executable}\n{DROPPING}")
    fake.chmod(0o755)
    servers = {}
    for name, prog in (("real", shutil.which("tcpdump") or "/usr/bin/tcpdump"), ("dropping", str(fake)),
                       ("missing", str(tmp_path / "no-tcpdump-here"))):  # fmt: skip
        servers[name] = _server(tmp_path, prog)
    yield {"servers": servers, "tmp": tmp_path}
    for srv, *_ in servers.values():
        srv.close()


def _capture(host: dict[str, Any], which: str, iface: str = "lo", bpf: str = "udp port 1") -> RemoteCapture:
    _, port, _, known = host["servers"][which]
    access = HostAccess("127.0.0.1", "labops", "host-pw", port=port, known_hosts=known)
    ssh = HostDriver("ntg-capture1", access)
    raw = Path(host["tmp"]) / "raw" / "scenario"
    return RemoteCapture("ntg-sw1-span", iface, raw, bpf, host="ntg-capture1", ssh=ssh, workdir="/tmp",
                         where=f"ssh 127.0.0.1:{port}", start_timeout=10.0)  # fmt: skip


needs_tcpdump = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("tcpdump") is None, reason="needs root and tcpdump"
)


@needs_tcpdump
def test_a_capture_runs_on_the_capture_host_and_its_pcap_comes_back(host: dict[str, Any]) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx:
        rx.bind(("127.0.0.1", 0))
        port = rx.getsockname()[1]
        cap = _capture(host, "real", bpf=f"udp port {port}").start()
        assert cap.running and cap.pid is not None
        assert cap.command().startswith("echo $$; exec tcpdump -n -i lo ")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
            for i in range(50):
                tx.sendto(f"packet {i}".encode(), ("127.0.0.1", port))
        res = cap.stop()
    assert res.complete, res.stderr
    assert res.packets_captured == 50 and res.packets_dropped_by_kernel == 0
    assert res.pcap_path == Path(host["tmp"]) / "raw" / "scenario" / "ntg-sw1-span.pcap"
    assert stat.S_IMODE(res.pcap_path.stat().st_mode) == 0o600
    assert _records(res.pcap_path) == 50
    root = host["servers"]["real"][2]
    assert not list(root.rglob("*.pcap")), "the pcap is removed from the capture host once fetched"
    assert not Path(f"/proc/{cap.pid}").exists() or _zombie(cap.pid), "tcpdump stopped"
    assert cap.stop() is res


def test_drops_reported_by_tcpdump_make_the_capture_incomplete(host: dict[str, Any]) -> None:
    res = _capture(host, "dropping").start().stop()
    assert not res.complete
    counters = (res.packets_captured, res.packets_received_by_filter, res.packets_dropped_by_kernel)
    assert counters == (12, 17, 5)
    assert res.pcap_path.exists() and res.returncode == 0


def test_tcpdump_missing_on_the_host_is_one_line(host: dict[str, Any]) -> None:
    port = host["servers"]["missing"][1]
    with pytest.raises(CaptureError) as e:
        _capture(host, "missing").start()
    line = str(e.value)
    assert "\n" not in line.strip()
    assert line.startswith(f"ntg-capture1: ssh 127.0.0.1:{port}: capture on lo: tcpdump exited with 127")


@needs_tcpdump
def test_an_interface_that_cannot_be_captured_is_one_line(host: dict[str, Any]) -> None:
    port = host["servers"]["real"][1]
    line = rf"^ntg-capture1: ssh 127.0.0.1:{port}: capture on nosuch9: tcpdump exited with 1: .*No such dev"
    with pytest.raises(CaptureError, match=line):
        _capture(host, "real", iface="nosuch9").start()


def test_an_unreachable_capture_host_is_one_line(host: dict[str, Any]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once closed
    ssh = HostDriver("ntg-capture1", HostAccess("127.0.0.1", "labops", "pw", port=port, timeout=1.0))
    ssh.connect_attempts = 1
    cap = RemoteCapture("x", "span0", Path(host["tmp"]), "udp", host="ntg-capture1", ssh=ssh,
                        where=f"ssh 127.0.0.1:{port}")  # fmt: skip
    line = rf"^ntg-capture1: ssh 127.0.0.1:{port}: capture on span0: cannot start tcpdump: .*unreachable"
    with pytest.raises(CaptureError, match=line):
        cap.start()


def test_only_its_own_tcpdumps_are_signalled(host: dict[str, Any]) -> None:
    cap = _capture(host, "dropping").start()
    try:
        r = cap.ssh.run(f"kill -INT {os.getpid()}")
        assert r.exit_code == 1 and "No such process" in r.stderr
    finally:
        cap.stop()


def _records(pcap: Path) -> int:
    """Packets in a pcap file (its record headers: 16 bytes, the captured length at offset 8)."""
    data, at, n = pcap.read_bytes(), 24, 0
    while at + 16 <= len(data):
        at += 16 + struct.unpack_from("<I", data, at + 8)[0]
        n += 1
    return n


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True
