"""The release policy (`gate.yaml`): its schema, validated with pydantic (unknown keys refused), and loading.

A policy that cannot be read is exit 2 with one line per problem naming the file and the field; the gate
never judges against half a policy. `recovery_bound` gives scenarios the same bound the gate checks.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from harness.gate.inputs import GateInputError, Problem, read_text, where
from harness.report import REPO_ROOT

__all__ = ["DEFAULT_POLICY", "Baseline", "Policy", "Recovery", "Rule", "load_policy", "recovery_bound"]

DEFAULT_POLICY = REPO_ROOT / "gate.yaml"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Recovery(_Strict):
    """Recovery-time bounds in seconds, over the agents of one scenario run (nearest-rank percentiles)."""

    p50: float | None = Field(None, gt=0)
    p95: float | None = Field(None, gt=0)
    max: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _one(self) -> Recovery:
        if self.p50 is None and self.p95 is None and self.max is None:
            raise ValueError("give at least one of p50, p95, max")
        return self


class Rule(_Strict):
    """Scenarios whose id matches `match` (a regex, searched): how often they must pass, within what."""

    match: str
    required: bool = True
    repeat: int | None = Field(None, ge=1)
    recovery: Recovery | None = None
    verdicts: bool = True

    @field_validator("match")
    @classmethod
    def _regex(cls, v: str) -> str:
        try:
            re.compile(v)
        except re.error as e:
            raise ValueError(f"not a valid regular expression: {e}") from None
        return v


class Baseline(_Strict):
    """The run this one must be as good as: a kept run or a pinned baseline file, and how much a scenario's
    per-agent p95 / max (recovery, detection) may grow over the baseline's before it is a regression."""

    run: str = Field(min_length=1)
    p95: float | None = Field(1.5, ge=1)
    max: float | None = Field(2.0, ge=1)


class Policy(_Strict):
    """The release policy (gate.yaml); docs/gate.md explains each field."""

    version: Literal[1] = 1
    repeat: int = Field(1, ge=1)
    max_lost_agents: int = Field(0, ge=0)
    max_split_brain: int = Field(0, ge=0)
    min_scenarios: int = Field(1, ge=0)
    unlisted: Literal["judge", "ignore"] = "judge"
    scenarios: list[Rule] = Field(default_factory=list)
    baseline: Baseline | None = None


def _yaml_problem(f: str, e: yaml.YAMLError) -> Problem:
    mark = getattr(e, "problem_mark", None)
    if mark is not None:
        at = f"line {mark.line + 1}, column {mark.column + 1}"
        return (f, at, f"not valid YAML: {getattr(e, 'problem', None) or e}")
    if isinstance(e, yaml.reader.ReaderError):  # a character YAML does not allow (control bytes, NUL)
        return (f, f"character {e.position + 1}", f"not YAML text: {e.reason}")
    return (f, "", f"not valid YAML: {e}")


def _validation_problems(f: str, e: ValidationError) -> list[Problem]:
    problems = []
    for err in e.errors():
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif err["type"] == "missing":
            msg = "required field is missing"
        elif "input" in err and err["type"].endswith("_type"):
            got = repr(err["input"])
            msg += f" (got {type(err['input']).__name__} {got if len(got) <= 60 else got[:57] + '...'})"
        problems.append((f, where(err["loc"]), msg))
    return problems


def load_policy(path: str | Path) -> Policy:
    """Read and validate a policy; raise GateInputError naming the file and each bad field."""
    f = str(path)
    text = read_text(Path(path), "policy")
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise GateInputError([_yaml_problem(f, e)]) from None
    except RecursionError:
        raise GateInputError([(f, "", "not a policy: nested too deeply")]) from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        what = type(raw).__name__
        raise GateInputError(
            [(f, "", f"the policy must be a mapping (version, repeat, scenarios, ...), got {what}")]
        )
    try:
        return Policy.model_validate(raw)
    except ValidationError as e:
        raise GateInputError(_validation_problems(f, e)) from None


def recovery_bound(policy: Policy | str | Path | None, scenario: str, default: float) -> float:
    """The per-agent recovery bound a scenario should check with (`check_recovery_time(bound=...)`): the
    smallest `recovery.max` of the rules whose `match` finds `scenario` (its Allure id or its name), else
    `default`. So the checker's bound and the gate's are one number, set in one file."""
    if policy is None:
        return default
    pol = policy if isinstance(policy, Policy) else load_policy(policy)
    bounds = [
        r.recovery.max
        for r in pol.scenarios
        if r.recovery is not None and r.recovery.max is not None and re.search(r.match, scenario)
    ]
    return min(bounds) if bounds else default
