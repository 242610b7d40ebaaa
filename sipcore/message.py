"""The SIP message: one model for every party of the lab that reads or writes SIP.

Why one hand-written model and not a library: the phone swarm parses every response of a 10,000-phone
registration storm on one event loop, so :func:`parse` is one pass over the header block with no object per
header; pyVoIP's parser refuses REGISTER and OPTIONS outright. The harness's probes, the CTI's event
listener and the tests build and read messages with the same class, so they agree on what a message is.

- Header names are stored in lower case with compact forms expanded (RFC 3261 section 7.3.3); the values
  of a name keep their order. Via, Route, Record-Route and Contact values joined by commas are split
  into entries. The relative order of different names is not significant (section 7.3.1), so a dict of
  name -> values is the whole header block; :meth:`SipMessage.to_bytes` writes canonical spellings.
- ``method`` is the request method, or for a response the method of its CSeq (what it answers);
  ``status`` is 0 for a request.
"""

from __future__ import annotations

import random
from collections.abc import Iterable

from sipcore.uri import param, split_commas, tag_of

#: Request methods (RFC 3261, 3262, 3265, 3311, 3428, 3515, 3903, 6086).
METHODS: tuple[str, ...] = (
    "REGISTER",
    "INVITE",
    "ACK",
    "BYE",
    "CANCEL",
    "OPTIONS",
    "PRACK",
    "SUBSCRIBE",
    "NOTIFY",
    "PUBLISH",
    "INFO",
    "REFER",
    "MESSAGE",
    "UPDATE",
)
#: Compact header names (RFC 3261 section 7.3.3, RFC 3265, 3515, 4028).
COMPACT: dict[str, str] = {
    "v": "via",
    "f": "from",
    "t": "to",
    "i": "call-id",
    "m": "contact",
    "l": "content-length",
    "c": "content-type",
    "k": "supported",
    "e": "content-encoding",
    "s": "subject",
    "o": "event",
    "r": "refer-to",
    "u": "allow-events",
    "x": "session-expires",
}
# Spellings whose capitals title-case would get wrong, for messages we write.
_CANONICAL = {
    "call-id": "Call-ID",
    "cseq": "CSeq",
    "www-authenticate": "WWW-Authenticate",
    "mime-version": "MIME-Version",
}
# Headers whose comma-joined values are separate entries (quoted and bracketed commas do not split).
SPLIT = frozenset(("via", "route", "record-route", "contact"))
#: Digits a SIP number may have (CSeq, Content-Length, Expires, status: 32-bit at most, RFC 3261 section
#: 25.1): a longer one is not a number. Python's int() refuses more than 4,300 digits with ValueError, and
#: str.isdigit() is true of "²", which int() refuses too; one hostile header must not raise in a parser.
MAX_DIGITS = 10
_getrandbits = random.getrandbits
_new = object.__new__


def token(bits: int = 64) -> str:
    """A random hex token for tags, branches and Call-IDs (uniqueness, not secrecy)."""
    return f"{_getrandbits(bits):x}"


def new_branch() -> str:
    """An RFC 3261 branch (magic cookie + random)."""
    return f"z9hG4bK{_getrandbits(64):x}"


def as_number(text: str) -> int | None:
    """The value of a SIP number (ASCII digits, at most MAX_DIGITS of them); None for anything else."""
    if text.isascii() and text.isdigit() and len(text) <= MAX_DIGITS:
        return int(text)
    return None


def header_key(name: str) -> str:
    """The stored form of a header name: lower case, compact forms expanded."""
    key = name.strip().lower()
    return COMPACT.get(key, key) if len(key) == 1 else key


def header_name(key: str) -> str:
    """How a stored header name is written on the wire ("call-id" -> "Call-ID")."""
    return _CANONICAL.get(key) or "-".join(p.capitalize() for p in key.split("-"))


def _start_line(line: str) -> tuple[str, str, int, str] | None:
    """(method, uri, status, reason) of a start line (method, uri empty in a response); None if not SIP."""
    if line.startswith("SIP/2.0 "):
        code = as_number(line[8:11])
        if code is None or len(line) < 11 or line[11:12] not in (" ", ""):
            return None
        return "", "", code, line[12:]
    parts = line.split(" ")
    if len(parts) != 3 or not parts[2].startswith("SIP/") or not parts[0].isalpha():
        return None
    return parts[0], parts[1], 0, ""


