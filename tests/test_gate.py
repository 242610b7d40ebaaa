"""The release gate: ship (0), do not ship (1), could not judge (2), on hand-made Allure results built from
the recorded histories, on a real pytest + allure-pytest run, and on malformed policies and results."""

from __future__ import annotations

import hashlib
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
        labels: dict[str, list[str]] | None = None,
        payload_edit: Any = None,
    ) -> str:
        uid = str(uuid.uuid4())
        atts = []
        if history is not None:
            hp = HIST / f"{history}.jsonl"
            if attach_verdicts:
                payload = report.verdicts_payload(verdicts(history, bound), history=hp, scenario=test)
                if payload_edit is not None:
                    payload_edit(payload)
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
            "labels": [{"name": "feature", "value": "Unplanned"}, {"name": "site", "value": "sha"}]
            + [{"name": k, "value": v} for k, vs in (labels or {}).items() for v in vs],
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
    reasons = [x for s in rep.scenarios for x in s.reasons]
    assert any("p95 recovery 6.00 s over the policy bound 5.00 s" in x for x in reasons)
    first = gate.render.summary_line(rep)  # what gate.md says right under its title
    assert first.startswith("**2 scenarios: 1 pass, 1 fail, 0 flaky, 0 not judged;")
    assert "blocking: `scenarios.test_unplanned#test_pbx_killed` (run 1: p95 recovery 6.00 s" in first


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


DEFECT = {"hil.outcome": ["defect"], "hil.kind": ["assertion"]}
LAB = {"hil.outcome": ["lab"], "hil.kind": ["device_unreachable"]}


def test_defect_wins_over_missing_evidence(tmp_path: Path) -> None:
    r = Results(tmp_path / "res")
    r.add(
        "scenarios.test_unplanned#test_pbx_killed",
        status="failed",
        message="AssertionError: assert 2 == 1",
        labels=DEFECT,
    )
    rep = gate.run_gate(policy_file(tmp_path), r.d)  # test_login# is missing too
    assert rep.exit_code == 1 and rep.missing
    assert "run 1: failed: assert 2 == 1 [assertion]" in gate.table(rep)


def test_a_failure_with_no_category_cannot_be_judged(tmp_path: Path) -> None:
    """An older plugin, or none: a failed run whose verdicts are all valid and that carries no label."""
    r = good(tmp_path / "res")
    r.add("scenarios.test_login#test_remote_login", status="failed", message="AssertionError: assert 2 == 1")
    rep = gate.run_gate(policy_file(tmp_path), r.d)
    assert rep.exit_code == 2, gate.table(rep)
    s = next(s for s in rep.scenarios if "remote_login" in s.scenario)
    assert s.verdict == "unjudged" and "failed with no category" in s.reasons[0], s.reasons


@pytest.mark.parametrize(
    ("message", "labels", "code"),
    [
        ("AssertionError: " + report.LAB_DEVICE_UNREACHABLE + ": sha-sw1", DEFECT, 1),
        ("AssertionError: " + report.DEFECT_LOST_CALL + ": no_lost_call: 1 lost", LAB, 2),
        ("harness.drivers.base.DeviceUnreachable: PRODUCT DEFECT", {"hil.outcome": ["incomplete"]}, 2),
        ("AssertionError: PRODUCT DEFECT", {"hil.outcome": ["lab", "defect"]}, 1),  # the worst label counts
        ("AssertionError: PRODUCT DEFECT", {"hil.outcome": ["pass"]}, 2),  # a failed run cannot be a pass
    ],
)
def test_the_category_decides_never_the_message(
    tmp_path: Path, message: str, labels: dict[str, list[str]], code: int
) -> None:
    r = good(tmp_path / "res")
    r.add("scenarios.test_login#test_remote_login", status="failed", message=message, labels=labels)
    rep = gate.run_gate(policy_file(tmp_path), r.d)
    assert rep.exit_code == code, gate.table(rep)
    assert not rep.problems


