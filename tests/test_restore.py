"""`hil lab restore` on the virtual lab: what a controller killed with SIGKILL left behind is undone, each
heal read back. A planned-switch rule (whose id reached the journal, or not), a SPAN session, a stopped
swarm, a running tcpdump (stopped by PID and start time, never another process); a torn journal line loses
no later record; a heal that does not show leaves the fault open and says so."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from harness.cli import main as hil_main
from harness.drivers import driver_for
from harness.faults import Injector, Journal, PortDown, register
from harness.faults.journal import owner, proc_start
from harness.lab import Lab
from harness.topology import REPO_ROOT
from harness.ulapi import UlClient, client_for, ul_urls
from virtual import netns

pytestmark = pytest.mark.lab

SCRIPT = """
import os, sys, time
from harness import topology
from harness.capture import Capture
from harness.faults import Injector
from harness.lab.session import open_lab
lab = open_lab(topology.load(), bring_up=False)
inj = Injector(lab, journal_path=sys.argv[1])
{body}
print("injected", flush=True)
time.sleep(600)  # a controller at work, until the test kills it
"""


def controller(journal: Path, body: str) -> subprocess.Popen[str]:
    """A controller that makes its changes, says so, and is then killed with SIGKILL (nothing heals)."""
    p = subprocess.Popen(
        [sys.executable, "-c", SCRIPT.format(body=body), str(journal)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO_ROOT,
    )
    assert p.stdout is not None and p.stderr is not None
    line = p.stdout.readline()
    assert line.strip() == "injected", (line, p.stderr.read() if p.poll() is not None else "")
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    return p


def hil_restore(journal: Path) -> subprocess.CompletedProcess[str]:
    """``hil lab restore --journal J`` through the console script's entry point in this process, as a
    finished process would report it: the controller it restores after is another, killed process, which
    is what these tests are about (tests/test_faults.py runs `hil lab restore` as its own process; an
    interpreter start per restore here cost 2-5 s each on a loaded machine)."""
    args = ["lab", "restore", "--journal", str(journal)]
    r = CliRunner().invoke(hil_main, args)
    assert r.exception is None or isinstance(r.exception, SystemExit), r.exc_info
    return subprocess.CompletedProcess(["hil", *args], r.exit_code, r.stdout, r.stderr)


def eventually(pred: Callable[[], bool], timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def live_rules(lab: Lab, value: str) -> dict[str, list[str]]:
    """Each UL's live rules with this value: {site: [rule id, ...]}."""
    return {
        site: [r["id"] for r in UlClient(url).rules() if r.get("value") == value]
        for site, url in ul_urls(lab).items()
    }


# -- planned switches ----------------------------------------------------------------------------------


def test_sigkill_during_a_planned_switch_leaves_a_rule_that_restore_removes(lab: Lab, tmp_path: Path) -> None:
    journal = tmp_path / "j.jsonl"
    value = f"restore-{os.getpid()}"  # a skill group no agent has: nobody moves
    make = f"inj.make('planned_switch', 'sha-ul1', scope='skill_group', value='{value}', to='ntg')"
    controller(journal, f"inj.inject({make})")
    [rec] = Journal(journal).open_faults()
    rule_ids = rec["notes"]["rule_ids"]
    assert list(rule_ids) == [value]  # the UL's rule id reached the journal the moment it was known
    assert all(ids == [rule_ids[value]] for ids in live_rules(lab, value).values())  # on both ULs
    r = hil_restore(journal)
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert r.stdout.startswith(f"healed   {rec['id']} planned_switch sha-ul1"), r.stdout
    assert live_rules(lab, value) == {"sha": [], "ntg": []}
    assert Journal(journal).open_faults() == []
    assert hil_restore(journal).stdout.strip() == "no open faults"


def test_a_rule_whose_id_never_reached_the_journal_is_found_by_what_it_says(lab: Lab, tmp_path: Path) -> None:
    """Killed between the UL's answer and the note: the record has no rule id; restore matches the live
    rules by (scope, value, target), and leaves rules of other values alone."""
    journal = tmp_path / "j.jsonl"
    value, other = f"restore-noid-{os.getpid()}", f"restore-keep-{os.getpid()}"
    ul = client_for(lab, prefer="sha")
    ul.add_rule("skill_group", value, "ntg")
    keep = ul.add_rule("skill_group", other, "ntg")["rule"]["id"]
    dead = {"pid": os.getpid(), "start": "0"}  # a controller that is gone
    params = {"scope": "skill_group", "value": value, "to": "ntg"}
    fault = {"kind": "planned_switch", "target": "sha-ul1", "params": params}
    Journal(journal).append({"op": "inject", "id": "fnoid", "fault": fault, "owner": dead})
    try:
        r = hil_restore(journal)
        assert r.returncode == 0 and "healed   fnoid planned_switch" in r.stdout, (r.stdout, r.stderr)
        assert live_rules(lab, value) == {"sha": [], "ntg": []}
        assert live_rules(lab, other)["sha"] == [keep]
    finally:
        ul.remove_rule(keep)


# -- a heal that does not show -------------------------------------------------------------------------


@register
class StubbornPort(PortDown):
    """A switch that acknowledges `no shutdown` and does not act on it (while STUBBORN)."""

    kind = "test_stubborn_port"
    STUBBORN = True

    def _heal(self) -> None:
        if not self.STUBBORN:
            super()._heal()


@pytest.fixture
def stubborn() -> Iterator[type[StubbornPort]]:
    StubbornPort.STUBBORN = True
    yield StubbornPort
    StubbornPort.STUBBORN = False


