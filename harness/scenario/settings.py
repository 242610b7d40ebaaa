"""What a scenario run may tune, and the names a scenario goes by (its file name, its Allure id)."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path

from harness import gate
from harness.topology import REPO_ROOT

__all__ = [
    "FAULT_JITTER_S",
    "FRESH_READ_S",
    "REPORTS",
    "LabNotReady",
    "Settings",
    "allure_id",
    "poll_rate",
    "scenario_name",
    "settings_from_options",
    "slug",
]

REPORTS = REPO_ROOT / "reports"
# --fault-seed: a fault waits 0 to this many seconds before it is injected (a heartbeat interval and more:
# every phase of the agents' 1 s heartbeats and the CTI's 0.5 s PBX probes is reachable).
FAULT_JITTER_S = 1.5
# hold(): how long past its duration to wait for a read of every endpoint taken after it began.
FRESH_READ_S = 5.0


class LabNotReady(Exception):
    """The lab did not reach the state a scenario starts from: a lab fault, not a product verdict."""


@dataclass
class Settings:
    """What a run may tune: the recovery bound, the poll rate, dry run, and where evidence goes."""

    bound: float = 30.0  # seconds: every affected agent must recover within it (generous for CI)
    hz: float | None = None  # snapshots per second of every PBX and CTI (None: by lab size, see poll_rate)
    dry_run: bool = False
    fault_seed: int | None = None
    out_dir: Path = REPORTS
    ready_timeout: float = 45.0  # for the swarm to bring every agent home after a restart
    settle: float = 2.0  # seconds of observation after the lab is back, for the final read
    capture: bool = True

    policy: str | None = None  # gate policy file: per-scenario recovery bounds (docs/gate.md)

    def for_scenario(self, scenario_id: str) -> Settings:
        """These settings with the recovery bound the gate policy sets for this scenario (its Allure id,
        ``module#function[params]``), so the checker and the gate judge by one number."""
        if self.policy is None:
            return self
        return replace(self, bound=gate.recovery_bound(self.policy, scenario_id, self.bound))


def poll_rate(agents: int) -> float:
    """Snapshots per second: 5 Hz up to a few hundred agents; fewer for big labs, where every snapshot is a
    full table (1,000 contacts: ~80 KB per read, four endpoints) and the history must stay loadable."""
    return 5.0 if agents <= 300 else 2.5 if agents <= 2000 else 1.0


def settings_from_options(
    *,
    policy: str | None,
    bound: float | None,
    dry_run: bool,
    fault_seed: int | None,
    out_dir: str | None,
) -> Settings:
    """Settings from the pytest options: an explicit ``--recovery-bound`` wins over the policy's bounds."""
    s = Settings(dry_run=dry_run, fault_seed=fault_seed, policy=None if bound is not None else policy)
    if bound is not None:
        s.bound = bound
    if out_dir:
        s.out_dir = Path(out_dir)
    return s


def slug(name: str) -> str:
    """A name safe for a file: what the histories, pcaps and verdicts of a scenario are called."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_")[:120] or "scenario"


def scenario_name(nodeid: str) -> str:
    """A scenario's name from its pytest node id: the test function and its parameters."""
    return slug(nodeid.split("::", 1)[-1])


def allure_id(nodeid: str) -> str:
    """The id the gate's rules match: ``scenarios/test_x.py::test_y[p]`` -> ``scenarios.test_x#test_y[p]``."""
    path, _, name = nodeid.partition("::")
    return f"{path.removesuffix('.py').replace('/', '.')}#{name}"
