"""The nemesis's profile: how schedules are drawn (weights per op kind, limits) and the stack's timing the
expected outcome is judged by (the confirmation window, when a break surely moves nobody or everybody).

Why a file of its own, validated field by field: a profile is written by people, and a typo in it must not
silently draw schedules that test nothing (a weight for an unknown kind, a duration of -3 windows, loss of
300 %). Every problem is one line naming the file, the field and what is wrong, all at once, before
anything touches the lab. Durations are multiples of the window, so one profile fits a stack whose timers
change. `load_profile(None)` is the default profile shipped beside this module (default-profile.yaml).
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from harness import textfile
from harness.nemesis.schedule import FAULT_KINDS, KINDS, MAX_SECONDS

__all__ = [
    "DEFAULT_PROFILE",
    "Limits",
    "OpCount",
    "Profile",
    "ProfileError",
    "Sites",
    "Weights",
    "load_profile",
    "parse_profile",
]

DEFAULT_PROFILE = Path(__file__).with_name("default-profile.yaml")
MAX_WINDOWS = 20.0  # a duration longer than 20 confirmation windows is a typo, not a test


class ProfileError(Exception):
    """A profile that cannot be used: one line per problem, each naming the file and the field."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))

    def lines(self) -> list[str]:
        return list(self.problems)


class _Strict(BaseModel):
    # strict: a quoted "3" or a `true` where a number belongs is a mistake, not a number
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


def _finite(v: float) -> float:
    if not math.isfinite(v):
        raise ValueError("must be a finite number")
    return v


class Weights(_Strict):
    """Relative weight of each op kind (0 leaves it out); every kind of the schedule model has one."""

    port_down: float = Field(3.0, ge=0, le=1000)
    link_cut: float = Field(1.0, ge=0, le=1000)
    service_kill: float = Field(2.0, ge=0, le=1000)
    service_stop: float = Field(1.0, ge=0, le=1000)
    service_pause: float = Field(2.0, ge=0, le=1000)
    power_off: float = Field(1.0, ge=0, le=1000)
    blackhole: float = Field(1.0, ge=0, le=1000)
    partition: float = Field(2.0, ge=0, le=1000)
    loss: float = Field(2.0, ge=0, le=1000)
    rate_limit: float = Field(1.0, ge=0, le=1000)
    agent_logout: float = Field(1.0, ge=0, le=1000)
    agent_login: float = Field(0.0, ge=0, le=1000)
    planned_switch: float = Field(1.0, ge=0, le=1000)
    call: float = Field(1.0, ge=0, le=1000)

    def of(self, kind: str) -> float:
        return float(getattr(self, kind))

    @model_validator(mode="after")
    def _some_fault(self) -> Weights:
        if not any(self.of(k) > 0 for k in FAULT_KINDS):
            raise ValueError("at least one fault kind needs a weight above 0")
        return self


class OpCount(_Strict):
    min: int = Field(2, ge=1, le=100)
    max: int = Field(6, ge=1, le=100)

    @model_validator(mode="after")
    def _order(self) -> OpCount:
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) must not be above max ({self.max})")
        return self


class Limits(_Strict):
    ops: OpCount = OpCount()
    overlap: int = Field(3, ge=1, le=50, description="faults active at the same moment, at most")
    span: float = Field(60.0, gt=0, le=MAX_SECONDS, description="seconds: no op starts or ends later")
    durations: list[float] = Field(
        default_factory=lambda: [0.1, 0.2, 0.5, 1.0, 1.5, 2.0, 4.0], min_length=1, description="in windows"
    )
    hold: float = Field(0.05, ge=0, le=1, description="probability a fault is held until the final heal")
    loss_percent: list[float] = Field(default_factory=lambda: [5.0, 30.0, 60.0], min_length=1)
    rate_kbit: list[float] = Field(default_factory=lambda: [64.0, 256.0, 1024.0], min_length=1)

    @field_validator("span")
    @classmethod
    def _span(cls, v: float) -> float:
        return _finite(v)

    @field_validator("durations")
    @classmethod
    def _durations(cls, v: list[float]) -> list[float]:
        for x in v:
            if not math.isfinite(x) or x <= 0:
                raise ValueError(f"{x} is not a duration: each must be a positive number of windows")
            if x > MAX_WINDOWS:
                raise ValueError(f"{x} windows is absurd: at most {MAX_WINDOWS:g} windows")
        return v

    @field_validator("loss_percent")
    @classmethod
    def _loss(cls, v: list[float]) -> list[float]:
        for x in v:
            if not math.isfinite(x) or not 0 < x <= 100:
                raise ValueError(f"{x} is not a loss rate: each must be in (0, 100] percent")
        return v

    @field_validator("rate_kbit")
    @classmethod
    def _rate(cls, v: list[float]) -> list[float]:
        for x in v:
            if not math.isfinite(x) or not 0 < x <= 10_000_000:
                raise ValueError(f"{x} is not a rate: each must be in (0, 10000000] kbit/s")
        return v


