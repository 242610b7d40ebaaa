"""The attacker's flood (harness/tools/flood.py), its fault (harness/faults/flood.py) and its probes
(harness/tools/probe.py), without a lab: what they send, what they refuse, how they are stopped."""

from __future__ import annotations

import contextlib
import json
import random
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from itertools import islice
from pathlib import Path

import pytest

from harness import topology
from harness.drivers.host import HostAccess, HostDriver
from harness.faults import FaultRefused, make_fault
from harness.faults.flood import FLOOD_PORTS, Flood, flood_targets, run_over_ssh
from harness.faults.journal import proc_start
from harness.lab import Lab
from harness.lab.dryrun import DryRunBackend
from harness.tools import probe
from harness.tools.flood import KINDS, Ports, garbage, parse_ports, parse_target, slow_prefix
from sipcore.message import parse as parse_sip
from virtual.sshserver import SSHServer, load_or_create_host_key
from virtual.toolhost import tool_host_factory

SEEDS = range(200)


def _all(kind: str) -> list[bytes]:
    return [garbage(kind, random.Random(s)) for s in SEEDS]


def test_cti_garbage_is_never_a_cti_message() -> None:
    """Every CTI garbage line ends in a newline and is not a JSON object a CTI could act on (not JSON at
    all, not an object, or an object whose type is no CTI request type, or with fields of the wrong kind)."""
    for msg in _all("cti"):
        assert msg.endswith(b"\n") and msg.count(b"\n") == 1
        try:
            obj = json.loads(msg)
        except ValueError:
            continue
        if isinstance(obj, dict) and obj.get("type") == "login":
            assert not isinstance(obj.get("agent"), str) or not isinstance(obj.get("token"), str)
        else:
            assert not isinstance(obj, dict) or obj.get("type") not in ("heartbeat", "state", "logout")


def test_http_garbage_is_no_well_formed_request() -> None:
    """Every HTTP garbage message ends its header block, and none is a request the UL would serve as is:
    a bad request line, a bad header, a lying length, or a body that is not JSON."""
    for msg in _all("http"):
        assert b"\r\n\r\n" in msg
        head = msg.split(b"\r\n", 1)[0]
        well_formed_line = head.startswith((b"GET /", b"POST /")) and head.endswith(b"HTTP/1.1")
        assert (
            not well_formed_line
            or any(bad in msg for bad in (b"Content-Length: -", b"{not json", b"\xff", b"%%", b"%\r"))
            or msg.startswith(b"GET /v1/epoch/%")
        )


def test_sip_garbage_fits_a_datagram_and_never_parses_as_a_good_message() -> None:
    """SIP garbage stays under 1,200 bytes (never an IP fragment, whose packets carry no ports), and none
    is a whole, well-formed SIP message with a body the length it says."""
    for msg in _all("sip"):
        assert len(msg) < 1200
        m = parse_sip(msg)
        if m is not None:
            broken = (b"Content-Length: 99999", b"CSeq: 99", b"\xff", b"SIP/2.0 999")
            assert any(b in msg for b in broken)


def test_garbage_is_varied_and_reproducible() -> None:
    for kind in KINDS:
        assert len(set(_all(kind))) > 5
        assert garbage(kind, random.Random(7)) == garbage(kind, random.Random(7))
    with pytest.raises(ValueError):
        garbage("smtp", random.Random(0))


@pytest.mark.parametrize("kind", KINDS)
def test_a_slow_client_never_completes_its_message(kind: str) -> None:
    """What a slow client trickles never ends a message: no blank line (HTTP, SIP), no newline (CTI),
    however long it goes on."""
    sent = b"".join(islice(slow_prefix(kind), 5000))
    assert len(sent) == 5000
    if kind == "cti":
        assert b"\n" not in sent
    else:
        assert b"\r\n\r\n" not in sent


def test_targets_and_ports_parse_or_refuse() -> None:
    t = parse_target("cti=198.18.2.20:7000")
    assert (t.kind, t.host, t.port, t.name) == ("cti", "198.18.2.20", 7000, "cti=198.18.2.20:7000")
    for bad in ("cti198.18.2.20:7000", "ftp=1.2.3.4:21", "sip=1.2.3.4", "sip=1.2.3.4:0", "http=:80"):
        with pytest.raises(ValueError):
            parse_target(bad)
    assert parse_ports("20000-29999") == (20000, 29999)
    with pytest.raises(ValueError):
        parse_ports("80-90")


def test_ports_skip_a_port_in_use_and_wrap() -> None:
    held = socket.socket()
    held.bind(("127.0.0.1", 0))
    port = held.getsockname()[1]
    ports = Ports(port, port + 1)
    s = socket.socket()
    try:
        assert ports.bind(s) == port + 1  # the held one is skipped
    finally:
        s.close()
        held.close()


# -- the fault ---------------------------------------------------------------------------------------


