"""The twin driven as a physical lab: `hil lab up --as-physical`, `hil lab status --topology <written>`,
bad input refused with one line per device and exit 2, and one real scenario run with the lab's run
directory hidden from the harness (an empty tmpfs over it, in a mount namespace of the harness's own: root
ignores file modes, so chmod 000 would prove nothing) and an audit hook that fails on any keeper, namespace
or run-directory access.

Run it in a network namespace of its own (as every lab test):
    unshare --net sh -c 'ip link set lo up; HIL_RUN_DIR=/tmp/hil-k7 .venv/bin/python -m pytest -q \
        tests/test_physical_lab.py'
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paramiko
import pytest
import yaml

from harness import topology
from harness.drivers import driver_for
from harness.drivers.caller import RemoteCallerDriver, caller_for
from harness.lab import Lab
from harness.lab import virtual as virtual_backend
from harness.lab.physical import LabUnusable, PhysicalBackend
from harness.topology import DEFAULT_TOPOLOGY, REPO_ROOT
from virtual.lab import run_base

pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(os.geteuid() != 0 or shutil.which("kamailio") is None, reason="needs root, kamailio"),
]

# Installed in the harness process of the scenario run: any access to the twin's private side is recorded
# and refused. What it watches: the run directory, the keeper's /proc entries (its namespaces and mounts),
# entering a namespace, the keeper's control socket.
GUARD = r"""
import os, sys
forbidden = [p for p in sys.argv[1].split(":") if p]
record = sys.argv[2]
def hook(event, args):
    if event in ("open", "os.listdir", "os.scandir", "os.chdir", "socket.connect", "subprocess.Popen",
                 "os.exec", "os.posix_spawn"):
        text = " ".join(str(a) for a in (args if isinstance(args, tuple) else (args,)))
        if any(p in text for p in forbidden) or "nsenter" in text or "netns exec" in text:
            with open(record, "a") as f:
                f.write(f"{event}: {text[:300]}\n")
            raise PermissionError(f"physical mode touched the twin's private side: {event} {text[:200]}")
