"""`hil lab up --as-physical`'s writer: what it writes validates, round-trips, and keeps secrets out.

No lab here: the twin is a stand-in with the few facts the writer reads (console lines, host keys, secrets,
the run directory). tests/test_physical_lab.py does the same against the running twin.
"""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness import credentials, topology
from harness.lab import asphysical
from harness.topology import DEFAULT_TOPOLOGY, REPO_ROOT
from virtual.capturehost import capture_host_plans


class _Twin:
    """What the writer asks of a running virtual lab."""

    def __init__(self, topo: topology.Topology, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.consoles = {c.name: f"/dev/pts/{40 + i}" for i, c in enumerate(topo.of_kind("console"))}
        (run_dir / "known_hosts").write_text("[198.19.0.21]:22 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIK\n")
        self.secrets = {v: f"value-of-{v.lower()}" for v in [*credentials.referenced(topo)]}
        self.secrets[credentials.STACK_SECRET_VAR] = "stack-secret-value"

        self.handle = self  # the keeper's state: the capture hosts it serves
        self.capture_hosts = [c.to_dict() for c in capture_host_plans(topo)]

    def state(self) -> dict[str, Any]:
        return {"capture_hosts": self.capture_hosts}

    def console_url(self, name: str) -> str | None:
        return self.consoles.get(name)

    def known_hosts(self) -> Path:
        return self.run_dir / "known_hosts"

    def state_dir(self) -> Path:
        return self.run_dir

    def environment(self) -> dict[str, str]:
        return dict(self.secrets)


@pytest.fixture
def written(tmp_path: Path) -> tuple[topology.Topology, _Twin, asphysical.Written]:
    topo = topology.load(DEFAULT_TOPOLOGY)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    twin = _Twin(topo, run_dir)
    return topo, twin, asphysical.write(topo, twin, tmp_path / "out" / "twin.yaml")  # type: ignore[arg-type]


def test_the_written_file_validates_as_a_physical_lab(written: Any) -> None:
    topo, twin, w = written
    phys = topology.load(w.topology)
    assert phys.kind == "physical" and phys.name == f"{topo.name}-physical"
    assert set(phys.devices) == set(topo.devices) | {"ntg-capture1"}  # a far site's SPAN goes to it
    cap, ntg, sha = phys.device("ntg-capture1"), phys.device("ntg-sw1"), phys.device("sha-sw1")
    assert cap.kind == "host" and cap.spec.role == "capture" and cap.spec.capture_interface == "span0"
    assert str(cap.spec.mgmt) == twin.capture_hosts[0]["mgmt"] and cap.spec.workdir == "/tmp"
    assert (ntg.spec.capture_host, ntg.spec.capture_interface) == ("ntg-capture1", "span0")
    assert ntg.spec.span_port == topo.device("ntg-sw1").spec.span_port
    assert sha.spec.capture_host is None and sha.spec.capture_interface == "hilcap-sha"  # controller NIC
    assert phys.model.ssh.known_hosts == str(w.known_hosts) and not phys.model.ssh.trust_new_host_keys
    assert w.known_hosts.read_text() == twin.known_hosts().read_text()
    for con in phys.of_kind("console"):
        assert con.spec.url == twin.consoles[con.name]  # a serial line the controller opens
    for d in (d for d in phys.devices.values() if d.name in topo.devices):  # every management address
        assert getattr(d.spec, "mgmt", None) == getattr(topo.device(d.name).spec, "mgmt", None)
    assert {d.name for d in phys.of_kind("host") if d.spec.role == "caller"} == {"sha-caller1", "ntg-caller1"}
    assert all(d.spec.service == "hil-swarm" for d in phys.of_kind("host") if d.spec.role == "agents")
    assert [a.extension for a in phys.agents()] == [a.extension for a in topo.agents()]


def test_the_written_file_round_trips(written: Any, tmp_path: Path) -> None:
    """Loaded and written again (as YAML of its model), it is the same lab."""
    _, _, w = written
    phys = topology.load(w.topology)
    again = tmp_path / "again.yaml"
    again.write_text(yaml.safe_dump(phys.model.model_dump(mode="json", exclude_none=True), sort_keys=False))
    assert topology.load(again).model == phys.model


def test_secrets_go_to_a_private_env_file_under_the_run_dir(written: Any) -> None:
    _, twin, w = written
    assert w.env_file.parent == twin.run_dir
    assert not str(w.env_file).startswith(str(REPO_ROOT))
    assert stat.S_IMODE(w.env_file.stat().st_mode) == 0o600
    assert w.source_line == f"source {w.env_file}"
    text = w.topology.read_text()
    for var, value in twin.secrets.items():
        assert value not in text  # only ${VAR} references in the topology
        assert f"export {var}={value}\n" in w.env_file.read_text()
    assert "${LAB_SWITCH_PASSWORD}" in text


def test_a_physical_lab_cannot_be_rewritten(tmp_path: Path) -> None:
    phys = topology.load(REPO_ROOT / "topologies" / "physical-example.yaml")
    with pytest.raises(ValueError, match="only a virtual lab"):
        asphysical.physical_model(phys, {}, tmp_path / "k")


def test_a_console_the_twin_does_not_serve_is_refused(tmp_path: Path) -> None:
    topo = topology.load(DEFAULT_TOPOLOGY)
    with pytest.raises(ValueError, match="serves no console"):
        asphysical.physical_model(topo, {}, tmp_path / "k")
