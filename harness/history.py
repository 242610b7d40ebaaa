"""The append-only history of a run: operations and observations, one JSON object per line.

The history is the only thing the checkers see (DESIGN.md, "Data flows one way"), and it is kept so a verdict
can be checked again later. So it is written line by line as the run goes (a crash loses at most the line
being written), it is never rewritten, and it can be read back even when the last line was torn by a crash.

Two kinds of event, modelled on Jepsen:

- an operation (`Op`): something an actor of the harness did, as `invoke` then one completion of `ok`
  (it happened), `fail` (it definitely did not happen) or `info` (outcome unknown). An invoke is paired with
  the next completion of the same `process`, so a process has at most one operation in flight.
- an observation (`Obs`, `type: "obs"`): something the harness saw from outside (a captured SIP or CTI
  message, a snapshot of a PBX registration table or of a CTI's sessions, capture statistics, ...).

The schema of every field and of each observation kind's `value` is documented in docs/history.md.
"""

from __future__ import annotations

import json
import os
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TextIO, overload

__all__ = [
    "COMPLETIONS",
    "HistoryError",
    "HistoryWarning",
    "OP_TYPES",
    "Event",
    "History",
    "Obs",
    "Op",
    "OpPair",
    "event_from_dict",
    "pair_ops",
]

OpType = Literal["invoke", "ok", "fail", "info"]
OP_TYPES: frozenset[str] = frozenset({"invoke", "ok", "fail", "info"})
COMPLETIONS: frozenset[str] = frozenset({"ok", "fail", "info"})
OBS = "obs"

# Observation kinds the checkers read (others are allowed and kept as they are).
SIP, CTI, PBX_SNAPSHOT, CTI_SNAPSHOT, AGENT_STATE = (
    "sip",
    "cti",
    "pbx_snapshot",
    "cti_snapshot",
    "agent_state",
)
CAPTURE_STATS, LAB_SNAPSHOT, ROSTER = "capture_stats", "lab_snapshot", "roster"

# Written by the History itself when it reopens a file whose last line was torn.
RESUME_F = "history.resume"
RESUME_PROCESS = "history"


class HistoryError(Exception):
    """A history file that cannot be trusted (corruption other than a torn last line)."""


class HistoryWarning(UserWarning):
    """Something in a history file was skipped or looks odd, but the rest can be trusted."""


@dataclass(frozen=True, slots=True)
class Op:
    """One step of an operation: `invoke`, then `ok` / `fail` / `info` from the same `process`."""

    i: int
    t: float
    wall: float
    type: OpType
    process: str
    f: str
    source: str
    value: Any = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "i": self.i,
            "t": self.t,
            "wall": self.wall,
            "type": self.type,
            "process": self.process,
            "f": self.f,
            "source": self.source,
        }
        if self.value is not None:
            d["value"] = self.value
        if self.error is not None:
            d["error"] = self.error
        return d


@dataclass(frozen=True, slots=True)
class Obs:
    """Something seen from outside the system under test, at time `t`, by or about `source`."""

    i: int
    t: float
    wall: float
    kind: str
    source: str
    value: Any = None

    @property
    def type(self) -> Literal["obs"]:
        return "obs"

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "i": self.i,
            "t": self.t,
            "wall": self.wall,
            "type": OBS,
            "kind": self.kind,
            "source": self.source,
        }
        if self.value is not None:
            d["value"] = self.value
        return d


Event = Op | Obs


@dataclass(frozen=True, slots=True)
class OpPair:
    """An invoke and its completion (None while it is still in flight, or if it never completed)."""

    invoke: Op
    completion: Op | None

    @property
    def outcome(self) -> str | None:
        return None if self.completion is None else self.completion.type


def _bad(key: str, want: str, v: Any) -> ValueError:
    return ValueError(f"{key!r} must be {want}, got {v!r}")


