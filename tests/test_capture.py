"""Capture with tcpdump: command line, counters, failure modes, and real packets across a veth."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from harness.capture import Capture, CaptureError, netns_prefix, sip_cti_filter
from harness.decode import LINKTYPE_ETHERNET, LINKTYPE_LINUX_SLL2, decode_pcap

CTI_PORT = 7010

# -- without root: the command line and the counters ----------------------------------------------------


def test_default_filter_is_sip_and_cti() -> None:
    assert sip_cti_filter([7010, 7011]) == "udp port 5060 or tcp port 5060 or tcp port 7010 or tcp port 7011"
    assert sip_cti_filter() == "udp port 5060 or tcp port 5060"
    assert sip_cti_filter([5060]) == "udp port 5060 or tcp port 5060"  # no duplicate term
    for bad in (0, 70000, "7010", True):
        with pytest.raises(ValueError):
            sip_cti_filter([bad])  # type: ignore[list-item]


def test_command_line(tmp_path: Path) -> None:
    cap = Capture("sha-pbx1", "eth0", tmp_path, netns_path="/run/netns/sha-pbx1", cti_ports=[CTI_PORT])
    assert cap.argv() == [
        "nsenter", "--net=/run/netns/sha-pbx1", "--",
        "tcpdump", "-n", "-i", "eth0", "-s", "262144", "-B", "65536", "-Z", "root",
        "-w", str(tmp_path / "sha-pbx1.pcap"), f"udp port 5060 or tcp port 5060 or tcp port {CTI_PORT}",
    ]  # fmt: skip
    prefix = ["nsenter", "--net=/proc/123/root/run/netns/sha-pbx1", "--"]
    span = Capture(
        "span",
        "any",
        tmp_path,
        "udp",
        netns_path=prefix,
        snaplen=1500,
        user=None,
        packet_buffered=True,
        immediate=True,
    )
    assert span.argv() == prefix + [
        "tcpdump", "-n", "-i", "any", "-s", "1500", "-B", "65536", "--immediate-mode", "-U",
        "-w", str(tmp_path / "span.pcap"), "udp",
    ]  # fmt: skip
    assert netns_prefix(None) == [] and netns_prefix(Path("/run/netns/x")) == [
        "nsenter",
        "--net=/run/netns/x",
        "--",
    ]


@pytest.mark.parametrize(
    "name,iface",
    [("../x", "eth0"), ("ok", "eth0 x"), ("ok", "-w"), ("", "eth0"), ("ok", "a-very-long-ifname")],
)
def test_bad_names_are_refused(tmp_path: Path, name: str, iface: str) -> None:
    with pytest.raises(ValueError):
        Capture(name, iface, tmp_path)


FAKE_TCPDUMP = """\
#!/bin/sh
# Stands in for tcpdump: same stderr protocol, behaviour chosen by $FAKE_MODE.
case "$FAKE_MODE" in
  fail) echo "tcpdump: nosuch0: No such device exists" >&2; exit 1 ;;
  mute) exec sleep 30 ;;
