"""`hil explore` on bad input: a profile, replay file or topology that does not load exits 2 with one line
per problem naming the file and the field, before anything touches the lab (the lab is never opened)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from harness import cli
from harness.cli import explore as explore_cli


@pytest.fixture(autouse=True)
def no_lab(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_a: object, **_kw: object) -> None:
        raise AssertionError("the lab was opened on bad input")

    monkeypatch.setattr(explore_cli, "open_lab", refuse)


NOT_FAIR = '{"ops": [{"at": 1, "kind": "service_kill", "target": "sha-agents1"}]}'
NEGATIVE = '{"schema": "hil-schedule/1", "ops": [{"at": -1, "kind": "port_down"}]}'


@pytest.mark.parametrize(
    ("option", "name", "text", "says"),
    [
        ("--replay", "s.json", "not json", "line 1 column 1: not JSON"),
        ("--replay", "s.json", NEGATIVE, "ops.0.at"),
        ("--replay", "s.json", '{"ops": [{"at": 1, "kind": "zap", "target": "sha-pbx1"}]}', "ops.0.kind"),
        ("--replay", "s.json", NOT_FAIR, "ops.0.target: 'sha-agents1' is not fair game"),
        ("--replay", "s.json", '{"ops": [{"at": 1, "kind": "loss", "target": "sha-cti1", "duration": 1e9}]}',
         "ops.0.duration"),
        ("--profile", "p.yaml", "weights: {port_down: lots}", "weights.port_down"),
        ("--profile", "p.yaml", "limits: {span: -3}", "limits.span"),
        ("--profile", "p.yaml", "[1, 2]", "(top)"),
        ("--topology", "t.yaml", "sites: 3", "t.yaml"),
    ],
)  # fmt: skip
def test_bad_input_exits_2_naming_file_and_field(
    tmp_path: Path, option: str, name: str, text: str, says: str
) -> None:
    f = tmp_path / name
    f.write_text(text)
    res = CliRunner().invoke(cli.main, ["explore", option, str(f)])
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert lines and all(ln.startswith(f"error: {f}") for ln in lines), lines
    assert any(says in ln for ln in lines), lines


def test_missing_replay_file(tmp_path: Path) -> None:
    res = CliRunner().invoke(cli.main, ["explore", "--replay", str(tmp_path / "nope.json")])
    assert res.exit_code == 2 and "cannot read" in res.output and res.output.count("\n") == 1
