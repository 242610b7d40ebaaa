"""The release gate: ship (0), do not ship (1), could not judge (2), on hand-made Allure results built from
the recorded histories, on a real pytest + allure-pytest run, and on malformed policies and results."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import uuid
import warnings
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from harness import checks, gate, report
from harness.checks import Verdict
from harness.cli import main
from harness.history import History

HERE = Path(__file__).parent
HIST = HERE / "histories"
REPO = HERE.parent


def verdicts(name: str, bound: float = 10.0) -> list[Verdict]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        h = list(History.load(HIST / f"{name}.jsonl"))
    return [
        checks.check_single_registration(h),
        checks.depends_on_capture(checks.check_no_split_brain)(h),
        checks.depends_on_capture(checks.check_recovery_time)(h, bound=bound),
        checks.check_no_lost_call(h),
        checks.check_faults_healed(h),
        checks.check_capture_complete(h),
    ]


class Results:
    """An Allure results directory written by hand, as allure-pytest would write it."""

    def __init__(self, d: Path):
        self.d = d
        d.mkdir(parents=True, exist_ok=True)

    def _attach(self, data: bytes, ext: str) -> str:
        src = f"{uuid.uuid4()}-attachment.{ext}"
        (self.d / src).write_bytes(data)
        return src

    def add(
        self,
        test: str,
        *,
        history: str | None = "valid_pbx_failover",
        bound: float = 10.0,
        status: str = "passed",
        message: str = "",
        params: dict[str, str] | None = None,
        attach_verdicts: bool = True,
        attach_history: bool = True,
        tamper_history: bool = False,
        in_fixture: bool = False,
    ) -> str:
        uid = str(uuid.uuid4())
        atts = []
        if history is not None:
            hp = HIST / f"{history}.jsonl"
            if attach_verdicts:
                payload = report.verdicts_payload(verdicts(history, bound), history=hp, scenario=test)
                src = self._attach(json.dumps(payload).encode(), "json")
                atts.append({"name": report.VERDICTS_NAME, "source": src, "type": "application/json"})
            if attach_history:
                data = hp.read_bytes() + (b"\n" if tamper_history else b"")
                atts.append(
                    {"name": report.HISTORY_NAME, "source": self._attach(data, "jsonl"), "type": "text/plain"}
                )
        module, _, fn = test.partition("#")
        result: dict[str, Any] = {
            "name": fn,
            "status": status,
            "uuid": uid,
            "fullName": test,
            "start": 1764000000000,
            "labels": [{"name": "feature", "value": "Unplanned"}, {"name": "site", "value": "sha"}],
            "parameters": [{"name": k, "value": v} for k, v in (params or {}).items()],
            "attachments": [] if in_fixture else atts,
        }
        if message:
            result["statusDetails"] = {"message": message, "trace": "..."}
        (self.d / f"{uid}-result.json").write_text(json.dumps(result))
        if in_fixture:  # attached in a function-scoped fixture's teardown: the container holds them
            container = {
                "uuid": str(uuid.uuid4()),
                "children": [uid],
                "afters": [{"name": "scenario", "attachments": atts}],
            }
            (self.d / f"{container['uuid']}-container.json").write_text(json.dumps(container))
        return uid


POLICY = """
version: 1
repeat: 1
scenarios:
  - match: 'test_unplanned#test_pbx_killed'
    recovery: {p95: 10, max: 15}
  - match: 'test_login#'