esac
stats() {
  echo "$FAKE_CAPTURED packets captured" >&2
  echo "$FAKE_CAPTURED packets received by filter" >&2
  echo "$FAKE_DROPPED packets dropped by kernel" >&2
  [ -n "$FAKE_IFDROP" ] && echo "$FAKE_IFDROP packets dropped by interface" >&2
  exit 0
}
asked=0
info() {  # tcpdump's answer to SIGUSR1; the first $FAKE_LAG answers lag behind the kernel by 2 packets
  asked=$((asked + 1))
  got=$FAKE_CAPTURED
  [ "$asked" -le "${FAKE_LAG:-0}" ] && got=$((FAKE_CAPTURED - 2))
  recv="$FAKE_CAPTURED packets received by filter"
  echo "tcpdump: $got packets captured, $recv, 0 packets dropped by kernel" >&2
}
if [ "$FAKE_MODE" = stubborn ]; then trap '' INT; else trap stats INT; fi
trap stats TERM
trap info USR1
for a in "$@"; do [ "$prev" = "-w" ] && : > "$a"; prev="$a"; done
[ -n "$FAKE_GATE" ] && read go < "$FAKE_GATE"  # not capturing until the test opens the gate
echo "tcpdump: listening on $3, link-type EN10MB (Ethernet), snapshot length 262144 bytes" >&2
while :; do sleep 5 >/dev/null 2>&1 & wait $!; done  # a trap runs as soon as its signal arrives
"""


@pytest.fixture
def fake_tcpdump(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    path = tmp_path / "fake-tcpdump"
    path.write_text(FAKE_TCPDUMP)
    path.chmod(0o755)
    monkeypatch.setenv("FAKE_CAPTURED", "42")
    monkeypatch.setenv("FAKE_DROPPED", "0")
    # A shell cannot trap a signal that was ignored when it started (POSIX), and a suite started from a
    # background job inherits SIGINT ignored: the fake would then sit out stop()'s SIGINT. Real tcpdump
    # installs its own handler whatever it inherits; only the fake needs SIGINT not ignored.
    old = signal.getsignal(signal.SIGINT)
    if old is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    yield str(path)
    signal.signal(signal.SIGINT, old)


def eventually(pred: Callable[[], bool], timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_start_waits_for_listening_and_stop_reads_counters(
    fake_tcpdump: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = tmp_path / "gate"
    os.mkfifo(gate)
    monkeypatch.setenv("FAKE_GATE", str(gate))
    cap = Capture("fake", "eth9", tmp_path / "out", tcpdump=fake_tcpdump, drain=5.0)
    starter = threading.Thread(target=cap.start, daemon=True)
    starter.start()
    assert eventually(lambda: (tmp_path / "out" / "fake.pcap").exists())  # it runs, but is not capturing
    assert starter.is_alive() and not cap._lines  # so start() has not returned
    with open(gate, "w") as g:
        g.write("go\n")
    starter.join(30)
    assert not starter.is_alive()
    assert any("listening on eth9" in line for line in cap._lines)  # start() returned only after it
    assert cap.running
    res = cap.stop()
    assert not cap.running
    assert (res.packets_captured, res.packets_received_by_filter) == (42, 42)
    assert (res.packets_dropped_by_kernel, res.packets_dropped_by_interface) == (0, 0)
    assert res.complete and res.returncode == 0, (res.returncode, res.stderr)
    assert res.to_dict()["pcap_path"] == str(tmp_path / "out" / "fake.pcap")
    assert cap.stop() is res  # idempotent


def test_stop_drains_until_tcpdump_has_every_packet(
    fake_tcpdump: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """stop() asks tcpdump for its counters until it has captured what the kernel had received; not a
    fixed wait (a generous drain bound is never reached), and never before it caught up."""
    monkeypatch.setenv("FAKE_LAG", "2")
    cap = Capture("fake", "eth9", tmp_path, tcpdump=fake_tcpdump, drain=60.0).start()
    t0 = time.monotonic()
    res = cap.stop()
    assert time.monotonic() - t0 < 30  # it did not wait out the 60 s bound
    infos = [line for line in res.stderr.splitlines() if "packets captured," in line]
    assert [i.split()[1] for i in infos] == ["40", "40", "42"], res.stderr  # asked until it caught up
    assert res.stderr.splitlines()[-3:] == [
        "42 packets captured",
        "42 packets received by filter",
        "0 packets dropped by kernel",
    ]  # and the counters came after (SIGINT only then)
    assert res.complete, (res.returncode, res.stderr)


class Tracker:
    """Records what a capture asks its process tracker (harness.faults.Injector in real use)."""

    def __init__(self, fail: bool = False) -> None:
        self.calls: list[tuple[object, ...]] = []
        self.fail = fail

    def track_process(self, kind: str, pid: int, what: str) -> str:
        self.calls.append(("track", kind, pid, what))
        if self.fail:
            raise OSError("journal full")
        return "t1"

    def release(self, id: str) -> None:
        self.calls.append(("release", id))


def test_a_tracker_journals_the_tcpdump_while_it_runs(fake_tcpdump: str, tmp_path: Path) -> None:
    tracker = Tracker()
    cap = Capture("fake", "eth9", tmp_path, tcpdump=fake_tcpdump, tracker=tracker).start()
    assert tracker.calls == [("track", "capture", cap.pid, "tcpdump fake on eth9")]
    cap.stop()
    assert tracker.calls[1:] == [("release", "t1")]


def test_a_capture_that_cannot_be_journaled_does_not_run(fake_tcpdump: str, tmp_path: Path) -> None:
    cap = Capture("fake", "eth9", tmp_path, tcpdump=fake_tcpdump, tracker=Tracker(fail=True))
    with pytest.raises(CaptureError, match="could not be journaled"):
        cap.start()
    assert cap._proc is not None and cap._proc.poll() is not None  # killed, not left behind


@pytest.mark.parametrize("kernel,iface", [("3", ""), ("0", "5")])
def test_any_drop_makes_capture_incomplete(
    fake_tcpdump: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kernel: str, iface: str
) -> None:
    monkeypatch.setenv("FAKE_DROPPED", kernel)
    monkeypatch.setenv("FAKE_IFDROP", iface)
    with Capture("fake", "eth9", tmp_path, tcpdump=fake_tcpdump, drain=5.0) as cap:
        pass
    res = cap.stop()
    assert res.packets_dropped_by_kernel == int(kernel)
    assert res.packets_dropped_by_interface == int(iface or 0)
    assert not res.complete


def test_stop_escalates_to_sigterm(
    fake_tcpdump: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_MODE", "stubborn")
    cap = Capture("fake", "eth9", tmp_path, tcpdump=fake_tcpdump, drain=5.0).start()
    res = cap.stop(timeout=0.5)
    assert res.packets_captured == 42
    assert not res.complete  # it did not stop when asked: do not trust it


def test_start_reports_tcpdump_error(
    fake_tcpdump: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_MODE", "fail")
    with pytest.raises(CaptureError, match="No such device"):
        Capture("fake", "nosuch0", tmp_path, tcpdump=fake_tcpdump).start()


def test_start_times_out_when_never_listening(
    fake_tcpdump: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_MODE", "mute")
    cap = Capture("fake", "eth9", tmp_path, tcpdump=fake_tcpdump, start_timeout=0.5)
    with pytest.raises(CaptureError, match="not capturing"):
        cap.start()
    assert cap._proc is not None and cap._proc.poll() is not None  # killed, not left behind


def test_missing_tcpdump_binary(tmp_path: Path) -> None:
    with pytest.raises(CaptureError, match="cannot run"):
        Capture("x", "eth0", tmp_path, tcpdump=str(tmp_path / "no-such-tcpdump")).start()


# -- with root: real packets between two namespaces -----------------------------------------------------


def _can_make_netns() -> str | None:
    if os.geteuid() != 0:
        return "needs root to create network namespaces"
    for tool in ("ip", "tcpdump", "nsenter"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    return None


requires_netns = pytest.mark.skipif(_can_make_netns() is not None, reason=str(_can_make_netns()))


@pytest.fixture(scope="module")
def veth() -> Iterator[dict[str, str]]:
    """hilt-cap-<pid>-a (198.18.250.1/30) and -b (198.18.250.2/30) joined by a veth; removed by exact name."""
    pid = os.getpid()
    lab = {"a": f"hilt-cap-{pid}-a", "b": f"hilt-cap-{pid}-b", "if_a": f"hc{pid}a", "if_b": f"hc{pid}b"}
    created: list[str] = []

    def ip(*args: str) -> None:
        subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)

    try:
        for ns in (lab["a"], lab["b"]):
            ip("netns", "add", ns)
            created.append(ns)
        # Both ends are created inside the namespaces: deleting them deletes the veth too.
        ip(
            "link",
            "add",
            lab["if_a"],
            "netns",
            lab["a"],
            "type",
            "veth",
            "peer",
            "name",
            lab["if_b"],
            "netns",
            lab["b"],
        )
        for ns, ifname, addr in (
            (lab["a"], lab["if_a"], "198.18.250.1/30"),
            (lab["b"], lab["if_b"], "198.18.250.2/30"),
        ):
            ip("-n", ns, "addr", "add", addr, "dev", ifname)
            ip("-n", ns, "link", "set", ifname, "up")
            ip("-n", ns, "link", "set", "lo", "up")
        yield lab
    finally:
        for ns in reversed(created):
            subprocess.run(["ip", "netns", "del", ns], check=False, capture_output=True, timeout=30)


def in_ns(ns: str, code: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ip", "netns", "exec", ns, sys.executable, "-c", textwrap.dedent(code), *args],
        check=True,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


SEND_SIP = """
import socket, sys
n, dst = int(sys.argv[1]), sys.argv[2]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("198.18.250.2", 5060))
other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
other.bind(("198.18.250.2", 9998))
for i in range(n):
    s.sendto((
        f"OPTIONS sip:{1000 + i}@{dst} SIP/2.0\\r\\n"
        f"Via: SIP/2.0/UDP 198.18.250.2:5060;branch=z9hG4bK{i}\\r\\n"
        f"From: <sip:probe@198.18.250.2>;tag={i}\\r\\nTo: <sip:{1000 + i}@{dst}>\\r\\nCall-ID: opt-{i}\\r\\n"
        f"CSeq: {i + 1} OPTIONS\\r\\nContent-Length: 0\\r\\n\\r\\n"
    ).encode(), (dst, 5060))
    other.sendto(b"not sip", (dst, 9999))  # outside the filter
