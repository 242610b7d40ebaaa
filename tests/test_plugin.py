"""The pytest plugin (fixtures/plugin.py) and the scenario library under it, in pytester sessions of their
own: options, markers, dry runs that touch nothing and print a plan, and the judging helpers."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from harness import scenario as sc
from harness.checks import Verdict, check_expectations
from harness.history import History
from harness.topology import REPO_ROOT

PHYSICAL = str(REPO_ROOT / "topologies" / "physical-example.yaml")
DEFAULT = str(REPO_ROOT / "topologies" / "virtual-two-site.yaml")


def test_options_and_markers_are_registered(pytester: pytest.Pytester) -> None:
    res = pytester.runpytest("--help")
    out = res.stdout.str()
    for opt in ("--topology", "--dry-run", "--fault-seed", "--gate-policy", "--recovery-bound"):
        assert opt in out
    res = pytester.runpytest("--markers")
    for m in ("planned_switch", "unplanned", "scale", "requires(*kinds)", "severity(level)"):
        assert f"@pytest.mark.{m}" in res.stdout.str()


def test_requires_and_scale_skip_with_a_reason(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.requires("pdu")
        def test_needs_pdu(topology):
            pass

        @pytest.mark.requires("switch", "host:agents")
        def test_has_switch(topology):
            pass

        @pytest.mark.scale
        def test_scale(topology):
            pass
        """
    )
    # the physical example has PDUs, switches, agents hosts and exactly 1,000 agents: nothing skips
    res = pytester.runpytest("-rs", "--topology", PHYSICAL)
    res.assert_outcomes(passed=3)
    res = pytester.runpytest("-rs", "--topology", str(_small_topology(pytester)))
    res.assert_outcomes(passed=1, skipped=2)
    out = res.stdout.str()
    assert "has no pdu" in out
    assert "scale scenarios need 1000+ agents" in out


def _small_topology(pytester: pytest.Pytester) -> Path:
    """The default lab without its PDUs: 100 agents, no power devices."""
    import yaml

    raw = yaml.safe_load(Path(DEFAULT).read_text())
    for site in raw["sites"].values():
        site.pop("power", None)
        for name, con in list(site.get("consoles", {}).items()):
            if con["device"].endswith("pdu1"):
                del site["consoles"][name]
    p = pytester.path / "small.yaml"
    p.write_text(yaml.safe_dump(raw))
    return p


def test_dry_run_plans_a_scenario_and_touches_nothing(pytester: pytest.Pytester, tmp_path: Path) -> None:
    """A whole scenario under --dry-run on the physical example: no lab, no connection (the addresses are
    not even routable here), and a plan with the swarm restarts, the fault and its heal."""
    pytester.makepyfile(
        """
        def test_pbx_killed(scenario, lab):
            assert lab.backend.status() is None
            with scenario.fault("service_kill", "sha-pbx1", service="kamailio"):
                with scenario.phase("verify"):
                    assert scenario.wait_placement(scenario.expect(moved_from="sha"), "moved") == 0.0
            with scenario.phase("verify-revert"):
                scenario.finish()
            overall = scenario.conclude(scenario.standard_checks())
            assert overall.valid, scenario.failure_message()
        """
    )
    reports = tmp_path / "reports"
    res = pytester.runpytest("--dry-run", "--topology", PHYSICAL, "--hil-reports", str(reports))
    res.assert_outcomes(passed=1)
    plan = sc.read_plan(reports / "plan.jsonl")
    text = sc.format_plan(plan)
    assert "sha-agents1: systemctl restart hil-swarm" in text
    assert "sha-pbx1: systemctl kill -s SIGKILL kamailio" in text
    assert "sha-pbx1: systemctl start kamailio" in text
    assert text.index("[apply: service_kill sha-pbx1]") < text.index("[verify]") < text.index("[revert:")
    assert not (reports / "histories").exists()  # nothing was observed, so nothing was recorded


