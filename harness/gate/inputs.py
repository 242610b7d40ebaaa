"""Reading the gate's input files with one-line reasons: a problem names the file, the field and what is
wrong, so a release manager sees `error: FILE: FIELD: problem`, never a traceback, whatever the file holds
(random bytes, a picture, a truncated JSON, a YAML list)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from harness import textfile

__all__ = ["GateInputError", "Problem", "problem_line", "read_json_object", "read_text", "where"]

Problem = tuple[str, str, str]  # (file, field, what is wrong)


def _one_line(s: str) -> str:
    return " ".join(s.split())


def problem_line(p: Problem) -> str:
    """`file: field: what`, on one line whatever the parts hold."""
    return ": ".join(_one_line(x) for x in p if x)


class GateInputError(Exception):
    """The policy or the results cannot be read; one (file, field, problem) per line."""

    def __init__(self, problems: Sequence[Problem]):
        self.problems = list(problems)
        super().__init__("; ".join(problem_line(p) for p in self.problems))

    def lines(self) -> list[str]:
        return [problem_line(p) for p in self.problems]


def where(loc: Iterable[Any]) -> str:
    """A field path as docs/gate.md writes it: `scenarios[2].recovery.p95`."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def read_text(path: Path, what: str, syntax: str = "YAML") -> str:
    """The file's text, read by harness/textfile.py (the one reader of a user's input files: a directory,
    an unreadable, oversize, empty, UTF-16/32, not UTF-8 or binary file refused with one reason);
    GateInputError naming the file, in the gate's words where it has its own (docs/gate.md)."""
    try:
        return textfile.read_text(path, what, syntax)
    except textfile.TextFileError as e:
        raise GateInputError([_problem(path, what, syntax, e)]) from None


def _problem(path: Path, what: str, syntax: str, e: textfile.TextFileError) -> Problem:
    if e.reason == "unreadable":
        return (str(path), "", f"cannot read the {what}: {e.detail}")
    if e.reason == "not_utf8":
        return (str(path), "", f"not UTF-8 text ({e.detail}): not {textfile.a(what)}")
    if e.reason == "directory":
        return (str(path), "", f"cannot read the {what}: it is a directory, not a file")
    if e.reason == "utf16_32":  # a byte-order mark, or binary data that begins like one
        return (str(path), "", f"not UTF-8 text ({e.detail}): it {e}")
    if e.reason == "nul" and e.at is not None:  # where a YAML or JSON parser would have stopped
        return (str(path), f"character {e.at + 1}", f"not {syntax} text: {e.detail}")
    if e.reason == "empty":
        return (str(path), "", f"the file is empty: not {textfile.a(what)}")
    return (str(path), "", str(e))


def read_json_object(path: Path, what: str, problems: list[Problem]) -> Mapping[str, Any] | None:
    """The JSON object in a file, or None with the reason added to ``problems``."""
    try:
        obj = json.loads(read_text(path, what, "JSON"))
    except GateInputError as e:
        problems.extend(e.problems)
        return None
    except (ValueError, RecursionError) as e:
        problems.append((str(path), "", f"not readable JSON: {e}"))
        return None
    if not isinstance(obj, Mapping):
        problems.append((str(path), "", f"must be a JSON object, got {type(obj).__name__}"))
        return None
    return obj