@pytest.fixture
def lab() -> Lab:
    topo = topology.load(None)
    return Lab(topo, DryRunBackend(topo))


def test_flood_targets_are_the_victims_data_services(lab: Lab) -> None:
    t = flood_targets(lab, ["ntg-ul1", "ntg-cti1", "ntg-pbx1"])
    assert t == ["http=198.18.2.30:8080", "cti=198.18.2.20:7000", "sip=198.18.2.10:5060"]
    f = make_fault(lab, "flood", "sha-agents1", at=["ntg-cti1"], slow=10, rate=50)
    f.check_safety()  # a dry run of the virtual lab plans it
    ((dev, cmd),) = f.plan()
    assert dev == "sha-agents1" and "harness.tools.flood" in cmd and "--target cti=198.18.2.20:7000" in cmd
    assert f"--ports {FLOOD_PORTS[0]}-{FLOOD_PORTS[1]}" in cmd


@pytest.mark.parametrize(
    "target, params, why",
    [
        ("sha-pbx1", {"at": ["ntg-cti1"]}, "the attacker is a lab host"),
        ("sha-agents1", {"at": []}, "names no victim"),
        ("sha-agents1", {"at": ["ntg-agents1"]}, "not marked fair_game"),
        ("sha-agents1", {"at": ["ntg-cti1"], "slow": 10_000}, "slow must be"),
        ("sha-agents1", {"at": ["ntg-cti1"], "rate": 1e6}, "rate must be"),
        ("sha-agents1", {"at": ["ntg-cti1"], "idle": 10_000}, "idle must be"),
    ],
)
def test_flood_refused_before_anything_runs(lab: Lab, target: str, params: dict, why: str) -> None:
    with pytest.raises(FaultRefused, match=why):
        make_fault(lab, "flood", target, **params).check_safety()


def test_a_physical_lab_floods_over_ssh_on_the_host_or_refuses() -> None:
    """A physical lab cannot enter a host's namespace: the flood is planned over SSH on the host itself
    (this project installed there), and a topology that gives no SSH way in is refused before anything."""
    topo = topology.load(None)
    backend = DryRunBackend(topo)
    backend.kind = "physical"
    lab = Lab(topo, backend)
    f = make_fault(lab, "flood", "sha-agents1", at=["ntg-cti1"], idle=3)
    f.check_safety()
    ((dev, cmd),) = f.plan()
    assert dev == "sha-agents1" and cmd.startswith("ssh sha-agents1: python3 -m harness.tools.flood ")
    assert "nsenter" not in cmd and "--target cti=198.18.2.20:7000" in cmd and "--idle 3" in cmd
    assert f.plan_heal() == [("sha-agents1", "ssh sha-agents1: kill -TERM <the flood's pid>")]
    creds = topo.model.credentials.model_copy(update={"host": None})
    bare = topology.Topology(topo.model.model_copy(update={"credentials": creds}), topo.file)
    with pytest.raises(FaultRefused, match="credentials.host"):
        make_fault(Lab(bare, backend), "flood", "sha-agents1", at=["ntg-cti1"]).check_safety()


