"""The injector's discipline, on a change whose device is a dict (no lab needed): refuse and journal before
anything is sent, heal on every way out (a read-back that raises, a signal during verification, a heal at
exit with a closed history), read every heal back, journal notes, track processes. The same promises on
the virtual lab's real devices are in tests/test_faults.py and tests/test_restore.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from harness import topology
from harness.faults import (
    Change,
    FaultHealFailed,
    FaultNotEffective,
    FaultRefused,
    Injector,
    Journal,
    JournalError,
    register,
    restore,
)
from harness.faults.journal import proc_start
from harness.history import History
from harness.lab import Lab
from harness.lab.dryrun import DryRunBackend


class Board:
    """The fake device: which lamps are on, and every call in order."""

    def __init__(self) -> None:
        self.on: set[str] = set()
        self.log: list[str] = []


BOARD = Board()


@register
class Lamp(Change):
    """A lamp switched on (apply) and off (heal); params make it misbehave in one chosen way."""

    kind = "test_lamp"

    def check_safety(self) -> None:
        if self.params.get("refuse"):
            raise FaultRefused("test_lamp: not fair game")

    def plan(self) -> list[tuple[str, str]]:
        return [(self.target, "on")]

    def plan_heal(self) -> list[tuple[str, str]]:
        return [(self.target, "off")]

    def _inject(self) -> None:
        BOARD.log.append("apply")
        BOARD.on.add(self.id)
        if self.params.get("apply_raises"):
            raise SystemExit("apply died")
        if self.params.get("note"):
            self.note(rule_ids={"x": "r1"})

    def _heal(self) -> None:
        BOARD.log.append("heal")
        if not self.params.get("stuck"):
            BOARD.on.discard(self.id)

    def took_effect(self) -> bool:
        BOARD.log.append("verify")
        how = self.params.get("verify")
        if how == "raises":
            raise RuntimeError("read-back failed")
        if how == "interrupt":
            raise KeyboardInterrupt
        return how != "never" and self.id in BOARD.on

    def heal_took_effect(self) -> bool:
        BOARD.log.append("verify")
        return self.id not in BOARD.on


class Recorder:
    """A history that logs into the board, so its writes can be ordered against the heal."""

    def __init__(self, closed: bool = False) -> None:
        self.closed = closed
        self.ops: list[tuple[str, str, Any]] = []

    def _op(self, typ: str, f: str, value: Any) -> None:
        if self.closed:
            raise ValueError("I/O operation on closed file")
        self.ops.append((typ, f, value))
        BOARD.log.append(f"history {typ} {f}")

    def invoke(self, process: str, f: str, value: Any = None, **kw: Any) -> None:
        self._op("invoke", f, value)

    def ok(self, process: str, f: str, value: Any = None, **kw: Any) -> None:
        self._op("ok", f, value)

    def fail(self, process: str, f: str, value: Any = None, **kw: Any) -> None:
        self._op("fail", f, value)

    def info(self, process: str, f: str, value: Any = None, **kw: Any) -> None:
        self._op("info", f, value)


@pytest.fixture
def lab() -> Lab:
    topo = topology.load()
    return Lab(topo, DryRunBackend(topo))


@pytest.fixture(autouse=True)
def board() -> Iterator[Board]:
    BOARD.on.clear()
    BOARD.log.clear()
    yield BOARD
    while OPENED:  # nothing of a test is left for the interpreter's exit to heal
        OPENED.pop().close()


OPENED: list[Injector] = []


def make(lab: Lab, tmp_path: Path, history: Any = None, **kw: Any) -> Injector:
    inj = Injector(lab, tmp_path / "j.jsonl", history=history, out=lambda _: None, **kw)
    OPENED.append(inj)
    return inj


def eventually(pred: Callable[[], bool], timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_apply_journals_first_and_heals_at_block_end(lab: Lab, tmp_path: Path, board: Board) -> None:
    h = Recorder()
    inj = make(lab, tmp_path, h)
    with inj.apply(inj.make("test_lamp", "sha-pbx1")) as ch:
        assert [r["id"] for r in inj.journal.open_faults()] == [ch.id]
        assert ch.id in board.on
    assert board.on == set() and inj.journal.open_faults() == []
    assert board.log == [
        "history invoke change.apply", "apply", "verify", "history ok change.apply",
        "history invoke change.revert", "heal", "verify", "history ok change.revert",
    ]  # fmt: skip


@pytest.mark.parametrize("how,error", [("raises", RuntimeError), ("interrupt", KeyboardInterrupt)])
def test_a_verification_that_raises_is_healed(
    lab: Lab, tmp_path: Path, board: Board, how: str, error: type[BaseException]
) -> None:
    h = Recorder()
    inj = make(lab, tmp_path, h)
    with pytest.raises(error):
        with inj.apply(inj.make("test_lamp", "sha-pbx1", verify=how)):
            pytest.fail("the block ran")
    assert board.on == set() and board.log[:3] == ["history invoke change.apply", "apply", "verify"]
    assert "heal" in board.log and inj.active == {}
    assert inj.journal.open_faults() == []
    assert [(t, f) for t, f, _ in h.ops] == [
        ("invoke", "change.apply"), ("info", "change.apply"),
        ("invoke", "change.revert"), ("ok", "change.revert"),
    ]  # fmt: skip


def test_an_apply_that_dies_is_healed(lab: Lab, tmp_path: Path, board: Board) -> None:
    inj = make(lab, tmp_path)
    with pytest.raises(SystemExit):
        inj.inject(inj.make("test_lamp", "sha-pbx1", apply_raises=True))
    assert board.on == set() and inj.journal.open_faults() == []


def test_a_change_that_never_shows_is_healed(lab: Lab, tmp_path: Path, board: Board) -> None:
    inj = make(lab, tmp_path, settle=0.2)
    with pytest.raises(FaultNotEffective):
        inj.inject(inj.make("test_lamp", "sha-pbx1", verify="never"))
    assert "heal" in board.log and board.on == set()


def test_a_heal_that_does_not_show_stays_open(lab: Lab, tmp_path: Path, board: Board) -> None:
    inj = make(lab, tmp_path, settle=0.2)
    ch = inj.inject(inj.make("test_lamp", "sha-pbx1", stuck=True))
    with pytest.raises(FaultHealFailed, match="still shows"):
        inj.heal(ch)
    assert ch.id in inj.active and [r["id"] for r in inj.journal.open_faults()] == [ch.id]
    heals = [r for r in inj.journal.records() if r["op"] == "heal"]
    assert heals[-1]["result"] == "failed" and "still shows" in heals[-1]["error"]
    ch.params["stuck"] = False  # the device comes round: a later heal closes it
    inj.heal(ch)
    assert inj.journal.open_faults() == [] and inj.active == {}


def test_refused_sends_and_journals_nothing(lab: Lab, tmp_path: Path, board: Board) -> None:
    h = Recorder()
    inj = make(lab, tmp_path, h)
    with pytest.raises(FaultRefused):
        with inj.apply(inj.make("test_lamp", "sha-pbx1", refuse=True)):
            pytest.fail("the block ran")
    assert board.log == ["history invoke change.apply", "history fail change.apply"]
    assert not inj.journal.path.exists()


def test_an_unwritable_journal_sends_nothing(lab: Lab, tmp_path: Path, board: Board) -> None:
    (tmp_path / "j.jsonl").mkdir()  # not a file: every append fails
    inj = Injector(lab, tmp_path / "j.jsonl", restore_first=False, out=lambda _: None)
    with pytest.raises(JournalError):
        inj.inject(inj.make("test_lamp", "sha-pbx1"))
    assert board.log == [] and inj.active == {}


def test_a_closed_history_does_not_stop_a_heal(lab: Lab, tmp_path: Path, board: Board) -> None:
    h = History(tmp_path / "h.jsonl")
    inj = make(lab, tmp_path, h)
    ch = inj.inject(inj.make("test_lamp", "sha-pbx1"))
    h.close()
    inj.heal(ch)
    assert board.on == set() and inj.journal.open_faults() == []


def test_at_exit_the_heal_comes_before_the_history(lab: Lab, tmp_path: Path, board: Board) -> None:
    h = Recorder()
    inj = make(lab, tmp_path, h)
    inj.inject(inj.make("test_lamp", "sha-pbx1"))
    board.log.clear()
    inj.heal_all(at_exit=True)
    assert board.log == ["heal", "verify", "history invoke change.revert", "history ok change.revert"]
    assert h.ops[-2][2]["reason"] == "at_exit"
    h.closed = True  # and with the history closed by then, the heal still happens
    inj.inject(inj.make("test_lamp", "sha-pbx1"))
    inj.heal_all(at_exit=True)
    assert board.on == set() and inj.journal.open_faults() == []


def test_sigterm_during_a_block_heals(lab: Lab, tmp_path: Path, board: Board) -> None:
    inj = make(lab, tmp_path)
    with pytest.raises(KeyboardInterrupt, match="SIGTERM"):
        with inj.apply(inj.make("test_lamp", "sha-pbx1")):
            os.kill(os.getpid(), signal.SIGTERM)
            eventually(lambda: False, 30)  # the handler raises at the next bytecode; never returns normally
    assert board.on == set() and inj.journal.open_faults() == []
    assert signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, signal.default_int_handler, None)


def test_duration_heals_itself(lab: Lab, tmp_path: Path, board: Board) -> None:
    inj = make(lab, tmp_path)
    ch = inj.inject(inj.make("test_lamp", "sha-pbx1"), duration=0.2)
    assert eventually(lambda: ch.id not in inj.active)
    assert board.on == set() and inj.journal.open_faults() == []


def test_notes_are_journaled_and_given_back_to_restore(lab: Lab, tmp_path: Path, board: Board) -> None:
    inj = make(lab, tmp_path)
    ch = inj.inject(inj.make("test_lamp", "sha-pbx1", note=True))
    assert [r["data"] for r in inj.journal.records() if r["op"] == "note"] == [{"rule_ids": {"x": "r1"}}]
    [rec] = inj.journal.open_faults()
    assert rec["notes"] == {"rule_ids": {"x": "r1"}} and rec["id"] == ch.id


def _dead_owner(journal: Path) -> None:
    """Rewrite every record's owner to a controller that no longer runs."""
    records = [json.loads(line) for line in journal.read_text().splitlines()]
    for r in records:
        if "owner" in r:
            r["owner"]["start"] = "0"  # the same pid, started at another time: another process
    journal.write_text("".join(json.dumps(r) + "\n" for r in records))


