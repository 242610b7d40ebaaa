"""Reading the gate's input files with one-line reasons: a problem names the file, the field and what is
wrong, so a release manager sees `error: FILE: FIELD: problem`, never a traceback, whatever the file holds
(random bytes, a picture, a truncated JSON, a YAML list)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import ahocorasick

from harness import textfile

__all__ = [
    "GateInputError",
    "Problem",
    "problem_line",
    "read_json_object",
    "read_text",
    "secret_leaks",
    "where",
]

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


def secret_leaks(
    root: Path, secrets: Iterable[bytes], skip: Iterable[Path] = (), newer_than: float | None = None
) -> list[Problem]:
    """Each file under ``root`` (but those under ``skip``: the raw captures, which hold the secrets by
    design) that holds one of ``secrets``, as bytes: (file, "", what leaked, its first 4 characters only).
    One pass per file over all the secrets; a file that cannot be read is a problem too (it was not
    checked). ``newer_than`` (a wall time) reads only files written since: a session's own evidence in a
    reports/ that keeps earlier runs' (gigabytes, none of which can hold this session's secrets)."""
    wanted = {s for s in secrets if s}
    if not wanted:
        return []
    # Aho-Corasick: one pass per file whatever the number of secrets (a regex alternation of 2,000 tokens
    # read 17 MB in 99 s, this in 0.5 s); bytes as latin-1 text, one character per byte.
    finder = ahocorasick.Automaton()
    for sec in wanted:
        finder.add_word(sec.decode("latin-1"), sec)
    finder.make_automaton()
    skipped = [Path(p).resolve() for p in skip]
    out: list[Problem] = []
    for f in sorted(Path(root).rglob("*")):
        if not f.is_file() or f.is_symlink() or any(d in f.resolve().parents for d in skipped):
            continue
        if newer_than is not None and f.stat().st_mtime < newer_than:
            continue
        try:
            hits = {sec for _, sec in finder.iter(f.read_bytes().decode("latin-1"))}
        except OSError as e:
            out.append((str(f), "", f"not checked for the run's secrets: {e}"))
            continue
        for h in sorted(hits):
            shown = h[:4].decode(errors="replace")
            out.append((str(f), "", f"holds a secret of the run ({shown}..., {len(h)} bytes)"))
    return out
