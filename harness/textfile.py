"""Reading a user's input file as text, with one reason when it is not: the topology, the nemesis profile,
a schedule file, the gate's policy and the results it reads share it, so every loader says the same thing
of a directory, a PNG or a UTF-16 file."""

from __future__ import annotations

import codecs
from pathlib import Path
from typing import Literal

MAX_BYTES = 16 * 1024 * 1024  # every input of ours is a few kB; more is not one of them
_BOMS = (
    (codecs.BOM_UTF32_LE, "UTF-32"),
    (codecs.BOM_UTF32_BE, "UTF-32"),
    (codecs.BOM_UTF16_LE, "UTF-16"),
    (codecs.BOM_UTF16_BE, "UTF-16"),
)

Reason = Literal["directory", "unreadable", "oversize", "empty", "utf16_32", "not_utf8", "nul"]


class TextFileError(Exception):
    """Why a file is not usable text; the caller adds the file's name and its own error type.

    `reason` says which check refused it and `detail` its particulars (the OS's words, the bad byte, the
    encoding), for a caller whose own wording is established (the gate's "cannot read the policy"); `at` is
    the offset of the offending character, when there is one.
    """

    def __init__(self, message: str, reason: Reason, detail: str = "", at: int | None = None) -> None:
        super().__init__(message)
        self.reason: Reason = reason
        self.detail = detail
        self.at = at


def a(noun: str) -> str:
    """`a policy`, `an Allure result file`: the article a reason's noun takes."""
    return f"{'an' if noun[:1] in 'aeiouAEIOU' else 'a'} {noun}"


def read_text(path: Path, kind: str, syntax: str, allow_empty: bool = False) -> str:
    """The file as UTF-8 text (a UTF-8 byte-order mark accepted). `kind` names what it should be ("topology
    file"), `syntax` its format ("YAML"), for the reasons given; `allow_empty` leaves an empty file to the
    caller's own parser and its message."""
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_BYTES + 1)
    except IsADirectoryError:
        raise TextFileError(f"is a directory, not {a(kind)}", "directory") from None
    except OSError as e:
        why = str(e.strerror or e)
        raise TextFileError(f"cannot read the file: {why}", "unreadable", why) from None
    if len(data) > MAX_BYTES:
        size = f"larger than {MAX_BYTES // (1024 * 1024)} MiB"
        raise TextFileError(f"{size}: not {a(kind)}", "oversize", size)
    if not data.strip() and not allow_empty:
        raise TextFileError("the file is empty", "empty")
    for bom, name in _BOMS:
        if data.startswith(bom):
            raise TextFileError(
                f"is {name} text; save it as UTF-8", "utf16_32", f"byte 0x{data[0]:02x} at offset 0", 0
            )
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        bad = f"byte 0x{data[e.start]:02x} at offset {e.start}"
        why = f"not UTF-8 text ({bad}): not {a(syntax)} file"
        raise TextFileError(why, "not_utf8", bad, e.start) from None
    if "\x00" in text:
        why = "holds NUL bytes: binary data, or UTF-16/32 text without a byte-order mark"
        raise TextFileError(why, "nul", why, text.index("\x00"))
    return text
