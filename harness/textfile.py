"""Reading a user's input file as text, with one reason when it is not: the topology, the nemesis profile
and a schedule file share it, so every loader says the same thing of a directory, a PNG or a UTF-16 file."""

from __future__ import annotations

import codecs
from pathlib import Path

MAX_BYTES = 16 * 1024 * 1024  # every input of ours is a few kB; more is not one of them
_BOMS = (
    (codecs.BOM_UTF32_LE, "UTF-32"),
    (codecs.BOM_UTF32_BE, "UTF-32"),
    (codecs.BOM_UTF16_LE, "UTF-16"),
    (codecs.BOM_UTF16_BE, "UTF-16"),
)


class TextFileError(Exception):
    """Why a file is not usable text; the caller adds the file's name and its own error type."""


def read_text(path: Path, kind: str, syntax: str, allow_empty: bool = False) -> str:
    """The file as UTF-8 text (a UTF-8 byte-order mark accepted). `kind` names what it should be ("topology
    file"), `syntax` its format ("YAML"), for the reasons given; `allow_empty` leaves an empty file to the
    caller's own parser and its message."""
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_BYTES + 1)
    except IsADirectoryError:
        raise TextFileError(f"is a directory, not a {kind}") from None
    except OSError as e:
        raise TextFileError(f"cannot read the file: {e.strerror or e}") from None
    if len(data) > MAX_BYTES:
        raise TextFileError(f"larger than {MAX_BYTES // (1024 * 1024)} MiB: not a {kind}")
    if not data.strip() and not allow_empty:
        raise TextFileError("the file is empty")
    for bom, name in _BOMS:
        if data.startswith(bom):
            raise TextFileError(f"is {name} text; save it as UTF-8")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        bad = f"byte 0x{data[e.start]:02x} at offset {e.start}"
        raise TextFileError(f"not UTF-8 text ({bad}): not a {syntax} file") from None
    if "\x00" in text:
        raise TextFileError("holds NUL bytes: binary data, or UTF-16/32 text without a byte-order mark")
    return text
