"""A fault schedule as data: what happens, to what, when, and for how long.

A schedule is JSON (schema `hil-schedule/1`), generated from a seed and a profile, or written by hand, or
shrunk from a failing one; it is replayed from its file at the same offsets. It names its targets by the
topology's device names, so one file replays on any lab with the same names. Loading checks everything that
can be checked without the lab (types, kinds, offsets, durations, that each target exists and is fair game)
and names the file, the field and the problem in one line: nothing touches the lab before a schedule loads.

    {"schema": "hil-schedule/1", "seed": 7, "profile": "default", "topology": "virtual-two-site",
     "settle": 8.0,
     "ops": [{"at": 0.5, "kind": "service_pause", "target": "sha-pbx1", "duration": 2.4,
              "params": {"service": "kamailio"}},
             {"at": 1.0, "kind": "agent_logout", "target": "a00003"}]}

`at` and `duration` are seconds from the schedule's start; an op with no `duration` holds until the final
heal, which comes when every op has ended and a held one has lasted at least `hold` seconds (`span`).
`agent_login` and `call` are instant events; an `agent_logout` lasts until its agent logs in again (its own
`duration`, a later `agent_login`, or the final heal); a `planned_switch` rule is removed when it ends.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from harness import textfile
from harness.topology import Topology

SCHEMA = "hil-schedule/1"
MAX_SECONDS = 600.0  # no op starts or lasts longer than this: a longer schedule is a typo, not a test

FAULT_KINDS = (
    "port_down",
    "link_cut",
    "service_kill",
    "service_stop",
    "service_pause",
    "power_off",
    "blackhole",
    "partition",
    "loss",
    "rate_limit",
)
STACK_KINDS = ("agent_logout", "agent_login", "planned_switch", "call")
KINDS = FAULT_KINDS + STACK_KINDS
INSTANT_KINDS = ("agent_login", "call")  # events with no lasting effect of their own to heal


class ScheduleError(Exception):
    """A schedule that cannot be run: one line per problem, each naming the file and the field."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))

    def lines(self) -> list[str]:
        return list(self.problems)