"""


@requires_netns
@pytest.mark.parametrize("iface,linktype", [("veth", LINKTYPE_ETHERNET), ("any", LINKTYPE_LINUX_SLL2)])
def test_capture_counts_every_packet(veth: dict[str, str], tmp_path: Path, iface: str, linktype: int) -> None:
    n = 300
    cap = Capture(
        f"cap-{iface}",
        veth["if_a"] if iface == "veth" else "any",
        tmp_path,
        netns_path=f"/run/netns/{veth['a']}",
        cti_ports=[CTI_PORT],
    ).start()
    try:
        in_ns(veth["b"], SEND_SIP, str(n), "198.18.250.1")
    finally:
        res = cap.stop()
    assert res.complete, res.stderr
    assert res.packets_captured == n, res.stderr
    assert res.packets_received_by_filter == n
    assert res.packets_dropped_by_kernel == 0 and res.packets_dropped_by_interface == 0
    d = decode_pcap(res.pcap_path, cti_ports=[CTI_PORT])
    assert d.stats.linktypes == [linktype]
    assert d.stats.frames == n and d.stats.lossless
    assert [e.call_id for e in d.events] == [f"opt-{i}" for i in range(n)]
    assert {(e.method, e.src, e.dst) for e in d.events} == {
        ("OPTIONS", "198.18.250.2:5060", "198.18.250.1:5060")
    }


CTI_SERVER = """
import socket, sys
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("198.18.250.1", int(sys.argv[1])))
srv.listen(1)
srv.settimeout(30)
print("ready", flush=True)
conn, _ = srv.accept()
data = b""
while chunk := conn.recv(65536):
    data += chunk