def test_failed_run_takes_the_category_of_its_findings(tmp_path: Path) -> None:
    """No label (a plain script): the findings of its verdict file say what the failure was."""
    r = good(tmp_path / "res")
    r.add("scenarios.test_login#test_remote_login", history="unknown_capture_drops", status="failed")
    rep = gate.run_gate(policy_file(tmp_path), r.d)
    assert rep.exit_code == 2
    s = next(s for s in rep.scenarios if "remote_login" in s.scenario)
    assert s.reasons[0] == "run 1: failed on the lab, not the product [capture_drops]", s.reasons


def test_bad_outcome_label_is_an_input_error(tmp_path: Path) -> None:
    r = good(tmp_path / "res")
    uid = r.add("scenarios.test_login#test_remote_login", status="failed", labels={"hil.outcome": ["bug"]})
    rep = gate.run_gate(policy_file(tmp_path), r.d)
    assert rep.exit_code == 2
    want = f"{r.d / f'{uid}-result.json'}: labels.hil.outcome: must be one of defect, lab, incomplete, pass"
    assert any(x.startswith(want) for x in rep.problems), rep.problems


def test_verdict_files_findings(tmp_path: Path) -> None:
    # a file from before findings were carried: they are derived from its verdicts
    r = good(tmp_path / "res")
    r.add("scenarios.test_login#test_remote_login", history="invalid_lost_agent", payload_edit=_drop_findings)
    rep = gate.run_gate(policy_file(tmp_path), r.d)
    assert rep.exit_code == 1 and "1 lost agents (policy allows 0)" in str(rep.to_dict())
    # a file whose findings leave an invalid verdict unexplained contradicts itself: not judged as a pass
    r = good(tmp_path / "res2")
    r.add(
        "scenarios.test_login#test_remote_login",
        history="invalid_lost_call",
        bound=40.0,
        payload_edit=_no_findings,
    )
    rep = gate.run_gate(policy_file(tmp_path), r.d)
    assert rep.exit_code == 2
    assert any(
        "verdict no_lost_call is invalid but no finding names it" in x
        for s in rep.scenarios
        for x in s.reasons
    )
    # the gate reads the file's category and kind: a lab finding written by the scenario is not a defect
    r = good(tmp_path / "res3")
    r.add(
        "scenarios.test_login#test_remote_login",
        history="invalid_lost_call",
        bound=40.0,
        payload_edit=_as_lab,
    )
    rep = gate.run_gate(policy_file(tmp_path), r.d)
    assert rep.exit_code == 2 and any("LAB FAULT: pdu off" in x for s in rep.scenarios for x in s.reasons)


def _drop_findings(payload: dict[str, Any]) -> None:
    del payload["findings"], payload["outcome"]


def _no_findings(payload: dict[str, Any]) -> None:
    payload["findings"] = []


def _as_lab(payload: dict[str, Any]) -> None:
    for f in payload["findings"]:
        f.update(category="lab", kind="pdu_off")


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
            {
                "status": "broken",
                "message": "harness.drivers.base.DeviceUnreachable: sha-sw1: port_down",
                "labels": LAB,
            },
            "broken (lab or harness error)",
        ),
        (
            {"status": "failed", "message": "Failed: " + report.LAB_DEVICE_UNREACHABLE, "labels": LAB},
            "on the lab",
        ),
        ({"status": "broken", "message": "TypeError: oops"}, "broken with no category"),
        ({"status": "unknown"}, "status unknown"),
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


PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x10" + bytes(range(256))


