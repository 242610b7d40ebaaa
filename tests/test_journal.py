"""The fault journal: whole lines or an error, a torn line loses no later record, a file that is not a
journal is named as such (and `hil lab restore --journal` exits 2 with one line, never a traceback)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from harness.cli import main as hil_main
from harness.faults import Journal, JournalError
from harness.faults.journal import owner, owner_alive
from harness.topology import REPO_ROOT


def inject(id: str, kind: str = "port_down", target: str = "sha-sw1:Gi0/7") -> dict[str, object]:
    return {"op": "inject", "id": id, "fault": {"kind": kind, "target": target, "params": {}}}


def test_records_are_whole_lines_fsynced_in_order(tmp_path: Path) -> None:
    j = Journal(tmp_path / "sub" / "j.jsonl")
    j.append(inject("f1"))
    j.append({"op": "note", "id": "f1", "data": {"rule_ids": {"vip": "r9"}}})
    j.append({"op": "heal", "id": "f1", "result": "ok"})
    j.append(inject("f2"))
    raw = j.path.read_bytes()
    assert raw.endswith(b"\n") and raw.count(b"\n") == 4
    assert [json.loads(line)["op"] for line in raw.splitlines()] == ["inject", "note", "heal", "inject"]
    assert oct(j.path.stat().st_mode & 0o777) == "0o600"
    read = j.read()
    assert read.skipped == [] and len(read.records) == 4
    assert [r["id"] for r in j.open_faults()] == ["f2"]


def test_notes_merge_into_the_open_record(tmp_path: Path) -> None:
    j = Journal(tmp_path / "j.jsonl")
    j.append(inject("s1", "planned_switch", "sha-ul1"))
    j.append({"op": "note", "id": "s1", "data": {"rule_ids": {"a": "r1"}}})
    j.append({"op": "note", "id": "s1", "data": {"rule_ids": {"a": "r1", "b": "r2"}}})
    [rec] = j.open_faults()
    assert rec["notes"] == {"rule_ids": {"a": "r1", "b": "r2"}}


def test_a_torn_line_loses_no_later_record(tmp_path: Path) -> None:
    j = Journal(tmp_path / "j.jsonl")
    j.append(inject("f1"))
    with open(j.path, "ab") as f:  # a crash mid-write: half a record, no newline
        f.write(b'{"op":"inject","id":"f2","fault":{"kind":"port_d')
    j.append(inject("f3"))  # starts on a line of its own, not glued to the torn one
    j.append({"op": "heal", "id": "f1", "result": "failed", "error": "x"})
    read = j.read()
    assert [r["id"] for r in read.records] == ["f1", "f3", "f1"]
    assert len(read.skipped) == 1 and read.skipped[0][0] == 2 and "torn" in read.skipped[0][1]
    assert [r["id"] for r in j.open_faults()] == ["f1", "f3"]


def test_garbled_and_foreign_lines_are_skipped_and_reported(tmp_path: Path) -> None:
    j = Journal(tmp_path / "j.jsonl")
    j.append(inject("f1"))
    with open(j.path, "ab") as f:
        f.write(b"\xff\xfe garbage\n")
        f.write(b'["not", "a", "record"]\n')
        f.write(b'{"op": "inject", "id": "f9"}\n')  # an inject without its fault
        f.write(b'{"op": "heal"}\n')
    j.append(inject("f2"))
    read = j.read()
    assert [r["id"] for r in read.records] == ["f1", "f2"]
    assert [n for n, _ in read.skipped] == [2, 3, 4, 5]
    assert "UTF-8" in read.skipped[0][1] and "fault description" in read.skipped[2][1]


def test_a_short_write_is_an_error_not_a_torn_record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    j = Journal(tmp_path / "j.jsonl")
    j.append(inject("f1"))
    real = os.write
    monkeypatch.setattr(os, "write", lambda fd, data: real(fd, data[: len(data) // 2]))
    with pytest.raises(JournalError, match="short write"):
        j.append(inject("f2"))
    monkeypatch.setattr(os, "write", real)
    j.append(inject("f3"))
    read = j.read()
    assert [r["id"] for r in read.records] == ["f1", "f3"] and len(read.skipped) == 1


def test_an_unwritable_journal_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "dir").mkdir()
    with pytest.raises(JournalError, match="cannot open"):
        Journal(tmp_path / "dir").append(inject("f1"))


@pytest.mark.parametrize(
    "content", [b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", b"name: lab\nkind: virtual\n", b"[1, 2, 3]\n"]
)
def test_a_file_that_is_not_a_journal(tmp_path: Path, content: bytes) -> None:
    f = tmp_path / "j.jsonl"
    f.write_bytes(content)
    with pytest.raises(JournalError, match=f"{f}: not a fault journal"):
        Journal(f).read()


def test_a_journal_torn_at_its_first_record_is_still_a_journal(tmp_path: Path) -> None:
    f = tmp_path / "j.jsonl"
    f.write_bytes(b'{"op":"inject","id":"f1","fa')
    read = Journal(f).read()
    assert read.records == [] and len(read.skipped) == 1


def test_missing_journal_is_empty(tmp_path: Path) -> None:
    assert Journal(tmp_path / "none.jsonl").open_faults() == []


def test_owner_names_this_process_and_not_a_reused_pid() -> None:
    me = owner()
    assert owner_alive(me)
    assert not owner_alive({**me, "start": "0"})  # same pid, another start: another process
    assert not owner_alive(None) and not owner_alive({"pid": "x"})


def _hil(*args: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "harness.cli", *args]
    return subprocess.run(argv, capture_output=True, text=True, cwd=REPO_ROOT, timeout=60)


def _hil_in_process(*args: str) -> subprocess.CompletedProcess[str]:
    """``hil ARGS`` through the console script's entry point in this process, as a finished process would
    report it (an interpreter start costs seconds on a loaded machine; the missing journal below still runs
    `hil` as its own process). An exception that escaped the command fails here at once."""
    r = CliRunner().invoke(hil_main, list(args))
    assert r.exception is None or isinstance(r.exception, SystemExit), r.exc_info
    return subprocess.CompletedProcess(["hil", *args], r.exit_code, r.stdout, r.stderr)


@pytest.mark.parametrize("content", [b"\x00\x01\x02\xff\xfe binary", b"hello: world\n"])
def test_hil_lab_restore_on_a_file_that_is_not_a_journal(tmp_path: Path, content: bytes) -> None:
    f = tmp_path / "j.jsonl"
    f.write_bytes(content)
    r = _hil_in_process("lab", "restore", "--journal", str(f))
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert r.stderr.count("\n") == 1 and str(f) in r.stderr and "not a fault journal" in r.stderr
    assert "Traceback" not in r.stderr


def test_hil_lab_restore_on_a_missing_journal(tmp_path: Path) -> None:
    missing = tmp_path / "nope.jsonl"
    r = _hil("lab", "restore", "--journal", str(missing))
    assert r.returncode == 2 and r.stderr.strip() == f"error: {missing}: no such fault journal"
