"""Every fault on the virtual lab: injected, its effect seen from inside a lab namespace, healed, the effect
gone. Plus the safety rails: refusals and dry runs send nothing, signals and SIGKILL leave nothing broken.
Real devices and packets only; no mocks."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from harness.drivers import driver_for
from harness.drivers.base import Step, Steps
from harness.faults import FaultRefused, Injector, Journal, default_journal, make_fault
from harness.history import History
from harness.lab import Lab
from harness.lab.virtual import VirtualBackend
from harness.topology import REPO_ROOT, Topology
from sipcore import probe
from virtual import netns

pytestmark = pytest.mark.lab


# -- observing from inside the lab ------------------------------------------------------------------------


def addr(lab: Lab, dev: str) -> str:
    return str(lab.topology.device(dev).spec.address)


def ping(lab: Lab, src: str, dst: str, count: int = 1, wait: float = 0.5) -> bool:
    argv = ["ping", "-n", "-q", "-c", str(count), "-W", str(wait), "-i", "0.2", addr(lab, dst)]
    return netns.run_in(lab.ns_path(src), argv).returncode == 0


def received(lab: Lab, src: str, dst: str, count: int) -> int:
    argv = ["ping", "-n", "-q", "-c", str(count), "-i", "0.005", "-W", "0.3", addr(lab, dst)]
    out = netns.run_in(lab.ns_path(src), argv).stdout
    return int(out.split(" received")[0].rsplit(",", 1)[-1]) if " received" in out else 0


def options(lab: Lab, src: str, pbx: str) -> int | None:
    d = lab.topology.device(pbx)
    with netns.entered(lab.ns_path(src)):
        return probe.options_ping(str(d.spec.address), d.spec.sip_port, timeout=0.5)


def tcp_open(lab: Lab, src: str, dst: str, port: int) -> bool:
    s = netns.socket_in(lab.ns_path(src))
    s.settimeout(0.5)
    try:
        s.connect((addr(lab, dst), port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def http_answers(lab: Lab, src: str, ul: str) -> bool:
    """An HTTP reply (any status) from the UL within a second: the process runs, not just the kernel."""
    s = netns.socket_in(lab.ns_path(src))
    s.settimeout(1.0)
    try:
        s.connect((addr(lab, ul), lab.topology.device(ul).spec.port))
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        return s.recv(16).startswith(b"HTTP/")
    except OSError:
        return False
    finally:
        s.close()


def eventually(pred: Callable[[], bool], timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


@pytest.fixture
def injector(lab: Lab, tmp_path: Path) -> Iterator[Injector]:
    inj = Injector(lab, journal_path=tmp_path / "journal.jsonl", history=History(tmp_path / "history.jsonl"))
    yield inj
    inj.heal_all()


# -- each fault: inject, see it, heal, see it gone ----------------------------------------------------------


def test_port_down_by_device(lab: Lab, injector: Injector) -> None:
    f = injector.make("port_down", "sha-cti1")  # the switch port the CTI is cabled to
    assert f.plan() == [("sha-sw1", "configure terminal"), ("sha-sw1", "interface Gi0/2")] + [
        ("sha-sw1", "shutdown"),
        ("sha-sw1", "end"),
    ]
    assert ping(lab, "sha-agents1", "sha-cti1")
    with injector.fault(f):
        assert not ping(lab, "sha-agents1", "sha-cti1")
    assert eventually(lambda: ping(lab, "sha-agents1", "sha-cti1"))


def test_link_cut_wan_both_ends(lab: Lab, injector: Injector) -> None:
    assert ping(lab, "sha-agents1", "ntg-pbx1")
    f = injector.make("link_cut", "wan")
    assert {dev for dev, _ in f.plan()} == {"sha-sw1", "ntg-sw1"}
    with injector.fault(f):
        with driver_for(lab, "ntg-sw1") as sw:
            assert not sw.port_state("GigabitEthernet0/0/24").admin_up
        assert not ping(lab, "sha-agents1", "ntg-pbx1")
        assert ping(lab, "sha-agents1", "sha-pbx1")  # the site itself is fine
    assert eventually(lambda: ping(lab, "sha-agents1", "ntg-pbx1"))


def test_service_kill_pbx_and_history(lab: Lab, injector: Injector) -> None:
    assert options(lab, "ntg-agents1", "ntg-pbx1") == 200
    with injector.fault(injector.make("service_kill", "ntg-pbx1")) as f:
        assert options(lab, "ntg-agents1", "ntg-pbx1") is None
    assert eventually(lambda: options(lab, "ntg-agents1", "ntg-pbx1") == 200)
    ops = [
        (e.type, e.f, e.value) for e in injector.history.events if getattr(e, "f", "").startswith("fault.")
    ]
    assert [(t, fn) for t, fn, _ in ops] == [
        ("invoke", "fault.inject"),
        ("ok", "fault.inject"),
        ("invoke", "fault.heal"),
        ("ok", "fault.heal"),
    ]
    assert ops[0][2] == {"id": f.id, "fault": "service_kill", "target": "ntg-pbx1", "site": "ntg"}


def test_service_stop_cti_ends_sessions(lab: Lab, injector: Injector) -> None:
    port = lab.topology.device("sha-cti1").spec.port
    assert tcp_open(lab, "sha-agents1", "sha-cti1", port)
    with injector.fault(injector.make("service_stop", "sha-cti1")) as f:
        assert not tcp_open(lab, "sha-agents1", "sha-cti1", port)
    assert f.history_value()["ends_sessions"] is True
    assert eventually(lambda: tcp_open(lab, "sha-agents1", "sha-cti1", port))


def test_service_pause_ul(lab: Lab, injector: Injector) -> None:
    assert http_answers(lab, "sha-agents1", "sha-ul1")
    with injector.fault(injector.make("service_pause", "sha-ul1")):
        assert not http_answers(lab, "sha-agents1", "sha-ul1")  # the port is open, nobody answers
    assert eventually(lambda: http_answers(lab, "sha-agents1", "sha-ul1"))


def test_power_off_host(lab: Lab, injector: Injector) -> None:
    mgmt = str(lab.topology.device("ntg-ul1").spec.mgmt)
    with injector.fault(injector.make("power_off", "ntg-ul1")) as f:
        assert f.plan() == [("ntg-pdu1", "olOff 3")]
        assert not ping(lab, "ntg-agents1", "ntg-ul1")
        with pytest.raises(OSError):  # its management port is dark too
            socket.create_connection((mgmt, 22), timeout=1.0)
        with driver_for(lab, "ntg-sw1") as sw:
            assert not sw.port_state("GigabitEthernet0/0/3").link_up  # the switch sees no carrier
    assert eventually(lambda: http_answers(lab, "ntg-agents1", "ntg-ul1"))  # booted: links and service
    assert ping(lab, "ntg-agents1", "ntg-ul1")


def test_blackhole_keeps_link_up(lab: Lab, injector: Injector) -> None:
    assert options(lab, "sha-agents1", "sha-pbx1") == 200
    with injector.fault(injector.make("blackhole", "sha-pbx1")):
        assert options(lab, "sha-agents1", "sha-pbx1") is None
        assert not ping(lab, "sha-agents1", "sha-pbx1")
        with driver_for(lab, "sha-sw1") as sw:
            assert sw.port_state("Gi0/1").link_up  # silent, not unplugged
        with driver_for(lab, "sha-pbx1") as h:  # and still managed out of band
            assert h.service_active("kamailio")
    assert eventually(lambda: options(lab, "sha-agents1", "sha-pbx1") == 200)


def _udp_delivered(lab: Lab, src: str, dst: str, port: int = 45000) -> bool:
    rx = netns.socket_in(lab.ns_path(dst), socket.AF_INET, socket.SOCK_DGRAM)
    tx = netns.socket_in(lab.ns_path(src), socket.AF_INET, socket.SOCK_DGRAM)
    try:
        rx.bind((addr(lab, dst), port))
        rx.settimeout(0.3)
        for _ in range(3):
            try:
                tx.sendto(b"probe", (addr(lab, dst), port))  # EPERM when dropped on the sender's output
            except PermissionError:
                return False
            try:
                return rx.recv(16) == b"probe"
            except TimeoutError:
                continue
        return False
    finally:
        rx.close()
        tx.close()


def test_partition_one_way(lab: Lab, injector: Injector) -> None:
    assert _udp_delivered(lab, "sha-ul1", "sha-pbx1") and _udp_delivered(lab, "sha-pbx1", "sha-ul1")
    with injector.fault(injector.make("partition", "sha-ul1", b="sha-pbx1", one_way=True)):
        assert not _udp_delivered(lab, "sha-ul1", "sha-pbx1")
        assert _udp_delivered(lab, "sha-pbx1", "sha-ul1")
    assert _udp_delivered(lab, "sha-ul1", "sha-pbx1")


def test_random_loss(lab: Lab, injector: Injector) -> None:
    with injector.fault(injector.make("loss", "ntg-pbx1", percent=50)):
        got = received(lab, "ntg-agents1", "ntg-pbx1", 100)
        assert 5 <= got <= 50, got  # each way 50 %: about 25 round trips of 100 survive
    assert received(lab, "ntg-agents1", "ntg-pbx1", 30) == 30


def _download_seconds(lab: Lab, server: str, client: str, size: int) -> float:
    """Bytes sent by `server` to `client` over TCP, timed at the client."""
    lsock = netns.listener_in(lab.ns_path(client), addr(lab, client), 45001)
    got = bytearray()

    def serve() -> None:
        c = netns.socket_in(lab.ns_path(server))
        c.connect((addr(lab, client), 45001))
        c.sendall(b"x" * size)
        c.close()

    t0 = time.monotonic()
    th = threading.Thread(target=serve, daemon=True)
    th.start()
    conn, _ = lsock.accept()
    conn.settimeout(20)
    while len(got) < size:
        chunk = conn.recv(65536)
        if not chunk:
            break
        got += chunk
    conn.close()
    lsock.close()
    th.join(5)
    assert len(got) == size
    return time.monotonic() - t0


def test_rate_limit_nft_and_tbf(lab: Lab, injector: Injector) -> None:
    size = 150_000  # 1.2 Mbit: about 1.2 s at 1000 kbit/s
    fast = _download_seconds(lab, "sha-cti1", "sha-agents1", size)
    f = injector.make("rate_limit", "sha-cti1", kbit=1000, dev="eth0")
    assert any(cmd.startswith("tc qdisc replace dev eth0 root tbf rate 1000kbit") for _, cmd in f.plan())
    with injector.fault(f):
        slow = _download_seconds(lab, "sha-cti1", "sha-agents1", size)
    after = _download_seconds(lab, "sha-cti1", "sha-agents1", size)
    assert slow > 0.8 and slow > 10 * max(fast, after), (fast, slow, after)


# -- healing: on exceptions, at the time limit, on SIGTERM, through the console, after SIGKILL ------------


def test_heal_on_exception_and_max_duration(lab: Lab, injector: Injector) -> None:
    with pytest.raises(RuntimeError):
        with injector.fault(injector.make("blackhole", "ntg-ul1")):
            assert not ping(lab, "ntg-agents1", "ntg-ul1")
            raise RuntimeError("scenario failed")
    assert ping(lab, "ntg-agents1", "ntg-ul1")

    f = injector.inject(injector.make("blackhole", "ntg-ul1", max_duration=60), duration=1.0)
    assert not ping(lab, "ntg-agents1", "ntg-ul1")
    assert eventually(lambda: ping(lab, "ntg-agents1", "ntg-ul1"))  # healed itself
    assert eventually(lambda: Journal(injector.journal.path).open_faults() == [])
    heals = [e for e in injector.history.events if getattr(e, "f", "") == "fault.heal" and e.type == "invoke"]
    assert heals[-1].value == {"id": f.id, "reason": "max_duration"}


@pytest.mark.parametrize("error", [RuntimeError("read-back failed"), KeyboardInterrupt()])
def test_a_fault_whose_verification_raises_is_healed(
    lab: Lab, injector: Injector, error: BaseException
) -> None:
    """The read-back sits inside the heal-on-failure path: an error, or Ctrl-C / SIGTERM (both arrive as
    KeyboardInterrupt) while the injector checks that the fault showed, and the fault is healed."""
    f = injector.make("blackhole", "ntg-cti1")
    real = f.took_effect
    seen: list[bool] = []

    def read_back() -> bool:
        seen.append(real())  # the fault is really in place ...
        raise error  # ... when its verification blows up

    f.took_effect = read_back  # type: ignore[method-assign]
    with pytest.raises(type(error)):
        with injector.fault(f):
            pytest.fail("the block ran")
    assert seen == [True]
    assert ping(lab, "ntg-agents1", "ntg-cti1")  # healed, and read back healed before inject() returned
    assert Journal(injector.journal.path).open_faults() == [] and injector.active == {}
    heal = [e for e in injector.history.events if getattr(e, "f", "") == "fault.heal"]
    assert [e.type for e in heal] == ["invoke", "ok"] and heal[0].value["reason"] == "inject failed"


def test_heal_through_console_when_management_is_cut(lab: Lab, injector: Injector) -> None:
    st = twin(lab).handle.state()
    mgmt_veth = st["mgmt_veths"]["sha-sw1"]
    f = injector.make("port_down", "sha-sw1:Gi0/6")  # the phone's port
    injector.inject(f)
    assert not ping(lab, "sha-agents1", "sha-phone1")
    twin(lab).set_link(mgmt_veth, False)
    try:
        injector.heal(f)
    finally:
        twin(lab).set_link(mgmt_veth, True)
    assert f.healed_via == "console"
    assert eventually(lambda: ping(lab, "sha-agents1", "sha-phone1"))


SCRIPT = """
import os, sys, time
from harness import topology
from harness.faults import Injector
from harness.lab.session import open_lab
lab = open_lab(topology.load(), bring_up=False)
inj = Injector(lab, journal_path=sys.argv[1])
{body}
"""


def _controller(lab: Lab, journal: Path, body: str) -> subprocess.Popen[str]:
    p = subprocess.Popen(
        [sys.executable, "-c", SCRIPT.format(body=body), str(journal)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO_ROOT,
    )
    line = p.stdout.readline()  # type: ignore[union-attr]
    assert line.strip() == "injected", (line, p.stderr.read() if p.poll() is not None else "")  # type: ignore[union-attr]
    return p


def test_sigterm_heals(lab: Lab, tmp_path: Path) -> None:
    journal = tmp_path / "journal.jsonl"
    body = (
        "with inj.fault(inj.make('blackhole', 'sha-ul1')):\n"
        "    print('injected', flush=True)\n"
        "    time.sleep(60)\n"
    )
    p = _controller(lab, journal, body)
    assert not ping(lab, "sha-agents1", "sha-ul1")
    p.send_signal(signal.SIGTERM)
    p.wait(15)
    assert ping(lab, "sha-agents1", "sha-ul1")
    assert Journal(journal).open_faults() == []


def test_sigkill_then_hil_lab_restore(lab: Lab, tmp_path: Path) -> None:
    journal = tmp_path / "journal.jsonl"
    body = (
        "inj.inject(inj.make('port_down', 'ntg-sw1:GigabitEthernet0/0/6'))\n"
        "inj.inject(inj.make('service_stop', 'sha-pbx1'))\n"
        "print('injected', flush=True)\n"
        "time.sleep(60)\n"
    )
    p = _controller(lab, journal, body)
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    assert not ping(lab, "ntg-agents1", "ntg-phone1")
    assert options(lab, "sha-agents1", "sha-pbx1") is None
    assert len(Journal(journal).open_faults()) == 2
    hil = [sys.executable, "-m", "harness.cli", "lab", "restore", "--journal", str(journal)]
    r = subprocess.run(hil, capture_output=True, text=True, cwd=REPO_ROOT, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("healed") == 2, r.stdout
    assert eventually(lambda: ping(lab, "ntg-agents1", "ntg-phone1"))
    assert eventually(lambda: options(lab, "sha-agents1", "sha-pbx1") == 200)
    r = subprocess.run(hil, capture_output=True, text=True, cwd=REPO_ROOT, timeout=60)
    assert r.stdout.strip() == "no open faults"


def test_restore_leaves_a_live_controllers_faults(lab: Lab, injector: Injector) -> None:
    from harness.faults import restore

    f = injector.inject(injector.make("blackhole", "sha-cti1"))
    res = restore(lab, injector.journal.path)
    assert [r["result"] for r in res] == ["skipped"]
    assert not ping(lab, "sha-agents1", "sha-cti1")
    injector.heal(f)


# -- refusals and dry runs send nothing ---------------------------------------------------------------------


@contextmanager
def nothing_sent() -> Iterator[list[tuple[str, object]]]:
    """Record every network connection and device open the process makes meanwhile (Python audit hooks)."""
    seen: list[tuple[str, object]] = []
    _AUDIT["sink"] = seen
    try:
        yield seen
    finally:
        _AUDIT["sink"] = None


_AUDIT: dict[str, list[tuple[str, object]] | None] = {"sink": None}


def _audit(event: str, args: tuple[object, ...]) -> None:
    sink = _AUDIT["sink"]
    if sink is None:
        return
    if event in ("socket.connect", "socket.sendto", "subprocess.Popen", "os.exec"):
        sink.append((event, args[1] if len(args) > 1 else args))
    elif event == "open" and str(args[0]).startswith(("/dev/", "/proc/")) and "pts" in str(args[0]):
        sink.append((event, args[0]))


sys.addaudithook(_audit)


def _variant(lab: Lab, tmp_path: Path, edit: Callable[[dict], None]) -> Lab:
    """The same running lab described by an edited topology (to reach rules the default one never hits)."""
    import yaml

    from harness import topology

    raw = yaml.safe_load(Path(lab.topology.file).read_text())
    edit(raw)
    f = tmp_path / "variant.yaml"
    f.write_text(yaml.safe_dump(raw))
    return Lab(topology.load(f), lab.backend, owned=False)


def _mgmt_port(raw: dict) -> None:
    raw["management"]["path"] = ["sha-sw1:Gi0/7"]
    raw["sites"]["sha"]["switches"]["sha-sw1"]["ports"]["Gi0/7"]["cuttable"] = False


def _inband_ul(raw: dict) -> None:
    del raw["sites"]["sha"]["ul"]["sha-ul1"]["mgmt"]


def _data_on_mgmt_net(raw: dict) -> None:
    raw["sites"]["sha"]["pbx"]["sha-pbx1"]["address"] = "198.19.0.99"  # a data address on the mgmt net


@pytest.mark.parametrize(
    "kind,target,params,why,variant",
    [
        ("blackhole", "sha-agents1", {}, "not marked fair_game", None),
        ("port_down", "sha-sw1:Gi0/4", {}, "not marked cuttable", None),
        ("port_down", "sha-caller1", {}, "not marked cuttable", None),
        ("power_off", "sha-agents1", {}, "not marked cuttable", None),
        ("service_kill", "sha-pbx1", {"service": "sshd"}, "management path", None),
        ("partition", "sha-pbx1", {"b": "controller"}, "management path", None),
        ("port_down", "sha-sw1:Gi0/7", {}, "management path", _mgmt_port),
        ("loss", "sha-ul1", {"percent": 10}, "management path", _inband_ul),
        ("rate_limit", "sha-cti1", {"kbit": 1000, "dev": "mgmt0"}, "management NIC", None),
        ("rate_limit", "sha-cti1", {"kbit": 1000, "dev": "eth7"}, "no interface eth7", None),
        ("rate_limit", "sha-cti1", {"kbit": 1000, "dev": "lo"}, "not a data interface", None),
        ("service_stop", "sha-pbx1", {"service": "ssh.socket"}, "management path", None),
        (
            "service_kill",
            "sha-cti1",
            {"service": "sshd@0-198.19.0.12:22-198.19.0.1:50000.service"},
            "management path",
            None,
        ),
        ("service_stop", "sha-ul1", {"service": "systemd-journald"}, "management path", None),
        ("service_pause", "sha-pbx1", {"service": "cron"}, "not a service the topology names", None),
        ("service_stop", "sha-pbx1", {"service": "hil-cti"}, "allowed: kamailio", None),
        ("blackhole", "sha-pbx1", {}, "management address", _data_on_mgmt_net),
    ],
)
def test_refused_faults_send_nothing(
    lab: Lab, tmp_path: Path, kind: str, target: str, params: dict, why: str, variant: Callable | None
) -> None:
    the_lab = _variant(lab, tmp_path, variant) if variant else lab
    steps: list[Step] = []
    h = History(tmp_path / "h.jsonl")
    inj = Injector(the_lab, tmp_path / "j.jsonl", history=h, steps=Steps(sinks=[steps.append]))
    with nothing_sent() as seen:
        with pytest.raises(FaultRefused, match=why):
            with inj.fault(make_fault(the_lab, kind, target, **params)):
                pytest.fail("a refused fault ran")
    assert seen == [] and steps == []
    assert not (tmp_path / "j.jsonl").exists()  # never even journaled
    assert [e.type for e in h.events] == ["invoke", "fail"]


def test_dry_run_sends_nothing(lab: Lab, topology: Topology, tmp_path: Path) -> None:
    printed: list[str] = []
    inj = Injector(lab, tmp_path / "j.jsonl", dry_run=True, out=printed.append)
    faults = [
        inj.make("port_down", "sha-sw1:Gi0/1"),
        inj.make("link_cut", "wan"),
        inj.make("service_kill", "sha-pbx1"),
        inj.make("power_off", "sha-cti1"),
        inj.make("blackhole", "ntg-ul1"),
        inj.make("rate_limit", "ntg-cti1", kbit=64, dev="eth0"),
    ]
    with nothing_sent() as seen:
        for f in faults:
            with inj.fault(f):
                pass
    assert seen == [], seen
    text = "\n".join(printed)
    for expected in (
        "sha-sw1: shutdown",
        "ntg-sw1: undo shutdown",
        "sha-pbx1: systemctl kill -s SIGKILL kamailio",
        "sha-pdu1: olOff 2",
        "ntg-ul1: nft",
        "ntg-cti1: tc qdisc replace dev eth0",
    ):
        assert expected in text, text
    assert not (tmp_path / "j.jsonl").exists()
    with driver_for(lab, "sha-sw1") as sw:  # and the port is as it was
        assert sw.port_state("Gi0/1").link_up
    assert options(lab, "sha-agents1", "sha-pbx1") == 200


def test_default_journal_lives_with_the_lab(lab: Lab) -> None:
    assert default_journal(lab).parent == twin(lab).state_dir()
    assert json.dumps(make_fault(lab, "loss", "sha-pbx1", percent=5).describe())


def twin(lab: Lab) -> VirtualBackend:
    """The virtual backend, for tests that pull a cable outside any switch (no fault kind does that)."""
    assert isinstance(lab.backend, VirtualBackend)
    return lab.backend