def test_restore_heals_a_dead_runs_change_and_reads_it_back(lab: Lab, tmp_path: Path, board: Board) -> None:
    inj = make(lab, tmp_path)
    ok = inj.inject(inj.make("test_lamp", "sha-pbx1"))
    stuck = inj.inject(inj.make("test_lamp", "sha-cti1", stuck=True))
    assert [r["result"] for r in restore(lab, inj.journal.path)] == ["skipped", "skipped"]  # its owner runs
    _dead_owner(inj.journal.path)
    with open(inj.journal.path, "ab") as f:
        f.write(b'{"op":"inject","id":"ftorn","fau')
    res = restore(lab, inj.journal.path, settle=0.2)
    by_id = {r["id"]: r for r in res}
    assert by_id["-"]["result"] == "unreadable" and by_id["-"]["line"] == 3
    assert by_id[ok.id]["result"] == "healed"
    assert by_id[stuck.id]["result"] == "failed" and "does not show" in by_id[stuck.id]["error"]
    assert [r["id"] for r in Journal(inj.journal.path).open_faults()] == [stuck.id]  # still open
    assert [r["id"] for r in res[1:]] == [stuck.id, ok.id]  # latest first, as an undo
    stuck.params["stuck"] = False


def test_tracked_process_released_or_stopped_at_exit(lab: Lab, tmp_path: Path) -> None:
    inj = make(lab, tmp_path)
    p = subprocess.Popen(["sleep", "60"])
    q = subprocess.Popen(["sleep", "60"])
    try:
        pid = inj.track_process("capture", p.pid, "sleep p")
        inj.track_process("capture", q.pid, "sleep q")
        [rec, _] = inj.journal.open_faults()
        assert rec["fault"]["params"] == {"pid": p.pid, "start": proc_start(p.pid), "role": "capture"}
        inj.release(pid)
        inj.heal_all()  # a tracked process is its owner's to stop ...
        assert q.poll() is None
        inj.heal_all(at_exit=True)  # ... except at exit
        assert q.wait(30) == -signal.SIGTERM and p.poll() is None
        assert inj.journal.open_faults() == []
    finally:
        for proc in (p, q):
            proc.kill()
            proc.wait()


def test_dry_run_prints_the_plan_and_journals_nothing(lab: Lab, tmp_path: Path, board: Board) -> None:
    printed: list[str] = []
    inj = Injector(lab, tmp_path / "j.jsonl", dry_run=True, out=printed.append)
    with inj.apply(inj.make("test_lamp", "sha-pbx1")):
        pass
    assert board.log == [] and not inj.journal.path.exists()
    assert [line.split(" ", 3)[-1] for line in printed] == ["inject sha-pbx1: on", "heal:   sha-pbx1: off"]