@pytest.mark.parametrize(
    ("data", "where", "what"),
    [
        (PNG, "", "not UTF-8 text (byte 0x89 at offset 0): not a policy"),
        (bytes(range(255, -1, -1)) * 4, "", "not UTF-8 text (byte 0xff at offset 0)"),
        (b"version: 1\nrepeat: \x00\x01\n", "character 20", "not YAML text"),
        (b"just some words\n", "", "must be a mapping (version, repeat, scenarios, ...), got str"),
        (b"[1, 2]\n", "", "must be a mapping (version, repeat, scenarios, ...), got list"),
        (b"repeat: [1, 2]\n", "repeat", "valid integer (got list [1, 2])"),
        (b"scenarios: {a: 1}\n", "scenarios", "valid list (got dict {'a': 1})"),
        (b"scenarios:\n  - match: 7\n", "scenarios[0].match", "valid string (got int 7)"),
        (b"max_lost_agents: '" + b"9" * 200 + b"'\n", "max_lost_agents", "..."),
    ],
)
def test_policy_that_is_not_a_policy_gives_one_line(
    tmp_path: Path, data: bytes, where: str, what: str
) -> None:
    """`hil gate --policy FILE`, whatever FILE holds: exit 2, one error line naming the file, no traceback."""
    good(tmp_path / "res")
    p = tmp_path / "policy.bin"
    p.write_bytes(data)
    with pytest.raises(gate.GateInputError) as e:
        gate.load_policy(p)
    assert len(e.value.lines()) == 1 and what in e.value.lines()[0], e.value.lines()
    res = cli("gate", "--policy", str(p), "--results", str(tmp_path / "res"), "--out", str(tmp_path / "o"))
    assert res.exit_code == 2 and isinstance(res.exception, SystemExit), res.output
    assert "Traceback" not in res.output
    errors = res.stderr.splitlines()
    assert errors == [f"error: {e.value.lines()[0]}"]
    assert errors[0].startswith(f"error: {p}: {where}") and what in errors[0] and len(errors[0]) < 300
    assert "gate: COULD NOT JUDGE (exit 2)" in res.stdout and "scenario  runs" not in res.stdout
    assert json.loads((tmp_path / "o" / "gate.json").read_text())["verdict"] == "could not judge"


def test_policy_that_is_a_directory(tmp_path: Path) -> None:
    res = cli("gate", "--policy", str(tmp_path), "--results", str(tmp_path), "--out", str(tmp_path / "o"))
    assert res.exit_code == 2 and res.stderr.startswith(f"error: {tmp_path}: cannot read the policy: ")


def _file(d: Path, name: str, data: bytes) -> Path:
    (d / name).write_bytes(data)
    return d / name


def test_results_that_are_not_results_give_one_line_each(tmp_path: Path) -> None:
    p = policy_file(tmp_path)
    r = good(tmp_path / "res")
    bad = {
        _file(
            r.d, "png-result.json", PNG
        ): "not UTF-8 text (byte 0x89 at offset 0): not an Allure result file",
        _file(r.d, "list-result.json", b"[]"): "must be a JSON object, got list",
        _file(r.d, "rand-container.json", bytes(range(128, 256))): "not UTF-8 text (byte 0x80 at offset 0)",
        _file(
            r.d, "kids-container.json", json.dumps({"children": 5}).encode()
        ): "children: must be a list, got int",
        _file(
            r.d, "fx-container.json", json.dumps({"befores": "x"}).encode()
        ): "befores: must be a list, got str",
    }
    params = {"status": "passed", "fullName": "m#t", "parameters": 5}
    bad[_file(r.d, "params-result.json", json.dumps(params).encode())] = "parameters: must be a list, got int"
    labels = {"status": "passed", "fullName": "m#u", "labels": "sha"}
    bad[_file(r.d, "labels-result.json", json.dumps(labels).encode())] = "labels: must be a list, got str"
    atts = {"status": "passed", "fullName": "m#v", "attachments": [{"name": "x"}], "steps": {"a": 1}}
    bad[_file(r.d, "atts-result.json", json.dumps(atts).encode())] = (
        "attachments[0]: needs a source file name"
    )
    res = cli("gate", "--policy", str(p), "--results", str(r.d), "--out", str(tmp_path / "o"))
    assert res.exit_code == 2 and "Traceback" not in res.output, res.output
    errors = res.stderr.splitlines()
    for f, what in bad.items():
        assert any(e.startswith(f"error: {f}: ") and what in e for e in errors), (f, what, errors)
    assert f"error: {r.d / 'atts-result.json'}: steps: must be a list, got dict" in errors


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (PNG, "not UTF-8 text (byte 0x89 at offset 0): not a verdict file"),
        (b'{"schema": "hil-verdicts/1", "verdicts": []', "not readable JSON"),
        (b'"hil-verdicts/1"', "must be a JSON object, got str"),
        (
            b'{"schema": "hil-verdicts/1", "verdicts": [], "findings": {}}',
            "findings: must be a list, got dict",
        ),
        (
            b'{"schema": "hil-verdicts/1", "verdicts": [], "findings": [{"category": "bug"}]}',
            "findings[0].category: must be one of defect, lab, incomplete, got 'bug'",
        ),
        (
            b'{"schema": "hil-verdicts/1", "verdicts": [], "findings": [{"category": ["defect"]}]}',
            "findings[0].category: must be one of defect, lab, incomplete, got ['defect']",
        ),
        (
            b'{"schema": "hil-verdicts/1", "verdicts": [{"name": "all", "result": "invalid", "reason": "",'
            b' "witnesses": [{"name": "x", "result": "invalid", "reason": "", "witnesses": 3}],'
            b' "figures": {"x": "invalid"}}]}',
            "verdicts: a composed verdict holds a part that is not a verdict: witnesses: must be a list",
        ),
    ],
)
def test_verdict_file_that_is_not_one(tmp_path: Path, data: bytes, why: str) -> None:
    r = Results(tmp_path / "res")
    uid = r.add("scenarios.test_unplanned#test_pbx_killed")
    r.add("scenarios.test_login#test_local_login")
    result = json.loads((r.d / f"{uid}-result.json").read_text())
    vfile = r.d / next(a["source"] for a in result["attachments"] if a["name"] == report.VERDICTS_NAME)
    vfile.write_bytes(data)
    rep = gate.run_gate(policy_file(tmp_path), r.d)
    assert rep.exit_code == 2
    mine = [x for x in rep.problems if x.startswith(f"{vfile}: ")]
    assert len(mine) == 1 and mine[0].startswith(f"{vfile}: {why}"), rep.problems
    s = next(s for s in rep.scenarios if "pbx_killed" in s.scenario)
    assert s.verdict == "unjudged" and s.reasons[0] == f"run 1: {mine[0]}", s.reasons