def test_fault_seed_draws_replayable_delays(pytester: pytest.Pytester, tmp_path: Path) -> None:
    """--fault-seed: each fault waits a delay drawn from the seed, the scenario and the fault's place in
    it; the same seed gives the same delays, another seed others, no seed none."""
    pytester.makepyfile(
        """
        def test_two_faults(scenario):
            with scenario.fault("service_kill", "sha-pbx1", service="kamailio"):
                pass
            with scenario.fault("service_kill", "ntg-cti1", service="hil-cti"):
                pass
        """
    )

    def delays(*opts: str) -> list[float | None]:
        reports = tmp_path / f"r{len(list(tmp_path.iterdir()))}"
        res = pytester.runpytest("--dry-run", "--topology", PHYSICAL, "--hil-reports", str(reports), *opts)
        res.assert_outcomes(passed=1)
        plan = sc.read_plan(reports / "plan.jsonl")
        if opts:
            assert "after a seeded" in sc.format_plan(plan)
        return [step.get("delay_s") for e in plan for step in e["plan"] if "fault" in step]

    first, again = delays("--fault-seed", "7"), delays("--fault-seed", "7")
    other = delays("--fault-seed", "8")
    assert first == again and first != other and len(first) == 2 and first[0] != first[1]
    assert all(d is not None and 0 <= d <= sc.FAULT_JITTER_S for d in first + other)
    assert delays() == [None, None]


def test_dry_run_refuses_a_fault_that_is_not_fair_game(pytester: pytest.Pytester, tmp_path: Path) -> None:
    pytester.makepyfile(
        """
        from harness.faults import FaultRefused
        import pytest

        def test_refused(scenario):
            with pytest.raises(FaultRefused):
                with scenario.fault("port_down", "sha-sw1:Gi1/0/48"):  # the controller's management path
                    pass
        """
    )
    res = pytester.runpytest("--dry-run", "--topology", PHYSICAL, "--hil-reports", str(tmp_path))
    res.assert_outcomes(passed=1)


def test_settings_bound_from_gate_policy_and_option(tmp_path: Path) -> None:
    pol = tmp_path / "gate.yaml"
    pol.write_text(
        "version: 1\nscenarios:\n  - match: 'unplanned#test_failover'\n    recovery: {max: 12}\n"
        "  - match: 'scale'\n    recovery: {p95: 30, max: 45}\n"
    )
    s = sc.settings_from_options(policy=str(pol), bound=None, dry_run=False, fault_seed=None, out_dir=None)
    sid = sc.allure_id("scenarios/test_unplanned.py::test_failover[pbx_killed]")
    assert sid == "scenarios.test_unplanned#test_failover[pbx_killed]"
    assert s.for_scenario(sid).bound == 12.0
    assert s.for_scenario("scenarios.test_login#test_login_local").bound == 30.0  # the default
    forced = sc.settings_from_options(
        policy=str(pol), bound=5.0, dry_run=False, fault_seed=None, out_dir=None
    )
    assert forced.for_scenario(sid).bound == 5.0  # the option wins over the policy


def test_expectations_are_written_to_the_history_and_judged_from_it(tmp_path: Path) -> None:
    """A wait records what it expected and what it saw; check_expectations judges the record, not memory."""
    from harness.topology import load

    lab = sc.dry_run_lab(load(DEFAULT))
    s = sc.Scenario(lab, "x", sc.Settings(out_dir=tmp_path))
    s.history = History(tmp_path / "h.jsonl")
    assert check_expectations(s.history).result == "unknown"  # none recorded: nothing to call valid
    seen = {"judged": 4, "out_of_place": 3, "sample": {"a1": {"expected": "ntg"}}}
    assert s._expect("agents at ntg", "placement", {"a1": "ntg"}, seen, timeout=30.0) is False
    v = check_expectations(History.load(s.history.path))
    assert v.result == "invalid" and "3 agents out of place" in v.reason
    assert v.witnesses[0]["what"] == "agents at ntg" and v.witnesses[0]["sample"] == seen["sample"]


