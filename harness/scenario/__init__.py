"""One scenario run, as a library: apply -> verify -> revert -> verify-revert, with its evidence and verdicts.

The pytest plugin (fixtures/plugin.py) is a thin shell around this package, and a plain script can do the
same::

    lab = open_lab(topology.load(None))
    reset_agents(lab)                                   # swarm restarted, every agent home and ready
    with Scenario(lab, "pbx_killed", Settings()) as sc:
        with sc.phase("apply"), sc.fault("service_kill", "sha-pbx1", service="kamailio"):
            with sc.phase("verify"):
                sc.wait_placement(sc.expect(moved_from="sha"), "agents of sha at ntg")
        with sc.phase("verify-revert"):
            sc.settle()
    verdicts = sc.judge(sc.standard_checks(expect="surviving"))

Modules: `settings` (what a run may tune, names), `agents` (who is where), `readiness` (the lab as a
scenario starts from it), `run` (the Scenario: evidence, phases, faults), `waits` (its expectations,
written to the history), `judging` (the checkers on its history, verdict file, attachments), `switches`
(planned switches), `calls` (test calls), `plan` (the dry-run plan), `session` (what the pytest plugin
calls). Every verdict is a checker's in harness/checks/, on the history.
"""

from harness.scenario.agents import (
    SWARM_UNIT,
    agent_hosts,
    agents_extensions,
    agents_homes,
    agents_where,
    uplink,
)
from harness.scenario.calls import place_call
from harness.scenario.plan import PlanLog, change_plan, format_plan, read_plan, record_plan
from harness.scenario.readiness import (
    AgentsReady,
    agents_ready,
    lab_problems,
    reset_agents,
    restart_swarms,
    wait_lab_clean,
)
from harness.scenario.run import Scenario
from harness.scenario.session import (
    device_facts,
    driver,
    dry_run_lab,
    heal_leftovers,
    label_test,
    missing_kinds,
    scale_unfit,
    session_injector,
    start_capture,
    write_session_reports,
)
from harness.scenario.settings import (
    FAULT_JITTER_S,
    FRESH_READ_S,
    REPORTS,
    LabNotReady,
    Settings,
    allure_id,
    poll_rate,
    scenario_name,
    settings_from_options,
)
from harness.scenario.switches import planned_switch, switch_back

__all__ = [
    "FAULT_JITTER_S",
    "FRESH_READ_S",
    "REPORTS",
    "SWARM_UNIT",
    "AgentsReady",
    "LabNotReady",
    "PlanLog",
    "Scenario",
    "Settings",
    "agent_hosts",
    "agents_extensions",
    "agents_homes",
    "agents_ready",
    "agents_where",
    "allure_id",
    "change_plan",
    "device_facts",
    "driver",
    "dry_run_lab",
    "format_plan",
    "heal_leftovers",
    "label_test",
    "lab_problems",
    "missing_kinds",
    "place_call",
    "planned_switch",
    "poll_rate",
    "read_plan",
    "record_plan",
    "reset_agents",
    "restart_swarms",
    "scale_unfit",
    "scenario_name",
    "session_injector",
    "settings_from_options",
    "start_capture",
    "switch_back",
    "uplink",
    "wait_lab_clean",
    "write_session_reports",
]
