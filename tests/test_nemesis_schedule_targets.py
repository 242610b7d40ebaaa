"""A schedule that names a port or link the topology does not let a fault cut fails at load (exit 2, one
line naming the file, the op's index and field, and the problem), before anything touches the lab: the
same refusals the port faults make on the lab (harness/faults/switch.py), made from the topology alone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from harness import cli, topology
from harness.cli import explore as explore_cli
from harness.nemesis.schedule import ScheduleError, load, parse

TOPO = topology.load()


def _ops(*ops: tuple[str, str]) -> dict[str, object]:
    return {"ops": [{"at": 1.0, "kind": k, "target": t, "duration": 2.0} for k, t in ops]}


@pytest.mark.parametrize(
    ("kind", "target", "says"),
    [
        ("port_down", "sha-sw1:Gi0/4", "'sha-sw1:Gi0/4' is not cuttable"),  # the agents host's port
        ("port_down", "sha-sw1:Gi0/23", "'sha-sw1:Gi0/23' is not cuttable"),  # the SPAN port
        ("port_down", "sha-agents1", "'sha-agents1': its switch port 'sha-sw1:Gi0/4' is not cuttable"),
        ("port_down", "ntg-caller1", "its switch port 'ntg-sw1:GigabitEthernet0/0/5' is not cuttable"),
        ("port_down", "sha-sw1", "no switch port connects 'sha-sw1'"),
        ("port_down", "sha-sw1:Gi0/99", "is not a switch port"),
        ("link_cut", "lan", "'lan' is not a link of virtual-two-site"),
    ],
)
def test_a_port_or_link_a_fault_may_not_cut_fails_at_load(kind: str, target: str, says: str) -> None:
    ok = ("port_down", "sha-pbx1")
    with pytest.raises(ScheduleError) as e:
        parse(_ops(ok, (kind, target)), "s.json", TOPO)
    (line,) = e.value.lines()
    assert line.startswith("s.json: ops.1.target: ") and says in line, line


def test_cuttable_ports_and_links_load() -> None:
    ops = [("port_down", "sha-pbx1"), ("port_down", "ntg-sw1:GigabitEthernet0/0/7"), ("link_cut", "wan")]
    assert len(parse(_ops(*ops), "s.json", TOPO).ops) == 3


@pytest.mark.parametrize(
    ("change", "says"),
    [
        (('0/0/24", cuttable: true', '0/0/24", cuttable: false'), "link 'wan' is not cuttable"),
        (
            ("{connects: wan, cuttable: true, description: uplink to ntg}", "{connects: wan}"),
            "link 'wan': 'sha-sw1:Gi0/24' is not cuttable",
        ),
    ],
)
def test_a_link_not_cuttable_or_with_an_end_not_cuttable(
    tmp_path: Path, change: tuple[str, str], says: str
) -> None:
    text = topology.DEFAULT_TOPOLOGY.read_text()
    assert change[0] in text
    f = tmp_path / "lab.yaml"
    f.write_text(text.replace(change[0], change[1]))
    with pytest.raises(ScheduleError, match=says):
        parse(_ops(("link_cut", "wan")), "s.json", topology.load(f))


def test_cli_replay_exits_2_before_the_lab_is_opened(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_a: object, **_kw: object) -> None:
        raise AssertionError("the lab was opened on bad input")

    monkeypatch.setattr(explore_cli, "open_lab", refuse)
    f = tmp_path / "s.json"
    f.write_text(json.dumps(_ops(("link_cut", "wan"), ("port_down", "sha-agents1"))))
    with pytest.raises(ScheduleError):
        load(f, TOPO)
    res = CliRunner().invoke(cli.main, ["explore", "--replay", str(f)])
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert lines == [f"error: {f}: ops.1.target: 'sha-agents1': its switch port 'sha-sw1:Gi0/4' is not "
                     "cuttable (cuttable: true in the topology)"], lines  # fmt: skip
