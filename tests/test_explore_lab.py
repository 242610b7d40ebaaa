"""A hand-written schedule run as a scenario on the virtual lab (real kamailio, SSH hosts, switch CLIs, the
swarm): its ops start on time and overlap, each fault is applied and healed through the injector and
paired in the history, the logout is healed by the login, the op held to the end is healed by the final
heal, and the lab ends as it began."""

from __future__ import annotations

import pytest

from harness import checks
from harness.checks.schedule_ran import LATE_S
from harness.history import History, pair_ops
from harness.nemesis.schedule import Schedule
from harness.scenario import Scenario, lab_problems
from harness.scenario.explore import run_ops, schedule_checks

pytestmark = pytest.mark.lab

SCHEDULE = {
    "schema": "hil-schedule/1",
    "note": "hand-written: a short PBX pause under 5 % CTI loss, a logout and login, a phone port to the end",
    "settle": 2.0,
    "ops": [
        {"at": 0.2, "kind": "loss", "target": "sha-cti1", "duration": 2.0, "params": {"percent": 5}},
        {"at": 0.4, "kind": "service_pause", "target": "sha-pbx1", "duration": 0.6,
         "params": {"service": "kamailio"}},
        {"at": 0.5, "kind": "agent_logout", "target": "a00003"},
        {"at": 1.5, "kind": "agent_login", "target": "a00003"},
        {"at": 1.0, "kind": "port_down", "target": "sha-phone1"},
    ],
}  # fmt: skip


def test_hand_written_schedule(scenario: Scenario) -> None:
    sched = Schedule.model_validate(SCHEDULE)
    recs = run_ops(scenario, sched, None)
    scenario.finish()
    assert [r.result for r in recs] == ["ok"] * 5, [r.error for r in recs]
    assert all(r.late is not None and r.late < LATE_S for r in recs), [r.late for r in recs]
    events = History.load(scenario.history_path).events
    pairs, stray = pair_ops(events)
    faults = [p for p in pairs if p.invoke.f.startswith("fault.")]
    assert not [s for s in stray if s.f.startswith(("fault.", "change."))]
    assert len(faults) == 6 and all(p.outcome == "ok" for p in faults)
    loss_in = next(p.completion.t for p in faults if p.invoke.value.get("fault") == "loss")
    pause_heal = next(
        p.invoke.t for p in faults if p.invoke.f == "fault.heal" and p.invoke.process == "nemesis:1"
    )
    assert loss_in < pause_heal, "the loss was in place while the PBX was paused"
    verdicts = {v.name: v for v in schedule_checks(scenario, sched)}
    assert verdicts["schedule_ran"].result == "valid", verdicts["schedule_ran"]
    assert verdicts["faults_healed"].result == "valid", verdicts["faults_healed"]
    assert checks.check_no_split_brain(events).result != "invalid"
    assert not lab_problems(scenario.lab)