def event_from_dict(d: Any) -> Event:
    """Validate one decoded line and build its event; unknown top-level keys are ignored (forward compat).

    Written for speed (it runs once per line of a 100k-line history): exact type checks, no helpers.
    """
    if type(d) is not dict:
        raise ValueError(f"an event must be a JSON object, got {type(d).__name__}")
    try:
        i, t, wall, typ, source = d["i"], d["t"], d["wall"], d["type"], d["source"]
    except KeyError as e:
        raise ValueError(f"missing field {e.args[0]!r}") from None
    if type(i) is not int or i < 0:
        raise _bad("i", "a non-negative integer", i)
    if type(t) is not float:
        if type(t) is not int:
            raise _bad("t", "a number", t)
        t = float(t)
    if type(wall) is not float:
        if type(wall) is not int:
            raise _bad("wall", "a number", wall)
        wall = float(wall)
    if type(source) is not str or not source:
        raise _bad("source", "a non-empty string", source)
    if typ == OBS:
        kind = d.get("kind")
        if type(kind) is not str or not kind:
            raise _bad("kind", "a non-empty string", kind)
        return Obs(i, t, wall, kind, source, d.get("value"))
    if typ in OP_TYPES:
        process, f, err = d.get("process"), d.get("f"), d.get("error")
        if type(process) is not str or not process:
            raise _bad("process", "a non-empty string", process)
        if type(f) is not str or not f:
            raise _bad("f", "a non-empty string", f)
        if err is not None and type(err) is not str:
            raise _bad("error", "a string", err)
        return Op(i, t, wall, typ, process, f, source, d.get("value"), err)
    raise _bad("type", "one of invoke, ok, fail, info, obs", typ)


# One encoder for every line: compact, UTF-8 as is, and NaN/Infinity refused (they are not JSON).
_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


_raw_decode = json.JSONDecoder(parse_constant=_reject_constant).raw_decode


class _NotText(ValueError):
    """A line with bytes that are not UTF-8; ``cut`` when the only bad bytes end it (a torn character)."""

    def __init__(self, line: str, start: int, end: int):
        self.cut = end == len(line) and end - start < 4  # the first 1-3 bytes of a 2-4 byte character
        byte = ord(line[start]) - 0xDC00  # surrogateescape maps an undecodable byte b to U+DC00 + b
        super().__init__(f"not UTF-8 text: byte 0x{byte:02x} at column {start + 1}")


def _loads(line: str, strict_utf8: bool) -> Event:
    """One line to one event; ValueError (never anything else) when it is not one."""
    line = line.strip()
    if strict_utf8:
        try:  # the file had invalid UTF-8 somewhere: is it in this line?
            line.encode("utf-8")
        except UnicodeEncodeError as e:
            raise _NotText(line, e.start, e.end) from None
    obj, end = _raw_decode(line)
    if end != len(line):
        raise ValueError(f"extra data after the event at column {end + 1}")
    return event_from_dict(obj)


def _parse(data: bytes, path: Path) -> tuple[list[Event], int]:
    """Parse a history file's bytes; return the events and the byte length of a torn tail (0 if none).

    A last line without its newline that does not parse is a write torn by a crash: skipped with a warning.
    A bad line in the middle is corruption, unless the History that reopened the file marked it torn by
    writing a `history.resume` info right after it.
    """
    try:  # decode once, not per line: it is most of the cost of a 100k-line load
        text, check = data.decode("utf-8"), False
    except UnicodeDecodeError:  # a crash can cut a multi-byte character; find the line(s) it is in
        text, check = data.decode("utf-8", "surrogateescape"), True
    lines = text.split("\n")
    tail = lines.pop()  # "" when the file ends with a newline
    events: list[Event] = []
    torn = 0
    pending_bad: tuple[int, str] | None = None
    last_i = -1
    for lineno, raw in enumerate(lines, 1):
        if not raw or raw.isspace():
            continue
        try:
            ev = _loads(raw, check)
        except (ValueError, RecursionError) as e:  # JSONDecodeError and UnicodeError are ValueErrors
            if isinstance(e, _NotText) and not e.cut:  # no torn write leaves foreign bytes mid-line
                raise HistoryError(f"{path}:{lineno}: {e}: not a history file") from None
            if pending_bad is not None:
                raise HistoryError(f"{path}:{pending_bad[0]}: {pending_bad[1]}") from None
            pending_bad = (lineno, str(e))
            continue
        if pending_bad is not None:
            if not (type(ev) is Op and ev.f == RESUME_F):
                raise HistoryError(f"{path}:{pending_bad[0]}: {pending_bad[1]}")
            warnings.warn(
                f"{path}:{pending_bad[0]}: skipping a line torn by an earlier crash",
                HistoryWarning,
                stacklevel=3,
            )
            pending_bad = None
        if ev.i <= last_i:
            warnings.warn(
                f"{path}:{lineno}: sequence index {ev.i} does not increase (previous {last_i})",
                HistoryWarning,
                stacklevel=3,
            )
        else:
            last_i = ev.i
        events.append(ev)
    if pending_bad is not None:
        raise HistoryError(f"{path}:{pending_bad[0]}: {pending_bad[1]}")
    if tail and not tail.isspace():
        try:
            events.append(_loads(tail, check))
        except _NotText as e:
            if not e.cut:  # a torn write cuts at most the last character; bytes before it were ours
                raise HistoryError(f"{path}:{len(lines) + 1}: {e}: not a history file") from None
            torn = _torn_tail(path, tail, len(lines) + 1, e)
        except (ValueError, RecursionError) as e:
            torn = _torn_tail(path, tail, len(lines) + 1, e)
    return events, torn


