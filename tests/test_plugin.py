"""The pytest plugin (fixtures/plugin.py) and the scenario library under it, in pytester sessions of their
own: options, markers, dry runs that touch nothing and print a plan, and the judging helpers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness import scenario as sc
from harness.checks import Verdict
from harness.history import History
from harness.topology import REPO_ROOT

pytest_plugins = ["pytester"]

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


def _hist(tmp_path: Path, events: list[tuple[str, dict]]) -> list:
    h = History(tmp_path / "h.jsonl")
    for kind, v in events:
        if kind in ("invoke", "ok", "fail"):
            extra = {"error": v["error"]} if "error" in v else {}
            getattr(h, kind)(v.pop("process"), v.pop("f"), v.get("value"), **extra)
        else:
            h.observe(kind, v.pop("source"), v)
    h.close()
    return History.load(h.path).events


def test_check_logins_at(tmp_path: Path) -> None:
    ev = _hist(
        tmp_path,
        [
            ("cti", {"source": "ntg-cti1", "site": "ntg", "agent": "a1", "event": "login", "epoch": 1}),
            ("cti", {"source": "sha-cti1", "site": "sha", "agent": "a2", "event": "login", "epoch": 1}),
            ("cti", {"source": "ntg-cti1", "site": "ntg", "agent": "a2", "event": "login", "epoch": 2}),
        ],
    )
    assert sc.check_logins_at(ev, ["a1"], "ntg").result == "valid"
    v = sc.check_logins_at(ev, ["a1", "a2", "a3"], "ntg")
    assert v.result == "invalid"
    assert {w["agent"] for w in v.witnesses} == {"a2", "a3"}  # a3 never seen; a2 see below
    v2 = sc.check_logins_at(ev, ["a2"], "ntg")
    assert v2.result == "invalid" and "never ended" in v2.witnesses[0]["problem"]  # ...but sha never ended
    assert sc.check_logins_at([], ["a1"], "ntg").result == "unknown"
    # design step 6: a login at sha that was ended (the phone linkage failed), then one at ntg: valid
    ev6 = _hist(
        tmp_path / "c",
        [
            ("cti", {"source": "sha-cti1", "site": "sha", "agent": "a1", "event": "login", "epoch": 1}),
            ("cti", {"source": "sha-cti1", "site": "sha", "agent": "a1", "event": "logout", "epoch": 1}),
            ("cti", {"source": "ntg-cti1", "site": "ntg", "agent": "a1", "event": "login", "epoch": 2}),
        ],
    )
    assert sc.check_logins_at(ev6, ["a1"], "ntg").result == "valid"


def test_check_refused(tmp_path: Path) -> None:
    p = "client:cti"
    ev = _hist(tmp_path, [("invoke", {"process": p, "f": "cti.x", "value": {}}),
                          ("fail", {"process": p, "f": "cti.x", "error": "token_invalid"})])  # fmt: skip
    assert sc.check_refused(ev, "cti.x", ["token_invalid"]).result == "valid"
    assert sc.check_refused(ev, "cti.x", ["too_large"]).result == "invalid"
    assert sc.check_refused(ev, "cti.y", ["x"]).result == "unknown"
    ok = _hist(tmp_path / "b", [("invoke", {"process": p, "f": "cti.x", "value": {}}),
                                ("ok", {"process": p, "f": "cti.x"})])  # fmt: skip
    assert sc.check_refused(ok, "cti.x", ["token_invalid"]).result == "invalid"  # a forged login got in


def test_expectations_verdict() -> None:
    s = sc.Scenario.__new__(sc.Scenario)
    s.expectations, s.history = [], None
    assert s.expectations_verdict().result == "valid"
    s._expect("agents at ntg", False, {"count": 3})
    v = s.expectations_verdict()
    assert v.result == "invalid" and "3 agents out of place" in v.reason


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
        "== test_failover_pbx_killed",
        "sha-pbx1: systemctl kill -s SIGKILL kamailio",
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