def test_driver_view_reads_and_refuses_changes(pytester: pytest.Pytester, tmp_path: Path) -> None:
    """The ``driver`` fixture hands out a read-only view: a change through it is refused before anything
    is sent, with an error that names the injector; reads go through (planned, in a dry run)."""
    pytester.makepyfile(
        """
        import pytest
        from harness.drivers.views import NotReadOnly

        def test_view(driver, scenario):
            sw = driver("sha-sw1")
            with pytest.raises(NotReadOnly, match="scenario.fault"):
                sw.port_down("Gi1/0/1")
            with pytest.raises(NotReadOnly, match="scenario.fault"):
                sw.send_config(["interface Gi1/0/1", "shutdown"])
            host = driver("sha-pbx1")
            with pytest.raises(NotReadOnly):
                host.service_stop("kamailio")
            with pytest.raises(NotReadOnly):
                host.run("systemctl stop kamailio")
            with pytest.raises(NotReadOnly):
                host.run("systemctl is-active kamailio; reboot")
            assert host.service_active("kamailio")  # a read: planned in a dry run
            host.run("journalctl -u kamailio -n 20 --no-pager")
            assert not any("shutdown" in str(p.get("commands")) for p in scenario.plan)
            assert any(p.get("action") == "service_state" for p in scenario.plan)
        """
    )
    res = pytester.runpytest("--dry-run", "--topology", PHYSICAL, "--hil-reports", str(tmp_path))
    res.assert_outcomes(passed=1)


def test_verdict_file_written(tmp_path: Path) -> None:
    from harness.topology import load

    lab = sc.dry_run_lab(load(DEFAULT))
    s = sc.Scenario(lab, "x[y]", sc.Settings(out_dir=tmp_path))
    s.history_path.parent.mkdir(parents=True)
    s.history_path.write_text("")
    overall = s.judge([Verdict("a", "valid", "ok"), Verdict("b", "unknown", "too little")])
    assert overall.result == "unknown"
    d = json.loads((tmp_path / "verdicts" / "x_y.json").read_text())
    assert d["schema"] == "hil-verdicts/1" and d["result"] == "unknown" and d["scenario"] == "x_y"
    assert d["message"].startswith("EVIDENCE INCOMPLETE")


def test_main_job_dry_run_prints_the_plan_and_touches_nothing(tmp_path: Path) -> None:
    """`hil run --topology physical-example --dry-run`: the full plan, no lab brought up, nothing sent."""
    from harness import mainjob

    lines: list[str] = []
    res = mainjob.run(PHYSICAL, dry_run=True, out=lines.append, reports=tmp_path)
    assert res.exit_code == 0, "\n".join(lines)
    assert [s.name for s in res.sessions] == ["suite"] and res.sessions[0].returncode == 0
    plan = res.plan
    for expected in (
        "== test_failover_sha-pbx_killed",
        "sha-pbx1: systemctl kill -s SIGKILL kamailio",
        "ntg-pbx1: systemctl kill -s SIGKILL kamailio",  # every unplanned failure at both sites
        "== test_schedule_kept-cti-pause-8s",  # the nemesis's kept schedules are planned op by op
        "sha-sw1: shutdown",
        "sha-sw1: no shutdown",
        "sha-ul1: systemctl stop hil-login",
        "== test_scale_pbx_killed",  # the example lab has 1,000 agents: the scale scenario is planned too
    ):
        assert expected in plan, expected
    assert not (tmp_path / "histories").exists() and not (tmp_path / "pcap").exists()


def test_junit_counts_and_summary(tmp_path: Path) -> None:
    from harness import mainjob

    j = tmp_path / "j.xml"
    j.write_text(
        '<testsuites><testsuite tests="5" failures="1" errors="1" skipped="1"></testsuite></testsuites>'
    )
    assert mainjob._junit_counts(j) == {"tests": 5, "failures": 1, "errors": 1, "skipped": 1, "passed": 2}
    assert mainjob._junit_counts(tmp_path / "missing.xml") == {}
    res = mainjob.JobResult(
        sessions=[mainjob.Session("suite", Path("x.yaml"), None, 1, {"passed": 2})], gate_exit=1
    )
    text = mainjob.summary(res, tmp_path)
    assert "DO NOT SHIP" in text and "2 passed" in text and str(tmp_path / "gate.md") in text


