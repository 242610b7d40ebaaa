"""Reading the gate's input files with one-line reasons: a problem names the file, the field and what is
wrong, so a release manager sees `error: FILE: FIELD: problem`, never a traceback, whatever the file holds
(random bytes, a picture, a truncated JSON, a YAML list)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

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


def read_text(path: Path, what: str) -> str:
    """The file's text; GateInputError naming the file when it cannot be read or is not UTF-8 text."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise GateInputError([(str(path), "", f"cannot read the {what}: {e.strerror or e}")]) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        bad = f"byte 0x{data[e.start]:02x} at offset {e.start}"
        article = "an" if what[0] in "aeiouAEIOU" else "a"
        raise GateInputError([(str(path), "", f"not UTF-8 text ({bad}): not {article} {what}")]) from None


def read_json_object(path: Path, what: str, problems: list[Problem]) -> Mapping[str, Any] | None:
    """The JSON object in a file, or None with the reason added to ``problems``."""
    try:
        obj = json.loads(read_text(path, what))
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
