"""The fault journal: what the injector is about to change, written and fsynced before it is changed.

One JSON object per line, appended with a single `write()` of the whole line (O_APPEND) and fsynced: a
record is either on disk whole or the call raised, and the injector then sends nothing. A crash can still
leave a torn tail (the kernel was interrupted mid-write, or the disk filled), so every record starts on a
line of its own (a newline is written first when the file does not end in one) and the reader skips and
reports a line it cannot read instead of losing the records after it.

Records: `inject` (id, the change's description, the controller that owns it), `note` (facts learnt once
applied, e.g. the UL's rule id), `heal` (result ok or failed). A change is open from its inject until a
heal with result ok.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.lab import Lab

OPS = ("inject", "note", "heal")


class JournalError(Exception):
    """The journal cannot be written whole, or the file is not a fault journal at all."""


@dataclass
class JournalRead:
    """The records of a journal and the lines it skipped (line number, why)."""

    records: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[tuple[int, str]] = field(default_factory=list)


def proc_start(pid: int) -> str | None:
    """A process's start time (clock ticks since boot), which with the PID names it uniquely."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def proc_state(pid: int) -> str | None:
    """The process's state letter (R, S, T, Z, ...), None when there is no such process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def owner() -> dict[str, Any]:
    """This controller, as a journal record names it."""
    return {"pid": os.getpid(), "start": proc_start(os.getpid())}


def owner_alive(who: dict[str, Any] | None) -> bool:
    if not isinstance(who, dict):
        return False
    try:
        pid = int(who.get("pid", 0))
    except (TypeError, ValueError):
        return False
    return pid > 0 and proc_start(pid) == who.get("start")


def default_journal(lab: Lab) -> Path:
    """Where open faults are recorded: with the virtual lab's run state (gone with the lab), or per lab."""
    env = os.environ.get("HIL_FAULT_JOURNAL")
    if env:
        return Path(env)
    return lab.state_dir() / "faults.journal.jsonl"


def _why_not_a_record(r: Any) -> str | None:
    if not isinstance(r, dict):
        return "not a JSON object"
    if r.get("op") not in OPS:
        return f"op is {r.get('op')!r}, not one of {', '.join(OPS)}"
    if not isinstance(r.get("id"), str) or not r["id"]:
        return "no id"
    if r["op"] == "inject":
        desc = r.get("fault")
        if not isinstance(desc, dict) or not isinstance(desc.get("kind"), str):
            return "an inject record without a fault description"
        if not isinstance(desc.get("target"), str) or not isinstance(desc.get("params", {}), dict):
            return "an inject record without a target"
    if r["op"] == "note" and not isinstance(r.get("data"), dict):
        return "a note without data"
    return None


class Journal:
    """Append-only JSONL of injects, notes and heals; each line fsynced before `append` returns."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self._lock = threading.Lock()

    def append(self, record: dict[str, Any]) -> None:
        """Write one record whole, or raise JournalError (the caller must then not make the change)."""
        line = json.dumps({**record, "wall": time.time()}, separators=(",", ":"), default=str)
        data = line.encode("ascii") + b"\n"  # json.dumps escapes non-ASCII: one byte per character
        with self._lock:
            new = not self.path.exists()
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
            except OSError as e:
                raise JournalError(f"{self.path}: cannot open the fault journal: {e}") from e
            try:
                size = os.fstat(fd).st_size
                if size and os.pread(fd, 1, size - 1) != b"\n":
                    data = b"\n" + data  # after a torn line: start this record on a line of its own
                written = os.write(fd, data)
                if written != len(data):
                    raise JournalError(
                        f"{self.path}: short write ({written} of {len(data)} bytes); the record is torn "
                        "and nothing was changed"
                    )
                os.fsync(fd)
            except OSError as e:
                raise JournalError(f"{self.path}: cannot write the fault journal: {e}") from e
            finally:
                os.close(fd)
            if new:
                dfd = os.open(self.path.parent, os.O_RDONLY)
                try:
                    os.fsync(dfd)
                finally:
                    os.close(dfd)

    def read(self) -> JournalRead:
        """Every record, skipping (and listing) lines that are torn or garbled.

        Raises JournalError when the file holds no record at all and a line that is not even the start of
        one (a file that is not a journal: binary, another format); a missing file is an empty journal."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return JournalRead()
        except OSError as e:
            raise JournalError(f"{self.path}: cannot read the fault journal: {e}") from e
        out = JournalRead()
        foreign: tuple[int, str] | None = None
        for n, line in enumerate(raw.split(b"\n"), start=1):
            if not line.strip():
                continue
            why = None
            try:
                rec = json.loads(line.decode("utf-8"))
                why = _why_not_a_record(rec)
            except UnicodeDecodeError:
                why = "not UTF-8 text"
            except ValueError as e:
                why = f"torn or not JSON ({e})"
            if why is None:
                out.records.append(rec)
                continue
            out.skipped.append((n, why))
            if foreign is None and not line.lstrip().startswith(b'{"op":'):
                foreign = (n, why)
        if foreign is not None and not out.records:
            raise JournalError(f"{self.path}: not a fault journal (line {foreign[0]}: {foreign[1]})")
        return out

    def records(self) -> list[dict[str, Any]]:
        return self.read().records

    def open_faults(self, read: JournalRead | None = None) -> list[dict[str, Any]]:
        """Inject records with no successful heal after them, in inject order, their notes merged in."""
        open_: dict[str, dict[str, Any]] = {}
        for r in (read or self.read()).records:
            if r["op"] == "inject":
                open_[r["id"]] = {**r, "notes": {}}
            elif r["op"] == "note" and r["id"] in open_:
                open_[r["id"]]["notes"].update(r["data"])
            elif r["op"] == "heal" and r.get("result") == "ok":
                open_.pop(r["id"], None)
        return list(open_.values())