def test_repository_conftest_loads_the_plugin_once_and_its_busy_loops_go(eventually: Any) -> None:
    """The hil plugin comes from its pytest11 entry point only: the repository's conftest.py adds its own
    options (``--busy-cores``) without registering the plugin a second time, and the busy loops it starts
    end with the session."""
    r = subprocess.run(
        [sys.executable, "-m", "pytest", "--trace-config", "--busy-cores", "1", "--co",
         "-p", "no:cacheprovider", "tests/test_scenario_hold.py"],
        capture_output=True, text=True, cwd=REPO_ROOT, timeout=120,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    registered = [ln for ln in r.stdout.splitlines() if ln.startswith("PLUGIN registered")]
    assert sum("fixtures/plugin.py" in ln for ln in registered) == 1, registered
    assert sum(str(REPO_ROOT / "conftest.py") in ln for ln in registered) == 1
    busy = re.search(r"house: busy loops on 1 cores \(pids (\d+)\)", r.stdout)
    assert busy, r.stdout[:2000]
    assert eventually(lambda: not Path(f"/proc/{busy.group(1)}").exists() or _zombie(busy.group(1)))


def _zombie(pid: str) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z")
    except (OSError, IndexError):
        return True


def test_read_only_view_of_a_driver() -> None:
    """The view passes reads through and refuses writes, also commands that chain a write behind a read."""
    from harness.drivers.views import NotReadOnly, is_read_only_command, read_only

    reads = [
        "systemctl is-active kamailio",
        "systemctl show -p MainPID --value hil-cti",
        "journalctl -u kamailio -n 50 --no-pager",
        "ip -o link show",
        "cat /proc/net/dev",
    ]
    writes = [
        "systemctl stop kamailio",
        "systemctl is-active x; reboot",
        "journalctl -u x > /etc/passwd",
        "cat /proc/x && rm -rf /",
        "ip link set eth0 down",
        "nft flush ruleset",
        "$(reboot)",
        "systemctl is-active `reboot`",
        "tc qdisc add dev eth0 root netem",
    ]
    assert [c for c in reads if not is_read_only_command(c)] == []
    assert [c for c in writes if is_read_only_command(c)] == []

    class FakeHost:
        name = "sha-pbx1"
        closed = False

        def service_active(self, unit: str) -> bool:
            return unit == "kamailio"

        def service_stop(self, unit: str) -> None:
            raise AssertionError("a write went through the view")

        def run(self, command: str, timeout: float = 30.0, action: str = "run") -> str:
            return f"ran {command}"

        def close(self) -> None:
            self.closed = True

    host = FakeHost()
    with read_only(host) as view:
        assert view.service_active("kamailio") and view.name == "sha-pbx1"
        assert view.run("systemctl is-active kamailio") == "ran systemctl is-active kamailio"
        with pytest.raises(NotReadOnly, match=r"scenario\.fault\(kind, target"):
            view.service_stop("kamailio")
        with pytest.raises(NotReadOnly):
            view.run("systemctl restart kamailio")
        with pytest.raises(NotReadOnly):
            view.name = "x"
        assert read_only(view) is view
    assert host.closed


def test_a_bad_topology_ends_the_session_with_exit_2(pytester: pytest.Pytester) -> None:
    """Not an error in every test: one line naming the file and what is wrong, and exit 2."""
    pytester.makepyfile("def test_x(topology):\n    pass\n")
    bad = pytester.path / "lab.yaml"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    res = pytester.runpytest("--topology", str(bad))
    assert res.ret == 2
    res.stdout.fnmatch_lines([f"*error: {bad}: *not UTF-8*"])
    assert "Traceback" not in res.stdout.str() + res.stderr.str()
