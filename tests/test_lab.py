"""The virtual lab, driven exactly as hardware: real netmiko, paramiko and pyserial against the emulated
vendor interfaces, real kamailio, real packets in real namespaces. No mocks."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import serial
from click.testing import CliRunner

from harness.cli import main as hil_main
from harness.drivers import driver_for
from harness.drivers.host import HostDriver
from harness.drivers.switch import SwitchDriver
from harness.lab import Lab
from harness.lab.virtual import VirtualBackend
from harness.topology import REPO_ROOT
from sipcore import client, probe
from virtual import netns

pytestmark = pytest.mark.lab


def ping(lab: Lab, src: str, dst_ip: str, count: int = 1) -> bool:
    r = netns.run_in(lab.ns_path(src), ["ping", "-c", str(count), "-W", "1", "-i", "0.2", dst_ip])
    return r.returncode == 0


def switch(lab: Lab, name: str) -> SwitchDriver:
    return driver_for(lab, name)


def host(lab: Lab, name: str) -> HostDriver:
    return driver_for(lab, name)


def options(lab: Lab, src: str, pbx: str, timeout: float = 0.5) -> int | None:
    d = lab.topology.device(pbx)
    with netns.entered(lab.ns_path(src)):
        return probe.options_ping(str(d.spec.address), d.spec.sip_port, timeout=timeout)


def test_status_json(lab: Lab) -> None:
    # through hil's own entry point in this process (an interpreter start costs seconds under load; `hil
    # lab status` runs as its own process in test_nothing_left_behind)
    r = CliRunner().invoke(hil_main, ["lab", "status", "--json"])
    assert r.exception is None or isinstance(r.exception, SystemExit), r.exc_info
    assert r.exit_code == 0, r.stderr
    st = json.loads(r.stdout)
    assert st["up"] and set(st["sites"]) == {"sha", "ntg"}
    ports = {(link["switch"], link["port"]): link for link in st["links"]}
    assert ports[("sha-sw1", "Gi0/1")]["state"] == "up"
    assert ports[("sha-sw1", "Gi0/7")]["state"] == "down"  # nothing plugged in
    pbx = [p for p in st["processes"] if p["device"].endswith("pbx1")]
    assert len(pbx) == 2 and all(p["answers"] and p["host_pid"] for p in pbx)
    assert all(st["ssh"].values()), st["ssh"]
    assert {"sha-con1", "ntg-con1"} <= set(st["consoles"])
    for p in pbx:  # the PID is the real kamailio, seen from the controller
        assert "kamailio" in Path(f"/proc/{p['host_pid']}/cmdline").read_bytes().decode()


@pytest.mark.parametrize(
    "sw,port,src,dst",
    [
        ("sha-sw1", "Gi0/1", "sha-agents1", "sha-pbx1"),
        ("ntg-sw1", "GigabitEthernet0/0/1", "ntg-agents1", "ntg-pbx1"),
        ("ntg-sw1", "GigabitEthernet0/0/24", "sha-agents1", "ntg-pbx1"),  # the WAN uplink
    ],
)
def test_netmiko_port_shutdown_stops_traffic(
    lab: Lab, sw: str, port: str, src: str, dst: str, eventually: Any
) -> None:
    dst_ip = str(lab.topology.device(dst).spec.address)
    assert ping(lab, src, dst_ip)
    with switch(lab, sw) as drv:
        assert drv.port_state(port).admin_up
        drv.port_down(port)
        try:
            st = drv.port_state(port)
            assert not st.admin_up and not st.link_up
            assert not ping(lab, src, dst_ip)
        finally:
            drv.port_up(port)
        assert drv.port_state(port).admin_up
        facts = drv.facts()
        assert facts.get("os_version"), facts
    assert eventually(lambda: ping(lab, src, dst_ip))


def test_console_works_while_management_is_cut(lab: Lab) -> None:
    st = twin(lab).handle.state()
    mgmt_veth = st["mgmt_veths"]["sha-sw1"]
    con_path = st["consoles"]["sha-con1"]
    twin(lab).set_link(mgmt_veth, False)
    try:
        with pytest.raises(OSError):
            socket.create_connection((str(lab.topology.device("sha-sw1").spec.mgmt), 22), timeout=1.0)
        for _ in range(3):  # open, use, close, reopen
            with serial.serial_for_url(con_path, timeout=2) as s:
                s.write(b"\r\n")
                assert b"sha-sw1" in _read_until(s)
                s.write(b"show interfaces status\r\n")
                out = _read_until(s)
                assert b"Gi0/1" in out and b"connected" in out
    finally:
        twin(lab).set_link(mgmt_veth, True)


# The console's prompt in either mode: the session outlives its openers, as a real console's does, so an
# earlier test (the console driver's heal, tests/test_faults.py) leaves it privileged ("sha-sw1#"); waiting
# for ">" alone then ran every read into its timeout (25 s for this test in the suite instead of 1 s).
PROMPTS = (b">", b"#")


def _read_until(s: serial.Serial, markers: tuple[bytes, ...] = PROMPTS, timeout: float = 3.0) -> bytes:
    buf = b""
    deadline = time.monotonic() + timeout
    while not any(m in buf[-4:] for m in markers) and time.monotonic() < deadline:
        buf += s.read(s.in_waiting or 1)
    return buf


@pytest.mark.parametrize("pbx", ["sha-pbx1", "ntg-pbx1"])
def test_phone_registers_with_digest_auth(lab: Lab, pbx: str) -> None:
    d = lab.topology.device(pbx)
    phone = lab.topology.device("sha-phone1")
    ext = phone.spec.extension
    with netns.entered(lab.ns_path("sha-phone1")):
        ok = client.register(str(d.spec.address), d.spec.sip_port, ext, lab.sip_password(ext), expires=30)
        bad = client.register(str(d.spec.address), d.spec.sip_port, ext, "wrong-password", expires=30)
    assert ok == 200
    assert bad in (401, 403)


def test_paramiko_stops_and_starts_kamailio(lab: Lab, eventually: Any) -> None:
    with host(lab, "sha-pbx1") as h:
        assert h.service_active("kamailio")
        pid = h.service_pid("kamailio")
        assert pid
        assert options(lab, "sha-agents1", "sha-pbx1") == 200
        h.service_stop("kamailio")
        try:
            assert not h.service_active("kamailio")
            assert options(lab, "sha-agents1", "sha-pbx1") is None
        finally:
            h.service_start("kamailio")
        assert eventually(lambda: options(lab, "sha-agents1", "sha-pbx1") == 200)
        assert h.service_pid("kamailio") not in (None, pid)


# -- nothing left behind ---------------------------------------------------------------------------------
# A second lab in a namespace of its own (so it does not collide with the session's lab), brought up by the
# real `hil` command, then taken down or killed.


def _snapshot(holder: int) -> dict[str, object]:
    links = subprocess.run(
        ["nsenter", f"--net=/proc/{holder}/ns/net", "ip", "-o", "link"], capture_output=True, text=True
    ).stdout
    mounts = Path("/proc/self/mountinfo").read_text()
    netns_dir = sorted(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else []
    names = sorted(line.split(":")[1].strip().split("@")[0] for line in links.splitlines())
    return {"links": names, "mounts": mounts, "netns": netns_dir}


def _netns_of(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/net")
    except OSError:
        return None


def _pidns_members(pidns: str) -> list[int]:
    out = []
    for e in os.listdir("/proc"):
        if e.isdigit():
            try:
                if os.readlink(f"/proc/{e}/ns/pid") == pidns:
                    out.append(int(e))
            except OSError:
                pass
    return out


@pytest.fixture
def own_netns(tmp_path: Path, eventually: Any):
    holder = subprocess.Popen(["unshare", "--net", "sleep", "600"])
    ours = os.readlink("/proc/self/ns/net")
    assert eventually(lambda: _netns_of(holder.pid) not in (None, ours)), "unshare --net never took effect"
    env = dict(os.environ, HIL_RUN_DIR=str(tmp_path / "run"))

    def hil(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["nsenter", f"--net=/proc/{holder.pid}/ns/net", sys.executable, "-m", "harness.cli", *args],
            capture_output=True, text=True, cwd=REPO_ROOT, env=env, timeout=60,
        )  # fmt: skip

    yield holder.pid, hil, tmp_path / "run"
    if (tmp_path / "run").exists() and any((tmp_path / "run").iterdir()):  # a test that failed half-way
        hil("lab", "down")
    holder.kill()
    holder.wait()


@pytest.mark.parametrize("how", ["down", "sigkill"])
def test_nothing_left_behind(own_netns, how: str, eventually: Any) -> None:
    holder, hil, run_dir = own_netns
    before = _snapshot(holder)
    r = hil("lab", "up")
    assert r.returncode == 0, r.stderr
    state = json.loads((run_dir / "virtual-two-site" / "lab.json").read_text())
    keeper = state["keeper_pid"]
    pidns = os.readlink(f"/proc/{keeper}/ns/pid")
    assert len(_pidns_members(pidns)) > 3  # keeper, kamailio and its workers
    assert "hilmgmt" in _snapshot(holder)["links"]
    if how == "down":
        r = hil("lab", "down")
        assert r.returncode == 0, r.stderr
    else:
        os.kill(keeper, signal.SIGKILL)
    assert eventually(lambda: not _pidns_members(pidns)), _pidns_members(pidns)
    # the kernel tears a dead namespace's interfaces down asynchronously
    assert eventually(lambda: _snapshot(holder) == before, every=0.1)
    assert _snapshot(holder) == before
    r = hil("lab", "status")
    assert r.returncode == 1 and "no lab is up" in r.stdout
    assert not (run_dir / "virtual-two-site").exists()


def test_span_capture_on_the_controllers_interface(lab: Lab, tmp_path: Path) -> None:
    """Captures run where a physical lab has them: on the controller's NIC on each switch's SPAN port,
    the SPAN session set through the switch CLI by netmiko (the virtual switch mirrors with tc), as a
    change through the injector: made for the capture, removed after it."""
    from harness.decode import decode_pcap
    from harness.observe import LabCapture

    cap = LabCapture(lab, tmp_path)
    assert {p.iface for p in cap.points} == {"hilcap-sha", "hilcap-ntg"}
    cap.start()
    try:
        ext = lab.topology.device("sha-phone1").spec.extension
        for pbx in ("sha-pbx1", "ntg-pbx1"):
            d = lab.topology.device(pbx)
            with netns.entered(lab.ns_path("sha-phone1")):
                assert (
                    client.register(str(d.spec.address), d.spec.sip_port, ext, lab.sip_password(ext)) == 200
                )
        cti = lab.topology.device("sha-cti1").spec
        s = netns.socket_in(lab.ns_path("sha-agents1"))
        s.settimeout(2)
        s.connect((str(cti.address), cti.port))
        s.sendall(b'{"type": "status"}\n')
        s.recv(4096)
        s.close()
        with driver_for(lab, "sha-sw1") as sw:  # the SPAN session, as the switch's own CLI shows it
            assert "Gi0/23" in sw._show("span_state", "show monitor session all")
    finally:
        results = cap.stop()
    assert all(r.complete for r in results), [r.to_dict() for r in results]
    regs = {}
    cti_msgs = 0
    for r in results:
        for ev in decode_pcap(r.pcap_path, cti_ports=(cti.port,)).events:
            if (
                ev.protocol == "sip"
                and ev.status == 200
                and ev.cseq_method == "REGISTER"
                and ev.extension == ext
            ):
                regs[r.name] = regs.get(r.name, 0) + 1
            cti_msgs += ev.protocol == "cti"
    assert set(regs) == {"sha-sw1-span", "ntg-sw1-span"}, regs  # each PBX's 200 seen once, at its own site
    assert all(n == 1 for n in regs.values()), regs
    assert cti_msgs >= 2
    # the capture's own injector made the SPAN sessions, and removed them when the capture stopped
    with driver_for(lab, "sha-sw1") as sw:
        assert "Gi0/23" not in sw._show("span_state", "show monitor session all")


def twin(lab: Lab) -> VirtualBackend:
    """The virtual backend, for tests that pull a cable outside any switch (no fault kind does that)."""
    assert isinstance(lab.backend, VirtualBackend)
    return lab.backend