"""


def policy_file(tmp_path: Path, text: str = POLICY) -> Path:
    p = tmp_path / "gate.yaml"
    p.write_text(textwrap.dedent(text))
    return p


def good(d: Path) -> Results:
    r = Results(d)
    r.add("scenarios.test_unplanned#test_pbx_killed")
    r.add("scenarios.test_login#test_local_login")
    return r


def cli(*args: str) -> Any:
    return CliRunner().invoke(main, list(args))


# -- exit 0 -----------------------------------------------------------------------------------------------


def test_ship_when_every_required_scenario_passed(tmp_path: Path) -> None:
    good(tmp_path / "res")
    out = tmp_path / "out"
    res = cli(
        "gate", "--policy", str(policy_file(tmp_path)), "--results", str(tmp_path / "res"), "--out", str(out)
    )
    assert res.exit_code == 0, res.output
    assert "gate: SHIP (exit 0)" in res.output
    assert "scenarios.test_unplanned#test_pbx_killed" in res.output
    data = json.loads((out / "gate.json").read_text())
    assert data["verdict"] == "ship" and data["exit_code"] == 0
    pbx = next(s for s in data["scenarios"] if "pbx_killed" in s["scenario"])
    assert pbx["figures"]["p95"] == 6.0 and pbx["figures"]["bound"] == {"p95": 10.0, "max": 15.0}
    assert "# Release gate: SHIP" in (out / "gate.md").read_text()
    junit = ET.parse(out / "gate-junit.xml").getroot()
    assert junit.get("tests") == "2" and junit.get("failures") == "0" and junit.get("errors") == "0"


def test_repeats_and_fixture_attachments(tmp_path: Path) -> None:
    p = policy_file(tmp_path, POLICY.replace("repeat: 1", "repeat: 2"))
    r = good(tmp_path / "res")
    rep = gate.run_gate(p, r.d)
    assert rep.exit_code == 2 and "passed 1 times, the policy needs 2" in str(rep.to_dict())
    r.add("scenarios.test_unplanned#test_pbx_killed", in_fixture=True)
    r.add("scenarios.test_login#test_local_login")
    rep = gate.run_gate(p, r.d)
    assert rep.exit_code == 0, gate.table(rep)
    # parameters make separate scenarios, each of which needs its own passes
    r.add("scenarios.test_unplanned#test_pbx_killed", params={"target": "cti"})
    assert gate.run_gate(p, r.d).exit_code == 2


# -- exit 1 -----------------------------------------------------------------------------------------------


def test_failed_scenario_blocks(tmp_path: Path) -> None:
    r = good(tmp_path / "res")
    msg = "AssertionError: " + report.failure_message(verdicts("invalid_lost_call", 40.0))
    r.add(
        "scenarios.test_login#test_remote_login",
        history="invalid_lost_call",
        bound=40.0,
        status="failed",
        message=msg,
    )
    res = cli(
        "gate", "--policy", str(policy_file(tmp_path)), "--results", str(r.d), "--out", str(tmp_path / "o")
    )
    assert res.exit_code == 1, res.output
    assert "DO NOT SHIP" in res.output and "PRODUCT DEFECT: lost call" in res.output
    junit = ET.parse(tmp_path / "o" / "gate-junit.xml").getroot()
    assert junit.get("failures") == "1"


def test_bound_exceeded_blocks(tmp_path: Path) -> None:
    r = Results(tmp_path / "res")
    # the scenario passed with its own (generous) bound, but p95 6 s is over the policy's 5 s
    r.add("scenarios.test_unplanned#test_pbx_killed", bound=40.0)
    r.add("scenarios.test_login#test_local_login")
    rep = gate.run_gate(policy_file(tmp_path, POLICY.replace("p95: 10", "p95: 5")), r.d)
    assert rep.exit_code == 1
    assert any("p95 recovery 6.0s over the policy bound 5.0s" in x for s in rep.scenarios for x in s.reasons)


def test_lost_agent_in_a_passed_run_blocks(tmp_path: Path) -> None:
    """A scenario that only attached its verdicts without asserting is still judged on them."""
    r = good(tmp_path / "res")
    r.add("scenarios.test_login#test_remote_login", history="invalid_lost_agent")
    rep = gate.run_gate(policy_file(tmp_path), r.d)
    assert rep.exit_code == 1
    bad = next(s for s in rep.scenarios if s.verdict == "fail")
    assert bad.figures["lost_agents"] == 1 and any(
        "1 lost agents (policy allows 0)" in x for x in bad.reasons
    )
    rep = gate.run_gate(policy_file(tmp_path, POLICY + "max_lost_agents: 1\n"), r.d)
    assert rep.exit_code == 0, gate.table(rep)  # the policy may tolerate what the scenario did not assert


def test_defect_in_an_unlisted_scenario_blocks(tmp_path: Path) -> None:
    r = good(tmp_path / "res")
    r.add("scenarios.test_other#test_x", history="invalid_split_brain", bound=40.0)
    assert gate.run_gate(policy_file(tmp_path), r.d).exit_code == 1
    assert gate.run_gate(policy_file(tmp_path, POLICY + "unlisted: ignore\n"), r.d).exit_code == 0


def test_defect_wins_over_missing_evidence(tmp_path: Path) -> None:
    r = Results(tmp_path / "res")
    r.add(
        "scenarios.test_unplanned#test_pbx_killed", status="failed", message="AssertionError: assert 2 == 1"
    )
    rep = gate.run_gate(policy_file(tmp_path), r.d)  # test_login# is missing too
    assert rep.exit_code == 1 and rep.missing


# -- exit 2 -----------------------------------------------------------------------------------------------


def test_missing_required_scenario(tmp_path: Path) -> None:
    r = Results(tmp_path / "res")
    r.add("scenarios.test_unplanned#test_pbx_killed")
    res = cli(
        "gate", "--policy", str(policy_file(tmp_path)), "--results", str(r.d), "--out", str(tmp_path / "o")
    )
    assert res.exit_code == 2, res.output
    assert "MISSING  rule 2 ('test_login#'): no scenario in the results matches it" in res.output
    assert ET.parse(tmp_path / "o" / "gate-junit.xml").getroot().get("errors") == "1"


@pytest.mark.parametrize(
    ("kwargs", "why"),
    [
        ({"attach_verdicts": False}, "no hil-verdicts.json attached"),
        ({"attach_history": False}, "history.jsonl not attached"),
        ({"tamper_history": True}, "matches the sha256"),
        ({"history": "unknown_capture_drops"}, "LAB FAULT: capture drops"),
        ({"history": "unknown_no_fault"}, "EVIDENCE INCOMPLETE: verdict unknown"),
        ({"status": "skipped", "message": "lab lacks a pdu"}, "passed 0 times, the policy needs 1"),
        (
            {"status": "broken", "message": "harness.drivers.base.DeviceUnreachable: sha-sw1: port_down"},
            "broken (lab or harness error)",
        ),
        ({"status": "failed", "message": "AssertionError: " + report.LAB_DEVICE_UNREACHABLE}, "on the lab"),
    ],
)
def test_incomplete_evidence_cannot_be_judged(tmp_path: Path, kwargs: dict[str, Any], why: str) -> None:
    r = Results(tmp_path / "res")
    r.add("scenarios.test_unplanned#test_pbx_killed", **kwargs)
    r.add("scenarios.test_login#test_local_login")
    rep = gate.run_gate(policy_file(tmp_path), r.d)
    assert rep.exit_code == 2, gate.table(rep)
    assert rep.verdict == "could not judge"
    s = next(s for s in rep.scenarios if "pbx_killed" in s.scenario)
    assert s.verdict == "unjudged" and any(why in x for x in s.reasons), s.reasons


def test_no_recovery_figures_for_a_bound(tmp_path: Path) -> None:
    r = Results(tmp_path / "res")
    r.add("scenarios.test_unplanned#test_pbx_killed", history="unknown_no_observations")
    r.add("scenarios.test_login#test_local_login")
    rep = gate.run_gate(policy_file(tmp_path), r.d)
    assert rep.exit_code == 2
    assert any("no p95 figure" in x for s in rep.scenarios for x in s.reasons)


def test_empty_results(tmp_path: Path) -> None:
    (tmp_path / "res").mkdir()
    rep = gate.run_gate(policy_file(tmp_path, "version: 1\n"), tmp_path / "res")
    assert rep.exit_code == 2 and "0 scenarios in the results, the policy needs at least 1" in rep.missing


@pytest.mark.parametrize(
    ("text", "where", "what"),
    [
        ("version: 1\nrepeats: 2\n", "repeats", "unknown key"),
        ("repeat: three\n", "repeat", "valid integer"),
        ("repeat: 0\n", "repeat", "greater than or equal to 1"),
        ("scenarios:\n  - match: 'pbx_(killed'\n", "scenarios[0].match", "not a valid regular expression"),
        ("scenarios:\n  - match: x\n    recovery: {p99: 3}\n", "scenarios[0].recovery.p99", "unknown key"),
        ("scenarios:\n  - match: x\n    recovery: {}\n", "scenarios[0].recovery", "at least one of"),
        ("scenarios:\n  - required: true\n", "scenarios[0].match", "required field is missing"),
        ("unlisted: maybe\n", "unlisted", "'judge' or 'ignore'"),
        ("scenarios: [\n", "line 2", "not valid YAML"),
        ("- a\n- b\n", "", "must be a mapping"),
    ],
)
def test_malformed_policy(tmp_path: Path, text: str, where: str, what: str) -> None:
    good(tmp_path / "res")
    p = policy_file(tmp_path, text)
    with pytest.raises(gate.GateInputError) as e:
        gate.load_policy(p)
    line = e.value.lines()[0]
    assert line.startswith(f"{p}: {where}" if where else f"{p}: "), line
    assert what in line
    res = cli("gate", "--policy", str(p), "--results", str(tmp_path / "res"), "--out", str(tmp_path / "o"))
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert f"error: {p}: {where}" in res.output
    assert json.loads((tmp_path / "o" / "gate.json").read_text())["verdict"] == "could not judge"


def test_missing_policy_file(tmp_path: Path) -> None:
    res = cli(
        "gate", "--policy", str(tmp_path / "nope.yaml"), "--results", str(tmp_path), "--out", str(tmp_path)
    )
    assert res.exit_code == 2 and "nope.yaml: cannot read the policy" in res.output


def test_malformed_results(tmp_path: Path) -> None:
    p = policy_file(tmp_path)
    res = cli("gate", "--policy", str(p), "--results", str(tmp_path / "absent"), "--out", str(tmp_path / "o"))
    assert res.exit_code == 2 and f"error: {tmp_path / 'absent'}: no such results directory" in res.output
    (tmp_path / "file").write_text("x")
    assert gate.run_gate(p, tmp_path / "file").problems == [f"{tmp_path / 'file'}: not a directory"]

    r = good(tmp_path / "res")
    (r.d / "broken-result.json").write_text('{"status": "passed", ')
    (r.d / "odd-result.json").write_text(json.dumps({"status": "fine", "fullName": "x#y"}))
    res = cli("gate", "--policy", str(p), "--results", str(r.d), "--out", str(tmp_path / "o"))
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert f"error: {r.d / 'broken-result.json'}: not readable JSON" in res.output
    assert f"error: {r.d / 'odd-result.json'}: status: must be one of" in res.output

    r2 = Results(tmp_path / "res2")
    uid = r2.add("scenarios.test_unplanned#test_pbx_killed")
    r2.add("scenarios.test_login#test_local_login")
    result = json.loads((r2.d / f"{uid}-result.json").read_text())
    vfile = r2.d / next(a["source"] for a in result["attachments"] if a["name"] == report.VERDICTS_NAME)
    payload = json.loads(vfile.read_text())
    payload["verdicts"][2]["result"] = "maybe"
    vfile.write_text(json.dumps(payload))
    rep = gate.run_gate(p, r2.d)
    assert rep.exit_code == 2
    assert any(f"{vfile}: verdicts[2]." in x and "maybe" in x for x in rep.problems), rep.problems


def test_shipped_policy_loads_and_sets_the_checkers_bound() -> None:
    pol = gate.load_policy(REPO / "gate.yaml")
    assert pol.max_lost_agents == 0 and pol.max_split_brain == 0 and pol.scenarios
    assert gate.recovery_bound(pol, "scenarios.test_unplanned#test_failover[case=pbx_killed]", 99.0) == 30.0
    assert gate.recovery_bound(REPO / "gate.yaml", "no_such_thing", 99.0) == 99.0
    assert gate.recovery_bound(None, "x", 7.0) == 7.0


# -- a real pytest + allure-pytest run --------------------------------------------------------------------

SAMPLE = """
import os
from pathlib import Path

