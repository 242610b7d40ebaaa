"""The physical backend reads the lab only through drivers, and says when it cannot.

Unit tests of harness/lab/physical.py alone: the drivers are replaced by fakes here (the real drivers are
exercised against the twin in tests/test_drivers.py); no packet leaves this machine.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest

from harness import topology
from harness.drivers import DeviceUnreachable
from harness.drivers.phone import Registration
from harness.lab import Lab
from harness.lab import physical as physical_mod
from harness.lab.physical import LabUnusable, PhysicalBackend
from harness.topology import REPO_ROOT

EXAMPLE = REPO_ROOT / "topologies" / "physical-example.yaml"


@dataclass
class _Port:
    admin_up: bool
    link_up: bool


@dataclass
class _Ran:
    exit_code: int
    stdout: str
    stderr: str


class _Sftp:
    def stat(self, path: str) -> object:
        return object()

    def close(self) -> None:
        pass


class _SshClient:
    def open_sftp(self) -> _Sftp:
        return _Sftp()


class _FakeDriver:
    def __init__(self, name: str, down: set[str], inactive: set[str]) -> None:
        self.name, self.down, self.inactive = name, down, inactive
        self.ran: list[str] = []

    def port_state(self, port: str) -> _Port:
        up = f"{self.name}:{port}" not in self.down
        return _Port(True, up)

    def outlet_state(self, outlet: str) -> bool:
        return f"{self.name}:{outlet}" not in self.down

    def service_active(self, unit: str) -> bool:
        return f"{self.name}:{unit}" not in self.inactive

    def fetch_log(self, unit: str, lines: int = 500) -> str:
        if self.name in self.down:
            raise DeviceUnreachable(self.name, "connect", "no route to host")
        return f"{self.name} {unit} journal, last {lines} lines\n"

    def run(self, command: str, action: str = "run", check: bool = False) -> _Ran:
        self.ran.append(command)
        return _Ran(0, "", "")

    @property
    def client(self) -> _SshClient:
        return _SshClient()  # a capture host whose workdir is there (SFTP)

    def registration(self) -> Registration:
        return Registration("registered", "10.41.1.10", 5060, "19001")

    @property
    def port(self) -> object:
        return object()  # a console line that answered


@pytest.fixture
def topo(monkeypatch: pytest.MonkeyPatch) -> topology.Topology:
    for var in ("LAB_SWITCH_PASSWORD", "LAB_SWITCH_SECRET", "LAB_HOST_PASSWORD", "LAB_PHONE_PASSWORD",
                "LAB_CONSOLE_PASSWORD", "LAB_SIP_SECRET", "LAB_PDU_PASSWORD"):  # fmt: skip
        monkeypatch.setenv(var, "x")
    return topology.load(EXAMPLE)


def _use(monkeypatch: pytest.MonkeyPatch, factory: Any) -> list[str]:
    asked: list[str] = []

    @contextmanager
    def fake_driver_for(lab: Lab, name: str, steps: Any = None) -> Any:
        asked.append(name)
        yield factory(name)

    monkeypatch.setattr(physical_mod, "driver_for", fake_driver_for)
    return asked


def test_status_read_through_the_drivers(topo: topology.Topology, monkeypatch: pytest.MonkeyPatch) -> None:
    asked = _use(
        monkeypatch, lambda n: _FakeDriver(n, {"sha-sw1:Gi1/0/1", "sha-pdu1:2"}, {"ntg-cti1:hil-cti"})
    )
    st = PhysicalBackend(topo).status()
    assert st is not None and st.complete, st.problems if st else None
    links = {f"{x.switch}:{x.port}": x.state for x in st.links}
    assert links["sha-sw1:Gi1/0/1"] == "down"
    assert sum(1 for s in links.values() if s == "up") == len(links) - 1
    procs = {f"{p.device}:{p.name}": p.state for p in st.processes}
    assert procs["ntg-cti1:hil-cti"] == "inactive" and procs["sha-pbx1:kamailio"] == "active"
    outlets = {f"{o.pdu}:{o.outlet}": o.state for o in st.outlets}
    assert outlets["sha-pdu1:2"] == "down" and outlets["sha-pdu1:1"] == "up"
    assert "sha-sw1" in asked and "sha-pbx1" in asked
    assert all(m.state == "up" for m in st.management)


def test_unreachable_devices_make_the_status_incomplete(
    topo: topology.Topology, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unreachable(name: str) -> Any:
        raise DeviceUnreachable(name, "connect", "no route")

    _use(monkeypatch, unreachable)
    st = PhysicalBackend(topo).status()
    assert st is not None and not st.complete
    assert st.links and all(x.state == "unknown" for x in st.links)
    assert st.processes and all(p.state == "unknown" for p in st.processes)
    assert st.outlets and all(o.state == "unknown" for o in st.outlets)
    assert any("sha-sw1" in p and "no route" in p for p in st.problems)


def test_physical_backend_has_no_twin_shortcuts(topo: topology.Topology, tmp_path: Any) -> None:
    b = PhysicalBackend(topo, state_root=tmp_path)
    lab = Lab(topo, b)
    assert not lab.virtual
    assert lab.ns_path("sha-pbx1") is None
    assert b.tap("sha-sw1", "Gi1/0/1") is None and b.console_url("sha-con1") is None
    assert b.environment() == {}
    assert lab.state_dir() == tmp_path / topo.name and lab.state_dir().is_dir()


def test_preflight_refuses_a_lab_with_one_line_per_device(
    topo: topology.Topology, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each failure names the device, the management interface and what failed, on one line."""

    def half(name: str) -> Any:
        if name in ("sha-sw1", "ntg-phone1", "sha-con1"):
            raise DeviceUnreachable(name, "connect", "no route to host")
        return _FakeDriver(name, set(), set())

    _use(monkeypatch, half)
    with pytest.raises(LabUnusable) as e:
        PhysicalBackend(topo).preflight()
    lines = e.value.lines()
    assert lines == sorted(lines) and len(lines) == 3, lines
    assert "sha-sw1: ssh 10.40.0.21:22: connect: device unreachable (no route to host)" in lines
    assert any(x.startswith("ntg-phone1: http 10.42.1.51:80: ") for x in lines)
    assert any(x.startswith("sha-con1: serial socket://10.40.0.30:3001: ") for x in lines)
    assert all("\n" not in x for x in lines)


def test_preflight_passes_when_every_device_answers(
    topo: topology.Topology, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked = _use(monkeypatch, lambda n: _FakeDriver(n, set(), set()))
    st = PhysicalBackend(topo).preflight()
    assert st.complete
    read = {m.device for m in st.management if m.state == "up"}
    for kind in ("switch", "pbx", "cti", "ul", "phone", "pdu"):
        assert {d.name for d in topo.of_kind(kind)} <= read, kind
    assert {d.name for d in topo.of_kind("host") if d.spec.mgmt} <= read
    assert set(asked) == read


def test_device_logs_come_over_ssh_into_the_state_dir(
    topo: topology.Topology, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    """No run directory to read logs from: each service's journal is fetched from its host; a host that
    does not answer gets a log saying so (a report never fails on a log)."""
    _use(monkeypatch, lambda n: _FakeDriver(n, {"sha-pbx1"}, set()))
    logs = PhysicalBackend(topo, state_root=tmp_path).logs_dir()
    assert logs is not None and logs.is_relative_to(tmp_path)
    assert (logs / "ntg-cti1-hil-cti.log").read_text() == "ntg-cti1 hil-cti journal, last 500 lines\n"
    assert (logs / "sha-pbx1-kamailio.log").read_text().startswith("not fetched: ssh 10.40.0.11:22: ")