class Op(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    at: float = Field(ge=0.0, le=MAX_SECONDS, description="seconds from the schedule's start")
    kind: Literal[KINDS]  # type: ignore[valid-type]
    target: str = Field(min_length=1)
    duration: float | None = Field(None, gt=0.0, le=MAX_SECONDS, description="seconds until healed")
    params: dict[str, Any] = Field(default_factory=dict)

    @field_validator("at", "duration")
    @classmethod
    def _finite(cls, v: float | None) -> float | None:
        if v is not None and not math.isfinite(v):
            raise ValueError("must be a finite number of seconds")
        return v

    @property
    def is_fault(self) -> bool:
        return self.kind in FAULT_KINDS

    @property
    def end(self) -> float | None:
        """When the op is healed (None: held until the final heal, or an instant event)."""
        return None if self.duration is None else self.at + self.duration


class Schedule(BaseModel):
    schema_: Literal["hil-schedule/1"] = Field(SCHEMA, alias="schema")
    seed: int | None = None
    profile: str | None = None
    topology: str | None = Field(None, description="the name of the topology it was drawn for")
    settle: float = Field(8.0, ge=0.0, le=MAX_SECONDS, description="wait after the final heal, then read")
    hold: float = Field(
        4.0,
        ge=0.0,
        le=MAX_SECONDS,
        description="the least time a held op (no duration) lasts before the final heal",
    )
    ops: list[Op] = Field(default_factory=list)
    note: str | None = Field(None, description="free text: how it was made (generated, shrunk from ...)")

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    def to_json(self) -> str:
        return json.dumps(self.model_dump(by_alias=True, exclude_none=True), indent=1) + "\n"

    def write(self, path: str | Path) -> Path:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(self.to_json())
        return p

    def sorted_ops(self) -> list[Op]:
        return sorted(self.ops, key=lambda o: o.at)

    def held_until(self, op: Op) -> float:
        """When an op's effect ends at the latest: its own end, or (held) `hold` after it began; an instant
        event (a call, a login) ends when it starts."""
        if op.end is not None:
            return op.end
        return op.at if op.kind in INSTANT_KINDS else op.at + self.hold

    @property
    def span(self) -> float:
        """When the final heal comes: after every op has ended, a held one after at least `hold` seconds."""
        return max([self.held_until(o) for o in self.ops], default=0.0)


def _where(loc: tuple[Any, ...]) -> str:
    return ".".join(str(x) for x in loc) or "(top)"


def parse(data: Any, source: str, topo: Topology | None = None) -> Schedule:
    """A schedule from decoded JSON; `source` names it in errors. With a topology, targets are checked."""
    try:
        sched = Schedule.model_validate(data)
    except ValidationError as e:
        raise ScheduleError(
            [f"{source}: {_where(err['loc'])}: {err['msg']}" for err in e.errors(include_url=False)]
        ) from None
    if topo is not None:
        problems = check_targets(sched, topo, source)
        if problems:
            raise ScheduleError(problems)
    return sched


def load(path: str | Path, topo: Topology | None = None) -> Schedule:
    """Read and check a schedule file; every problem is a ScheduleError line naming the file and field."""
    p = Path(path)
    try:
        text = textfile.read_text(p, "schedule file", "JSON", allow_empty=True)
    except textfile.TextFileError as e:
        raise ScheduleError([f"{p}: (top): {e}"]) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ScheduleError([f"{p}: line {e.lineno} column {e.colno}: not JSON: {e.msg}"]) from None
    if not isinstance(data, dict):
        raise ScheduleError(
            [f"{p}: (top): must be a JSON object with schema, ops, ..., not {type(data).__name__}"]
        )
    return parse(data, str(p), topo)


def check_targets(sched: Schedule, topo: Topology, source: str) -> list[str]:
    """What the topology says of each target: it exists, and a fault may touch it (fair game, cuttable)."""
    out: list[str] = []
    agents = {a.id for a in topo.agents()}
    for k, op in enumerate(sched.ops):
        where = f"{source}: ops.{k}.target"
        if op.kind in ("agent_logout", "agent_login"):
            if op.target not in agents:
                out.append(f"{where}: {op.target!r} is not an agent of {topo.name}")
            continue
        if op.kind == "link_cut":
            problem = link_problem(topo, op.target)
            if problem:
                out.append(f"{where}: {problem}")
            continue
        name = op.target.split(":", 1)[0]
        if name not in topo.devices:
            out.append(f"{where}: {name!r} is not a device of {topo.name}")
            continue
        problem = fair_game_problem(topo, op)
        if problem:
            out.append(f"{where}: {problem}")
    return out


def fair_game_problem(topo: Topology, op: Op) -> str | None:
    """Why the topology does not let a fault touch this target (None: it may)."""
    name, _, port = op.target.partition(":")
    dev = topo.device(name)
    if op.kind == "port_down" and port:
        return port_problem(topo, name, port)
    if op.kind == "port_down":  # a device: the switch port it is cabled to (as PortDown finds it)
        found = [
            (sw.name, pname)
            for sw in topo.of_kind("switch")
            for pname, p in sw.spec.ports.items()
            if p.connects == name
        ]
        if not found:
            return f"no switch port connects {name!r}"
        problem = port_problem(topo, *found[0])
        return f"{name!r}: its switch port {problem}" if problem else None
    if op.kind in ("planned_switch", "call", "power_off"):
        return None  # the UL, a caller or a device on a cuttable outlet: the fault checks the rest
    if not getattr(dev.spec, "fair_game", False):
        return f"{name!r} is not fair game (fair_game: true in the topology)"
    return None


def port_problem(topo: Topology, sw: str, port: str) -> str | None:
    """Why a fault may not set this switch port down (None: it may), as the port faults refuse it
    (harness/faults/switch.py), so a schedule that names one fails at load, not on the lab."""
    dev = topo.devices.get(sw)
    spec = dev.spec.ports.get(port) if dev is not None and dev.kind == "switch" else None
    if spec is None:
        return f"'{sw}:{port}' is not a switch port of {topo.name}"
    if (sw, port) in topo.management_path() or spec.connects == "controller":
        return f"'{sw}:{port}' is on the controller's management path"
    return None if spec.cuttable else f"'{sw}:{port}' is not cuttable (cuttable: true in the topology)"


def link_problem(topo: Topology, name: str) -> str | None:
    """Why a fault may not cut this link (None: it may): it must exist, be cuttable, and so must both ends."""
    link = topo.model.links.get(name)
    if link is None:
        return f"{name!r} is not a link of {topo.name}"
    if not link.cuttable:
        return f"link {name!r} is not cuttable (cuttable: true in the topology)"
    for end in (link.a, link.b):
        sw, _, port = end.partition(":")
        problem = port_problem(topo, sw, port)
        if problem:
            return f"link {name!r}: {problem}"
    return None