import pytest

from harness import checks, report
from harness.history import History

HIST = Path(os.environ["HIL_HISTORIES"])


@pytest.mark.parametrize("history", ["valid_pbx_failover", "invalid_rto_over_bound"])
def test_pbx_killed(history):
    h = list(History.load(HIST / f"{history}.jsonl"))
    vs = [checks.check_recovery_time(h, bound=10.0), checks.check_no_split_brain(h)]
    report.attach_verdicts(vs, history=HIST / f"{history}.jsonl", scenario="pbx_killed")
    assert checks.compose(*vs).valid, report.failure_message(vs)
"""


def test_gate_on_a_real_allure_run(tmp_path: Path) -> None:
    (tmp_path / "test_sample_gate.py").write_text(textwrap.dedent(SAMPLE))
    results = tmp_path / "allure-results"
    env = {**os.environ, "HIL_HISTORIES": str(HIST), "PYTHONWARNINGS": "ignore"}
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "-p",
        "no:hil",
        "--alluredir",
        str(results),
    ]
    proc = subprocess.run(
        [*cmd, str(tmp_path)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert "1 failed, 1 passed" in proc.stdout, proc.stdout + proc.stderr
    p = policy_file(
        tmp_path, "scenarios:\n  - match: 'test_pbx_killed\\[history=valid'\n    recovery: {max: 10}\n"
    )
    rep = gate.run_gate(p, results)
    assert rep.exit_code == 1, gate.table(rep)
    by = {s.scenario: s for s in rep.scenarios}
    assert by["test_sample_gate#test_pbx_killed[history=valid_pbx_failover]"].verdict == "pass"
    bad = by["test_sample_gate#test_pbx_killed[history=invalid_rto_over_bound]"]
    assert bad.verdict == "fail" and "PRODUCT DEFECT: recovery over bound" in bad.reasons[0]
    p2 = policy_file(tmp_path, "scenarios:\n  - match: 'valid_pbx'\nunlisted: ignore\n")
    assert gate.run_gate(p2, results).exit_code == 0
