"""The gate's policy is read by harness/textfile.py, the one reader of a user's input files, in the gate's
own words (docs/gate.md): a directory, an empty, a byte-order-marked or a binary policy file is one line
naming the file and what is wrong, exit 2 and "could not judge"; a UTF-8 byte-order mark is accepted."""

from __future__ import annotations

import codecs
import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from test_gate import good

from harness import gate
from harness.cli import main

PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x10" + bytes(range(256))


@pytest.mark.parametrize(
    ("data", "where", "says"),
    [
        (b"", "", "the file is empty: not a policy"),
        (b"  \n\n\t\n", "", "the file is empty: not a policy"),
        ("version: 1\n".encode("utf-16"), "", "it is UTF-16 text; save it as UTF-8"),
        (codecs.BOM_UTF32_LE + "version: 1\n".encode("utf-32-le"), "", "it is UTF-32 text; save it as UTF-8"),
        (PNG, "", "not UTF-8 text (byte 0x89 at offset 0): not a policy"),
        ("version: 1\n".encode("utf-16-le"), "character 2", "not YAML text: holds NUL bytes"),
        (b"version: 1\nrepeat: \x00\x01\n", "character 20", "not YAML text"),
    ],
    ids=["empty", "blank", "utf-16-bom", "utf-32-bom", "png", "utf-16-no-bom", "nul"],
)
def test_a_policy_file_that_is_not_text_is_one_line(
    tmp_path: Path, data: bytes, where: str, says: str
) -> None:
    good(tmp_path / "res")
    p = tmp_path / "gate.yaml"
    p.write_bytes(data)
    with pytest.raises(gate.GateInputError) as e:
        gate.load_policy(p)
    (line,) = e.value.lines()
    assert line.startswith(f"{p}: {where}: " if where else f"{p}: ") and says in line, line
    res = CliRunner().invoke(main, ["gate", "--policy", str(p), "--results", str(tmp_path / "res"), "--out",
                                    str(tmp_path / "o")])  # fmt: skip
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert res.stderr.splitlines() == [f"error: {line}"]
    assert json.loads((tmp_path / "o" / "gate.json").read_text())["verdict"] == "could not judge"


def test_a_directory_is_not_a_policy(tmp_path: Path) -> None:
    with pytest.raises(gate.GateInputError) as e:
        gate.load_policy(tmp_path)
    assert e.value.lines() == [f"{tmp_path}: cannot read the policy: it is a directory, not a file"]
    with pytest.raises(gate.GateInputError, match="cannot read the policy: No such file or directory"):
        gate.load_policy(tmp_path / "nope.yaml")


def test_a_utf8_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    p = tmp_path / "gate.yaml"
    p.write_bytes(codecs.BOM_UTF8 + b"version: 1\nrepeat: 2\n")
    assert gate.load_policy(p).repeat == 2


def test_results_read_by_the_same_reader(tmp_path: Path) -> None:
    """A verdict or Allure file that is not text is refused with the same reasons, in JSON's words."""
    r = good(tmp_path / "res")
    (r.d / "bom-result.json").write_bytes('{"status": "passed"}'.encode("utf-16"))
    (r.d / "nul-result.json").write_bytes(b'{"status": \x00}')
    (r.d / "empty-result.json").write_bytes(b"")
    rep = gate.run_gate(tmp_path / "none.yaml", r.d)
    assert rep.exit_code == 2
    policy = next(x for x in rep.problems if "none.yaml" in x)
    assert policy.endswith("cannot read the policy: No such file or directory"), rep.problems
    p = tmp_path / "gate.yaml"
    p.write_text("version: 1\n")
    rep = gate.run_gate(p, r.d)
    assert rep.exit_code == 2
    said = "\n".join(rep.problems)
    assert f"{r.d / 'bom-result.json'}: not UTF-8 text (byte 0xff at offset 0): it is UTF-16 text" in said
    assert f"{r.d / 'nul-result.json'}: character 12: not JSON text: holds NUL bytes" in said
    assert f"{r.d / 'empty-result.json'}: the file is empty: not an Allure result file" in rep.problems