def _index(pairs: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    headers: dict[str, list[str]] = {}
    for name, value in pairs:
        key = header_key(name)
        value = value.strip()
        vals = split_commas(value) if key in SPLIT else [value]
        if key in headers:
            headers[key].extend(vals)
        else:
            headers[key] = vals
    return headers


class SipMessage:
    """One SIP request or response; build one with a start line and (name, value) pairs or parse one."""

    __slots__ = ("method", "uri", "status", "reason", "headers", "body")

    def __init__(
        self,
        start: str,
        headers: Iterable[tuple[str, str]] | dict[str, list[str]] = (),
        body: bytes = b"",
    ) -> None:
        first = _start_line(start.strip())
        if first is None:
            raise ValueError(f"not a SIP start line: {start!r}")
        self.method, self.uri, self.status, self.reason = first
        self.headers: dict[str, list[str]] = headers if isinstance(headers, dict) else _index(headers)
        self.body = body
        if self.status:
            self.method = self.cseq_method

    @property
    def is_request(self) -> bool:
        return self.status == 0

    @property
    def is_response(self) -> bool:
        return self.status != 0

    @property
    def start(self) -> str:
        """The start line as written on the wire."""
        if self.status:
            return f"SIP/2.0 {self.status} {self.reason}"
        return f"{self.method} {self.uri} SIP/2.0"

    def header(self, name: str, default: str | None = None) -> str | None:
        """The first value of a header (any case, compact forms too), or ``default``."""
        vals = self.headers.get(name) or self.headers.get(header_key(name))
        return vals[0] if vals else default

    def header_values(self, name: str) -> list[str]:
        """Every value of a header in order (comma-joined Via/Route/Record-Route/Contact split)."""
        return self.headers.get(name) or self.headers.get(header_key(name)) or []

    def set_header(self, name: str, value: str) -> None:
        """Replace every value of a header with one (in place, or appended if absent)."""
        self.headers[header_key(name)] = [value]

    def add_header(self, name: str, value: str) -> None:
        """Append one value to a header (the top Via goes first: use :meth:`set_header` there)."""
        self.headers.setdefault(header_key(name), []).append(value)

    def remove_header(self, name: str) -> None:
        self.headers.pop(header_key(name), None)

    @property
    def call_id(self) -> str:
        return self.header("call-id", "") or ""

    @property
    def cseq(self) -> int:
        """The CSeq number; 0 if missing or bad."""
        return as_number((self.header("cseq", "") or "").partition(" ")[0]) or 0

    @property
    def cseq_method(self) -> str:
        return (self.header("cseq", "") or "").partition(" ")[2].strip()

    @property
    def branch(self) -> str:
        """The branch of the top Via ("" if none)."""
        via = self.header("via")
        return (param(via, "branch") or "") if via else ""

    def to_bytes(self) -> bytes:
        """The message on the wire; Content-Length is always written, from the body."""
        lines = [self.start]
        for key, vals in self.headers.items():
            if key != "content-length":
                name = header_name(key)
                lines.extend(f"{name}: {v}" for v in vals)
        lines.append(f"Content-Length: {len(self.body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + self.body

    def __repr__(self) -> str:
        return f"<SipMessage {self.start} call-id={self.call_id!r}>"


def parse(data: bytes) -> SipMessage | None:
    """Parse one datagram; None if it is not a SIP message (keep-alive CRLFs, garbage, HTTP).

    Folded header lines are joined; a line without a colon is skipped; the body is cut at Content-Length.
    """
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        head, sep, body = data.partition(b"\n\n")
        if not sep:
            return None
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        text = head.decode("latin-1")
    lines = text.split("\r\n") if "\r\n" in text else text.split("\n")
    first = _start_line(lines[0].strip())
    if first is None:
        return None
    headers: dict[str, list[str]] = {}
    last: list[str] | None = None
    for line in lines[1:]:
        if not line:
            continue
        if line[0] in " \t":  # folded continuation line
            if last:
                last[-1] = f"{last[-1]} {line.strip()}"
            continue
        name, colon, value = line.partition(":")
        if not colon:
            continue
        name = name.strip().lower()
        if len(name) == 1:
            name = COMPACT.get(name, name)
        value = value.strip()
        vals = split_commas(value) if name in SPLIT else [value]
        last = headers.get(name)
        if last is None:
            last = headers[name] = vals
        else:
            last.extend(vals)
    clen = headers.get("content-length")
    length = as_number(clen[0]) if clen else None
    if length is not None:
        body = body[:length]
    # Built without __init__: the start line is parsed already, and this is the phones' hot path.
    msg = _new(SipMessage)
    msg.method, msg.uri, msg.status, msg.reason = first
    if msg.status:
        cseq = headers.get("cseq")
        msg.method = cseq[0].partition(" ")[2].strip() if cseq else ""
    msg.headers = headers
    msg.body = body
    return msg


def build_response(
    req: SipMessage,
    status: int,
    reason: str,
    *,
    to_tag: str | None = None,
    extra: str = "",
    body: bytes = b"",
    content_type: str | None = None,
    record_route: bool = False,
    server: str | None = None,
) -> bytes:
    """A response to ``req``: Via, From, Call-ID, CSeq copied; To gets ``to_tag`` unless it has one.

    ``extra`` is pre-formatted header lines ending in CRLF (Contact, Allow, ...); ``record_route``
    copies the Record-Route set (18x/2xx to INVITE, RFC 3261 section 12.1.1).
    """
    h = req.headers
    lines = [f"SIP/2.0 {status} {reason}"]
    lines.extend(f"Via: {v}" for v in h.get("via", ()))
    if record_route:
        lines.extend(f"Record-Route: {v}" for v in h.get("record-route", ()))
    lines.append(f"From: {req.header('from', '')}")
    to = req.header("to", "") or ""
    if to_tag and tag_of(to) is None:
        to = f"{to};tag={to_tag}"
    lines.append(f"To: {to}")
    lines.append(f"Call-ID: {req.call_id}")
    lines.append(f"CSeq: {req.header('cseq', '')}")
    if server:
        lines.append(f"Server: {server}")
    head = "\r\n".join(lines) + "\r\n" + extra
    if body:
        head += f"Content-Type: {content_type or 'application/sdp'}\r\n"
    head += f"Content-Length: {len(body)}\r\n\r\n"
    return head.encode() + body