class Sites(_Strict):
    other: float = Field(0.5, ge=0, le=1, description="probability an op hits the second site")
    both: float = Field(0.15, ge=0, le=1, description="probability a fault is mirrored at the other site")


class Profile(_Strict):
    """How schedules are drawn, and the stack's timing the expected outcome is judged by."""

    name: str = Field("default", min_length=1, max_length=64)
    window: float = Field(3.0, gt=0, le=60, description="the confirmation window, seconds")
    stay_below: float = Field(1.0, gt=0, le=MAX_SECONDS, description="seconds on the wire: shorter stays")
    move_above: float = Field(5.0, gt=0, le=MAX_SECONDS, description="seconds: a longer hard break moves")
    heal_latency: float = Field(0.5, ge=0, le=60, description="seconds a heal adds to a fault's duration")
    settle: float = Field(15.0, ge=0, le=MAX_SECONDS, description="seconds from the final heal to the read")
    weights: Weights = Weights()
    limits: Limits = Limits()
    sites: Sites = Sites()
    one_way: float = Field(0.5, ge=0, le=1, description="probability a partition is one way")
    relogin: float = Field(0.7, ge=0, le=1, description="probability a logout is followed by a login")
    data_nic: str | None = Field("eth0", description="rate_limit dev= on a virtual lab")

    @field_validator("window", "stay_below", "move_above", "heal_latency", "settle")
    @classmethod
    def _finite_field(cls, v: float) -> float:
        return _finite(v)

    @model_validator(mode="after")
    def _consistent(self) -> Profile:
        if self.stay_below >= self.move_above:
            raise ValueError(
                f"stay_below: {self.stay_below} must be below move_above ({self.move_above}): a break "
                "cannot both surely move nobody and surely move everybody"
            )
        longest = max(self.limits.durations) * self.window
        if longest > MAX_SECONDS:
            raise ValueError(f"limits.durations: {longest:g} s is absurd (at most {MAX_SECONDS:g} s)")
        if self.limits.span < min(self.limits.durations) * self.window:
            raise ValueError("limits.span: shorter than the shortest duration: no op would fit")
        return self

    def seconds(self, windows: float) -> float:
        """A duration given in windows, in seconds."""
        return windows * self.window

    def surely_stays(self, seconds: float) -> bool:
        """A clean break of this nominal length moves nobody, with the heal's own latency added."""
        return seconds + self.heal_latency <= self.stay_below

    def surely_moves(self, seconds: float) -> bool:
        """A hard break of this nominal length moves everybody it cuts off."""
        return seconds >= self.move_above


def _where(loc: tuple[Any, ...]) -> str:
    return ".".join(str(x) for x in loc) or "(top)"


def _message(err: dict[str, Any]) -> str:
    loc = err.get("loc", ())
    if err.get("type") == "extra_forbidden" and loc and loc[0] == "weights":
        return f"unknown op kind (known: {', '.join(KINDS)})"
    if err.get("type") == "extra_forbidden":
        return "unknown field"
    msg = str(err.get("msg", "invalid"))
    return msg.removeprefix("Value error, ")


def _line(source: str, err: dict[str, Any]) -> str:
    """One problem as `file: field: what`; a check across fields names its field first in its message."""
    where, msg = _where(err.get("loc", ())), _message(err)
    head, sep, rest = msg.partition(": ")
    if where == "(top)" and sep and re.fullmatch(r"[a-z_]+(\.[a-z_]+)*", head):
        where, msg = head, rest
    return f"{source}: {where}: {msg}"


def parse_profile(data: Any, source: str) -> Profile:
    """A profile from decoded YAML; `source` names it in errors."""
    if not isinstance(data, dict):
        kind = "empty" if data is None else f"a {type(data).__name__}"
        raise ProfileError([f"{source}: (top): must be a mapping of profile fields, not {kind}"])
    try:
        return Profile.model_validate(data)
    except ValidationError as e:
        raise ProfileError([_line(source, dict(err)) for err in e.errors(include_url=False)]) from None


def load_profile(path: str | Path | None = None) -> Profile:
    """Read and check a profile (None: the default profile); every problem is a ProfileError line."""
    p = DEFAULT_PROFILE if path is None else Path(path)
    try:
        text = textfile.read_text(p, "nemesis profile", "YAML", allow_empty=True)
    except textfile.TextFileError as e:
        raise ProfileError([f"{p}: (top): {e}"]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1} column {mark.column + 1}" if mark is not None else "(top)"
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ProfileError([f"{p}: {where}: not YAML: {problem}"]) from None
    return parse_profile(data, str(p))
