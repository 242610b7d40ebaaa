"""Agents on phones the stack did not write: the topology's ``phone:`` / ``softphone:`` pools, validated;
the same roster for the harness and the agent process; and the agents host's unit that runs them.

Why: these agents must be agents like the others (ids, homes, extensions the harness judges by), while
the swarm must leave their phones alone and a restart of ``hil-swarm`` must restart their clients too.
"""

from __future__ import annotations

import copy
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from harness import topology
from harness.topology import REPO_ROOT, TopologyError
from stack.agent import __main__ as agent_main
from stack.agent.linked import linked_agents, linked_pools, phone_control
from stack.phone.baresip import BaresipPhoneControl
from stack.phone.control import HttpPhoneControl
from stack.phone.polycontrol import PolyPhoneControl
from virtual import stackservices

FILE = REPO_ROOT / "topologies" / "virtual-phones.yaml"  # the default lab plus the linked agents
DEFAULT = yaml.safe_load(FILE.read_text())


def _problems(tmp_path: Path, data: dict) -> list[tuple[str, str]]:
    f = tmp_path / "t.yaml"
    f.write_text(yaml.safe_dump(data))
    with pytest.raises(TopologyError) as ei:
        topology.load(f)
    return ei.value.problems


def test_default_lab_links_a_desk_phone_and_a_softphone_per_site() -> None:
    t = topology.load(FILE)
    linked = t.linked_agents()
    assert [(a.home, *t.phone_of(a)) for a in linked] == [
        ("sha", "sha-phone1", None),
        ("ntg", "ntg-phone1", None),
        ("sha", None, "baresip"),
        ("ntg", None, "baresip"),
    ]
    assert [a.id for a in t.agents()][:100] == [f"a{n:05d}" for n in range(1, 101)]  # the pools' ids kept
    for a in linked:
        desk = t.phone_of(a)[0]
        if desk:
            assert a.extension == t.device(desk).spec.extension
    assert t.phone_of(t.agents()[0]) == (None, None)
    exts = t.extensions()
    assert len(exts) == len(set(exts)) and "19001" in exts and "19011" in exts