@pytest.mark.parametrize("figure", [float("nan"), float("inf"), "6.0", [6.0], True])
def test_recovery_figure_that_is_not_seconds(tmp_path: Path, figure: Any) -> None:
    """NaN is over no bound: a figure that is not a finite number proves nothing, so it cannot be judged."""

    def edit(payload: dict[str, Any]) -> None:
        rt = next(v for v in payload["verdicts"] if v["name"] == "recovery_time")
        rt["figures"]["p95"] = figure

    r = Results(tmp_path / "res")
    r.add("scenarios.test_unplanned#test_pbx_killed", payload_edit=edit)
    r.add("scenarios.test_login#test_local_login")
    rep = gate.run_gate(policy_file(tmp_path, POLICY.replace("p95: 10", "p95: 5")), r.d)
    assert rep.exit_code == 2, gate.table(rep)
    s = next(s for s in rep.scenarios if "pbx_killed" in s.scenario)
    assert any("p95 figure is not a number of seconds" in x for x in s.reasons), s.reasons
    assert "p95" not in s.figures


def test_history_attachment_that_is_not_text(tmp_path: Path) -> None:
    """A verdict file naming (by sha256) an attached history that is a picture: cannot be checked again."""
    r = Results(tmp_path / "res")
    uid = r.add("scenarios.test_unplanned#test_pbx_killed")
    r.add("scenarios.test_login#test_local_login")
    result = json.loads((r.d / f"{uid}-result.json").read_text())
    src = {a["name"]: a["source"] for a in result["attachments"]}
    (r.d / src[report.HISTORY_NAME]).write_bytes(PNG)
    vfile = r.d / src[report.VERDICTS_NAME]
    payload = json.loads(vfile.read_text())
    payload["history"]["sha256"] = hashlib.sha256(PNG).hexdigest()
    vfile.write_text(json.dumps(payload))
    rep = gate.run_gate(policy_file(tmp_path), r.d)
    assert rep.exit_code == 2
    why = next(x for s in rep.scenarios for x in s.reasons if "history does not read back" in x)
    assert "not UTF-8 text: byte 0x89 at column 1" in why and "\n" not in why


def test_shipped_policy_loads_and_sets_the_checkers_bound() -> None:
    pol = gate.load_policy(REPO / "gate.yaml")
    assert pol.max_lost_agents == 0 and pol.max_split_brain == 0 and pol.scenarios
    assert gate.recovery_bound(pol, "scenarios.test_unplanned#test_failover[case=pbx_killed]", 99.0) == 8.0
    assert gate.recovery_bound(REPO / "gate.yaml", "no_such_thing", 99.0) == 99.0
    assert gate.recovery_bound(None, "x", 7.0) == 7.0