def _until(cond: Callable[[], bool], deadline_s: float = 30.0) -> bool:
    deadline = time.monotonic() + deadline_s
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_a_restored_flood_is_stopped_by_pid_and_start_only(lab: Lab) -> None:
    """After a crash the fault is rebuilt from its journal notes: its heal stops the process with that PID
    and start time, and a PID whose start time differs (reused) is left alone."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert _until(lambda: proc_start(proc.pid) is not None)
        other = Flood(lab, "sha-agents1", {"at": ["ntg-cti1"]}, notes={"pid": proc.pid, "start": "1"})
        assert not other.took_effect() and other.heal_took_effect()
        other.heal()
        assert proc.poll() is None  # not ours: untouched
        f = Flood(
            lab, "sha-agents1", {"at": ["ntg-cti1"]}, notes={"pid": proc.pid, "start": proc_start(proc.pid)}
        )
        assert f.took_effect()  # rebuilt: running is all it can tell
        f.heal()
        assert proc.wait(timeout=30) != 0 and f.heal_took_effect()
    finally:
        proc.kill()
        proc.wait()


# -- the flood and the probes against local servers --------------------------------------------------


@pytest.fixture
def line_server() -> Iterator[tuple[int, list[bytes]]]:
    """A TCP server on loopback answering every line with an error line (a CTI's shape)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(200)
    got: list[bytes] = []

    def serve(c: socket.socket) -> None:
        with c, contextlib.suppress(OSError):  # the flood resets its connections when it ends
            while data := c.recv(4096):
                got.append(data)
                if b"\n" in data:
                    c.sendall(b'{"type": "error", "code": "bad_json"}\n')

    def accept() -> None:
        while True:
            try:
                c, _ = srv.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(c,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    yield srv.getsockname()[1], got
    srv.close()


def test_the_flood_runs_reports_ready_and_a_summary_on_sigterm(line_server: tuple[int, list[bytes]]) -> None:
    port, got = line_server
    argv = [sys.executable, "-m", "harness.tools.flood", "--target", f"cti=127.0.0.1:{port}"]
    argv += [
        "--slow",
        "5",
        "--idle",
        "2",
        "--every",
        "0.2",
        "--rate",
        "100",
        "--ports",
        "21000-21999",
        "--max-seconds",
        "60",
        "--progress",
        "0.1",
    ]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        ready = json.loads(proc.stdout.readline())
        assert ready["ready"] and ready["slow_open"] == 5
        assert _until(lambda: len(got) > 20)
        assert "progress" in json.loads(proc.stdout.readline())
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    finally:
        proc.kill()
    lines = [json.loads(ln) for ln in out.splitlines()]
    assert all("progress" in ln for ln in lines[:-1])  # counters while it runs, then the summary
    counters = lines[-1]["summary"][f"cti=127.0.0.1:{port}"]
    assert counters["slow_opened"] >= 5 and counters["garbage_sent"] > 0 and counters["garbage_replies"] > 0
    assert counters["idle_opened"] == 2 and counters["idle_closed_by_server"] == 0  # the server never cuts


def test_probe_exchange_and_rpc(line_server: tuple[int, list[bytes]]) -> None:
    port, _ = line_server
    r = probe.exchange("127.0.0.1", port, ['{"type": "login"}'])
    assert r["replies"] == [{"type": "error", "code": "bad_json"}] and r["local_port"] > 0
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    free = closed.getsockname()[1]
    closed.close()
    assert probe.rpc("127.0.0.1", free, "core.version") == {"outcome": "refused"}
    (res,) = probe.run([{"op": "exchange", "host": "127.0.0.1", "port": free, "lines": []}])
    assert "error" in res


# -- over SSH, as a physical lab's host runs them (the twin's hosts: virtual/toolhost.py) ----------------


class _Shell:
    def run(self, command: str) -> tuple[int, str, str]:
        return 127, "", f"{command}: command not found\n"


@pytest.fixture
def ssh_host(tmp_path: Path) -> Iterator[HostDriver]:
    """A host's SSH server on loopback whose exec endpoint runs the harness's host programs."""
    key = load_or_create_host_key(tmp_path / "host_key")
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(8)
    port = lsock.getsockname()[1]
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{port} {key.get_name()} {key.get_base64()}\n")
    factory = tool_host_factory(lambda user: _Shell(), [])
    with SSHServer(lsock, key, {"labops": "host-pw"}, factory, name="sha-agents1"):
        ssh = HostDriver(
            "sha-agents1", HostAccess("127.0.0.1", "labops", "host-pw", port=port, known_hosts=known)
        )
        yield ssh
        ssh.close()


def test_a_probe_runs_over_ssh_with_its_stdin(
    ssh_host: HostDriver, line_server: tuple[int, list[bytes]]
) -> None:
    port, _ = line_server
    probes = [{"op": "exchange", "host": "127.0.0.1", "port": port, "lines": ['{"type": "login"}']}]
    (res,) = run_over_ssh(ssh_host, "harness.tools.probe", json.dumps(probes), timeout=30)
    assert res["replies"] == [{"type": "error", "code": "bad_json"}] and res["local_port"] > 0
    assert ssh_host.run("nc -l 1").exit_code == 127  # anything else is the host's own CLI
    with pytest.raises(RuntimeError, match="exit"):
        run_over_ssh(ssh_host, "harness.tools.probe", "not json", timeout=30)


def test_a_flood_over_ssh_reports_its_pid_and_is_stopped_by_it(ssh_host: HostDriver) -> None:
    """Started on the host over SSH, its lines come back as it runs; the heal is `kill PID` there, only
    while `ps` says that PID is the flood; a PID it did not start is never signalled."""
    topo = topology.load(None)
    backend = DryRunBackend(topo)
    backend.kind = "physical"
    f = Flood(Lab(topo, backend), "sha-agents1", {"at": ["ntg-cti1"], "slow": 1, "rate": 5, "idle": 1})
    f._ssh = ssh_host
    f._inject()
    try:
        assert _until(f.took_effect), f.lines
        assert f.pid and f.notes["remote"]
        ps = ssh_host.run(f"ps -o args= -p {f.pid}")
        assert ps.exit_code == 0 and ps.stdout.startswith("python3 -m harness.tools.flood --target cti=")
        assert ssh_host.run("kill -TERM 1").exit_code == 1  # not one it started
        f._heal()
        assert f.heal_took_effect() and f.summary is not None
        assert set(f.summary["summary"]) == {"cti=198.18.2.20:7000"}
    finally:
        if f._chan is not None:
            f._chan.close()