def test_the_agent_process_sees_the_roster_the_harness_sees(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAB_PHONE_PASSWORD", "api-pw")
    t = topology.load(FILE)
    for site in ("sha", "ntg"):
        mine = linked_agents(FILE, site)
        want = [a for a in t.linked_agents() if a.home == site]
        assert [(la.agent.id, la.agent.extension) for la in mine] == [(a.id, a.extension) for a in want]
        desk = next(la for la in mine if la.desk)
        phone = t.device(desk.desk.name)
        assert desk.desk.url == f"http://{phone.spec.mgmt}:{phone.spec.api_port}"
        assert (desk.desk.username, desk.desk.password) == ("admin", "api-pw")
        controls = [type(phone_control(la, "sip-secret", ("127.0.0.1", 4444))) for la in mine]
        desk_kind = PolyPhoneControl if phone.spec.vendor == "poly" else HttpPhoneControl
        assert controls == [desk_kind, BaresipPhoneControl]
    assert linked_pools(DEFAULT) == {"sha-desk", "ntg-desk", "sha-soft", "ntg-soft"}


def test_linked_pools_are_checked(tmp_path: Path) -> None:
    data = copy.deepcopy(DEFAULT)
    pools = data["agents"]["pools"]
    pools["sha-desk"]["phone"] = "ntg-phone1"  # not a phone of its home site
    pools["ntg-desk"]["extensions"] = "29001-29002"  # not the phone's one extension
    pools["sha-soft"]["phone"] = "sha-phone1"  # both kinds at once
    pools["ntg-soft"]["phone"] = "ntg-pbx1"  # not a phone
    got = dict(_problems(tmp_path, data))
    assert "ntg-phone1 is at site ntg" in got["agents.pools.sha-desk.phone"]
    assert "count 1, extensions 29001-29001" in got["agents.pools.ntg-desk.extensions"]
    assert "not both" in got["agents.pools.sha-soft"]
    assert "not a phone" in got["agents.pools.ntg-soft.phone"]
    data = copy.deepcopy(DEFAULT)
    data["agents"]["pools"]["ntg-soft"]["softphone"] = "linphone"
    assert any(p.startswith("agents.pools.ntg-soft.softphone") for p, _ in _problems(tmp_path, data))
    data = copy.deepcopy(DEFAULT)
    data["sites"]["ntg"]["hosts"]["ntg-agents1"]["role"] = "other"
    data["sites"]["ntg"]["switches"]["ntg-sw1"]["ports"].pop("GigabitEthernet0/0/4", None)
    got = dict(_problems(tmp_path, data))
    assert "no agents host" in got["agents.pools.ntg-soft.softphone"]


def test_the_agents_host_unit_runs_the_linked_agents_with_the_swarm_as_child(tmp_path: Path) -> None:
    t = topology.load(FILE)
    if shutil.which("baresip") is None:
        pytest.skip("baresip not installed")
    plan = stackservices.plan(t, tmp_path, {})
    swarm = {p.device: p for p in plan if p.name == "hil-swarm"}
    for host, site in (("sha-agents1", "sha"), ("ntg-agents1", "ntg")):
        argv = swarm[host].argv
        assert argv[1:3] == ["-m", "stack.agent"] and argv[argv.index("--site") + 1] == site
        child = argv[argv.index("--") + 1 :]
        assert child[1:3] == ["-m", "stack.swarm"]
        pools = [child[i + 1] for i, a in enumerate(child) if a == "--pool"]
        assert pools == [f"{site}-air", f"{site}-hotel"]  # the swarm emulates no linked agent's phone
        args = agent_main.parse(argv[3:])
        assert args.site == site and args.child == child and args.baresip_ctrl == ("127.0.0.1", 4444)
        bs = next(p for p in plan if p.device == host and p.name == "hil-baresip")
        conf = (Path(bs.argv[bs.argv.index("-f") + 1]) / "config").read_text()
        addr = str(t.device(host).spec.address)
        assert f"sip_listen\t{addr}:5062" in conf and f"net_interface\t{addr}" in conf
        assert "ctrl_tcp_listen\t127.0.0.1:4444" in conf and bs.probe == ("127.0.0.1", 4444)


def test_a_lab_without_linked_pools_keeps_the_swarm_unit_as_it_was(tmp_path: Path) -> None:
    data = copy.deepcopy(DEFAULT)
    for name in ("sha-desk", "ntg-desk", "sha-soft", "ntg-soft"):
        del data["agents"]["pools"][name]
    f = tmp_path / "t.yaml"
    f.write_text(yaml.safe_dump(data))
    plan = stackservices.plan(topology.load(f), tmp_path, {})
    swarm = [p for p in plan if p.name == "hil-swarm"]
    assert len(swarm) == 2 and all(
        p.argv[1:3] == ["-m", "stack.swarm"] and "--pool" not in p.argv for p in swarm
    )
    assert not [p for p in plan if p.name == "hil-baresip"]
    assert os.path.basename(swarm[0].argv[0]).startswith("python")


CHILD = """
import pathlib, signal, sys, time
mark = pathlib.Path(sys.argv[1])
signal.signal(signal.SIGTERM, lambda *_: (mark.write_text("term"), sys.exit(0)))
mark.write_text("up")
time.sleep(float(sys.argv[2]))
sys.exit(3)
"""


def _agent_process(tmp_path: Path, hold: float) -> tuple[subprocess.Popen[bytes], Path]:
    tmp_path.mkdir()
    data = copy.deepcopy(DEFAULT)
    for name in ("sha-desk", "ntg-desk", "sha-soft", "ntg-soft"):
        del data["agents"]["pools"][name]
    f = tmp_path / "t.yaml"
    f.write_text(yaml.safe_dump(data))
    mark = tmp_path / "child"
    env = {**os.environ, "LAB_AGENT_PASSWORD": "a", "LAB_SIP_SECRET": "s"}
    log = str(tmp_path / "events.jsonl")
    child = [sys.executable, "-c", CHILD, str(mark), str(hold)]
    argv = [sys.executable, "-m", "stack.agent", "--topology", str(f), "--site", "sha", "--log", log, "--"]
    proc = subprocess.Popen(argv + child, env=env, cwd=REPO_ROOT, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while not mark.exists():
        assert time.monotonic() < deadline and proc.poll() is None, "the child never started"
        time.sleep(0.05)
    return proc, mark


def test_the_agent_process_passes_sigterm_to_its_child_and_fails_with_it(tmp_path: Path) -> None:
    proc, mark = _agent_process(tmp_path / "a", hold=120)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    assert mark.read_text() == "term"
    proc, mark = _agent_process(tmp_path / "b", hold=0.2)  # the swarm dies by itself: so does the unit
    assert proc.wait(30) == 3