# -- a real pytest + allure-pytest run --------------------------------------------------------------------

SAMPLE = """
import os
from pathlib import Path

import pytest

from harness import checks, report
from harness.drivers.base import DeviceUnreachable
from harness.history import History

HIST = Path(os.environ["HIL_HISTORIES"])


class Scenario:
    verdicts = None


@pytest.fixture
def scenario():
    return Scenario()


@pytest.mark.parametrize("history", ["valid_pbx_failover", "invalid_rto_over_bound"])
def test_pbx_killed(history, scenario):
    h = list(History.load(HIST / f"{history}.jsonl"))
    vs = scenario.verdicts = [checks.check_recovery_time(h, bound=10.0), checks.check_no_split_brain(h)]
    report.attach_verdicts(vs, history=HIST / f"{history}.jsonl", scenario="pbx_killed")
    assert checks.compose(*vs).valid, report.failure_message(vs)


def test_switch_dead():
    raise DeviceUnreachable("sha-sw1", "port_down", "timed out")


def test_switch_dead_reported():
    try:
        raise DeviceUnreachable("sha-sw1", "port_down", "timed out")
    except DeviceUnreachable as e:
        pytest.fail(report.lab_fault_message(e))
"""


def test_gate_on_a_real_allure_run(tmp_path: Path) -> None:
    """A real pytest + allure-pytest run with the hil plugin (its makereport hook labels each failed run's
    category by the exception's type), then the gate over its results."""
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
        "--alluredir",
        str(results),
    ]
    proc = subprocess.run(
        [*cmd, str(tmp_path)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert "3 failed, 1 passed" in proc.stdout, proc.stdout + proc.stderr
    p = policy_file(
        tmp_path, "scenarios:\n  - match: 'test_pbx_killed\\[history=valid'\n    recovery: {max: 10}\n"
    )
    rep = gate.run_gate(p, results)
    assert rep.exit_code == 1, gate.table(rep)
    by = {s.scenario: s for s in rep.scenarios}
    assert by["test_sample_gate#test_pbx_killed[history=valid_pbx_failover]"].verdict == "pass"
    bad = by["test_sample_gate#test_pbx_killed[history=invalid_rto_over_bound]"]
    assert bad.verdict == "fail" and "PRODUCT DEFECT: recovery over bound" in bad.reasons[0]
    assert bad.labels["hil.outcome"] == ["defect"] and bad.labels["hil.kind"] == ["recovery_over_bound"]
    for name, status, why in (
        ("test_switch_dead", "broken", "run 1: broken (lab or harness error): "),
        ("test_switch_dead_reported", "failed", "run 1: failed on the lab, not the product: "),
    ):
        dead = by[f"test_sample_gate#{name}"]
        assert dead.runs[0].status == status and dead.runs[0].outcome == "incomplete"
        assert dead.labels["hil.outcome"] == ["lab"] and dead.labels["hil.kind"] == ["device_unreachable"]
        assert dead.reasons[0].startswith(why) and dead.reasons[0].endswith("[device_unreachable]")
        assert dead.verdict == "info" and any(name in n for n in rep.notes)  # unlisted: noted, not holding
    p3 = policy_file(tmp_path, "scenarios:\n  - match: 'valid_pbx'\n  - match: 'switch_dead$'\n")
    rep = gate.run_gate(p3, results)  # a listed scenario stopped by the lab: could not judge, not a defect
    assert rep.exit_code == 1  # the over-bound run (unlisted now) still blocks
    assert {s.scenario: s.verdict for s in rep.scenarios}["test_sample_gate#test_switch_dead"] == "unjudged"
    p4 = policy_file(
        tmp_path, "scenarios:\n  - match: 'valid_pbx'\n  - match: 'switch_dead$'\nunlisted: ignore\n"
    )
    assert gate.run_gate(p4, results).exit_code == 2
    p2 = policy_file(tmp_path, "scenarios:\n  - match: 'valid_pbx'\nunlisted: ignore\n")
    assert gate.run_gate(p2, results).exit_code == 0