sys.addaudithook(hook)
import pytest
sys.exit(pytest.main(sys.argv[3:]))
"""


def _hil(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "harness.cli", *args],
        capture_output=True, text=True, cwd=REPO_ROOT, env=env, timeout=timeout,
    )  # fmt: skip


@pytest.fixture(scope="module")
def twin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The twin up (or the one already up), written as physical; its secrets read from the printed
    `source` line's file, as a user's shell would, before anything is hidden."""
    was_up = virtual_backend.find() is not None
    out = tmp_path_factory.mktemp("physical") / "twin.yaml"
    r = _hil("lab", "up", "--topology", str(DEFAULT_TOPOLOGY), "--as-physical", str(out))
    assert r.returncode == 0, r.stderr
    m = re.search(r"^source (\S+)$", r.stdout, re.M)
    assert m, r.stdout
    env_file = Path(m.group(1))
    values = dict(
        line.removeprefix("export ").split("=", 1) for line in env_file.read_text().splitlines() if line
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAB_")}
    env.update({k: v.strip("'") for k, v in values.items()})
    backend = virtual_backend.find()
    assert backend is not None
    yield {"file": out, "env": env, "env_file": env_file, "keeper": backend.keeper_pid, "dir": out.parent}
    if not was_up:
        _hil("lab", "down")


def test_the_source_line_names_a_private_file_under_the_run_dir(twin: dict[str, Any]) -> None:
    env_file: Path = twin["env_file"]
    assert env_file.is_relative_to(run_base()) and not env_file.is_relative_to(REPO_ROOT)
    assert (env_file.stat().st_mode & 0o777) == 0o600


def test_status_reads_every_device_through_its_management_interface(twin: dict[str, Any]) -> None:
    r = _hil("lab", "status", "--topology", str(twin["file"]), "--json", env=twin["env"])
    assert r.returncode == 0, r.stderr
    st = json.loads(r.stdout)
    assert st["kind"] == "physical" and st["up"] and not st["problems"]
    reached = {m["device"] for m in st["management"] if m["state"] == "up"}
    assert {"sha-sw1", "ntg-sw1", "sha-pbx1", "ntg-cti1", "sha-caller1", "ntg-phone1", "sha-pdu1"} <= reached
    assert "ntg-capture1" in reached  # the capture host of Nantong's SPAN port
    assert {"sha-con1", "ntg-con1"} <= reached
    assert st["links"] and all(x["state"] == "up" for x in st["links"])
    assert {p["device"] for p in st["processes"] if p["state"] == "active"} >= {"sha-pbx1", "ntg-agents1"}
    assert all(ph["state"] == "registered" for ph in st["phones"])
    assert st["outlets"] and all(o["state"] == "up" for o in st["outlets"])
    table = _hil("lab", "status", "--topology", str(twin["file"]), env=twin["env"])
    assert table.returncode == 0 and "links:" in table.stdout and "management:" in table.stdout


def _variant(twin: dict[str, Any], name: str, edit: Any) -> Path:
    d = yaml.safe_load(Path(twin["file"]).read_text())
    edit(d)
    out = Path(twin["dir"]) / f"{name}.yaml"
    out.write_text(yaml.safe_dump(d, sort_keys=False))
    return out


def _errors(r: subprocess.CompletedProcess[str]) -> list[str]:
    return [ln for ln in r.stderr.splitlines() if ln.startswith("error: ")]


def test_bad_input_is_one_line_per_device_and_exit_2(twin: dict[str, Any]) -> None:
    """Wrong password, unknown host key, unreachable device, silent console, phone API error."""
    env = {**twin["env"], "LAB_PHONE_PASSWORD": "wrong"}
    empty_keys = Path(twin["dir"]) / "empty.known_hosts"
    empty_keys.write_text("")

    def edits(d: dict[str, Any]) -> None:
        d["ssh"]["known_hosts"] = str(empty_keys)

    r = _hil("lab", "status", "--topology", str(_variant(twin, "nokeys", edits)), env=twin["env"])
    assert r.returncode == 2 and _errors(r), r.stderr
    assert any(e.startswith("error: sha-pbx1: ssh 198.19.0.11:22: ") and "host key" in e for e in _errors(r))

    def broken(d: dict[str, Any]) -> None:
        sha = d["sites"]["sha"]
        sha["cti"]["sha-cti1"]["ssh_port"] = 2  # nothing listens: refused
        sha["consoles"]["sha-con1"]["url"] = "socket://198.19.0.1:9"  # a console server that does not answer

    r = _hil("lab", "status", "--topology", str(_variant(twin, "broken", broken)), env=env)
    assert r.returncode == 2, r.stderr
    errs = _errors(r)
    assert any(e.startswith("error: sha-cti1: ssh 198.19.0.12:2: ") and "unreachable" in e for e in errs)
    assert any(e.startswith("error: sha-con1: serial socket://198.19.0.1:9: ") for e in errs), errs
    assert any(e.startswith("error: sha-phone1: http 198.19.0.16:80: ") and "credentials" in e for e in errs)
    assert not any(e.startswith("error: sha-pbx1") for e in errs)

    r = _hil("lab", "status", "--topology", str(twin["file"]), env={**twin["env"], "LAB_HOST_PASSWORD": "x"})
    assert r.returncode == 2
    assert "error: sha-pbx1: ssh 198.19.0.11:22: authentication failed for labops@198.19.0.11" in r.stderr


def test_a_capture_host_that_cannot_capture_is_refused_before_any_fault(
    twin: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The preflight names the capture host, its management interface, the capture interface and what
    failed, in one line; an unreachable capture host gets its one line from the login."""
    for k, v in twin["env"].items():
        monkeypatch.setenv(k, v)
    cap = yaml.safe_load(Path(twin["file"]).read_text())["sites"]["ntg"]["hosts"]["ntg-capture1"]

    def no_nic(d: dict[str, Any]) -> None:
        d["sites"]["ntg"]["switches"]["ntg-sw1"]["capture_interface"] = "nosuch0"
        d["sites"]["ntg"]["hosts"]["ntg-capture1"]["capture_interface"] = "nosuch0"

    def unreachable(d: dict[str, Any]) -> None:
        d["sites"]["ntg"]["hosts"]["ntg-capture1"]["ssh_port"] = 2

    for name, edit, line in (
        ("nonic", no_nic, f"ntg-capture1: ssh {cap['mgmt']}:22: capture on nosuch0: tcpdump exited 1: "),
        ("capoff", unreachable, f"ntg-capture1: ssh {cap['mgmt']}:2: "),
    ):
        topo = topology.load(_variant(twin, name, edit))
        with pytest.raises(LabUnusable) as e:
            PhysicalBackend(topo).preflight()
        mine = [p for p in e.value.lines() if p.startswith("ntg-capture1: ")]
        assert len(mine) == 1 and mine[0].startswith(line), e.value.lines()
        assert len(e.value.lines()) == 1, e.value.lines()
    assert "No such device" in mine[0] or "unreachable" in mine[0]


@pytest.mark.xfail(
    reason="issue 12, open: in fresh-clone make test runs (unit tests beside the scenario suite) the callee "
    "agent's phone stayed unregistered at sha's PBX for the whole 60 s poll (480); passes alone",
    strict=False,
)
def test_a_test_call_runs_on_the_caller_host(twin: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """The caller started over SSH on sha-caller1, its result fetched over SFTP: a real call through
    sha-pbx1 to an agent of sha, answered."""
    for k, v in twin["env"].items():
        monkeypatch.setenv(k, v)
    topo = topology.load(twin["file"])
    lab = Lab(topo, PhysicalBackend(topo))
    with driver_for(lab, "sha-caller1") as ssh:
        try:
            ssh.client.open_sftp().close()
        except paramiko.SSHException:
            pytest.skip("the twin's caller host serves no SFTP yet (virtual/keeper.py: caller_host_factory)")
    agent = next(a for a in topo.agents() if a.home == "sha")
    caller = caller_for(lab, "sha-caller1", "sha-pbx1")
    assert isinstance(caller, RemoteCallerDriver)
    # 480 = the agent's phone is not registered yet (the twin's swarm spreads its first logins, and on a
    # loaded machine they can still be going on): that is readiness, polled with a generous deadline.
    deadline = time.monotonic() + 60.0
    while True:
        res = caller.call(agent.extension, ring_timeout=8.0, hold=0.3, sip_port=5064)
        if res.answered or res.status != 480 or time.monotonic() > deadline:
            break
        time.sleep(1.0)
    assert res.answered, res
    caller.ssh.close()


def test_a_scenario_runs_through_management_interfaces_only(twin: dict[str, Any], tmp_path: Path) -> None:
    """PBX killed at sha: the agents move to ntg, judged valid, with the run directory hidden and every
    keeper, namespace or run-directory access refused and recorded."""
    record = tmp_path / "violations.txt"
    forbidden = ":".join([str(run_base()), f"/proc/{twin['keeper']}/", "control.sock"])
    inner = [
        sys.executable, "-c", GUARD, forbidden, str(record),
        "-q", "-p", "no:cacheprovider", "scenarios/test_unplanned.py", "-k", "pbx_killed and sha",
        "--topology", str(twin["file"]), "--hil-reports", str(tmp_path / "reports"),
    ]  # fmt: skip
    hide = f'mount -t tmpfs -o mode=000 hil-hidden {run_base()} && exec "$@"'
    argv = ["unshare", "--mount", "--propagation", "private", "sh", "-c", hide, "sh", *inner]
    r = subprocess.run(argv, capture_output=True, text=True, cwd=REPO_ROOT, env=twin["env"], timeout=600)
    tail = (r.stdout + r.stderr)[-3000:]
    assert not record.exists(), record.read_text()
    assert r.returncode == 0, tail
    assert "1 passed" in r.stdout, tail
    # Nantong's SPAN goes to its capture host: the capture on its NIC (span0, which the controller does
    # not have) was complete, with packets, and its pcap came back to be redacted and published.
    assert not Path("/sys/class/net/span0").exists()
    verdicts = [json.loads(p.read_text()) for p in (tmp_path / "reports" / "verdicts").glob("*.json")]
    found = [v for doc in verdicts for v in _verdicts(doc) if v.get("name") == "capture_complete"]
    assert found and all(v["result"] == "valid" for v in found), found
    captures = found[0]["figures"]["captures"]
    assert captures["ntg-sw1-span"]["complete"] and captures["ntg-sw1-span"]["packets"] > 0, captures
    published = list((tmp_path / "reports" / "pcap").glob("*/ntg-sw1-span.pcap"))  # the redacted copy
    assert published and published[0].stat().st_size > 24, "fetched, redacted and published as the others"
    assert not list((tmp_path / "reports").rglob("raw/*/*.pcap")), "a physical lab keeps no raw pcap"


def _verdicts(doc: Any) -> list[dict[str, Any]]:
    if isinstance(doc, dict):
        got = doc.get("verdicts")
        return [v for v in got if isinstance(v, dict)] if isinstance(got, list) else []
    return [v for v in doc if isinstance(v, dict)] if isinstance(doc, list) else []
