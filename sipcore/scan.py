"""The capture decoder's reading of a SIP message: the few fields a verdict needs, at 300,000 messages/s.

Why not :func:`sipcore.message.parse`: the decoder must keep up with 100,000+ packets per second in one
thread, and a :class:`~sipcore.message.SipMessage` holds every header. This works on bytes: the start line,
then one regular-expression pass in C over the header block for the headers a checker reads (compact forms
too), never the body, with small caches for the values SIP repeats (request lines, CSeq, Contact, From/To).
A :class:`SipHead` is what :func:`sipcore.message.parse` would give for those fields
(tests/test_sipcore_scan.py checks the two agree); the URI rules are :mod:`sipcore.uri`'s.
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple

from sipcore.message import COMPACT, MAX_DIGITS, METHODS, as_number
from sipcore.uri import host_of, param, split_commas, uri_of, user_of

#: Prefixes that make a payload look like a SIP message (request or response start line).
SIP_PREFIXES: tuple[bytes, ...] = (b"SIP/2.0 ", *(f"{m} ".encode() for m in METHODS))

_CALL_ID, _CSEQ, _FROM, _TO, _CONTACT, _EXPIRES, _CLEN = range(7)
_WANTED = ("call-id", "cseq", "from", "to", "contact", "expires", "content-length")
_SLOTS: dict[bytes, int] = {}
for _slot, _full in enumerate(_WANTED):
    for _n in (_full, *(c for c, f in COMPACT.items() if f == _full)):
        for _spelling in (_n, _n.upper(), _n.title(), "Call-ID", "CSeq"):
            if _spelling.lower() == _n:
                _SLOTS[_spelling.encode()] = _slot
# One pass in C over the header block finds the headers we need, instead of a Python loop over every line
# (three times faster on Kamailio-style messages). Names match case-insensitively; whitespace around the
# colon is allowed (RFC 3261 section 7.3.1).
_NAMES = b"|".join(sorted({k.lower() for k in _SLOTS}, key=len, reverse=True))
_HEADER_RE = re.compile(rb"\r\n(" + _NAMES + rb")[ \t]*:[ \t]*([^\r]*)", re.I)
_FOLD_RE = re.compile(rb"\r\n[ \t]+")
# Request line: method, Request-URI (anchored at the start; the caller bounds it to the first line).
_REQUEST_RE = re.compile(rb"([A-Za-z]+) ([^ \r\n]+) SIP/2\.0$")
# Request-URI: user (if any) and host of a sip:/sips: URI.
_RURI_RE = re.compile(rb"[A-Za-z]+:(?:([^@;:?>]*+)[^@?>]*+@)?(\[[^\]]*\]|[^:;?>]*)")
# User of the URI in a name-addr ("Name" <sip:u@h>;tag=x) or addr-spec (sip:u@h;tag=x): None if no user.
# The user-part quantifiers here and in _RURI_RE are possessive (*+): the same matches, but a value with no
# '@' fails in one pass instead of trying every split (quadratic: a 32 kB From took 2 s, a 1 MB one hours).
_ADDR_USER_RE = re.compile(rb'\s*(?:(?:"(?:[^"\\]|\\.)*"\s*|[^<"]*)<)?\s*[A-Za-z]+:([^@;:?>]*+)[^@>]*+@')
# Bounded caches of decoded header values. SIP repeats itself (the same request line to the registrar, the
# same Contact and From of a phone in every refresh, CSeq in request and response): a dict lookup is ~20
# times cheaper than parsing again.
_USER_CACHE: dict[bytes, str | None] = {}
_START_CACHE: dict[bytes, tuple[Any, ...]] = {}
_CSEQ_CACHE: dict[bytes, tuple[int | None, str | None]] = {}
_CONTACT_CACHE: dict[bytes, tuple[str | None, int | None]] = {}
_CACHE_MAX = 1 << 16
_MISSING = object()


class SipHead(NamedTuple):
    """The parts of one SIP message that a checker needs; strings are decoded, absent parts are None."""

    method: str | None  # request method, None for a response
    status: int | None  # response status code, None for a request
    reason: str | None  # response reason phrase
    request_uri: str | None
    ruri_user: str | None  # user part of the Request-URI
    ruri_host: str | None  # host of the Request-URI, without port
    call_id: str | None
    cseq: int | None
    cseq_method: str | None
    from_user: str | None
    to_user: str | None
    contact: str | None  # URI of the first Contact (or "*")
    expires: int | None  # first Contact's expires parameter, else the Expires header
    content_length: int | None
    header_length: int  # bytes up to and including the blank line (or the whole input if none)


def looks_like_sip(data: bytes) -> bool:
    """Tell whether a payload starts like a SIP request or response, for traffic on unexpected ports."""
    return data.startswith(SIP_PREFIXES)


def _text(value: bytes) -> str:
    return value.decode("utf-8", "replace")


def _name_addr_user(value: bytes) -> str | None:
    """User of the URI in a From/To value, cached by the part before '>' (tags change, users repeat)."""
    key = value if value.startswith(b'"') else value.partition(b">")[0]  # a quoted name may hold '>'
    user = _USER_CACHE.get(key, _MISSING)
    if user is _MISSING:
        m = _ADDR_USER_RE.match(key)
        if m is not None:
            user = _text(m.group(1)) or None
        elif b"tel:" in key or b"TEL:" in key:
            user = user_of(uri_of(_text(value)))
        else:
            user = None
        if len(_USER_CACHE) >= _CACHE_MAX:
            _USER_CACHE.clear()
        _USER_CACHE[key] = user
    return user  # type: ignore[return-value]


def _start_line(start: bytes) -> tuple[Any, ...] | None:
    """(method, status, reason, request_uri, ruri_user, ruri_host) of a start line; None if not SIP."""
    if start.startswith(b"SIP/2.0 "):
        code = start[8:11]
        if not code.isdigit() or start[11:12] not in (b" ", b""):
            return None
        return None, int(code), _text(start[12:]), None, None, None
    m = _REQUEST_RE.match(start)
    if m is None:
        return None
    method_b, ruri = m.groups()
    u = _RURI_RE.match(ruri)
    if u is not None and not ruri[:4].lower() == b"tel:":
        user_b, host_b = u.groups()
        ruri_user = _text(user_b) if user_b else None
        ruri_host = _text(host_b.strip(b"[]")) or None
    else:
        ruri_user = user_of(_text(ruri))
        ruri_host = host_of(_text(ruri))  # a port of non-ASCII digits ("²") is no port: never raises
    return method_b.decode(), None, None, _text(ruri), ruri_user, ruri_host


def _cseq(value: bytes) -> tuple[int | None, str | None]:
    parts = value.split()
    num = int(parts[0]) if parts and parts[0].isdigit() and len(parts[0]) <= MAX_DIGITS else None
    return num, _text(parts[1]) if len(parts) > 1 else None


def _contact(value: bytes) -> tuple[str | None, int | None]:
    """(URI, expires parameter) of the first Contact in a Contact header value."""
    first = split_commas(_text(value))[0].strip()
    if first == "*":
        return "*", None
    exp = param(first, "expires")
    return uri_of(first), as_number(exp) if exp else None


def _cached(cache: dict[bytes, Any], key: bytes, make: Any) -> Any:
    got = cache.get(key)
    if got is None:
        got = make(key)
        if len(cache) >= _CACHE_MAX:
            cache.clear()
        cache[key] = got
    return got


def parse_sip(data: bytes) -> SipHead | None:
    """Read the start line and needed headers of one SIP message; None if it is not a SIP message.

    ``data`` may hold the body and trailing bytes; only the header block is read. Of repeated headers the
    first counts. Folded header lines (obsolete line continuation) are unfolded first.
    """
    t = parse_sip_tuple(data)
    return None if t is None else tuple.__new__(SipHead, t)  # type: ignore[type-var,return-value]


def parse_sip_tuple(data: bytes) -> tuple[Any, ...] | None:
    """``parse_sip`` as a plain tuple in SipHead's field order: the decoder's hot path skips the wrapper."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        data += b"\r\n"
        end = header_length = len(data) - 2
    else:
        header_length = end + 4
    end += 2  # keep the CRLF of the last header line
    eol = data.find(b"\r\n", 0, end)
    start = data[:eol]
    first = _START_CACHE.get(start)
    if first is None:
        first = _start_line(start)
        if first is None:
            return None
        if len(_START_CACHE) >= _CACHE_MAX:
            _START_CACHE.clear()
        _START_CACHE[start] = first
    method, status, reason, request_uri, ruri_user, ruri_host = first
    if data.find(b"\r\n ", eol, end) >= 0 or data.find(b"\r\n\t", eol, end) >= 0:
        data = data[:eol] + _FOLD_RE.sub(b" ", data[eol : end - 2]) + b"\r\n"
        eol, end = data.find(b"\r\n"), len(data)

    vals: list[bytes | None] = [None, None, None, None, None, None, None]
    slots = _SLOTS
    for name, value in _HEADER_RE.findall(data, eol, end):
        slot = slots.get(name)
        if slot is None:
            slot = slots[name.lower()]
        if vals[slot] is None:  # the first occurrence counts
            vals[slot] = value
    call_id, cseq_b, from_b, to_b, contact_b, expires_b, clen_b = vals

    cseq, cseq_method = _cached(_CSEQ_CACHE, cseq_b, _cseq) if cseq_b else (None, None)
    contact, expires = _cached(_CONTACT_CACHE, contact_b, _contact) if contact_b else (None, None)
    if expires is None and expires_b:
        expires_b = expires_b.strip()
        if expires_b.isdigit() and len(expires_b) <= MAX_DIGITS:  # bytes: ASCII digits only
            expires = int(expires_b)
    content_length = None
    if clen_b:
        clen_b = clen_b.strip()
        if clen_b.isdigit() and len(clen_b) <= MAX_DIGITS:
            content_length = int(clen_b)
    return (
        method,
        status,
        reason,
        request_uri,
        ruri_user,
        ruri_host,
        _text(call_id.rstrip()) if call_id is not None else None,
        cseq,
        cseq_method,
        _name_addr_user(from_b) if from_b is not None else None,
        _name_addr_user(to_b) if to_b is not None else None,
        contact,
        expires,
        content_length,
        header_length,
    )