def _torn_tail(path: Path, tail: str, lineno: int, why: Exception) -> int:
    """The byte length of a last line torn by a crash, with the warning that it was skipped."""
    torn = len(tail.encode("utf-8", "surrogateescape"))
    warnings.warn(
        f"{path}:{lineno}: ignoring a torn last line ({torn} bytes: {why})", HistoryWarning, stacklevel=4
    )
    return torn


class History:
    """The run's history: an append-only JSONL writer that also keeps the events in memory.

    `History(path)` opens for appending (continuing the sequence index of an existing file);
    `History.load(path)` reads a file back, read-only. Either can be handed to the checkers,
    which take any iterable of events.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = Path(path)
        self._clock = clock
        self._wall = wall_clock
        self._lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        events: list[Event] = []
        torn = 0
        needs_newline = False
        if self.path.exists() and self.path.stat().st_size:
            data = self.path.read_bytes()
            events, torn = _parse(data, self.path)
            needs_newline = not data.endswith(b"\n")
        self._events = events
        self._next_i = max((e.i for e in events), default=-1) + 1
        # Line buffering: every event reaches the OS as soon as it is appended.
        f = open(self.path, "a", buffering=1, encoding="utf-8")
        self._file: TextIO | None = f
        if needs_newline:
            f.write("\n")  # end the torn or unterminated line; never touch its bytes
        if torn:
            self.info(RESUME_PROCESS, RESUME_F, {"torn_bytes": torn}, sync=True)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> History:
        """Read a history file (read-only); a torn last line is skipped with a `HistoryWarning`."""
        self = cls.__new__(cls)
        self.path = Path(path)
        self._clock, self._wall, self._lock = time.monotonic, time.time, threading.Lock()
        self._events, _ = _parse(self.path.read_bytes(), self.path)
        self._file = None
        self._next_i = max((e.i for e in self._events), default=-1) + 1
        return self

    # -- reading -------------------------------------------------------------------------------------------

    @property
    def events(self) -> list[Event]:
        """A copy of the events so far, in the order they were appended."""
        with self._lock:
            return list(self._events)

    def __iter__(self) -> Iterator[Event]:
        return iter(self.events)

    def __len__(self) -> int:
        return len(self._events)

    @overload
    def __getitem__(self, k: int) -> Event: ...
    @overload
    def __getitem__(self, k: slice) -> list[Event]: ...
    def __getitem__(self, k: int | slice) -> Event | list[Event]:
        return self._events[k]

    # -- writing -------------------------------------------------------------------------------------------

    def append(
        self,
        type: str,
        *,
        source: str,
        process: str | None = None,
        f: str | None = None,
        kind: str | None = None,
        value: Any = None,
        error: str | None = None,
        t: float | None = None,
        wall: float | None = None,
        sync: bool = False,
    ) -> Event:
        """Append one event and return it; `t` / `wall` default to now (pass them for a capture's own time).

        The index, the default time and the write happen under one lock, so concurrent threads never
        interleave lines and the file order is the index order. `sync=True` fsyncs before returning,
        for an event that must survive a crash (a fault about to be injected).
        """
        if self._file is None or self._file.closed:
            raise HistoryError(f"{self.path} is closed or was loaded read-only")
        with self._lock:
            now = self._clock() if t is None else t
            wnow = self._wall() if wall is None else wall
            i = self._next_i
            if type == OBS:
                if kind is None:
                    raise ValueError("an observation needs a kind")
                ev: Event = Obs(i, now, wnow, kind, source, value)
            elif type in OP_TYPES:
                if process is None or f is None:
                    raise ValueError("an operation needs a process and an f")
                ev = Op(i, now, wnow, type, process, f, source, value, error)  # type: ignore[arg-type]
            else:
                raise ValueError(f"unknown event type {type!r}")
            line = _dumps(ev.to_dict())  # before writing: a value that is not JSON writes nothing
            self._file.write(line + "\n")
            self._next_i = i + 1
            self._events.append(ev)
            if sync:
                self._sync_locked()
            return ev

    def invoke(self, process: str, f: str, value: Any = None, *, source: str | None = None, **kw: Any) -> Op:
        """Record that `process` starts `f`."""
        return self.append("invoke", process=process, f=f, value=value, source=source or process, **kw)  # type: ignore[return-value]

    def ok(self, process: str, f: str, value: Any = None, *, source: str | None = None, **kw: Any) -> Op:
        """Record that `process`'s `f` happened."""
        return self.append("ok", process=process, f=f, value=value, source=source or process, **kw)  # type: ignore[return-value]

    def fail(
        self, process: str, f: str, value: Any = None, *, error: str, source: str | None = None, **kw: Any
    ) -> Op:
        """Record that `process`'s `f` definitely did not happen, and why."""
        return self.append(  # type: ignore[return-value]
            "fail", process=process, f=f, value=value, error=error, source=source or process, **kw
        )

    def info(
        self,
        process: str,
        f: str,
        value: Any = None,
        *,
        error: str | None = None,
        source: str | None = None,
        **kw: Any,
    ) -> Op:
        """Record that the outcome of `process`'s `f` is unknown (or a note that is not an operation)."""
        return self.append(  # type: ignore[return-value]
            "info", process=process, f=f, value=value, error=error, source=source or process, **kw
        )

    def observe(self, kind: str, source: str, value: Any = None, **kw: Any) -> Obs:
        """Record an observation of `kind` from `source` (a device or component)."""
        return self.append(OBS, kind=kind, source=source, value=value, **kw)  # type: ignore[return-value]

    def sync(self) -> None:
        """Flush and fsync, so everything appended so far survives a crash of the machine."""
        with self._lock:
            self._sync_locked()

    def _sync_locked(self) -> None:
        if self._file is not None and not self._file.closed:
            self._file.flush()
            os.fsync(self._file.fileno())

    def close(self) -> None:
        """Sync and close; the in-memory events stay readable."""
        with self._lock:
            if self._file is not None and not self._file.closed:
                self._sync_locked()
                self._file.close()

    def __enter__(self) -> History:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def pair_ops(events: Iterable[Event]) -> tuple[list[OpPair], list[Op]]:
    """Pair each invoke with the next completion of the same process, in append order.

    Returns the pairs (completion None when none came) and the stray completions that had no invoke. A
    second invoke while the process still has one in flight leaves the first one uncompleted: that is how
    Jepsen reads it (a process does one thing at a time), and it keeps a lost operation visible.
    """
    pairs: list[OpPair] = []
    stray: list[Op] = []
    open_: dict[str, int] = {}  # process -> index in pairs
    for ev in sorted((e for e in events if isinstance(e, Op)), key=lambda e: e.i):
        if ev.type == "invoke":
            open_[ev.process] = len(pairs)
            pairs.append(OpPair(ev, None))
        else:
            k = open_.pop(ev.process, None)
            if k is None or pairs[k].invoke.f != ev.f:
                if k is not None:
                    open_[ev.process] = k
                stray.append(ev)
            else:
                pairs[k] = OpPair(pairs[k].invoke, ev)
    return pairs, stray