def test_a_restore_whose_heal_does_not_show_leaves_the_fault_open(
    lab: Lab, tmp_path: Path, stubborn: type[StubbornPort]
) -> None:
    journal = tmp_path / "j.jsonl"
    inj = Injector(lab, journal_path=journal, restore_first=False)
    f = inj.inject(inj.make("test_stubborn_port", "sha-sw1:Gi0/7"))
    inj.active.clear()  # this controller "dies": nothing of it heals
    inj.close()
    _orphan(journal)
    try:
        res = CliRunner().invoke(hil_main, ["lab", "restore", "--journal", str(journal)])
        assert res.exit_code == 1, res.output
        assert (
            f"failed   {f.id} test_stubborn_port sha-sw1:Gi0/7 heal sent but it does not show" in res.output
        )
        assert [r["id"] for r in Journal(journal).open_faults()] == [f.id]  # still open
        with driver_for(lab, "sha-sw1") as sw:
            assert not sw.port_state("Gi0/7").admin_up  # and indeed still down
    finally:
        stubborn.STUBBORN = False  # the switch comes round: the next restore heals it
        res = CliRunner().invoke(hil_main, ["lab", "restore", "--journal", str(journal)])
    assert res.exit_code == 0 and f"healed   {f.id}" in res.output, res.output
    assert Journal(journal).open_faults() == []


def _orphan(journal: Path) -> None:
    """Make every record's controller one that no longer runs (same pid, another start time)."""
    records = [json.loads(line) for line in journal.read_text().splitlines()]
    for r in records:
        if "owner" in r:
            r["owner"]["start"] = "0"
    journal.write_text("".join(json.dumps(r) + "\n" for r in records))


# -- a torn journal line ---------------------------------------------------------------------------------


def ping(lab: Lab, src: str, dst: str) -> bool:
    argv = ["ping", "-n", "-q", "-c", "1", "-W", "0.5", str(lab.topology.device(dst).spec.address)]
    return netns.run_in(lab.ns_path(src), argv).returncode == 0


def test_a_torn_journal_line_loses_no_later_record(lab: Lab, tmp_path: Path) -> None:
    journal = tmp_path / "j.jsonl"
    body = (
        "inj.inject(inj.make('blackhole', 'sha-cti1'))\n"
        'open(sys.argv[1], \'ab\').write(b\'{"op":"inject","id":"ftorn","fault":{"ki\')\n'
        "inj.inject(inj.make('blackhole', 'ntg-cti1'))\n"
    )
    controller(journal, body)
    assert not ping(lab, "sha-agents1", "sha-cti1") and not ping(lab, "ntg-agents1", "ntg-cti1")
    r = hil_restore(journal)
    assert r.returncode == 0, (r.stdout, r.stderr)
    lines = r.stdout.splitlines()
    assert lines[0].startswith("skipped  journal line 2: torn"), r.stdout
    assert [line.split()[0] for line in lines[1:]] == ["healed", "healed"]
    assert eventually(lambda: ping(lab, "sha-agents1", "sha-cti1") and ping(lab, "ntg-agents1", "ntg-cti1"))


# -- captures, SPAN, swarms -------------------------------------------------------------------------------


def test_a_dead_runs_captures_are_stopped_by_restore(lab: Lab, tmp_path: Path) -> None:
    journal = tmp_path / "j.jsonl"
    body = (
        f"cap = Capture('dead-run', 'lo', {str(tmp_path)!r}, filter='udp port 9', tracker=inj).start()\n"
        f"open({str(tmp_path / 'pid')!r}, 'w').write(str(cap.pid))\n"
    )
    controller(journal, body)
    pid = int((tmp_path / "pid").read_text())
    assert proc_start(pid) is not None  # the controller is gone; its tcpdump runs on
    bystander = subprocess.Popen(["sleep", "600"])
    try:  # a record naming a live process by a start time that is not its own: another process, untouched
        params = {"pid": bystander.pid, "start": "1", "role": "capture"}
        fake = {"kind": "process", "target": "not ours", "params": params}
        Journal(journal).append(
            {"op": "inject", "id": "fother", "fault": fake, "owner": {**owner(), "start": "0"}}
        )
        r = hil_restore(journal)
        assert r.returncode == 0, (r.stdout, r.stderr)
        assert "process tcpdump dead-run on lo" in r.stdout
        assert eventually(lambda: proc_start(pid) is None or _zombie(pid))
        assert bystander.poll() is None
        assert (tmp_path / "dead-run.pcap").exists()
        assert Journal(journal).open_faults() == []
    finally:
        bystander.kill()
        bystander.wait()


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


@pytest.mark.parametrize("switch", ["sha-sw1", "ntg-sw1"])
def test_a_span_session_left_by_a_dead_run_is_removed(lab: Lab, tmp_path: Path, switch: str) -> None:
    journal = tmp_path / "j.jsonl"
    controller(journal, f"inj.start(inj.make('span_session', '{switch}'))")
    with driver_for(lab, switch) as sw:
        st = sw.span_state(1)
    assert st.destination and len(st.sources) == 2
    r = hil_restore(journal)
    assert r.returncode == 0 and f"span_session {switch}" in r.stdout, (r.stdout, r.stderr)
    with driver_for(lab, switch) as sw:
        assert sw.span_state(1).empty


def test_a_swarm_stopped_by_a_dead_run_is_started_by_restore(lab: Lab, tmp_path: Path) -> None:
    journal = tmp_path / "j.jsonl"
    controller(journal, "inj.inject(inj.make('swarm_service', 'ntg-agents1', verb='stop'))")
    with driver_for(lab, "ntg-agents1") as h:
        assert not h.service_active("hil-swarm")
    r = hil_restore(journal)
    assert r.returncode == 0 and "healed" in r.stdout and "swarm_service ntg-agents1" in r.stdout, r.stdout
    with driver_for(lab, "ntg-agents1") as h:
        assert h.service_active("hil-swarm")
