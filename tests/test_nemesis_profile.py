"""The nemesis profile: the default ships and loads; a profile of one's own inherits what it leaves out;
every mistake is one line naming the file, the field and the problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.nemesis.profile import DEFAULT_PROFILE, Profile, ProfileError, Weights, load_profile
from harness.nemesis.schedule import KINDS


def test_default_profile_ships_and_loads() -> None:
    assert DEFAULT_PROFILE.is_file()
    p = load_profile(None)
    assert p == load_profile(DEFAULT_PROFILE)
    assert p.name == "default" and p.window == 3.0 and p.move_above == 5.0
    assert p == Profile(), "default-profile.yaml and the model's defaults say the same"
    assert min(p.limits.durations) < 0.25 and max(p.limits.durations) >= 4
    assert p.limits.loss_percent == [5, 30, 60]
    assert p.surely_stays(0.4) and not p.surely_stays(0.8)
    assert p.surely_moves(5.0) and not p.surely_moves(4.9)


def test_every_op_kind_has_a_weight() -> None:
    assert set(Weights.model_fields) == set(KINDS)


def test_partial_profile_inherits_the_rest(tmp_path: Path) -> None:
    f = tmp_path / "mine.yaml"
    f.write_text("name: gray-only\nweights: {port_down: 0, loss: 5}\nlimits: {overlap: 1}\n")
    p = load_profile(f)
    assert p.name == "gray-only" and p.weights.loss == 5 and p.weights.port_down == 0
    assert p.weights.partition == Profile().weights.partition
    assert p.limits.overlap == 1 and p.limits.span == 60.0


@pytest.mark.parametrize(
    "text, field, words",
    [
        ("window: '4'\n", "window", "valid number"),
        ("window: true\n", "window", "valid number"),
        ("window: -1\n", "window", "greater than 0"),
        ("window: .inf\n", "window", "less than or equal"),
        ("weights: {port_down: 1, fire: 2}\n", "weights.fire", "unknown op kind"),
        ("weights: {loss: -1}\n", "weights.loss", "greater than or equal to 0"),
        ("limits: {durations: [0.5, -2]}\n", "limits.durations", "-2.0 is not a duration"),
        ("limits: {durations: [0.5, 1000]}\n", "limits.durations", "absurd"),
        ("limits: {durations: []}\n", "limits.durations", "at least 1"),
        ("limits: {loss_percent: [5, 300]}\n", "limits.loss_percent", "300.0 is not a loss rate"),
        ("limits: {rate_kbit: [0]}\n", "limits.rate_kbit", "not a rate"),
        ("limits: {ops: {min: 5, max: 2}}\n", "limits.ops", "min (5) must not be above max (2)"),
        ("limits: {ops: {min: 1.5}}\n", "limits.ops.min", "valid integer"),
        ("limits: {span: 0.1}\n", "limits.span", "shorter than the shortest duration"),
        ("sites: {both: 2}\n", "sites.both", "less than or equal to 1"),
        ("stay_below: 7\n", "stay_below", "must be below move_above"),
        ("settle: -3\n", "settle", "greater than or equal to 0"),
        ("colour: red\n", "colour", "unknown field"),
        ("limits: [1, 2]\n", "limits", "valid dictionary"),
    ],
)
def test_one_line_per_problem_naming_file_and_field(
    tmp_path: Path, text: str, field: str, words: str
) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    with pytest.raises(ProfileError) as e:
        load_profile(f)
    (line,) = e.value.lines()
    assert line.startswith(f"{f}: {field}: "), line
    assert words in line, line
    assert "\n" not in str(e.value) and "Traceback" not in line


def test_every_problem_at_once(tmp_path: Path) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text("window: -1\nweights: {fire: 1}\nsettle: x\n")
    with pytest.raises(ProfileError) as e:
        load_profile(f)
    assert sorted(ln.split(": ")[1] for ln in e.value.lines()) == ["settle", "weights.fire", "window"]


@pytest.mark.parametrize(
    "raw, words",
    [
        (b"\x89PNG\r\n\x1a\n", "(top): not UTF-8 text (byte 0x89 at offset 0)"),
        (b"weights: {port_down: [1\n", "line 2 column 1: not YAML"),
        (b"- window: 4\n", "(top): must be a mapping of profile fields, not a list"),
        (b"", "(top): must be a mapping of profile fields, not empty"),
        (b"just words\n", "(top): must be a mapping of profile fields, not a str"),
    ],
)
def test_not_a_profile(tmp_path: Path, raw: bytes, words: str) -> None:
    f = tmp_path / "p.yaml"
    f.write_bytes(raw)
    with pytest.raises(ProfileError) as e:
        load_profile(f)
    assert e.value.lines() == [f"{f}: {words}"] or e.value.lines()[0].startswith(f"{f}: {words}")


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match="cannot read"):
        load_profile(tmp_path / "nope.yaml")
    with pytest.raises(ProfileError, match="is a directory"):
        load_profile(tmp_path)


def test_the_default_profile_agrees_with_the_clients_timers() -> None:
    """The expected outcome is only as good as these bounds: a break the profile says surely moves must
    outlast the slowest detection, one it says surely stays must be shorter than the fastest."""
    from stack.agent.state import Timers  # the stack's timers, read only here: the harness does not import it

    p, t = load_profile(None), Timers()
    assert p.move_above >= t.detection_bound + 2.0
    assert p.stay_below < t.window[0]
    assert p.window >= t.detection_bound