conn.sendall(b'{"type": "bye", "lines": %d}\\n' % data.count(b"\\n"))
conn.close()
"""

CTI_CLIENT = """
import json, socket, sys, time
s = socket.create_connection(("198.18.250.1", int(sys.argv[1])), timeout=10)
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
msgs = [{"type": "state", "agent": f"a{i:05d}", "site": "sha", "n": i} for i in range(60)]
wire = b"".join(json.dumps(m).encode() + b"\\n" for m in msgs)
pos = 0
for step in [7, 50, 3, 200, 61, 1, 400] * 20:  # splits lines mid-way and packs several into one segment
    if pos >= len(wire):
        break
    s.sendall(wire[pos : pos + step])
    pos += step
    time.sleep(0.002)
s.sendall(wire[pos:])
s.shutdown(socket.SHUT_WR)
print(s.makefile().readline().strip())
"""


@requires_netns
def test_cti_over_real_tcp(veth: dict[str, str], tmp_path: Path) -> None:
    cap = Capture(
        "cti", veth["if_a"], tmp_path, netns_path=f"/run/netns/{veth['a']}", cti_ports=[CTI_PORT]
    ).start()
    server = subprocess.Popen(
        ["ip", "netns", "exec", veth["a"], sys.executable, "-c", textwrap.dedent(CTI_SERVER), str(CTI_PORT)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        reply = in_ns(veth["b"], CTI_CLIENT, str(CTI_PORT)).stdout.strip()
        assert server.wait(timeout=30) == 0
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        res = cap.stop()
    assert reply == '{"type": "bye", "lines": 60}'
    assert res.complete, res.stderr
    d = decode_pcap(res.pcap_path, cti_ports=[CTI_PORT])
    cti = [e for e in d.events if e.protocol == "cti"]
    assert [e.body["n"] for e in cti[:-1]] == list(range(60))
    assert {(e.type, e.site, e.src) for e in cti[:-1]} == {("state", "sha", cti[0].src)}
    assert cti[-1].type == "bye" and cti[-1].src == f"198.18.250.1:{CTI_PORT}"
    assert d.stats.lossless, d.stats_dict()


@requires_netns
def test_real_tcpdump_error_on_missing_interface(veth: dict[str, str], tmp_path: Path) -> None:
    with pytest.raises(CaptureError, match="nosuch0"):
        Capture("bad", "nosuch0", tmp_path, netns_path=f"/run/netns/{veth['a']}").start()
