"""Reading a topology file: bytes to text to YAML to the validated Topology, every failure a TopologyError.

Why so careful with the first steps: whatever a user passes with ``--topology`` (a directory, a PNG, a
UTF-16 file from a Windows editor, an empty file) must come back as exit 2 and one line naming the file
and what is wrong, never as a traceback. Each problem is one line, with the dotted path inside the file.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError
from yaml.reader import ReaderError

from harness import textfile
from harness.topology.checks import cross_checks
from harness.topology.model import Topology
from harness.topology.schema import Model

REPO_ROOT = Path(__file__).resolve().parent.parent.parent
DEFAULT_TOPOLOGY = REPO_ROOT / "topologies" / "virtual-two-site.yaml"
_YAML_KINDS = {list: "a list", str: "a string", int: "a number", float: "a number", bool: "true or false"}


class TopologyError(Exception):
    """A topology file that cannot be used; carries every problem found, each with its path."""

    def __init__(self, file: str | Path, problems: list[tuple[str, str]]):
        self.file = str(file)
        self.problems = problems
        super().__init__("\n".join(self.lines()))

    def lines(self) -> list[str]:
        """One line per problem: a message with a line break in it would read as two problems."""
        return [f"{self.file}: {path or '(top)'}: {_one_line(msg)}" for path, msg in self.problems]


def _one_line(text: str) -> str:
    return re.sub(r"\s*[\r\n]+\s*", " ", text).strip()


def _loc(loc: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in loc if not str(p).startswith("function-"))


def _fail(path: Path, message: str, where: str = "") -> TopologyError:
    return TopologyError(path, [(where, message)])


def read_text(path: Path) -> str:
    """The file as UTF-8 text, or a TopologyError saying why not (harness/textfile.py)."""
    try:
        return textfile.read_text(path, "topology file", "YAML")
    except textfile.TextFileError as e:
        raise _fail(path, str(e)) from None


def parse_yaml(path: Path, text: str) -> dict[str, Any]:
    """The YAML document as a mapping, or a TopologyError with the line and column of the mistake."""
    try:
        raw = yaml.safe_load(text)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise _fail(path, f"not valid YAML: {e.problem or e.context or 'cannot parse'}", where) from None
    except ReaderError as e:
        what = f"#x{e.character:04x}" if isinstance(e.character, int) else repr(e.character)
        raise _fail(path, f"not valid YAML: character {what} at offset {e.position} is not allowed") from None
    except yaml.YAMLError as e:
        raise _fail(path, f"not valid YAML: {e}") from None
    except RecursionError:
        raise _fail(path, "not valid YAML: nested too deeply") from None
    if raw is None:
        raise _fail(path, "holds no YAML data (only blank lines or comments)")
    if not isinstance(raw, dict):
        kind = _YAML_KINDS.get(type(raw), f"a {type(raw).__name__}")
        raise _fail(path, f"the file holds {kind}, not a mapping with name, kind, sites, agents")
    return raw


def validate(path: Path, raw: dict[str, Any]) -> Topology:
    """The schema first, then the cross-checks; every problem of a pass is reported at once."""
    try:
        model = Model.model_validate(raw)
    except ValidationError as e:
        problems = []
        for err in e.errors():
            msg = err["msg"]
            if err["type"] == "extra_forbidden":
                msg = "unknown key"
            elif err["type"] == "missing":
                msg = "required field is missing"
            msg = msg.removeprefix("Value error, ")
            problems.append((_loc(err["loc"]), msg))
        raise TopologyError(path, problems) from None
    topo = Topology(model, path)
    problems = list(cross_checks(topo))
    if problems:
        raise TopologyError(path, problems)
    return topo


def load(file: str | Path | None = None) -> Topology:
    """Load and validate a topology; raise TopologyError naming every problem."""
    path = Path(file) if file else DEFAULT_TOPOLOGY
    return validate(path, parse_yaml(path, read_text(path)))
